"""The status feed: JSON lines over a local Unix socket, for LEDs, buttons and scripts.

Protocol (docs/status-feed.md): on connect the server sends a `hello` line with the current
state, then one `state` line per change. A client sends one command per line, either JSON
(`{"cmd": "volume", "value": 0.5, "id": 7}`) or plain words (`volume 0.5`,
`user_message turn the lights on`); each gets one `reply` line (`ok`, and `error` when not ok;
`id` echoed). The socket is created mode 0660: the service's group may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.logs import redact

_LOGGER = logging.getLogger(__name__)

PROTOCOL = 1
MAX_LINE = 16 * 1024
MAX_BUFFERED = 256 * 1024
"""A client that lets this much output pile up (it does not read) is disconnected."""

Executor = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class CommandRejected(Exception):
    pass


def parse_command(line: str) -> tuple[str, dict[str, Any], Any]:
    """`(command, arguments, id)` from one client line (JSON or plain words)."""
    line = line.strip()
    if line.startswith(("{", "[")):
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandRejected(f"invalid JSON: {err.msg}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            raise CommandRejected('a command is an object with "cmd": {"cmd": "mute"}')
        fields = {k: v for k, v in msg.items() if k not in ("cmd", "id")}
        return msg["cmd"], fields, msg.get("id")
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    args: dict[str, Any] = {}
    if rest:
        args = {"value": rest} if command == "volume" else {"text": rest}
    return command, args, None


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, message: dict[str, Any]) -> bool:
        if self.writer.is_closing():
            return False
        if self.writer.transport.get_write_buffer_size() > MAX_BUFFERED:
            _LOGGER.warning("status feed client does not read; disconnecting it")
            self.writer.close()
            return False
        line = json.dumps(message, ensure_ascii=False, default=str) + "\n"
        self.writer.write(redact(line).encode("utf-8"))
        return True


class StatusFeed:
    def __init__(self, path: Path, execute: Executor, hello: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._execute = execute
        self._hello = hello
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_Client] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> bool:
        """Listen; False (and a warning) if the socket cannot be created or is in use."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() or path.is_symlink():
                if not stat.S_ISSOCK(path.lstat().st_mode):
                    _LOGGER.warning("status feed: %s exists and is not a socket; feed disabled", path)
                    return False
                if await _in_use(path):
                    _LOGGER.warning("status feed: %s is in use by another appliance; feed disabled", path)
                    return False
                path.unlink()
            # Created with the process umask (0755 under systemd's 0022: only the owner may
            # connect), then opened to the group.
            self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_LINE)
            os.chmod(path, 0o660)
        except OSError as err:
            _LOGGER.warning("status feed: cannot listen on %s (%s); feed disabled", path, err)
            return False
        _LOGGER.info("status feed on %s", path)
        return True

    def broadcast(self, message: dict[str, Any]) -> None:
        for client in list(self._clients):
            if not client.send(message):
                self._clients.discard(client)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for client in list(self._clients):
            client.writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        client = _Client(reader, writer)
        self._clients.add(client)
        try:
            client.send({"type": "hello", "protocol": PROTOCOL, "version": __version__, **self._hello()})
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    client.send({"type": "reply", "ok": False, "error": f"line longer than {MAX_LINE} bytes"})
                    break
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    client.send(await self._reply(line))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(client)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _reply(self, line: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"type": "reply"}
        try:
            command, args, request_id = parse_command(line)
        except CommandRejected as err:
            return {**reply, "ok": False, "error": str(err)}
        reply["cmd"] = command
        if request_id is not None:
            reply["id"] = request_id
        try:
            extra = await self._execute(command, args)
        except Exception as err:  # the command's own message, e.g. "muted: unmute first"
            _LOGGER.info("status feed command %s refused: %s", command, err)
            return {**reply, "ok": False, "error": str(err)}
        return {**reply, "ok": True, **extra}


async def _in_use(path: Path) -> bool:
    """Does something answer on this socket (another running appliance)?"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, str(path)), 0.5)
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()
    return True
