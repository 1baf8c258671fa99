"""`LocalAgentSession`: the offline agent behind the AgentSession port.

faster-whisper → local LLM (streamed) → chunker → piper → speaker, driven by the pure
`ConversationMachine`. This module only runs effects and reports facts back; every decision
(turns, timeouts, fillers, interruptions, tools) is the machine's.

A reply passes through `ReplyGuard` (`core/reply_guard.py`) on its way to the chunker: when
the guard ends it (too long, repeating), the LLM stream is closed (the adapters stop
generating) and the machine gets only what is spoken, with the `Truncation`. An LLM failure
is reported as `WorkFailed("llm", ..., turn)` with the text already queued for speech; the
machine decides between a retry and the spoken apology.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, assert_never

import numpy as np

from appliance.core import conversation as cv
from appliance.core.chunker import SpeechChunker
from appliance.core.endpointing import UtteranceEnded
from appliance.core.reply_guard import ReplyGuard, ReplyLimits
from appliance.core.speculation import (
    ReplyRequest,
    Verdict,
    reply_may_start,
    reply_verdict,
    transcript_verdict,
)
from appliance.core.voice_tags import Segment, VoiceTagParser, parse, speakable
from appliance.errors import AgentError, ApplianceError
from appliance.logs import redact, set_turn_id
from appliance.ports import (
    Clock,
    EventSink,
    LanguageModel,
    LlmOutput,
    Pcm16,
    Speaker,
    SpeechToText,
    TextDelta,
    TextToSpeech,
    ToolCallRequest,
)
from appliance.runtime.clock import MonotonicClock
from appliance.runtime.speech_output import SpeechOutput
from appliance.runtime.tasks import TaskFailure, spawn_guarded
from appliance.runtime.timers import Timers
from appliance.runtime.voice_rendering import VoiceRenderer

_LOGGER = logging.getLogger(__name__)

FILLER_DEADLINE_S = 1.0
FILLER_PROMPT = (
    "Reply with a very short, natural filler phrase (one to three words, like 'Hmm...' or "
    "'Let me see...') that acknowledges the user's last message while you think. No answer, "
    "no time indications."
)


NO_RESPONSE_RESULT = "ok (the tool runs without sending a response)"

MAX_HELD_EVENTS = 16
"""Events a speculative reply's LLM may emit before its turn commits it (`knowledge_retrieved`)."""

_HELD_EVENTS: contextvars.ContextVar[list[tuple[str, dict[str, Any]]] | None] = contextvars.ContextVar(
    "speculative_events", default=None
)


class SpeculativeEvents:
    """The EventSink for what the LLM itself emits (the knowledge base's `knowledge_retrieved`):
    inside a speculative reply's task the events are held back, replayed in order if the turn
    commits that reply and dropped if it is discarded; everywhere else they pass through."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink

    def emit(self, type: str, **fields: Any) -> None:
        held = _HELD_EVENTS.get()
        if held is None:
            self._sink.emit(type, **fields)
        elif len(held) < MAX_HELD_EVENTS:
            held.append((type, fields))


class ToolRunner(Protocol):
    async def run(self, call: cv.ToolCall) -> tuple[str, bool]:
        """Run a device tool; the result text and whether it is an error."""
        ...

    def expects_response(self, name: str) -> bool:
        """False for a client tool with `expects_response: false`: nobody waits for it."""
        ...


@dataclass
class LocalAgentDeps:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    speaker: Speaker
    events: EventSink
    clock: Clock
    timers: Timers
    stt_executor: Executor
    tts_executor: Executor
    voice: str
    speed: float = 1.0
    llm_options: Mapping[str, Any] = field(default_factory=dict)
    tools: ToolRunner | None = None
    concurrent_llm: bool = False
    """True if the LLM can serve a filler request while a reply is generating."""
    voice_for_language: Callable[[str], str | None] | None = None
    speed_for_language: Callable[[str], float | None] | None = None
    """The language preset's `tts.speed` after a switch (None: keep the current speed)."""
    renderer: VoiceRenderer | None = None
    """Multi-voice labels, per-label speed, pronunciation dictionaries (None: one plain voice)."""
    stopwatch: Clock = field(default_factory=MonotonicClock)
    """Wall-clock time for `turn_metrics` (fast headless runs freeze the appliance clock)."""
    reply_limits: ReplyLimits = field(default_factory=ReplyLimits)
    """Bounds on every reply (speech time, tokens, repetition), whatever `max_tokens` says."""
    conversation_id: str | None = None
    """The id the prompt and webhooks know as `system__conversation_id` (None: a new one)."""
    hold_llm_for_first_audio: bool = False
    """Pause the LLM (if it can: `hold_generation`) from a reply's first chunk until that chunk is
    synthesized. Off: measured (`agent.latency.session`), holding made the first audio later on
    this box and under pi-class pi5, and cost more CPU per turn (llama.cpp's threads are not idle
    while the Python generator is paused between tokens)."""
    speculate_reply: bool = True
    """When a speculative transcript is ready while the pause still runs (`speech_paused`), also
    start the reply on it: the LLM and the first chunk's synthesis, into buffers, committed or
    discarded at the end decision (`appliance.vad.speculate_after_s` switches speculation on)."""


@dataclass
class SpeculationStats:
    """Speculative transcripts: started at a pause, used when the end confirmed the same audio,
    wasted when speech resumed (or the end brought other audio); how long they kept the STT
    worker busy (wall time: CTranslate2 computes in its own threads)."""

    started: int = 0
    used: int = 0
    wasted: int = 0
    stt_s: float = 0.0
    wasted_stt_s: float = 0.0
    replies: int = 0
    """Speculative replies started (LLM + first chunk's audio) on a speculative transcript."""
    replies_used: int = 0
    replies_wasted: int = 0
    wasted_reply_s: float = 0.0
    """Wall time the wasted replies ran (the LLM and TTS workers' time, started to discarded)."""


@dataclass
class _SpeculativeReply:
    request: cv.GenerateReply
    started_at: float
    items: asyncio.Queue[LlmOutput | Exception | None] = field(default_factory=asyncio.Queue)
    """What the LLM produced (bounded by the request's max_tokens), then None (the end) or the
    failure."""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    audio: dict[tuple[str, str | None, str, float], asyncio.Future[tuple[Pcm16, int]]] = field(
        default_factory=dict
    )
    """The first chunk's audio by (text, voice label, voice, speed), synthesized ahead."""
    task: asyncio.Task[None] | None = None
    failed: bool = False


@dataclass
class _Speculation:
    audio: bytes
    future: asyncio.Future[tuple[str, str, float]]
    language: str | None = None
    reply: _SpeculativeReply | None = None


class _AdoptedStream:
    """A committed speculative reply as the turn's LLM stream: what is buffered, then the rest
    as the speculation's task reads it; closing it cancels that task (the LLM stops)."""

    def __init__(self, reply: _SpeculativeReply) -> None:
        self._reply = reply

    def __aiter__(self) -> _AdoptedStream:
        return self

    async def __anext__(self) -> LlmOutput:
        item = await self._reply.items.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item

    async def aclose(self) -> None:
        if self._reply.task is not None:
            self._reply.task.cancel()


@dataclass
class _Metrics:
    endpoint_at: float = 0.0
    speech_end_lag_s: float = 0.0
    stt_s: float | None = None
    llm_started_at: float | None = None
    llm_first_token_s: float | None = None
    first_chunk_at: float | None = None


class LocalAgentSession:
    def __init__(self, settings: cv.ConversationSettings, deps: LocalAgentDeps) -> None:
        self._d = deps
        self._machine = cv.ConversationMachine(settings)
        self._voice = deps.voice
        self._speed = deps.speed
        self._labels = deps.renderer.label_names if deps.renderer is not None else frozenset()
        self._queue: asyncio.Queue[cv.ConversationEvent] = asyncio.Queue()
        self._closed: asyncio.Future[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn_tasks: dict[int, set[asyncio.Task[None]]] = {}
        self._metrics: dict[int, _Metrics] = {}
        self._first_audio_at: dict[int, float] = {}
        self._reply_seconds: dict[int, float] = {}
        """Estimated speech queued per turn by its LLM rounds (the guard's budget is per turn)."""
        self._pending_metrics: _Metrics | None = None
        self._speculation: _Speculation | None = None
        self._committed: _SpeculativeReply | None = None
        """A speculative reply whose transcript the turn used: its generation may continue it."""
        self._ready_audio: dict[tuple[str, str | None, str, float], asyncio.Future[tuple[Pcm16, int]]] = {}
        """The committed reply's first chunk audio, synthesized ahead."""
        self.speculation = SpeculationStats()
        self._held_texts: set[str] = set()
        """Segments of a first chunk the LLM is held for (released once one is synthesized)."""
        self._consumer: asyncio.Task[None] | None = None
        self._prefilled = False
        self._key = f"session-{uuid.uuid4().hex[:8]}:"
        self.conversation_id = deps.conversation_id or f"local_{uuid.uuid4().hex[:16]}"
        self._output = SpeechOutput(
            synthesize=self._synthesize,
            speaker=deps.speaker,
            events=deps.events,
            clock=deps.clock,
            on_started=self._on_output_started,
            on_reply_audio=self._on_reply_audio,
            on_finished=lambda turn, spoken, interrupted, queued: self._post(
                cv.OutputFinished(turn, spoken, interrupted, queued)
            ),
        )

    # ------------------------------------------------------------ AgentSession port
    @property
    def busy(self) -> bool:
        phase = self._machine.phase
        return self._output.active or phase in (
            cv.Phase.TRANSCRIBING,
            cv.Phase.THINKING,
            cv.Phase.SPEAKING,
            cv.Phase.ENDING,
        )

    @property
    def machine(self) -> cv.ConversationMachine:
        return self._machine

    async def start(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()
        self._output.start()
        self._consumer = asyncio.create_task(self._consume(), name="conversation")
        self._d.events.emit(
            "conversation_initiation_metadata",
            conversation_id=self.conversation_id,
            agent_output_audio_format="pcm_16000",
            user_input_audio_format="pcm_16000",
            mode="local",
        )
        self._post(cv.Started())

    def push_audio(self, frame: Pcm16) -> None:
        return None

    async def speech_started(self, t: float) -> None:
        self._post(cv.UserSpeechStarted())

    async def utterance(self, utterance: UtteranceEnded) -> None:
        now = self._d.stopwatch.now()
        lag = max(0.0, utterance.declared_t - utterance.end_t) if utterance.declared_t >= 0 else 0.0
        self._pending_metrics = _Metrics(endpoint_at=now, speech_end_lag_s=lag)
        self._post(cv.UserUtterance(utterance.audio, utterance.duration_s))

    def speech_paused(self, audio: bytes) -> None:
        """The user paused (the endpointer's `SpeechPaused`): transcribe the audio so far now,
        while the end decision is pending. Nothing is emitted, nothing enters the history: the
        transcript is only used if the utterance ends with exactly this audio."""
        self._discard_speculation()
        if self._machine.phase is not cv.Phase.LISTENING:
            return
        loop = asyncio.get_running_loop()
        pcm = np.frombuffer(audio, dtype="<i2").astype(np.int16)
        language = self._stt_language()
        future = loop.run_in_executor(self._d.stt_executor, _timed_transcribe, self._d.stt, pcm, language)
        spec = self._speculation = _Speculation(audio, future, language)
        self.speculation.started += 1
        future.add_done_callback(functools.partial(self._transcript_ready, spec))

    def _transcript_ready(self, spec: _Speculation, future: asyncio.Future[tuple[str, str, float]]) -> None:
        """The speculative transcript is there: start the reply on it if the pause still runs."""
        if future.cancelled() or future.exception() is not None:
            return
        text = future.result()[0]
        current = self._speculation is spec and spec.reply is None
        listening = self._machine.phase is cv.Phase.LISTENING
        if not reply_may_start(
            current=current, listening=listening, transcript=text, enabled=self._d.speculate_reply
        ):
            return
        request = self._machine.preview_reply(text)
        if request is None:
            return
        reply = spec.reply = _SpeculativeReply(request, self._d.stopwatch.now())
        self.speculation.replies += 1
        context = contextvars.copy_context()
        context.run(_HELD_EVENTS.set, reply.events)  # what the LLM emits waits for the commit
        task = future.get_loop().create_task(
            self._speculate_reply(reply), name="speculation", context=context
        )
        reply.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _speculate_reply(self, reply: _SpeculativeReply) -> None:
        """Run the LLM on the speculative request into `reply.items`, and synthesize the first
        chunk (cut as `_generate` will cut it) into `reply.audio`. A tool call is buffered like
        text: tools run only in the committed turn, which reads it from this one stream (a custom
        LLM is never asked twice). Never raises: a failure is an item."""
        guard = ReplyGuard(self._d.reply_limits)
        chunker = SpeechChunker()
        voices = VoiceTagParser(self._labels)
        first_chunk: list[str] = []
        stream: Any = None
        ended = False
        try:
            options = self._reply_options()
            request = reply.request
            stream = self._d.llm.stream_chat(list(request.messages), list(request.tools) or None, options)
            async for item in stream:
                reply.items.put_nowait(item)
                if isinstance(item, TextDelta) and item.text and not first_chunk and guard.stopped is None:
                    first_chunk = chunker.push(guard.push(item.text).release)
                    if first_chunk:
                        self._synthesize_ahead(reply, voices, first_chunk[0])
            if not first_chunk and (guard.stopped is None or guard.at_boundary):
                tail = chunker.push(guard.finish().release) if guard.stopped is None else []
                first_chunk = tail + chunker.flush()
                if first_chunk:
                    self._synthesize_ahead(reply, voices, first_chunk[0])
            reply.items.put_nowait(None)
            ended = True
        except Exception as err:  # reported at the commit (or the normal path runs instead)
            reply.failed = ended = True
            reply.items.put_nowait(err)
        finally:
            if not ended:  # cancelled: a generation reading it must not wait for more
                reply.items.put_nowait(
                    AgentError("the speculative reply was cancelled", code="llm_cancelled")
                )
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    def _synthesize_ahead(self, reply: _SpeculativeReply, voices: VoiceTagParser, chunk: str) -> None:
        for segment in speakable(voices.feed(chunk + " ")):
            text = segment.text.strip()
            if text:
                key = (text, segment.voice, self._voice, self._speed)
                future = asyncio.ensure_future(self._render(text, segment.voice))
                future.add_done_callback(_retrieved)
                reply.audio[key] = future
                return

    def _stt_language(self) -> str | None:
        """The language `Transcribe` asks for now (None: detect)."""
        language = self._machine.language
        return None if language == "auto" else language

    def speech_resumed(self) -> None:
        """The pause was not the end: drop the speculative transcript without a trace."""
        self._discard_speculation()

    def _discard_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is None:
            return
        self.speculation.wasted += 1
        spec.future.add_done_callback(self._count_wasted)
        if spec.reply is not None:
            self._discard_reply(spec.reply)

    def _discard_reply(self, reply: _SpeculativeReply) -> None:
        """Cancel a speculative reply's LLM stream and synthesis; nothing of it remains."""
        if reply.task is not None:
            reply.task.cancel()  # the LLM adapter aborts the generation
        for future in reply.audio.values():
            future.cancel()  # (a synthesis already running finishes unheard)
        reply.audio.clear()
        reply.events.clear()
        self.speculation.replies_wasted += 1
        self.speculation.wasted_reply_s += self._d.stopwatch.now() - reply.started_at

    def _count_wasted(self, future: asyncio.Future[tuple[str, str, float]]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.speculation.stt_s += future.result()[2]
            self.speculation.wasted_stt_s += future.result()[2]

    async def end(self, reason: str) -> None:
        self._post(cv.EndRequested(reason))

    async def stop(self, reason: str) -> None:
        """End now: playback stops within one output block (the status feed's stop, mute)."""
        self._post(cv.EndRequested(reason, immediate=True))

    async def send_contextual_update(self, text: str) -> bool:
        """Background for the LLM (the history's context note); no reply, nothing spoken."""
        self._post(cv.ContextAdded(text))
        return True

    async def send_user_message(self, text: str) -> bool:
        """A typed user turn: answered like a transcribed one (once the agent is listening)."""
        self._post(cv.UserText(text))
        return True

    async def send_user_activity(self) -> bool:
        """The user is there: the turn timeout starts again."""
        self._post(cv.UserActivity())
        return True

    async def send_feedback(self, like: bool) -> bool:
        """Recorded as a `feedback` event (the platform's like / dislike)."""
        self._post(cv.Feedback(like))
        return True

    async def closed(self) -> str:
        if self._closed is None:
            raise RuntimeError("session not started")
        try:
            return await asyncio.shield(self._closed)
        finally:
            await self._shutdown()

    # ------------------------------------------------------------ machinery
    def _post(self, event: cv.ConversationEvent) -> None:
        self._queue.put_nowait(event)

    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                effects = self._machine.handle(event, self._d.clock.now())
            except Exception:
                _LOGGER.exception("conversation machine failed on %s", type(event).__name__)
                effects = [cv.Close("error")]
            for effect in effects:
                try:
                    self._run(effect)
                except Exception as err:
                    _LOGGER.exception("effect %s failed", type(effect).__name__)
                    self._d.events.emit("error", code="internal", message=redact(str(err)), stage="agent")
            if not self._prefilled and self._machine.phase is cv.Phase.LISTENING:
                self._prefilled = True
                self._prefill()

    def _prefill(self) -> None:
        """The first time the session listens (its first message spoken, or none), let an
        in-process LLM evaluate the session's prompt while the user speaks: the first turn
        then pays only for the question. Nothing is emitted; a failure only costs that head
        start (the turn evaluates the prompt itself)."""
        prefill = getattr(self._d.llm, "prefill", None)
        if prefill is None:  # a remote LLM: nothing to evaluate ahead
            return
        messages = self._machine.history.messages()
        tools = list(self._machine.settings.tools) or None

        async def run() -> None:
            try:
                await prefill(messages, tools)
            except Exception as err:
                _LOGGER.info("the prompt was not evaluated ahead: %s", redact(str(err)))

        task = asyncio.create_task(run(), name="prefill")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, coro: Awaitable[None], name: str, turn: int | None = None) -> None:
        def failed(failure: TaskFailure) -> None:
            self._post(cv.WorkFailed(name, failure.code or f"{name}_failed", failure.message))

        task = spawn_guarded(
            coro, name, tasks=self._tasks, on_failure=failed, logger=_LOGGER, warn_known=True
        )
        if turn is not None:
            group = self._turn_tasks.setdefault(turn, set())
            group.add(task)
            task.add_done_callback(group.discard)

    def _run(self, effect: cv.Effect) -> None:
        d = self._d
        match effect:
            case cv.Emit(type=type_, fields=fields):
                d.events.emit(type_, **fields)
            case cv.Transcribe(turn=turn, audio=audio, language=language):
                self._metrics[turn] = self._pending_metrics or _Metrics(endpoint_at=d.stopwatch.now())
                self._pending_metrics = None
                set_turn_id(f"{self.conversation_id[-4:]}-{turn}")
                self._spawn(self._transcribe(turn, audio, language), "stt", turn)
            case cv.GenerateReply():
                self._spawn(self._generate(effect), "llm", effect.turn)
            case cv.Say(turn=turn, text=text, kind=kind):
                self._say(turn, text, kind.value)
            case cv.SayFiller():
                self._spawn(self._filler(effect), "filler", effect.turn)
            case cv.SealOutput(turn=turn):
                self._output.seal(turn)
            case cv.CancelOutput(turn=turn):
                if self._committed is not None and self._committed.request.turn == turn:
                    committed, self._committed = self._committed, None
                    self._discard_reply(committed)
                for task in list(self._turn_tasks.get(turn, ())):
                    task.cancel()
                self._output.cancel(turn)
                self._release_llm()
            case cv.RunTool(turn=turn, call=call):
                self._spawn(self._tool(turn, call), "tool", turn)
            case cv.SwitchLanguage(language=language):
                if d.voice_for_language is not None:
                    self._voice = d.voice_for_language(language) or self._voice
                if d.speed_for_language is not None:
                    self._speed = d.speed_for_language(language) or d.speed
            case cv.ArmTimer(name=name, deadline=deadline):
                d.timers.arm(self._key + name, deadline, functools.partial(self._post, cv.TimerFired(name)))
            case cv.CancelTimer(name=name):
                d.timers.cancel(self._key + name)
            case cv.Close(reason=reason):
                d.timers.cancel_prefix(self._key)
                if self._closed is not None and not self._closed.done():
                    self._closed.set_result(reason)
            case _:
                assert_never(effect)

    async def _shutdown(self) -> None:
        self._release_llm()
        self._d.timers.cancel_prefix(self._key)
        for task in list(self._tasks):
            task.cancel()
        if self._consumer is not None:
            self._consumer.cancel()
        await asyncio.gather(*self._tasks, *(t for t in (self._consumer,) if t), return_exceptions=True)
        await self._output.close()
        set_turn_id(None)

    # ------------------------------------------------------------ workers
    async def _transcribe(self, turn: int, audio: bytes, language: str | None) -> None:
        loop = asyncio.get_running_loop()
        pcm = np.frombuffer(audio, dtype="<i2").astype(np.int16)
        t0 = self._d.stopwatch.now()
        spec, self._speculation = self._speculation, None
        verdict = None if spec is None else transcript_verdict(spec.audio, spec.language, audio, language)
        if spec is not None and verdict is Verdict.COMMIT:
            text, heard, busy = await spec.future  # the same audio: its transcript, maybe ready
            self.speculation.used += 1
            self.speculation.stt_s += busy
            if spec.reply is not None:
                spec.reply.request = cv.GenerateReply(
                    turn, spec.reply.request.messages, spec.reply.request.tools, spec.reply.request.kind
                )
                if self._committed is not None:
                    self._discard_reply(self._committed)
                self._committed = spec.reply  # `_generate` continues it if the request matches
        else:
            if spec is not None:
                self._speculation = spec
                self._discard_speculation()
            text, heard = await loop.run_in_executor(
                self._d.stt_executor, self._d.stt.transcribe, pcm, language
            )
        metrics = self._metrics.get(turn)
        if metrics is not None:
            metrics.stt_s = self._d.stopwatch.now() - t0
        self._post(cv.Transcribed(turn, text, heard))

    async def _synthesize(self, text: str, label: str | None) -> tuple[Pcm16, int]:
        try:
            ready = self._ready_audio.pop((text, label, self._voice, self._speed), None)
            if ready is not None and not ready.cancelled():
                with contextlib.suppress(Exception):
                    return await ready  # the committed speculation's first chunk
            return await self._render(text, label)
        finally:
            if text in self._held_texts:
                self._release_llm()

    async def _render(self, text: str, label: str | None) -> tuple[Pcm16, int]:
        loop = asyncio.get_running_loop()
        renderer = self._d.renderer
        if renderer is None:
            return await loop.run_in_executor(
                self._d.tts_executor, self._d.tts.synthesize, text, self._voice, self._speed
            )
        return await loop.run_in_executor(
            self._d.tts_executor, renderer.synthesize, text, label, self._voice, self._speed
        )

    def _hold_llm(self, texts: list[str]) -> None:
        """The first chunk is queued: hold the LLM until its audio is synthesized."""
        hold = getattr(self._d.llm, "hold_generation", None)
        if not self._d.hold_llm_for_first_audio or hold is None or not texts:
            return
        self._held_texts = set(texts)
        hold()

    def _release_llm(self) -> None:
        if not self._held_texts:
            return
        self._held_texts = set()
        release = getattr(self._d.llm, "release_generation", None)
        if release is not None:
            release()

    def _say(self, turn: int, text: str, origin: str) -> None:
        """Queue a whole text (first message, farewell, filler), one segment per voice."""
        for segment in parse(text, self._labels):
            self._output.enqueue(turn, segment.text, origin, segment.voice)

    async def _generate(self, effect: cv.GenerateReply) -> None:
        turn = effect.turn
        metrics = self._metrics.setdefault(turn, _Metrics(endpoint_at=self._d.stopwatch.now()))
        metrics.llm_started_at = self._d.stopwatch.now()
        limits = self._d.reply_limits
        options = self._reply_options()
        adopted = self._adopt(effect)
        guard = ReplyGuard(limits, spent_seconds=self._reply_seconds.get(turn, 0.0))
        chunker = SpeechChunker()
        voices = VoiceTagParser(self._labels)
        parts: list[str] = []
        queued: list[str] = []
        calls: list[cv.ToolCall] = []
        started = False
        failure: Exception | None = None
        stream: Any = None
        try:
            if adopted is not None:
                stream = adopted
            else:
                stream = self._d.llm.stream_chat(list(effect.messages), list(effect.tools) or None, options)
            async for item in stream:
                if isinstance(item, TextDelta):
                    if not item.text:
                        continue
                    if not started:
                        started = True
                        metrics.llm_first_token_s = self._d.stopwatch.now() - metrics.llm_started_at
                        self._post(cv.ReplyTextStarted(turn))
                    parts.append(item.text)
                    step = guard.push(item.text)
                    self._release(turn, step.release, chunker, voices, queued)
                    if step.stop is not None:
                        break  # closing the stream below stops the generation
                elif isinstance(item, ToolCallRequest):
                    calls.append(cv.ToolCall(item.id, item.name, dict(item.arguments), item.raw_arguments))
        except Exception as err:  # the LLM failed: the machine retries or apologises
            failure = err
        finally:
            self._release_llm()
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()
        if failure is None and guard.stopped is None:
            self._release(turn, guard.finish().release, chunker, voices, queued)
        if failure is None or guard.at_boundary:
            # (a failure in the middle of the first sentence: its unfinished clause is dropped)
            for chunk in chunker.flush():
                queued.append(chunk)
                self._queue_chunk(turn, chunk, voices)
        self._queue_segments(turn, voices.close())
        self._reply_seconds[turn] = self._reply_seconds.get(turn, 0.0) + guard.released_seconds
        if voices.dropped_tags:
            _LOGGER.info("voice tags dropped (unknown, nested or stray): %s", " ".join(voices.dropped_tags))
        if failure is not None:
            spoken = guard.released_text if guard.at_boundary else " ".join(queued)
            self._post(self._llm_failed(turn, failure, spoken))
            return
        cut = guard.stopped
        if cut is not None:
            _LOGGER.info(
                "reply truncated (%s: %s) after %d characters, about %.1f s of speech",
                cut.reason, redact(cut.detail), len(cut.spoken_text), cut.spoken_seconds,
            )  # fmt: skip
        text = cut.spoken_text if cut is not None else "".join(parts)
        self._post(cv.ReplyGenerated(turn, text.strip(), tuple(calls), cut))

    def _reply_options(self) -> dict[str, Any]:
        limits = self._d.reply_limits
        return {
            **self._d.llm_options,
            "max_tokens": limits.llm_max_tokens(self._d.llm_options.get("max_tokens")),
        }

    def _adopt(self, effect: cv.GenerateReply) -> _AdoptedStream | None:
        """The committed speculative reply as this generation's stream, if it asked the same."""
        reply, self._committed = self._committed, None
        if reply is None:
            return None
        verdict = reply_verdict(
            ReplyRequest(reply.request.messages, reply.request.tools),
            ReplyRequest(effect.messages, effect.tools),
            is_user_reply=effect.kind is cv.OutputKind.REPLY and effect.turn == reply.request.turn,
            failed=reply.failed,
        )
        if verdict is not Verdict.COMMIT or reply.task is None:
            _LOGGER.debug("speculative reply not used: %s", verdict)
            self._discard_reply(reply)
            return None
        self.speculation.replies_used += 1
        self._turn_tasks.setdefault(effect.turn, set()).add(reply.task)
        reply.task.add_done_callback(self._turn_tasks[effect.turn].discard)
        for type_, fields in reply.events:  # held back until now, in their order
            self._d.events.emit(type_, **fields)
        reply.events.clear()
        self._ready_audio = dict(reply.audio)
        reply.audio.clear()
        return _AdoptedStream(reply)

    @staticmethod
    def _llm_failed(turn: int, err: Exception, spoken: str) -> cv.WorkFailed:
        if isinstance(err, ApplianceError):
            code, message, retryable = err.code, redact(str(err)), err.retryable
        else:
            code, message, retryable = "llm_failed", redact(f"{type(err).__name__}: {err}"), True
        _LOGGER.warning("LLM failed (%s): %s", code, message)
        return cv.WorkFailed("llm", code, message, turn, retryable, spoken.strip())

    def _release(
        self, turn: int, text: str, chunker: SpeechChunker, voices: VoiceTagParser, queued: list[str]
    ) -> None:
        """Text the guard let through: into the chunker, and what it cuts off to the voice."""
        if not text:
            return
        for chunk in chunker.push(text):
            queued.append(chunk)
            self._queue_chunk(turn, chunk, voices)

    def _queue_chunk(self, turn: int, chunk: str, voices: VoiceTagParser) -> None:
        metrics = self._metrics.get(turn)
        first = metrics is not None and metrics.first_chunk_at is None
        if metrics is not None and first:
            metrics.first_chunk_at = self._d.stopwatch.now()
        # chunks are cut at whitespace, which the chunker drops: give it back to the parser
        texts = self._queue_segments(turn, voices.feed(chunk + " "))
        if first:
            self._hold_llm(texts)

    def _queue_segments(self, turn: int, pieces: list[Segment]) -> list[str]:
        texts: list[str] = []
        for segment in speakable(pieces):
            self._output.enqueue(turn, segment.text, voice_label=segment.voice)
            if segment.text.strip():
                texts.append(segment.text.strip())  # as the output queues it
        return texts

    async def _filler(self, effect: cv.SayFiller) -> None:
        text = effect.fallback
        if effect.context is not None and self._d.concurrent_llm:
            try:
                text = await asyncio.wait_for(self._llm_filler(effect.context), FILLER_DEADLINE_S) or text
            except (TimeoutError, ApplianceError) as err:
                _LOGGER.info("LLM filler unavailable (%s); using the configured message", err)
        self._say(effect.turn, text, cv.OutputKind.FILLER.value)

    async def _llm_filler(self, context: tuple[dict[str, Any], ...]) -> str:
        messages = [{"role": "system", "content": FILLER_PROMPT}, *context]
        out: list[str] = []
        async for item in self._d.llm.stream_chat(messages, None, {**self._d.llm_options, "max_tokens": 12}):
            if isinstance(item, TextDelta):
                out.append(item.text)
        text = "".join(out).strip().strip('"')
        return text if 0 < len(text) <= 200 else ""

    async def _tool(self, turn: int, call: cv.ToolCall) -> None:
        if self._d.tools is None:
            self._post(cv.ToolFinished(turn, call, f"error: no device tool '{call.name}'", True))
            return
        if not self._d.tools.expects_response(call.name):
            # `expects_response: false`: the agent goes on at once; the tool runs to its own
            # deadline (or the end of the turn), its result is logged and not sent back
            self._post(cv.ToolFinished(turn, call, NO_RESPONSE_RESULT, False))
            await self._d.tools.run(call)
            return
        result, is_error = await self._d.tools.run(call)
        self._post(cv.ToolFinished(turn, call, result, is_error))

    def _on_output_started(self, turn: int) -> None:
        self._post(cv.OutputStarted(turn))

    def _on_reply_audio(self, turn: int) -> None:
        self._first_audio_at[turn] = self._d.stopwatch.now()
        metrics = self.turn_metrics(turn)
        if metrics:
            self._d.events.emit("turn_metrics", **metrics)

    def turn_metrics(self, turn: int) -> dict[str, float | None]:
        m = self._metrics.get(turn)
        first_audio = self._first_audio_at.get(turn)
        if m is None or first_audio is None or m.llm_started_at is None or m.stt_s is None:
            return {}
        return {
            "stt_s": _r(m.stt_s),
            "llm_first_token_s": _r(m.llm_first_token_s),
            "tts_first_audio_s": _r(first_audio - m.first_chunk_at if m.first_chunk_at else None),
            "end_of_speech_to_first_audio_s": _r(first_audio - m.endpoint_at + m.speech_end_lag_s),
            "endpoint_to_first_audio_s": _r(first_audio - m.endpoint_at),
        }


def _timed_transcribe(stt: SpeechToText, pcm: Pcm16, language: str | None) -> tuple[str, str, float]:
    """In the STT worker: the transcript, its language and how long it took."""
    start = time.perf_counter()
    text, heard = stt.transcribe(pcm, language)
    return text, heard, time.perf_counter() - start


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A synthesis ahead that nobody awaits (discarded): its failure is not an error."""
    if not future.cancelled():
        future.exception()


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
