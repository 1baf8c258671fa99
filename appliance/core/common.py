"""Facts and requests that both core machines share (device and conversation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Timer(StrEnum):
    """Every timer a core machine arms (its value is the runtime's timer key)."""

    # the device (core/device.py)
    NO_SPEECH = "no_speech"
    # the local conversation (core/conversation.py)
    TURN_TIMEOUT = "turn_timeout"
    SOFT_TIMEOUT = "soft_timeout"
    SILENCE_END_CALL = "silence_end_call"
    MAX_DURATION = "max_duration"
    # the remote session (core/remote_session.py)
    STALL = "stall"
    METADATA = "metadata"
    BACKOFF = "backoff"
    END_HOLD = "end_hold"
    END_DEADLINE = "end_deadline"
    DRAIN = "drain"
    JITTER = "jitter"


class Event(StrEnum):
    """Event types of the public events stream that more than one module emits (names are a
    public interface: never renamed)."""

    ERROR = "error"
    AGENT_RESPONSE = "agent_response"
    AGENT_TOOL_RESPONSE = "agent_tool_response"
    CONTEXTUAL_UPDATE = "contextual_update"
    INTERRUPTION = "interruption"
    USER_MESSAGE = "user_message"
    USER_TRANSCRIPT = "user_transcript"


@dataclass(frozen=True)
class TimerFired:
    """A timer armed with `ArmTimer` reached its deadline."""

    name: Timer


@dataclass(frozen=True)
class Emit:
    """Write one event of the public events stream."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArmTimer:
    name: Timer
    deadline: float


@dataclass(frozen=True)
class CancelTimer:
    name: Timer
