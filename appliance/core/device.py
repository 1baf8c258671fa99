"""The device state machine: idle (wake word only) → session (VAD + agent) → idle.

`DeviceMachine.handle(event, now)` returns effects; it never waits, sleeps or reads a clock.
What the agent does inside a session (turns, timeouts, replies) belongs to the agent; this
machine owns the device side: when a session starts and ends, chimes, the no-speech timeout
after the wake word, routing user speech to the agent, and what the events stream says.

Events are facts in the past tense; effects are requests in the imperative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

# re-exported: each machine's effects and events read as one vocabulary
from appliance.core.common import ArmTimer as ArmTimer
from appliance.core.common import CancelTimer as CancelTimer
from appliance.core.common import Emit as Emit
from appliance.core.common import Event, Timer
from appliance.core.common import TimerFired as TimerFired
from appliance.core.endpointing import SpeechPaused, SpeechResumed, SpeechStarted, UtteranceEnded

MAIN_AGENT = "main"
"""The agent of the wake words that do not bring their own (`appliance.wake_words.words[].agent`)."""


class DeviceState(StrEnum):
    IDLE = "idle"
    SESSION = "session"
    STOPPING = "stopping"


class Chime(StrEnum):
    WAKE = "wake"
    DONE = "done"
    ERROR = "error"


NO_SPEECH_TIMER = Timer.NO_SPEECH
ERROR_REASONS = frozenset({"error", "network_error", "remote_error", "remote_rejected"})
"""Session end reasons the user hears as the error chime (the others get the done chime)."""


# ---------------------------------------------------------------- events (facts)
@dataclass(frozen=True)
class WakeWordDetected:
    name: str
    score: float
    audio_t: float = 0.0
    """Audio time at the end of the frame that fired."""


@dataclass(frozen=True)
class SessionEnded:
    """The agent ended the session by itself (end_call, silence, remote close...)."""

    reason: str


@dataclass(frozen=True)
class StageFailed:
    stage: str
    code: str
    message: str
    retryable: bool = False


@dataclass(frozen=True)
class InputEnded:
    """The audio input reached its end (headless runs) or the service is stopping."""

    reason: str = "input_ended"


DeviceEvent = (
    WakeWordDetected
    | SpeechStarted
    | UtteranceEnded
    | SessionEnded
    | TimerFired
    | StageFailed
    | InputEnded
    | SpeechPaused
    | SpeechResumed
)


# ---------------------------------------------------------------- effects (requests)
@dataclass(frozen=True)
class PlayChime:
    chime: Chime


@dataclass(frozen=True)
class StartSession:
    wake_word: str


@dataclass(frozen=True)
class EndSession:
    reason: str


@dataclass(frozen=True)
class ForwardSpeechStarted:
    t: float


@dataclass(frozen=True)
class ForwardUtterance:
    utterance: UtteranceEnded


@dataclass(frozen=True)
class ForwardSpeechPaused:
    """A speculative turn may start on this audio (no event: nothing is decided yet)."""

    paused: SpeechPaused


@dataclass(frozen=True)
class ForwardSpeechResumed:
    """The pause was not the end: the speculative work is discarded without a trace."""

    t: float


@dataclass(frozen=True)
class SetListening:
    """True: run VAD/endpointing on the microphone. False: run only the wake word."""

    on: bool


@dataclass(frozen=True)
class ResetWakeWord:
    pass


@dataclass(frozen=True)
class Shutdown:
    reason: str


Effect = (
    Emit
    | PlayChime
    | StartSession
    | EndSession
    | ForwardSpeechStarted
    | ForwardUtterance
    | ForwardSpeechPaused
    | ForwardSpeechResumed
    | SetListening
    | ArmTimer
    | CancelTimer
    | ResetWakeWord
    | Shutdown
)


@dataclass(frozen=True)
class DeviceConfig:
    no_speech_timeout_s: float = 8.0
    """After the wake word, end the session if the user says nothing for this long."""
    agents: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """Wake word → (agent name, mode) of the agent it opens, for `session_started`; a word not
    listed opens the main agent (`MAIN_AGENT`, `main_mode`)."""
    main_mode: str = "local"


@dataclass
class DeviceMachine:
    config: DeviceConfig = field(default_factory=DeviceConfig)
    state: DeviceState = DeviceState.IDLE
    heard_speech: bool = False
    wake_word: str | None = None

    def handle(self, event: DeviceEvent, now: float) -> list[Effect]:
        match event:
            case WakeWordDetected():
                return self._on_wake(event, now)
            case SpeechStarted():
                return self._on_speech_started(event)
            case UtteranceEnded():
                return self._on_utterance(event)
            case SessionEnded():
                return self._on_session_ended(event.reason)
            case TimerFired():
                return self._on_timer(event)
            case StageFailed():
                return self._on_failure(event)
            case InputEnded():
                return self._on_input_ended(event)
            case SpeechPaused():
                return [ForwardSpeechPaused(event)] if self.state is DeviceState.SESSION else []
            case SpeechResumed():
                return [ForwardSpeechResumed(event.t)] if self.state is DeviceState.SESSION else []
            case _:
                assert_never(event)

    # ------------------------------------------------------------ handlers
    def _on_wake(self, event: WakeWordDetected, now: float) -> list[Effect]:
        if self.state is not DeviceState.IDLE:
            return []
        self.state = DeviceState.SESSION
        self.heard_speech = False
        self.wake_word = event.name
        agent, mode = self.config.agents.get(event.name, (MAIN_AGENT, self.config.main_mode))
        return [
            Emit(
                "wake_word_detected",
                {"name": event.name, "score": round(event.score, 4), "audio_t": round(event.audio_t, 3)},
            ),
            PlayChime(Chime.WAKE),
            StartSession(event.name),
            Emit("session_started", {"wake_word": event.name, "agent": agent, "agent_mode": mode}),
            SetListening(True),
            Emit("listening_started"),
            ArmTimer(NO_SPEECH_TIMER, now + self.config.no_speech_timeout_s),
        ]

    def _on_speech_started(self, event: SpeechStarted) -> list[Effect]:
        if self.state is not DeviceState.SESSION:
            return []
        effects: list[Effect] = [Emit("speech_started", {"audio_t": round(event.t, 3)})]
        if not self.heard_speech:
            self.heard_speech = True
            effects.append(CancelTimer(NO_SPEECH_TIMER))
        effects.append(ForwardSpeechStarted(event.t))
        return effects

    def _on_utterance(self, event: UtteranceEnded) -> list[Effect]:
        if self.state is not DeviceState.SESSION:
            return []
        return [
            Emit(
                "utterance_ended",
                {
                    "duration_s": round(event.duration_s, 3),
                    "reason": event.reason,
                    "audio_t": round(event.end_t, 3),
                },
            ),
            ForwardUtterance(event),
        ]

    def _on_timer(self, event: TimerFired) -> list[Effect]:
        if event.name == NO_SPEECH_TIMER and self.state is DeviceState.SESSION and not self.heard_speech:
            return [EndSession("no_speech"), *self._close_session("no_speech")]
        return []

    def _on_session_ended(self, reason: str) -> list[Effect]:
        if self.state is DeviceState.IDLE:
            return []
        stopping = self.state is DeviceState.STOPPING
        effects = self._close_session(reason)
        if stopping:
            self.state = DeviceState.STOPPING
            effects.append(Shutdown(reason))
        return effects

    def _close_session(self, reason: str) -> list[Effect]:
        self.state = DeviceState.IDLE
        self.wake_word = None
        chime = Chime.ERROR if reason in ERROR_REASONS else Chime.DONE
        return [
            CancelTimer(NO_SPEECH_TIMER),
            SetListening(False),
            Emit("session_ended", {"reason": reason}),
            PlayChime(chime),
            ResetWakeWord(),
        ]

    def _on_failure(self, event: StageFailed) -> list[Effect]:
        effects: list[Effect] = [
            Emit(Event.ERROR, {"code": event.code, "message": event.message, "stage": event.stage}),
        ]
        if self.state is DeviceState.SESSION and event.stage == "agent":
            effects += [EndSession("error"), *self._close_session("error")]
        elif not event.retryable:
            effects.append(PlayChime(Chime.ERROR))
        return effects

    def _on_input_ended(self, event: InputEnded) -> list[Effect]:
        if self.state is DeviceState.SESSION:
            # Let the agent finish what it is saying; the runtime ends the session once it
            # is quiet, and SessionEnded then completes the shutdown.
            self.state = DeviceState.STOPPING
            return [EndSession(event.reason)]
        if self.state is DeviceState.STOPPING:
            return []
        self.state = DeviceState.STOPPING
        return [Shutdown(event.reason)]
