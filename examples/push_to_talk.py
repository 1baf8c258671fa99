#!/usr/bin/env python3
"""A push-to-talk button for the appliance: press to talk, press again to stop.

    python3 examples/push_to_talk.py               # GPIO 17 (the ReSpeaker 2-Mic HAT's button)
                                                    # if gpiozero works, else Enter on the keyboard
    python3 examples/push_to_talk.py --pin 27
    python3 examples/push_to_talk.py --keyboard     # Enter = talk/stop, "m" + Enter = mute/unmute, "q" = quit

Talks to the status feed (docs/status-feed.md): `push_to_talk` when the appliance is idle,
`stop` during a conversation. Only the standard library is needed; gpiozero when installed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any


def default_socket() -> Path:
    candidates = []
    if os.environ.get("RUNTIME_DIRECTORY"):
        candidates.append(Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "appliance.sock")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidates += [cache / "appliance" / "appliance.sock", Path("/run/appliance/appliance.sock")]
    return next((p for p in candidates if p.exists()), candidates[-1])


class Feed:
    """One connection: keeps the latest state, sends commands, returns their replies."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        hello = self._read()
        self.state = str(hello.get("state"))
        self.muted = bool(hello.get("muted"))
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("the appliance closed the feed")
        return dict(json.loads(line))

    def command(self, cmd: str) -> dict[str, Any]:
        with self._lock:
            self.file.write(json.dumps({"cmd": cmd}).encode() + b"\n")
            self.file.flush()
            while True:
                message = self._read()
                if message.get("type") == "state":
                    self.state = str(message["state"])
                elif message.get("type") == "reply":
                    if "muted" in message:
                        self.muted = bool(message["muted"])
                    return message

    def press(self) -> None:
        """Talk when idle, stop during a conversation."""
        status = self.command("status")
        reply = self.command("stop" if status.get("in_session") else "push_to_talk")
        print(json.dumps(reply), flush=True)

    def toggle_mute(self) -> None:
        print(json.dumps(self.command("unmute" if self.muted else "mute")), flush=True)


def run_button(feed: Feed, pin: int) -> None:
    from gpiozero import Button  # type: ignore[import-not-found]

    button = Button(pin)
    print(f"press the button on GPIO {pin} to talk (Ctrl-C to quit)", file=sys.stderr)
    while True:
        button.wait_for_press()
        feed.press()
        button.wait_for_release()


def run_keyboard(feed: Feed) -> None:
    print("Enter: talk / stop · m: mute / unmute · q: quit", file=sys.stderr)
    for line in sys.stdin:
        key = line.strip().lower()
        if key == "q":
            return
        if key == "m":
            feed.toggle_mute()
        else:
            feed.press()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, help="the status feed (default: the running appliance's)")
    p.add_argument("--pin", type=int, default=17, help="the button's GPIO (BCM numbering; default 17)")
    p.add_argument("--keyboard", action="store_true", help="use Enter on the keyboard, not a GPIO button")
    args = p.parse_args(argv)
    path = args.socket or default_socket()
    try:
        feed = Feed(path)
    except OSError as err:
        print(f"cannot reach the appliance at {path}: {err.strerror or err}", file=sys.stderr)
        return 1
    try:
        if not args.keyboard:
            try:
                run_button(feed, args.pin)
                return 0
            except Exception as err:  # no gpiozero, not a Pi, no GPIO access (gpiozero raises its own)
                print(f"no GPIO button ({err}); using the keyboard", file=sys.stderr)
        run_keyboard(feed)
    except KeyboardInterrupt:
        pass
    except ConnectionError as err:
        print(str(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
