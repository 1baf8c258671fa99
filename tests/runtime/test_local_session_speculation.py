"""Speculative replies in the local session: on a pause the session transcribes the audio so far
and starts the reply on it (LLM + the first chunk's audio, buffered). Speech resuming discards it
without a trace; an end with the same audio commits it, and the turn is then exactly what the
non-speculative path gives (events, history, audio) from the same single LLM stream.

Deterministic: scripted STT (by audio length), a scripted LLM that waits at a gate the test
opens, a TTS whose samples encode the text; no wall-clock assertion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from appliance.core.conversation import ConversationSettings, Phase
from appliance.core.endpointing import UtteranceEnded
from appliance.ports import EventSink, LlmOutput, Pcm16, TextDelta, ToolCallRequest
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession, SpeculativeEvents
from appliance.runtime.timers import Timers
from appliance.testing.fakes import FixedClock, RecordingEvents, RecordingSpeaker, until

HEAD = b"\1\0" * 1600  # "What is the capital"
WHOLE = HEAD + b"\2\0" * 3200  # "What is the capital of France?"


class Log:
    def __init__(self) -> None:
        self.items: list[str] = []


class Stt:
    def __init__(self, log: Log) -> None:
        self.log = log

    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        text = "What is the capital" if audio.size <= 1600 else "What is the capital of France?"
        self.log.items.append(f"stt:{text}")
        return text, "en"


class ScriptedLlm:
    """Answers "You said: <question>. ..." in parts; like the knowledge base it emits an event
    when a request starts (through the session's held-events sink); after the first sentence
    it waits at `gate` (so a speculative stream is still open at the end decision)."""

    def __init__(self, log: Log, events: EventSink, tool_first: bool = False) -> None:
        self.log = log
        self.events = SpeculativeEvents(events)
        self.gate = asyncio.Event()
        self.tool_first = tool_first

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        question = str(messages[-1]["content"])
        self.log.items.append(f"llm:{question}")
        self.events.emit("knowledge_retrieved", query=question)
        try:
            if self.tool_first and question.startswith("What"):
                yield ToolCallRequest("call_0", "lookup", {"q": question}, "{}")
                return
            yield TextDelta("You said: ")
            yield TextDelta(f"{question.rstrip('?')}. ")
            yield TextDelta("That is ")
            await asyncio.wait_for(self.gate.wait(), 5.0)
            yield TextDelta("all I know.")
        finally:
            self.log.items.append(f"llm closed:{question}")


class Tts:
    """Samples that encode the text, so equal audio means equal text."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        self.log.items.append(f"synth:{text}")
        return np.array([ord(c) for c in text], dtype=np.int16), 16000


class Tools:
    def __init__(self, log: Log) -> None:
        self.log = log

    async def run(self, call: Any) -> tuple[str, bool]:
        self.log.items.append(f"tool:{call.name}")
        return "Paris", False

    def expects_response(self, name: str) -> bool:
        return True


class Turn:
    def __init__(self, tool_first: bool = False) -> None:
        self.log = Log()
        self.events = RecordingEvents()
        self.speaker = RecordingSpeaker()
        self.llm = ScriptedLlm(self.log, self.events, tool_first)
        self.history: list[dict[str, Any]] = []
        self.before_end: dict[str, Any] = {}
        self.stats: Any = None
        self.tool_first = tool_first

    def settings(self) -> ConversationSettings:
        if not self.tool_first:
            return ConversationSettings(system_prompt="x", max_duration_s=None)
        schema = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        return ConversationSettings(
            system_prompt="x", max_duration_s=None, device_tool_names=frozenset({"lookup"}), tools=(schema,)
        )

    def run(self, pause: bytes | None, end: bytes) -> None:
        async def run() -> None:
            clock = FixedClock()
            executor = ThreadPoolExecutor(1)
            deps = LocalAgentDeps(
                stt=Stt(self.log), llm=self.llm, tts=Tts(self.log), speaker=self.speaker,
                events=self.events, clock=clock, timers=Timers(clock), stt_executor=executor,
                tts_executor=executor, voice="joe", tools=Tools(self.log), conversation_id="local_test",
            )  # fmt: skip
            session = LocalAgentSession(self.settings(), deps)
            try:
                await session.start()
                await until(lambda: session.machine.phase is Phase.LISTENING, 10.0, "listening")
                await session.speech_started(0.0)
                if pause is not None:
                    session.speech_paused(pause)
                    await until(self._speculated, 10.0, "the speculative reply")
                    self.before_end = {
                        "events": list(self.events.types()),
                        "played": len(self.speaker.played),
                        "history": session.machine.history.messages(),
                        "log": list(self.log.items),
                    }
                    if end != pause:
                        session.speech_resumed()
                await session.utterance(UtteranceEnded(0.0, 0.3, "silence", end))
                await until(lambda: bool(self.events.of("user_transcript")), 10.0, "the transcript")
                self.llm.gate.set()
                await until(
                    lambda: bool(self.events.of("agent_response")) and not session.busy, 10.0, "the answer"
                )
                self.history = session.machine.history.messages()
                self.stats = session.speculation
                await session.end("test")
                assert await asyncio.wait_for(session.closed(), 5) == "test"
            finally:
                executor.shutdown()

        asyncio.run(run())

    def _speculated(self) -> bool:
        if self.tool_first:
            return any(item.startswith("llm closed:") for item in self.log.items)
        return any(item.startswith("synth:") for item in self.log.items)

    def comparable_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events.items if e["type"] != "turn_metrics"]  # wall-clock figures

    def played(self) -> list[list[int]]:
        return [audio.tolist() for audio, _rate in self.speaker.played]


def test_a_speculation_discarded_when_speech_resumes_leaves_no_event_audio_or_history() -> None:
    turn = Turn()
    turn.run(pause=HEAD, end=WHOLE)
    before = turn.before_end
    # while the pause ran: the reply was generated and its first chunk synthesized, unheard
    assert "llm:What is the capital" in before["log"], before["log"]
    assert "synth:You said: What is the capital." in before["log"], before["log"]
    assert before["played"] == 0
    assert not {"user_transcript", "knowledge_retrieved", "agent_response", "audio"} & set(before["events"])
    assert [m["role"] for m in before["history"]] == ["system"]
    # after: only the real turn, as if the speculation had never been
    assert "llm closed:What is the capital" in turn.log.items  # the speculative stream was cancelled
    assert [e["query"] for e in turn.events.of("knowledge_retrieved")] == ["What is the capital of France?"]
    assert [e["user_transcript"] for e in turn.events.of("user_transcript")] == [
        "What is the capital of France?"
    ]
    assert all("France" in e["text"] for e in turn.events.of("audio") if "You said" in e["text"])
    heard = ["".join(chr(v) for v in audio) for audio in turn.played()]
    assert not any(text.startswith("You said: What is the capital.") for text in heard), heard
    users = [m["content"] for m in turn.history if m["role"] == "user"]
    assert users == ["What is the capital of France?"]
    assert "capital." not in " ".join(str(m["content"]) for m in turn.history)
    stats = turn.stats
    assert (stats.replies, stats.replies_used, stats.replies_wasted) == (1, 0, 1)


def test_a_committed_speculation_gives_the_same_turn_as_the_normal_path_from_one_stream() -> None:
    plain = Turn()
    plain.run(pause=None, end=HEAD)
    spec = Turn()
    spec.run(pause=HEAD, end=HEAD)
    # the first chunk was synthesized before the end decision, nothing of it heard or emitted
    assert "synth:You said: What is the capital." in spec.before_end["log"]
    assert spec.before_end["played"] == 0
    assert not {"user_transcript", "knowledge_retrieved", "agent_response"} & set(spec.before_end["events"])
    # then the same turn: events (order and fields), history, audio
    assert spec.comparable_events() == plain.comparable_events()
    assert spec.history == plain.history
    assert spec.played() == plain.played()
    # from one LLM stream, continued after the commit, and one synthesis of each chunk
    assert [i for i in spec.log.items if i.startswith("llm:")] == ["llm:What is the capital"]
    assert [i for i in spec.log.items if i.startswith("stt:")] == ["stt:What is the capital"]
    synths = [i for i in spec.log.items if i.startswith("synth:")]
    assert synths == [i for i in plain.log.items if i.startswith("synth:")]
    assert (spec.stats.replies, spec.stats.replies_used, spec.stats.replies_wasted) == (1, 1, 0)


def test_a_speculative_tool_call_runs_no_tool_before_the_commit() -> None:
    turn = Turn(tool_first=True)
    turn.run(pause=HEAD, end=HEAD)
    before = turn.before_end["log"]
    assert "llm:What is the capital" in before  # the speculative stream asked for the tool...
    assert not [i for i in before if i.startswith("tool:")], before  # ...which waited for the end
    assert not {"agent_tool_response", "user_transcript"} & set(turn.before_end["events"])
    log = turn.log.items
    # at the end: the committed turn runs the tool once, from the one speculative request (a
    # custom LLM is not asked the same question twice)
    assert [i for i in log if i.startswith("llm:What")] == ["llm:What is the capital"], log
    assert log.count("tool:lookup") == 1
    assert log.index("tool:lookup") >= len(before)
    assert turn.events.of("agent_tool_response")
    assert (turn.stats.replies, turn.stats.replies_used, turn.stats.replies_wasted) == (1, 1, 0)


def test_a_stop_during_the_pause_cancels_the_speculative_reply_without_a_trace() -> None:
    log, events, speaker = Log(), RecordingEvents(), RecordingSpeaker()
    llm = ScriptedLlm(log, events)

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=Stt(log), llm=llm, tts=Tts(log), speaker=speaker, events=events, clock=clock,
            timers=Timers(clock), stt_executor=executor, tts_executor=executor, voice="joe",
        )  # fmt: skip
        session = LocalAgentSession(ConversationSettings(system_prompt="x", max_duration_s=None), deps)
        try:
            await session.start()
            await until(lambda: session.machine.phase is Phase.LISTENING, 10.0, "listening")
            await session.speech_started(0.0)
            session.speech_paused(HEAD)
            await until(lambda: any(i.startswith("synth:") for i in log.items), 10.0, "the speculation")
            await session.stop("stop")
            assert await asyncio.wait_for(session.closed(), 5) == "stop"
            await until(lambda: "llm closed:What is the capital" in log.items, 5.0, "the LLM stream closed")
        finally:
            executor.shutdown()

    asyncio.run(run())
    assert not {"user_transcript", "knowledge_retrieved", "agent_response", "audio"} & set(events.types())
    assert speaker.played == []
