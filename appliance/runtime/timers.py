"""One timer service for the device loop and the agent session.

Deadlines are on the appliance clock. In live and real-time runs a ticker fires them every
20 ms; in fast headless runs the audio pump fires them after each block, so they fall on the
same audio instants however fast the input is read.
"""

from __future__ import annotations

from collections.abc import Callable

from appliance.ports import Clock


class Timers:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._timers: dict[str, tuple[float, Callable[[], None]]] = {}

    def arm(self, key: str, deadline: float, callback: Callable[[], None]) -> None:
        self._timers[key] = (deadline, callback)

    def cancel(self, key: str) -> None:
        self._timers.pop(key, None)

    def cancel_prefix(self, prefix: str) -> None:
        for key in [k for k in self._timers if k.startswith(prefix)]:
            del self._timers[key]

    def deadline(self, key: str) -> float | None:
        item = self._timers.get(key)
        return item[0] if item else None

    def postpone(self, key: str, seconds: float) -> None:
        item = self._timers.get(key)
        if item is not None:
            self._timers[key] = (item[0] + seconds, item[1])

    def fire_due(self) -> None:
        now = self._clock.now()
        due = sorted((deadline, key) for key, (deadline, _) in self._timers.items() if now >= deadline)
        for _, key in due:
            item = self._timers.pop(key, None)
            if item is not None:
                item[1]()
