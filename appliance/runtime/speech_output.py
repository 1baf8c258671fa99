"""The agent's voice: text segments → synthesis → playback, pipelined, cancellable.

Synthesis of the next segment overlaps playback of the current one (a synth task runs up to
two segments ahead of the play task). Everything of a turn plays in order: a soft-timeout
filler queued first is heard before the reply that follows it. `cancel(turn)` stops the
speaker within one output block, drops what is queued and reports what was actually heard,
word-truncated, so the history keeps only what was spoken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from appliance.ports import Clock, EventSink, Pcm16, Speaker

_LOGGER = logging.getLogger(__name__)

Synthesize = Callable[[str, str | None], Awaitable[tuple[Pcm16, int]]]
"""(text, voice label or None for the default voice) → audio and its rate."""


@dataclass
class _Segment:
    turn: int
    text: str
    origin: str = "reply"
    voice_label: str | None = None
    audio: Pcm16 | None = None
    rate: int = 0


@dataclass
class _TurnOutput:
    queued: int = 0
    played: int = 0
    sealed: bool = False
    cancelled: bool = False
    started: bool = False
    reply_started: bool = False
    spoken: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def truncate_words(text: str, fraction: float) -> str:
    """The words of `text` heard when `fraction` of its audio has played."""
    words = text.split()
    if fraction >= 0.999:
        return text.strip()
    return " ".join(words[: int(len(words) * max(0.0, fraction))])


class SpeechOutput:
    def __init__(
        self,
        *,
        synthesize: Synthesize,
        speaker: Speaker,
        events: EventSink,
        clock: Clock,
        on_started: Callable[[int], None],
        on_finished: Callable[[int, str, bool, str], None],
        on_reply_audio: Callable[[int], None] | None = None,
    ) -> None:
        self._synthesize = synthesize
        self._speaker = speaker
        self._events = events
        self._clock = clock
        self._on_started = on_started
        self._on_finished = on_finished
        self._on_reply_audio = on_reply_audio
        self._texts: asyncio.Queue[_Segment] = asyncio.Queue()
        self._audio: asyncio.Queue[_Segment] = asyncio.Queue(maxsize=2)
        self._turns: dict[int, _TurnOutput] = {}
        self._playing: _Segment | None = None
        self._play_started_at = 0.0
        self._event_id = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._synth_loop(), name="tts"),
            asyncio.create_task(self._play_loop(), name="playback"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def active(self) -> bool:
        """Something is queued, being synthesized or playing."""
        return any(t.queued > t.played and not t.cancelled for t in self._turns.values())

    def _turn(self, turn: int) -> _TurnOutput:
        return self._turns.setdefault(turn, _TurnOutput())

    def enqueue(self, turn: int, text: str, origin: str = "reply", voice_label: str | None = None) -> None:
        """Queue `text` for the turn; `origin` says what it is (reply, filler, first_message...);
        `voice_label` is the multi-voice label that speaks it (None: the default voice)."""
        text = text.strip()
        state = self._turn(turn)
        if not text or state.cancelled:
            return
        state.queued += 1
        state.texts.append(text)
        self._texts.put_nowait(_Segment(turn, text, origin, voice_label))

    def seal(self, turn: int) -> None:
        state = self._turn(turn)
        state.sealed = True
        self._maybe_finished(turn)

    def cancel(self, turn: int) -> None:
        state = self._turn(turn)
        if state.cancelled:
            return
        state.cancelled = True
        heard = list(state.spoken)
        playing = self._playing
        if playing is not None and playing.turn == turn and playing.audio is not None and playing.rate:
            duration = playing.audio.size / playing.rate
            elapsed = self._clock.now() - self._play_started_at
            heard.append(truncate_words(playing.text, elapsed / duration if duration else 1.0))
            self._speaker.stop()
        self._on_finished(turn, " ".join(h for h in heard if h).strip(), True, " ".join(state.texts))

    def _maybe_finished(self, turn: int) -> None:
        state = self._turns.get(turn)
        if state is None or state.cancelled or not state.sealed or state.played < state.queued:
            return
        state.cancelled = True  # finished: nothing more is reported for this turn
        self._on_finished(turn, " ".join(state.spoken).strip(), False, " ".join(state.texts))

    async def _synth_loop(self) -> None:
        while True:
            seg = await self._texts.get()
            if self._turn(seg.turn).cancelled:
                continue
            try:
                seg.audio, seg.rate = await self._synthesize(seg.text, seg.voice_label)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                _LOGGER.error("speech synthesis failed for %r: %s", seg.text[:40], err)
                self._events.emit("error", code="tts_failed", message=str(err), stage="tts")
                seg.audio, seg.rate = None, 0
            await self._audio.put(seg)

    async def _play_loop(self) -> None:
        while True:
            seg = await self._audio.get()
            state = self._turn(seg.turn)
            if state.cancelled:
                continue
            if seg.audio is None or seg.audio.size == 0:
                state.played += 1
                self._maybe_finished(seg.turn)
                continue
            if not state.started:
                state.started = True
                self._on_started(seg.turn)
            if seg.origin == "reply" and not state.reply_started:
                state.reply_started = True
                if self._on_reply_audio is not None:
                    self._on_reply_audio(seg.turn)
            self._event_id += 1
            self._events.emit(
                "audio",
                event_id=self._event_id,
                duration_s=round(seg.audio.size / seg.rate, 3),
                sample_rate_hz=seg.rate,
                text=seg.text,
                origin=seg.origin,
                voice_label=seg.voice_label,
            )
            self._playing = seg
            self._play_started_at = self._clock.now()
            completed = await self._speaker.play(seg.audio, seg.rate)
            self._playing = None
            if state.cancelled:
                continue
            if completed:
                state.spoken.append(seg.text)
            state.played += 1
            self._maybe_finished(seg.turn)
