"""DeviceMachine: idle → session → idle, with explicit times and no event loop."""

from __future__ import annotations

from appliance.core.device import (
    NO_SPEECH_TIMER,
    ArmTimer,
    CancelTimer,
    Chime,
    DeviceConfig,
    DeviceMachine,
    DeviceState,
    Emit,
    EndSession,
    ForwardSpeechStarted,
    ForwardUtterance,
    InputEnded,
    PlayChime,
    ResetWakeWord,
    SessionEnded,
    SetListening,
    Shutdown,
    StageFailed,
    StartSession,
    TimerFired,
    WakeWordDetected,
)
from appliance.core.endpointing import SpeechStarted, UtteranceEnded


def emitted(effects: list[object]) -> list[str]:
    return [e.type for e in effects if isinstance(e, Emit)]


def utt(start: float, end: float) -> UtteranceEnded:
    return UtteranceEnded(start_t=start, end_t=end, reason="silence", audio=b"\0\0" * 10)


def test_wake_starts_a_session_listens_and_arms_no_speech_timer() -> None:
    m = DeviceMachine(DeviceConfig(no_speech_timeout_s=8.0))
    effects = m.handle(WakeWordDetected("hey_jarvis", 0.97, 2.4), now=2.5)
    assert m.state is DeviceState.SESSION
    assert emitted(effects) == ["wake_word_detected", "session_started", "listening_started"]
    assert effects[0] == Emit("wake_word_detected", {"name": "hey_jarvis", "score": 0.97, "audio_t": 2.4})
    assert PlayChime(Chime.WAKE) in effects
    assert StartSession("hey_jarvis") in effects
    assert SetListening(True) in effects
    assert ArmTimer(NO_SPEECH_TIMER, 10.5) in effects


def test_second_wake_during_session_is_ignored() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    assert m.handle(WakeWordDetected("alexa", 0.9), now=2.0) == []


def test_speech_then_utterance_reach_the_session() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    effects = m.handle(SpeechStarted(t=1.5), now=1.6)
    assert emitted(effects) == ["speech_started"]
    assert CancelTimer(NO_SPEECH_TIMER) in effects
    assert ForwardSpeechStarted(1.5) in effects
    u = utt(1.5, 3.25)
    effects = m.handle(u, now=4.0)
    assert effects[0] == Emit("utterance_ended", {"duration_s": 1.75, "reason": "silence", "audio_t": 3.25})
    assert ForwardUtterance(u) in effects
    # a second utterance in the same session does not re-cancel the timer
    effects = m.handle(SpeechStarted(t=6.0), now=6.0)
    assert CancelTimer(NO_SPEECH_TIMER) not in effects


def test_no_speech_timeout_ends_the_session() -> None:
    m = DeviceMachine(DeviceConfig(no_speech_timeout_s=5.0))
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    effects = m.handle(TimerFired(NO_SPEECH_TIMER), now=6.0)
    assert effects[0] == EndSession("no_speech")
    assert Emit("session_ended", {"reason": "no_speech"}) in effects
    assert PlayChime(Chime.DONE) in effects
    assert ResetWakeWord() in effects
    assert SetListening(False) in effects
    assert m.state is DeviceState.IDLE
    # the agent's own SessionEnded that follows is ignored: nothing is said twice
    assert m.handle(SessionEnded("no_speech"), now=6.1) == []


def test_stale_no_speech_timer_after_speech_does_nothing() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    m.handle(SpeechStarted(t=1.2), now=1.2)
    assert m.handle(TimerFired(NO_SPEECH_TIMER), now=9.0) == []


def test_session_ended_by_agent_returns_to_idle() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    effects = m.handle(SessionEnded("end_call"), now=9.0)
    assert Emit("session_ended", {"reason": "end_call"}) in effects
    assert m.state is DeviceState.IDLE
    # the next wake word starts a new session
    assert StartSession("hey_jarvis") in m.handle(WakeWordDetected("hey_jarvis", 0.9), now=12.0)


def test_agent_failure_ends_session_with_error_chime() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    effects = m.handle(StageFailed("agent", "llm_unreachable", "connection refused", True), now=2.0)
    assert effects[0] == Emit(
        "error", {"code": "llm_unreachable", "message": "connection refused", "stage": "agent"}
    )
    assert EndSession("error") in effects
    assert PlayChime(Chime.ERROR) in effects
    assert m.state is DeviceState.IDLE


def test_retryable_device_failure_while_idle_is_reported_without_chime() -> None:
    m = DeviceMachine()
    effects = m.handle(StageFailed("microphone", "audio_device", "device gone", True), now=2.0)
    assert emitted(effects) == ["error"]
    assert not any(isinstance(e, PlayChime) for e in effects)


def test_input_end_while_idle_shuts_down() -> None:
    m = DeviceMachine()
    assert m.handle(InputEnded(), now=3.0) == [Shutdown("input_ended")]


def test_input_end_during_session_lets_the_agent_finish_first() -> None:
    m = DeviceMachine()
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=1.0)
    assert m.handle(InputEnded(), now=5.0) == [EndSession("input_ended")]
    assert m.state is DeviceState.STOPPING
    assert m.handle(WakeWordDetected("hey_jarvis", 0.9), now=5.5) == []
    effects = m.handle(SessionEnded("input_ended"), now=7.0)
    assert Emit("session_ended", {"reason": "input_ended"}) in effects
    assert effects[-1] == Shutdown("input_ended")


def test_pauses_reach_the_session_silently_and_only_in_a_session() -> None:
    """A speculative turn: the pause and the resumption go to the session, with no event."""
    from appliance.core.device import ForwardSpeechPaused, ForwardSpeechResumed
    from appliance.core.endpointing import SpeechPaused, SpeechResumed

    m = DeviceMachine()
    paused = SpeechPaused(t=2.0, audio=b"\1\0" * 160)
    assert m.handle(paused, now=2.2) == []  # idle: nothing to speculate for
    assert m.handle(SpeechResumed(t=2.5), now=2.5) == []
    m.handle(WakeWordDetected("hey_jarvis", 0.9), now=3.0)
    m.handle(SpeechStarted(t=3.5), now=3.6)
    assert m.handle(paused, now=4.2) == [ForwardSpeechPaused(paused)]
    assert m.handle(SpeechResumed(t=4.5), now=4.5) == [ForwardSpeechResumed(4.5)]
