"""Facts and requests that both core machines share (device and conversation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TimerFired:
    """A timer armed with `ArmTimer` reached its deadline."""

    name: str


@dataclass(frozen=True)
class Emit:
    """Write one event of the public events stream."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArmTimer:
    name: str
    deadline: float


@dataclass(frozen=True)
class CancelTimer:
    name: str
