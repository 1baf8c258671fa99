"""What the device is doing, for LEDs and makers: a pure mapping from the events stream.

`next_status(status, event)` folds one event of the public events stream (a dict with `type`)
into a `Status`; `Status.state` is the one word a status LED shows:

    idle · listening · thinking · speaking · error · muted · offline

The activity (idle → listening → thinking → speaking → listening ... → idle) follows the
device and agent events. Three conditions override it: `muted` (the microphone is ignored),
`error` (an error event not yet followed by any activity change; a lost microphone stays in
error until `microphone_ready`) and `offline` (the remote agent cannot be reached: an `error`
with a network code, `reconnecting` or `failover`; shown while idle, cleared by `reconnected`
or when a remote conversation connects).

Two inputs are not public events: the runtime polls `AgentSession.busy` and posts
`AGENT_BUSY` / `AGENT_IDLE` on its edges, because neither agent says "I stopped speaking,
your turn" in the events stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class State(StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ERROR = "error"
    MUTED = "muted"
    OFFLINE = "offline"


ACTIVITIES = (State.IDLE, State.LISTENING, State.THINKING, State.SPEAKING)

AGENT_BUSY = "_agent_busy"
"""Pseudo-event: the session became busy (thinking or speaking)."""
AGENT_IDLE = "_agent_idle"
"""Pseudo-event: the session is no longer busy: it waits for the user."""

OFFLINE_CODES = frozenset(
    {
        "network_error",
        "remote_unreachable",
        "remote_connection_lost",
        "offline",
        "agent_unreachable",
        "connection_lost",
    }
)
"""`error` codes that mean the remote agent cannot be reached (also any `network_*` code)."""
OFFLINE_EVENTS = frozenset({"reconnecting", "failover"})
"""The remote session lost its connection / the conversation moved to the local agent."""
ONLINE_EVENTS = frozenset({"reconnected"})


def is_offline_code(code: str) -> bool:
    return code in OFFLINE_CODES or code.startswith("network_")


@dataclass(frozen=True)
class Status:
    activity: State = State.IDLE
    muted: bool = False
    offline: bool = False
    error: str | None = None
    """The code of an error not yet followed by an activity change."""
    microphone_lost: bool = False

    @property
    def state(self) -> State:
        if self.muted:
            return State.MUTED
        if self.error is not None or self.microphone_lost:
            return State.ERROR
        if self.offline and self.activity is State.IDLE:
            return State.OFFLINE
        return self.activity


# Events that set the activity unconditionally.
_ACTIVITY: dict[str, State] = {
    "appliance_started": State.IDLE,
    "appliance_stopped": State.IDLE,
    "session_ended": State.IDLE,
    "wake_word_detected": State.LISTENING,
    "session_started": State.LISTENING,
    "listening_started": State.LISTENING,
    "interruption": State.LISTENING,
    "agent_response_correction": State.LISTENING,
    "utterance_ended": State.THINKING,
    "turn_timeout": State.THINKING,
}


def _activity(current: State, kind: str) -> State:
    if kind in _ACTIVITY:
        return _ACTIVITY[kind]
    in_session = current is not State.IDLE
    if kind in ("agent_response", "audio") and in_session:
        return State.SPEAKING
    if kind == "user_transcript" and current in (State.LISTENING, State.THINKING):
        return State.THINKING
    if kind == "speech_started" and current in (State.LISTENING, State.THINKING):
        # Over the agent's voice, barge-in is reported by `interruption`, not by the VAD.
        return State.LISTENING
    if kind == AGENT_IDLE and current in (State.THINKING, State.SPEAKING):
        return State.LISTENING
    return current


def next_status(status: Status, event: Mapping[str, Any]) -> Status:
    """The status after `event` (one JSON object of the events stream, or a pseudo-event)."""
    kind = str(event.get("type", ""))
    if kind == "muted":
        return replace(status, muted=True)
    if kind == "unmuted":
        return replace(status, muted=False)
    if kind == "microphone_ready":
        return replace(status, microphone_lost=False, error=None)
    if kind == "error":
        code = str(event.get("code") or "error")
        if is_offline_code(code):
            return replace(status, offline=True)
        if event.get("stage") == "microphone":
            return replace(status, microphone_lost=True)
        return replace(status, error=code)
    if kind in OFFLINE_EVENTS:
        status = replace(status, offline=True)
    elif kind in ONLINE_EVENTS or (
        kind == "conversation_initiation_metadata" and event.get("mode") != "local"
    ):
        status = replace(status, offline=False)
    activity = _activity(status.activity, kind)
    if activity is status.activity and kind not in _ACTIVITY:
        return status
    return replace(status, activity=activity, error=None)
