"""Pure helpers for streaming a remote agent: the playout (jitter) buffer and reconnect backoff.

`JitterBuffer` holds the start of each burst of agent audio until `target_s` of it is buffered
or the first chunk has waited `max_wait_s`, then lets every chunk through at once: the device's
own output queue is the buffer from there on. A burst starts at the first chunk and again
after every underrun (the speaker ran dry mid-response), so a late network packet costs one
re-buffer instead of a stutter per packet. Agent audio chunks are usually longer than the
target, so in the common case nothing is held at all.

`Backoff.delay(attempt, rng)` is exponential with jitter; `rng` returns a float in [0, 1).
Time comes in as `now` (seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class JitterBuffer(Generic[T]):
    def __init__(self, target_s: float = 0.06, max_wait_s: float = 0.06) -> None:
        if target_s < 0 or max_wait_s < 0:
            raise ValueError("target_s and max_wait_s must not be negative")
        self.target_s = target_s
        self.max_wait_s = max_wait_s
        self._held: deque[tuple[T, float]] = deque()
        self._held_s = 0.0
        self._first_at: float | None = None
        self._flowing = False
        self.bursts = 0

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def flowing(self) -> bool:
        return self._flowing

    @property
    def deadline(self) -> float | None:
        """When the held chunks are released even if the target is not reached."""
        return None if self._first_at is None else self._first_at + self.max_wait_s

    def push(self, item: T, duration_s: float, now: float) -> list[T]:
        """Add a chunk; returns the chunks to hand to the speaker now, in order."""
        if self._flowing:
            return [item]
        if self._first_at is None:
            self._first_at = now
            self.bursts += 1
        self._held.append((item, duration_s))
        self._held_s += duration_s
        if self._held_s >= self.target_s or now >= self._first_at + self.max_wait_s:
            return self._release()
        return []

    def due(self, now: float) -> list[T]:
        """Chunks whose wait is over (call at `deadline`)."""
        if self._first_at is not None and now >= self._first_at + self.max_wait_s:
            return self._release()
        return []

    def underrun(self) -> None:
        """The speaker has nothing left: the next chunk starts a new burst."""
        if not self._held:
            self._flowing = False

    def clear(self) -> int:
        """Drop everything held (interruption); the next chunk starts a new burst."""
        dropped = len(self._held)
        self._held.clear()
        self._held_s = 0.0
        self._first_at = None
        self._flowing = False
        return dropped

    def _release(self) -> list[T]:
        out = [item for item, _ in self._held]
        self._held.clear()
        self._held_s = 0.0
        self._first_at = None
        self._flowing = True
        return out


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 8.0
    jitter: float = 0.5
    """Fraction of the delay that is random: the delay is in [raw × (1 − jitter), raw]."""

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before reconnect attempt `attempt` (1, 2, ...)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        raw = min(self.max_s, self.base_s * self.factor ** (attempt - 1))
        return raw * (1.0 - self.jitter + self.jitter * min(max(rng(), 0.0), 1.0))
