"""Is the device loop making progress? The systemd watchdog's decision (pure, explicit times).

A loop can be alive (its ticker runs) and still wedged: the event consumer died, one audio
block never finishes processing, a conversation never ends, a stop never completes. The
runtime reports facts with the time they happened; `problem(now)` says what is stuck, or None.
The watchdog pings only while it is None, so systemd restarts a wedged device.

Waiting for the microphone is not a lack of progress (a device microphone that was unplugged
reconnects by itself), and neither is an idle device: only work that was started and does not
finish within its bound counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressLimits:
    event_s: float = 10.0
    """An event waits this long for the consumer (handling one takes microseconds)."""
    block_s: float = 10.0
    """One microphone block is being processed this long (the models take milliseconds)."""
    session_s: float = 630.0
    """A conversation lasts this long: its own bound (`max_duration_seconds`) plus a margin."""
    stop_s: float = 10.0
    """A requested stop has not completed after this long (it takes under 2 s)."""


@dataclass
class ProgressMonitor:
    limits: ProgressLimits = field(default_factory=ProgressLimits)
    _pending: int = 0
    _waiting_since: float | None = None
    _block_since: float | None = None
    _sessions: dict[int, float] = field(default_factory=dict)
    _stop_since: float | None = None
    _dead: str | None = None

    # ------------------------------------------------------------ facts
    def event_posted(self, now: float) -> None:
        if self._pending == 0:
            self._waiting_since = now
        self._pending += 1

    def event_taken(self, now: float) -> None:
        self._pending = max(0, self._pending - 1)
        self._waiting_since = now if self._pending else None

    def block_started(self, now: float) -> None:
        self._block_since = now

    def block_done(self, now: float) -> None:
        self._block_since = None

    def session_started(self, key: int, now: float) -> None:
        self._sessions[key] = now

    def session_ended(self, key: int, now: float) -> None:
        self._sessions.pop(key, None)

    def stop_requested(self, now: float) -> None:
        if self._stop_since is None:
            self._stop_since = now

    def task_died(self, what: str) -> None:
        """A task that must run for the loop's whole life ended (`what` says which)."""
        if self._dead is None:
            self._dead = what

    # ------------------------------------------------------------ decision
    def problem(self, now: float) -> str | None:
        """What is stuck at `now`, or None while the loop makes progress."""
        limits = self.limits
        if self._dead is not None:
            return f"{self._dead} stopped"
        since = self._waiting_since
        if since is not None and now - since > limits.event_s:
            return f"{self._pending} event(s) not handled for {now - since:.0f} s"
        if self._block_since is not None and now - self._block_since > limits.block_s:
            return f"one microphone block in processing for {now - self._block_since:.0f} s"
        if self._sessions:
            oldest = min(self._sessions.values())
            if now - oldest > limits.session_s:
                return f"a conversation running for {now - oldest:.0f} s (bound {limits.session_s:.0f} s)"
        if self._stop_since is not None and now - self._stop_since > limits.stop_s:
            return f"a stop requested {now - self._stop_since:.0f} s ago has not completed"
        return None
