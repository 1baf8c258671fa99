"""The status mapping: events stream → idle / listening / thinking / speaking / error / muted / offline."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.core.status import AGENT_BUSY, AGENT_IDLE, State, Status, next_status

IDLE, L, T, S = State.IDLE, State.LISTENING, State.THINKING, State.SPEAKING


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "t": 0.0, **fields}


# (activity before, event, activity after)
ACTIVITY_TABLE = [
    (IDLE, ev("appliance_started"), IDLE),
    (IDLE, ev("wake_word_detected", name="hey_jarvis"), L),
    (IDLE, ev("session_started"), L),
    (L, ev("listening_started"), L),
    (L, ev("speech_started"), L),
    (L, ev("utterance_ended"), T),
    (T, ev("user_transcript", user_transcript="hi"), T),
    (L, ev("user_transcript", user_transcript="hi"), T),  # remote: the transcript comes first
    (T, ev("turn_metrics"), T),
    (T, ev("agent_response", agent_response="Hello."), S),
    (T, ev("audio", event_id=1), S),
    (L, ev("audio", event_id=1), S),  # the first message
    (S, ev("audio", event_id=2), S),
    (S, ev("speech_started"), S),  # the VAD under the agent's voice is not barge-in
    (S, ev("user_transcript", user_transcript="x"), S),
    (S, ev("interruption"), L),
    (S, ev("agent_response_correction"), L),
    (S, ev(AGENT_IDLE), L),  # done speaking: the user's turn
    (T, ev(AGENT_IDLE), L),  # nothing to say (empty transcript)
    (L, ev(AGENT_IDLE), L),
    (L, ev(AGENT_BUSY), L),
    (IDLE, ev(AGENT_IDLE), IDLE),
    (L, ev("turn_timeout"), T),  # a re-prompt is being generated
    (S, ev("session_ended", reason="input_ended"), IDLE),
    (L, ev("session_ended", reason="no_speech"), IDLE),
    (IDLE, ev("audio", event_id=1), IDLE),  # a chime-less stray audio event outside a session
    (IDLE, ev("agent_response", agent_response="x"), IDLE),
    (IDLE, ev("speech_started"), IDLE),
    (S, ev("appliance_stopped", reason="signal_sigterm"), IDLE),
    (L, ev("ping"), L),
    (T, ev("vad_score", vad_score=0.3), T),
]


@pytest.mark.parametrize(("before", "event", "after"), ACTIVITY_TABLE)
def test_activity_table(before: State, event: dict[str, Any], after: State) -> None:
    assert next_status(Status(activity=before), event).state is after


def fold(events: list[dict[str, Any]], status: Status | None = None) -> list[str]:
    status = status or Status()
    states = [str(status.state)]
    for event in events:
        status = next_status(status, event)
        if str(status.state) != states[-1]:
            states.append(str(status.state))
    return states


def test_a_wake_and_question_goes_idle_listening_thinking_speaking_listening_idle() -> None:
    events = [
        ev("appliance_started"),
        ev("wake_word_detected"),
        ev("session_started"),
        ev("listening_started"),
        ev("conversation_initiation_metadata", mode="local"),
        ev("speech_started"),
        ev("utterance_ended"),
        ev(AGENT_BUSY),
        ev("user_transcript", user_transcript="What is the capital of France?"),
        ev("turn_metrics"),
        ev("agent_response", agent_response="Paris."),
        ev("audio", event_id=1),
        ev(AGENT_IDLE),
        ev("session_ended", reason="silence"),
    ]
    assert fold(events) == ["idle", "listening", "thinking", "speaking", "listening", "idle"]


def test_muted_overrides_everything_until_unmuted() -> None:
    status = next_status(Status(), ev("muted"))
    assert status.state is State.MUTED
    status = next_status(status, ev("error", code="internal", stage="runtime"))
    assert status.state is State.MUTED
    status = next_status(status, ev("unmuted"))
    assert status.state is State.ERROR  # the error is still unresolved
    assert next_status(status, ev("wake_word_detected")).state is State.LISTENING


def test_an_error_shows_until_the_next_activity_change() -> None:
    status = next_status(Status(activity=T), ev("error", code="stt_failed", stage="agent"))
    assert status.state is State.ERROR and status.error == "stt_failed"
    assert next_status(status, ev("turn_metrics")).state is State.ERROR  # not an activity change
    assert next_status(status, ev("session_ended", reason="error")).state is State.IDLE


def test_a_lost_microphone_stays_in_error_until_it_is_back() -> None:
    status = next_status(Status(), ev("error", code="audio_device", stage="microphone"))
    assert status.state is State.ERROR
    status = next_status(status, ev("session_ended"))
    assert status.state is State.ERROR
    assert next_status(status, ev("microphone_ready")).state is State.IDLE


@pytest.mark.parametrize(
    "event",
    [
        ev("error", code="network_error", stage="remote"),
        ev("error", code="remote_unreachable", stage="remote"),
        ev("error", code="network_dns", stage="remote"),
        ev("reconnecting", attempt=1),
        ev("failover", to="local"),
    ],
)
def test_offline_shows_while_idle_and_clears_when_a_remote_conversation_connects(
    event: dict[str, Any],
) -> None:
    status = next_status(Status(), event)
    assert status.offline and status.state is State.OFFLINE
    in_session = next_status(status, ev("session_started"))
    assert in_session.state is State.LISTENING  # a session (local fallback) shows its activity
    back = next_status(in_session, ev("session_ended"))
    assert back.state is State.OFFLINE
    still = next_status(back, ev("conversation_initiation_metadata", mode="local"))
    assert still.offline  # the local fallback does not prove the network is back
    assert not next_status(back, ev("conversation_initiation_metadata", mode="remote")).offline
    assert not next_status(back, ev("reconnected")).offline


def test_an_auth_failure_is_an_error_not_offline() -> None:
    status = next_status(Status(), ev("error", code="remote_auth_failed", stage="remote"))
    assert status.state is State.ERROR and not status.offline
