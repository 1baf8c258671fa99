"""Utterance boundaries from voice-activity probabilities, on audio time.

Pure and clock-free in the manner of Home Assistant's `VoiceCommandSegmenter`: the caller
feeds one VAD frame at a time (its probability, its samples as 16-bit little-endian bytes and
the audio time at the end of the frame) and gets back what happened.

`turn_eagerness` (ElevenLabs `conversation_config.turn.turn_eagerness`) picks how much
trailing silence ends a turn:

| eagerness | end-of-speech silence |
|-----------|-----------------------|
| eager     | 0.40 s                |
| normal    | 0.75 s                |
| patient   | 1.50 s                |

While the agent speaks, the caller passes `talk_over_s` (how long the echo canceller has run in
the agent's turn): a second, faster start rule (`barge_in_min_speech_s` at `barge_in_threshold`)
lets the user barge in within about 0.2 s instead of `min_speech_s` + the VAD's rise (measured
0.25-0.35 s without echo), once the canceller has settled (`barge_in_after_s`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

SAMPLE_RATE_HZ = 16000
BYTES_PER_SAMPLE = 2


class TurnEagerness(StrEnum):
    EAGER = "eager"
    NORMAL = "normal"
    PATIENT = "patient"


END_SILENCE_S: dict[TurnEagerness, float] = {
    TurnEagerness.EAGER: 0.40,
    TurnEagerness.NORMAL: 0.75,
    TurnEagerness.PATIENT: 1.50,
}


@dataclass(frozen=True)
class EndpointConfig:
    threshold: float = 0.5
    """A frame with probability at or above this is speech."""
    release_threshold: float = 0.35
    """While in speech, a frame below this counts as silence (hysteresis)."""
    min_speech_s: float = 0.20
    """Speech must last this long before an utterance starts (filters clicks and coughs)."""
    end_silence_s: float = END_SILENCE_S[TurnEagerness.NORMAL]
    max_utterance_s: float = 15.0
    preroll_s: float = 0.60
    """Audio kept from before the detected start, so the first word is not clipped: Silero
    can take 0.2-0.3 s to rise on a soft onset ("What ..."), and whisper drops a first word
    that starts right at the edge of its audio (0.3 s lost words after the wake word)."""

    barge_in_min_speech_s: float | None = None
    """While the agent speaks (the echo canceller runs, see `Endpointer.process`'s `talk_over_s`):
    speech at or above `barge_in_threshold` this long starts an utterance too, so the user can
    barge in faster than `min_speech_s` allows. None: the normal rule only."""
    barge_in_threshold: float = 0.8
    barge_in_after_s: float = 2.5
    """The faster rule holds only once the canceller has run this long in the agent's turn: a
    fresh canceller lets echo through while it converges (measured: VAD 0.5-0.98 on its output
    for 1-3 s into the first turn of a room at 50 cm). Before that, only frames the raw
    microphone marks as double talk count (`Endpointer.process`'s `double_talk`)."""

    converging_min_speech_s: float | None = None
    """For the first `converging_s` of the canceller's run in an agent's turn, the normal rule needs
    this much speech instead of `min_speech_s` (None: `min_speech_s`): a fresh canceller lets the
    agent's own voice through while it converges, and in the hall at 50 cm the VAD on its output
    read it as speech for 0.2 s, 0.6-1.0 s into the first reply (4 captured real-time runs), in
    the small room at gain 2.0 from 1.4 s (2 runs under load; a 1.5 s window left them).
    Frames with double-talk evidence still start speech through the barge-in rule; in the echo
    tail after the agent's words (`Endpointer.process`'s `playing` False) `min_speech_s` holds."""
    converging_s: float = 2.0

    pause_report_s: float | None = None
    """Silence after speech that reports `SpeechPaused` (the audio so far, for a speculative
    turn) before the end decision; None: never. At 0.2 s or more the paused audio is exactly
    the audio `UtteranceEnded` hands over if the user says nothing more."""

    @classmethod
    def for_eagerness(cls, eagerness: TurnEagerness | str, **overrides: float) -> EndpointConfig:
        return cls(end_silence_s=END_SILENCE_S[TurnEagerness(eagerness)], **overrides)


@dataclass(frozen=True)
class SpeechStarted:
    t: float
    """Audio time at which speech began (start of the first speech frame)."""


@dataclass(frozen=True)
class UtteranceEnded:
    start_t: float
    end_t: float
    """Audio time of the end of the last speech frame."""
    reason: str
    """`silence` (trailing silence reached) or `max_length`."""
    audio: bytes = field(repr=False)
    """16 kHz mono s16le, preroll included, trailing silence trimmed to at most 0.2 s."""
    declared_t: float = -1.0
    """Audio time at which the end was decided (end_t plus the trailing silence waited)."""

    @property
    def duration_s(self) -> float:
        return self.end_t - self.start_t


@dataclass(frozen=True)
class SpeechPaused:
    """The first silence after speech (`pause_report_s`): the turn may end here."""

    t: float
    """Audio time of the end of the last speech frame."""
    audio: bytes = field(repr=False)
    """What `UtteranceEnded.audio` will be if no speech follows (preroll, speech, the silence so
    far up to 0.2 s)."""


@dataclass(frozen=True)
class SpeechResumed:
    """Speech again after a reported pause: the pause was not the end (discard its work)."""

    t: float


EndpointEvent = SpeechStarted | UtteranceEnded | SpeechPaused | SpeechResumed


@dataclass
class Endpointer:
    config: EndpointConfig = field(default_factory=EndpointConfig)
    _in_speech: bool = False
    _speech_run_s: float = 0.0
    _barge_in_run_s: float = 0.0
    _silence_run_s: float = 0.0
    _start_t: float = 0.0
    _last_speech_end_t: float = 0.0
    _preroll: deque[bytes] = field(default_factory=deque)
    _preroll_s: float = 0.0
    _audio: list[bytes] = field(default_factory=list)
    _trailing: list[bytes] = field(default_factory=list)
    _paused: bool = False

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        self._in_speech = False
        self._speech_run_s = 0.0
        self._barge_in_run_s = 0.0
        self._silence_run_s = 0.0
        self._preroll.clear()
        self._preroll_s = 0.0
        self._audio = []
        self._trailing = []
        self._paused = False

    def process(
        self,
        prob: float,
        frame: bytes,
        t_end: float,
        talk_over_s: float | None = None,
        double_talk: bool = False,
        raw_prob: float | None = None,
        playing: bool = True,
    ) -> list[EndpointEvent]:
        """`talk_over_s`: how long the echo canceller has been removing the agent's voice from the
        microphone in the current agent turn, at the end of this frame (None: it is not running;
        the agent is silent). It selects the barge-in rule (`barge_in_min_speech_s`).
        `double_talk`: the raw microphone shows a second talker over the agent in this frame
        (`core.doubletalk`); such a frame counts for the barge-in rule before `barge_in_after_s`
        too. `raw_prob`: the VAD's probability on the raw microphone (before the canceller), given
        only for frames in which the microphone's bands show a second talker
        (`core.doubletalk.BandDoubleTalkDetector`), or on the residual of the router's own linear
        echo filter, given only for frames in which that residual rises over the filter's echo
        estimate (`core.doubletalk.linear_residual_config`): the canceller can suppress a user who
        starts over loud agent speech, so such a frame at or above `barge_in_threshold` counts for
        the barge-in rule too. `playing`: the agent's voice is in this frame's echo reference (False:
        only its echo tail); `converging_min_speech_s` holds only then."""
        frame_s = len(frame) / (BYTES_PER_SAMPLE * SAMPLE_RATE_HZ)
        cfg = self.config
        out: list[EndpointEvent] = []
        if not self._in_speech:
            self._remember_preroll(frame, frame_s)
            if prob >= cfg.threshold:
                self._speech_run_s += frame_s
            else:
                self._speech_run_s = 0.0
            barge_in = (
                cfg.barge_in_min_speech_s is not None
                and talk_over_s is not None
                and (talk_over_s >= cfg.barge_in_after_s - 1e-9 or double_talk)
            )
            raw_speech = (
                cfg.barge_in_min_speech_s is not None
                and talk_over_s is not None
                and raw_prob is not None
                and raw_prob >= cfg.barge_in_threshold
            )
            if (barge_in and prob >= cfg.barge_in_threshold) or raw_speech:
                self._barge_in_run_s += frame_s
            else:
                self._barge_in_run_s = 0.0
            fast = (
                cfg.barge_in_min_speech_s is not None
                and self._barge_in_run_s > 0.0
                and self._barge_in_run_s >= cfg.barge_in_min_speech_s - 1e-9
            )
            min_speech_s = cfg.min_speech_s
            if (
                cfg.converging_min_speech_s is not None
                and playing
                and talk_over_s is not None
                and talk_over_s < cfg.converging_s - 1e-9
            ):
                min_speech_s = max(min_speech_s, cfg.converging_min_speech_s)
            if fast or self._speech_run_s >= min_speech_s - 1e-9:
                self._in_speech = True
                self._start_t = t_end - max(self._speech_run_s, self._barge_in_run_s)
                self._barge_in_run_s = 0.0
                self._last_speech_end_t = t_end
                self._silence_run_s = 0.0
                self._audio = list(self._preroll)
                self._trailing = []
                self._preroll.clear()
                self._preroll_s = 0.0
                out.append(SpeechStarted(t=self._start_t))
            return out

        if prob < cfg.release_threshold:
            self._silence_run_s += frame_s
            self._trailing.append(frame)
        else:
            if self._paused:
                self._paused = False
                out.append(SpeechResumed(t=t_end - frame_s))
            self._silence_run_s = 0.0
            self._audio.extend(self._trailing)
            self._trailing = []
            self._audio.append(frame)
            self._last_speech_end_t = t_end

        if self._silence_run_s >= cfg.end_silence_s - 1e-9:
            out.append(self._finish("silence", t_end))
        elif (
            cfg.pause_report_s is not None
            and not self._paused
            and self._silence_run_s >= cfg.pause_report_s - 1e-9
            and self._silence_run_s > 0
        ):
            self._paused = True
            out.append(SpeechPaused(t=self._last_speech_end_t, audio=self._utterance_audio()))
        elif t_end - self._start_t >= cfg.max_utterance_s - 1e-9:
            self._audio.extend(self._trailing)
            self._trailing = []
            self._last_speech_end_t = t_end
            out.append(self._finish("max_length", t_end))
        return out

    def _remember_preroll(self, frame: bytes, frame_s: float) -> None:
        self._preroll.append(frame)
        self._preroll_s += frame_s
        while self._preroll and self._preroll_s - frame_s > self.config.preroll_s + 1e-9:
            dropped = self._preroll.popleft()
            self._preroll_s -= len(dropped) / (BYTES_PER_SAMPLE * SAMPLE_RATE_HZ)

    def _utterance_audio(self) -> bytes:
        keep_tail = int(0.2 * SAMPLE_RATE_HZ) * BYTES_PER_SAMPLE
        return b"".join(self._audio) + b"".join(self._trailing)[:keep_tail]

    def _finish(self, reason: str, t_end: float) -> UtteranceEnded:
        audio = self._utterance_audio()
        event = UtteranceEnded(
            start_t=self._start_t,
            end_t=self._last_speech_end_t,
            reason=reason,
            audio=audio,
            declared_t=t_end,
        )
        self.reset()
        return event
