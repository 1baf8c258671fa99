"""`appliance status` and `appliance send`: a small client of the status feed.

appliance status                 # follow the state: one line per change (Ctrl-C to stop)
appliance status --once          # print the current state and exit
appliance send mute              # any command; the reply is printed, exit 0 if ok
appliance send volume 0.4
appliance send user_message "Turn the kitchen lights off"
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from appliance.paths import client_socket_candidates

EXIT_OK = 0
EXIT_FAILURE = 1


class FeedUnavailable(Exception):
    pass


def find_socket(explicit: str | None, config_path: str | None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if config_path:
        from appliance.config import load_config

        config = load_config(config_path, log_warnings=False)
        if config.appliance.status.socket:
            return config.resolve_path(config.appliance.status.socket)
    candidates = client_socket_candidates(env)
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


def connect(path: Path, timeout_s: float = 3.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise FeedUnavailable(f"no status feed at {path}: is the appliance running?") from None
    except PermissionError:
        sock.close()
        raise FeedUnavailable(
            f"no permission for {path}: add yourself to the service's group "
            "(sudo usermod -aG appliance $USER, then log in again)"
        ) from None
    except OSError as err:
        sock.close()
        raise FeedUnavailable(f"cannot connect to {path}: {err.strerror or err}") from None
    return sock


def _lines(sock: socket.socket) -> Any:
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def command_line(command: str, args: Sequence[str]) -> dict[str, Any]:
    """`send volume 0.5` → {"cmd": "volume", "value": 0.5}; text commands join their words."""
    message: dict[str, Any] = {"cmd": command}
    if not args:
        return message
    if command == "volume":
        message["value"] = float(args[0])
    elif command == "feedback":
        if args[0] not in ("like", "dislike") or len(args) > 1:
            raise ValueError("give like or dislike")
        message["score"] = args[0]
    else:
        message["text"] = " ".join(args)
    return message


def send(path: Path, message: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    with connect(path, timeout_s) as sock:
        lines = _lines(sock)
        next(lines)  # hello
        sock.sendall((json.dumps(message) + "\n").encode("utf-8"))
        for reply in lines:
            if reply.get("type") == "reply":
                return dict(reply)
    raise FeedUnavailable("the appliance closed the connection without a reply")


def follow(path: Path, *, once: bool, as_json: bool, out: IO[str] = sys.stdout) -> int:
    with connect(path) as sock:
        sock.settimeout(None)
        for msg in _lines(sock):
            if as_json:
                print(json.dumps(msg), file=out, flush=True)
            elif msg.get("type") == "hello":
                extra = "muted, " if msg.get("muted") else ""
                volume = msg.get("volume")
                vol = f"volume {volume:g}, " if isinstance(volume, int | float) else ""
                words = ", ".join(msg.get("wake_words") or [])
                print(
                    f"{_now()} {msg.get('state')} ({extra}{vol}mode {msg.get('mode')}, {words})",
                    file=out,
                    flush=True,
                )
            elif msg.get("type") == "state":
                print(f"{_now()} {msg.get('state')}", file=out, flush=True)
            if once:
                return EXIT_OK
    print("the appliance closed the feed", file=sys.stderr)
    return EXIT_OK


def _now() -> str:
    return time.strftime("%H:%M:%S")
