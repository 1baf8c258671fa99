"""The maker examples against a real status feed server (no GPIO here: they print / read stdin)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.runtime.status_feed import StatusFeed
from appliance.testing.fakes import wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Server:
    """A StatusFeed on its own event loop thread, with a scripted command executor."""

    def __init__(self, path: Path) -> None:
        self.calls: list[str] = []
        self.in_session = False
        self.loop = asyncio.new_event_loop()
        self.feed = StatusFeed(path, self.execute, lambda: {"state": "idle", "muted": False})
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        assert self.run(self.feed.start())

    async def execute(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(command)
        if command == "status":
            return {"in_session": self.in_session, "muted": False}
        if command == "push_to_talk":
            self.in_session = True
            self.feed.broadcast({"type": "state", "state": "listening", "previous": "idle"})
        return {"muted": True} if command == "mute" else {}

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def broadcast(self, state: str) -> None:
        self.loop.call_soon_threadsafe(self.feed.broadcast, {"type": "state", "state": state})

    def close(self) -> None:
        self.run(self.feed.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="ex") as tmp:
        s = Server(Path(tmp) / "a.sock")
        yield s
        s.loop.call_soon_threadsafe(s.loop.stop)


def test_led_ring_prints_every_state(server: Server) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "led_ring.py"),
            "--print",
            "--once",
            "--socket",
            str(server.feed.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: server.feed.clients > 0, 10.0, "the status client connected")
    for state in ("listening", "thinking", "speaking", "idle"):
        server.broadcast(state)
    time.sleep(0.2)
    server.close()
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert [line.split()[1] for line in out.splitlines()] == [
        "idle",
        "listening",
        "thinking",
        "speaking",
        "idle",
    ]


def test_push_to_talk_on_the_keyboard(server: Server) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "push_to_talk.py"),
            "--keyboard",
            "--socket",
            str(server.feed.path),
        ],
        input="\n\nm\nq\n",
        capture_output=True,
        text=True,
        timeout=10,
    )
    server.close()
    assert proc.returncode == 0, proc.stderr
    # Enter while idle talks, Enter in a conversation stops it, m mutes
    assert server.calls == ["status", "push_to_talk", "status", "stop", "mute"]


def test_push_to_talk_says_when_the_appliance_is_not_running(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "push_to_talk.py"),
            "--keyboard",
            "--socket",
            str(tmp_path / "no.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 1 and "cannot reach the appliance" in proc.stderr
