"""Example device tools (client-tool handlers), used by the tests and as a template for makers."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def get_battery(unit: str = "percent") -> dict[str, Any]:
    return {"level": 87, "unit": unit, "device": {"name": "kiosk-1"}}


async def set_volume(level: int) -> str:
    await asyncio.sleep(0)
    return f"volume set to {level}"


def broken() -> None:
    raise ValueError("the lamp is unplugged")


def slow() -> str:
    time.sleep(1.5)
    return "too late"


def set_timer(minutes: int) -> dict[str, Any]:
    """A kitchen timer as a device tool would report it (the example config's `set_timer`)."""
    if not 0 < int(minutes) <= 24 * 60:
        raise ValueError(f"a timer of {minutes} minutes is out of range (1 to 1440)")
    return {"status": "started", "minutes": int(minutes)}
