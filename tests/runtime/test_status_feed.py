"""The status feed's protocol and server, the commands, and the service microphone (mute, reload)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from appliance.core.device import WakeWordDetected
from appliance.ports import Pcm16
from appliance.runtime.controls import CommandError, Controls, ServiceMicrophone
from appliance.runtime.loop import ApplianceLoop
from appliance.runtime.status_feed import CommandRejected, StatusFeed, parse_command


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="feed") as tmp:  # short: Unix socket paths are limited
        yield Path(tmp)


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ('{"cmd": "mute"}', ("mute", {}, None)),
        ('{"cmd": "volume", "value": 0.5, "id": 7}', ("volume", {"value": 0.5}, 7)),
        ("mute", ("mute", {}, None)),
        ("volume 0.4", ("volume", {"value": "0.4"}, None)),
        ("user_message turn the lights  off", ("user_message", {"text": "turn the lights  off"}, None)),
        ("  push_to_talk  ", ("push_to_talk", {}, None)),
    ],
)
def test_parse_command(line: str, parsed: tuple[str, dict[str, Any], Any]) -> None:
    assert parse_command(line) == parsed


@pytest.mark.parametrize("line", ['{"cmd": 3}', "{nope", '["mute"]'])
def test_parse_command_rejects(line: str) -> None:
    with pytest.raises(CommandRejected):
        parse_command(line)


async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(reader.readline(), 2)
    assert line, "the feed closed the connection"
    return dict(json.loads(line))


def test_the_server_greets_replies_and_broadcasts(sock_dir: Path) -> None:
    path = sock_dir / "a.sock"
    calls: list[tuple[str, dict[str, Any]]] = []

    async def execute(command: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((command, args))
        if command == "boom":
            raise CommandError("no such thing")
        return {"muted": True} if command == "mute" else {}

    async def main() -> None:
        feed = StatusFeed(path, execute, lambda: {"state": "idle", "muted": False})
        assert await feed.start()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        reader, writer = await asyncio.open_unix_connection(str(path))
        hello = await _read(reader)
        assert hello["type"] == "hello" and hello["protocol"] == 1 and hello["state"] == "idle"
        writer.write(b'{"cmd": "mute", "id": "a"}\nboom\n{bad\n')
        assert await _read(reader) == {"type": "reply", "cmd": "mute", "id": "a", "ok": True, "muted": True}
        assert await _read(reader) == {"type": "reply", "cmd": "boom", "ok": False, "error": "no such thing"}
        bad = await _read(reader)
        assert bad["ok"] is False and bad["error"].startswith("invalid JSON")
        feed.broadcast({"type": "state", "state": "listening", "previous": "idle"})
        assert (await _read(reader))["state"] == "listening"
        assert feed.clients == 1
        writer.close()
        await feed.close()
        assert not path.exists()

    asyncio.run(main())
    assert calls == [("mute", {}), ("boom", {})]


def test_a_stale_socket_is_replaced_and_a_live_one_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "a.sock"

    async def execute(command: str, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def main() -> None:
        first = StatusFeed(path, execute, dict)
        assert await first.start()
        second = StatusFeed(path, execute, dict)
        assert not await second.start()  # another appliance answers there
        await first.close()
        # a socket file left behind by a killed process
        server = await asyncio.start_unix_server(lambda r, w: None, path=str(path))
        server.close()
        await server.wait_closed()
        if not path.exists():  # some Pythons unlink on close; recreate a dead socket file
            import socket

            s = socket.socket(socket.AF_UNIX)
            s.bind(str(path))
            s.close()
        third = StatusFeed(path, execute, dict)
        assert await third.start()
        await third.close()
        path.write_text("not a socket")
        assert not await StatusFeed(path, execute, dict).start()

    asyncio.run(main())


# ----------------------------------------------------------------- commands


class FakeSession:
    busy = False

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def stop(self, reason: str) -> None:
        self.calls.append(("stop", reason))

    async def end(self, reason: str) -> None:
        self.calls.append(("end", reason))

    async def send_contextual_update(self, text: str) -> bool:
        self.calls.append(("contextual_update", text))
        return True

    def send_user_message(self, text: str) -> None:
        self.calls.append(("user_message", text))


class FakeLoop:
    def __init__(self) -> None:
        self.session: Any = None
        self.posted: list[Any] = []

    def post(self, event: Any) -> None:
        self.posted.append(event)


class VolumeSpeaker:
    volume = 1.0
    playing = False
    stops = 0

    def stop(self) -> None:
        self.stops += 1


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def emit(self, type: str, **fields: Any) -> None:
        self.events.append(type)


class BlockMicrophone:
    """Blocks 1, 2, 3, ... of 4 samples each, then the end."""

    sample_rate_hz = 16000
    dropped_blocks = 0

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    async def frames(self) -> AsyncIterator[Pcm16]:
        for i in range(1, self.n + 1):
            await asyncio.sleep(0.001)
            yield np.full(4, i, np.int16)

    async def close(self) -> None:
        self.closed = True


def controls(n_blocks: int = 3) -> tuple[Controls, FakeLoop, VolumeSpeaker, Recorder]:
    mic = ServiceMicrophone(BlockMicrophone(n_blocks))
    speaker = VolumeSpeaker()
    events = Recorder()
    c = Controls(mic, cast(Any, speaker), events)
    loop = FakeLoop()
    c.loop = cast(ApplianceLoop, loop)
    return c, loop, speaker, events


def test_commands() -> None:
    async def main() -> None:
        c, loop, speaker, events = controls()
        assert await c.execute("status", {}) == {"muted": False, "volume": 1.0, "in_session": False}
        assert await c.execute("push_to_talk", {}) == {}
        assert loop.posted == [WakeWordDetected("push_to_talk", 1.0)]
        session = FakeSession()
        loop.session = session
        with pytest.raises(CommandError, match="already running"):
            await c.execute("push_to_talk", {})
        assert await c.execute("contextual_update", {"text": "The user is in the kitchen."}) == {
            "accepted": True
        }
        assert await c.execute("user_message", {"text": "hello"}) == {}
        with pytest.raises(CommandError, match="give the text"):
            await c.execute("user_message", {})
        assert await c.execute("volume", {"value": "0.5"}) == {"volume": 0.5}
        assert speaker.volume == 0.5
        with pytest.raises(CommandError, match="outside 0–2"):
            await c.execute("volume", {"value": 3})
        with pytest.raises(CommandError, match="not a number"):
            await c.execute("volume", {"value": "loud"})
        assert await c.execute("mute", {}) == {"muted": True}
        await asyncio.sleep(0.01)
        assert ("stop", "muted") in session.calls  # muting ends the conversation at once
        with pytest.raises(CommandError, match="muted"):
            loop.session = None
            await c.execute("push_to_talk", {})
        assert await c.execute("unmute", {}) == {"muted": False}
        assert events.events == ["muted", "unmuted"]
        loop.session = session
        assert await c.execute("stop", {}) == {"stopped": True}
        await asyncio.sleep(0.01)
        assert session.calls[-1] == ("stop", "stopped")
        loop.session = None
        assert await c.execute("stop", {}) == {"stopped": False}
        with pytest.raises(CommandError, match="no conversation"):
            await c.execute("contextual_update", {"text": "x"})
        with pytest.raises(CommandError, match="unknown command"):
            await c.execute("reboot", {})
        with pytest.raises(CommandError, match="unknown command"):
            await c.execute("__init__", {})

    asyncio.run(main())


def test_a_session_without_stop_is_ended_and_the_speaker_silenced() -> None:
    class GracefulOnly:
        busy = False

        def __init__(self) -> None:
            self.ended: list[str] = []

        async def end(self, reason: str) -> None:
            self.ended.append(reason)

    async def main() -> None:
        c, loop, speaker, _ = controls()
        session = GracefulOnly()
        loop.session = session
        await c.execute("stop", {})
        await asyncio.sleep(0.01)
        assert session.ended == ["stopped"] and speaker.stops == 1
        with pytest.raises(CommandError, match="does not take user_message"):
            await c.execute("user_message", {"text": "hi"})

    asyncio.run(main())


def test_muted_microphone_delivers_silence_and_the_stream_survives_a_stopped_consumer() -> None:
    async def main() -> list[list[int]]:
        mic = ServiceMicrophone(BlockMicrophone(4))
        got: list[list[int]] = []

        async def consume(limit: int | None) -> None:
            async for block in mic.frames():
                got.append([int(x) for x in block[:1]])
                if limit is not None and len(got) >= limit:
                    await asyncio.sleep(10)  # a loop that stops while waiting on something else

        first = asyncio.create_task(consume(1))
        await asyncio.sleep(0.05)
        first.cancel()  # the first loop stops (a reload)
        await asyncio.gather(first, return_exceptions=True)
        mic.muted = True
        second = asyncio.create_task(consume(2))
        await asyncio.sleep(0.05)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        mic.muted = False
        await consume(None)  # the next loop reads on to the end
        await mic.close()
        assert cast(BlockMicrophone, mic.inner).closed
        return got

    # block 1, then block 2 silenced, then blocks 3 and 4: nothing lost, nothing repeated
    assert asyncio.run(main()) == [[1], [0], [3], [4]]


class ActiveSession(FakeSession):
    async def send_user_activity(self) -> bool:
        self.calls.append(("user_activity", ""))
        return True

    async def send_feedback(self, like: bool) -> bool:
        self.calls.append(("feedback", "like" if like else "dislike"))
        return True


@pytest.mark.parametrize(
    ("command", "args", "call"),
    [
        ("user_activity", {}, ("user_activity", "")),
        ("feedback", {"score": "like"}, ("feedback", "like")),
        ("feedback", {"text": "dislike"}, ("feedback", "dislike")),  # the plain-text form
    ],
)
def test_user_activity_and_feedback(command: str, args: dict[str, Any], call: tuple[str, str]) -> None:
    async def main() -> None:
        c, loop, _, _ = controls()
        with pytest.raises(CommandError, match="no conversation"):
            await c.execute(command, args)
        loop.session = FakeSession()
        with pytest.raises(CommandError, match="does not take"):
            await c.execute(command, args)
        session = loop.session = ActiveSession()
        assert await c.execute(command, args) == {"accepted": True}
        assert session.calls == [call]
        with pytest.raises(CommandError, match="give the score"):
            await c.execute("feedback", {"score": "meh"})

    asyncio.run(main())


def test_send_command_lines_for_feedback() -> None:
    from appliance.status_client import command_line

    assert command_line("feedback", ["like"]) == {"cmd": "feedback", "score": "like"}
    assert command_line("user_activity", []) == {"cmd": "user_activity"}
    with pytest.raises(ValueError, match="like or dislike"):
        command_line("feedback", ["great"])
