#!/usr/bin/env python3
"""Show the appliance's state on an LED ring (or print it).

    python3 examples/led_ring.py                       # APA102 ring if present, else an RGB LED, else print
    python3 examples/led_ring.py --rgb-pins 5 6 13     # a common-cathode RGB LED on GPIO 5/6/13 (gpiozero)
    python3 examples/led_ring.py --print               # just print the states

Reads the status feed (docs/status-feed.md) and reconnects when the appliance restarts. Only the
standard library is needed; `apa102-pi` (ReSpeaker 2-Mic / 4-Mic HAT rings) or `gpiozero` are
used when installed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

COLOURS: dict[str, tuple[int, int, int]] = {
    "idle": (0, 0, 0),
    "listening": (0, 0, 255),
    "thinking": (0, 160, 160),
    "speaking": (0, 200, 0),
    "error": (255, 0, 0),
    "muted": (255, 80, 0),
    "offline": (120, 0, 160),
}


def default_socket() -> Path:
    candidates = []
    if os.environ.get("RUNTIME_DIRECTORY"):
        candidates.append(Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "appliance.sock")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidates += [cache / "appliance" / "appliance.sock", Path("/run/appliance/appliance.sock")]
    return next((p for p in candidates if p.exists()), candidates[-1])


class Display(Protocol):
    def show(self, state: str) -> None: ...


class Printer:
    def show(self, state: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {state}", flush=True)


class Apa102Ring:
    """An APA102 ring (the ReSpeaker HATs' LEDs) through apa102-pi."""

    def __init__(self, leds: int) -> None:
        from apa102_pi.driver import apa102  # type: ignore[import-not-found]

        self.leds = leds
        self.strip = apa102.APA102(num_led=leds, global_brightness=8)

    def show(self, state: str) -> None:
        r, g, b = COLOURS.get(state, (0, 0, 0))
        for i in range(self.leds):
            self.strip.set_pixel(i, r, g, b)
        self.strip.show()


class RgbLed:
    """One RGB LED on three GPIO pins through gpiozero."""

    def __init__(self, pins: list[int]) -> None:
        from gpiozero import RGBLED  # type: ignore[import-not-found]

        self.led = RGBLED(*pins)

    def show(self, state: str) -> None:
        r, g, b = COLOURS.get(state, (0, 0, 0))
        if state == "thinking":
            self.led.pulse(on_color=(r / 255, g / 255, b / 255), fade_in_time=0.4, fade_out_time=0.4)
        else:
            self.led.color = (r / 255, g / 255, b / 255)


def make_display(args: argparse.Namespace) -> list[Display]:
    displays: list[Display] = [Printer()]
    if args.print:
        return displays
    if args.rgb_pins:
        try:
            return [*displays, RgbLed(args.rgb_pins)]
        except Exception as err:  # no gpiozero, not a Pi, pins busy
            print(f"no RGB LED ({err}); printing only", file=sys.stderr)
            return displays
    try:
        return [*displays, Apa102Ring(args.leds)]
    except Exception as err:  # no apa102-pi, no SPI
        print(f"no APA102 ring ({err}); printing only", file=sys.stderr)
        return displays


def follow(path: Path, displays: list[Display]) -> None:
    """Until the feed closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        buf = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                message: dict[str, Any] = json.loads(line)
                if message.get("type") in ("hello", "state"):
                    for display in displays:
                        display.show(str(message["state"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", type=Path, help="the status feed (default: the running appliance's)")
    p.add_argument(
        "--leds", type=int, default=3, help="APA102 LEDs on the ring (3 on the 2-Mic HAT, 12 on the 4-Mic)"
    )
    p.add_argument(
        "--rgb-pins", type=int, nargs=3, metavar=("R", "G", "B"), help="an RGB LED on these GPIO pins"
    )
    p.add_argument("--print", action="store_true", help="only print the states")
    p.add_argument("--once", action="store_true", help="exit when the feed closes instead of reconnecting")
    args = p.parse_args(argv)
    displays = make_display(args)
    while True:
        path = args.socket or default_socket()
        try:
            follow(path, displays)
        except OSError as err:
            if args.once:
                print(f"cannot read {path}: {err}", file=sys.stderr)
                return 1
            print(f"waiting for the appliance ({path}: {err.strerror or err})", file=sys.stderr)
        except KeyboardInterrupt:
            return 0
        if args.once:
            return 0
        for display in displays[1:]:
            display.show("idle")
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
