"""sd_notify without a dependency: READY, WATCHDOG, STOPPING, RELOADING and STATUS messages.

systemd (`Type=notify`) passes `$NOTIFY_SOCKET`: a datagram Unix socket, either a path or an
abstract name written with a leading `@`. Each message is one datagram of `KEY=value` lines.
`$WATCHDOG_USEC` (with `$WATCHDOG_PID`, when set, naming this process) asks for `WATCHDOG=1`
at least that often; we ping at half of it, from the event loop's ticker, so a wedged loop
stops pinging and systemd restarts the service. Outside systemd everything here is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

SEND_TIMEOUT_S = 0.5


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class SystemdNotifier:
    def __init__(self, notify_socket: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address = _address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            _LOGGER.warning("NOTIFY_SOCKET %r is not a Unix socket address; not notifying", notify_socket)
        self._sock: socket.socket | None = None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.sent = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if env is None else env
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "").strip()
        if env.get("WATCHDOG_USEC", "").strip().isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half of WatchdogSec (None: no watchdog asked for)."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send one datagram of `KEY=value` lines; False if not under systemd or it failed."""
        if self._address is None:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto(payload, self._address)
        except OSError as err:
            _LOGGER.warning("sd_notify failed (%s): %s", lines[0].split("=")[0], err)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Watchdog:
    """Pings at `interval_s` when ticked; call `tick()` from the event loop's ticker."""

    def __init__(
        self, notifier: SystemdNotifier, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._notifier = notifier
        self.interval_s = interval_s
        self._clock = clock
        self._due: float | None = None
        self.pings = 0

    def tick(self) -> None:
        now, due = self._clock(), self._due
        if due is not None and now < due - 1e-6:
            return
        # On a fixed grid (no drift by a tick per ping); after a stall, from now on.
        behind = due is None or now - due >= self.interval_s
        self._due = now + self.interval_s if due is None or behind else due + self.interval_s
        if self._notifier.watchdog():
            self.pings += 1
