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
