"""A stand-in for systemd's notify socket, for tests: a datagram Unix socket that records every
message (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1) with the monotonic time it arrived."""

from __future__ import annotations

import socket
import threading
import time


class FakeNotifySocket:
    def __init__(self, address: str) -> None:
        """`address`: a filesystem path, or `@name` for an abstract socket (as NOTIFY_SOCKET)."""
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fake-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def texts(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def times(self, message: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if m == message]

    def count(self, fragment: str) -> int:
        return sum(fragment in m for m in self.texts())

    def wait_for(self, fragment: str, timeout: float = 5.0, *, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.count(fragment) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {fragment!r} (x{count}) within {timeout} s: {self.texts()[-10:]}")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self._sock.close()
