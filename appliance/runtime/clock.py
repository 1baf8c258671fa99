"""Clocks. Live and real-time runs use the monotonic clock; fast headless runs use the audio
stream itself, so timers fire at the same audio instants however fast the input is read."""

from __future__ import annotations

import time


class MonotonicClock:
    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


class StreamClock:
    """Seconds of input audio consumed so far; it stands still while input is paused."""

    def __init__(self) -> None:
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds
