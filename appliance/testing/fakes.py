"""Fakes of the ports and poll helpers, shared by the test suite (and usable by benchmarks).

Each fake implements its port in the simplest honest way: a clock that stands still, an event
sink and a speaker that record, an STT that always hears the same words, a TTS that makes
silence as long as the text would take to say. The poll helpers fail loudly: a condition that
does not come true in time is an `AssertionError` naming what was waited for, never a silent
fall-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from appliance.ports import MIC_RATE_HZ, Pcm16


class FixedClock:
    """`Clock` that stands still at `t` (move it by assigning `t`)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class RecordingEvents:
    """`EventSink` that keeps every event as a dict (`type` plus the fields)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def emit(self, type: str, **fields: Any) -> None:
        self.items.append({"type": type, **fields})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == kind]

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.items]


class RecordingSpeaker:
    """`Speaker` that plays instantly (yielding once to the event loop) and keeps what it played."""

    def __init__(self) -> None:
        self.played: list[tuple[Pcm16, int]] = []

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        self.played.append((audio, sample_rate_hz))
        await asyncio.sleep(0)
        return True

    def stop(self) -> None:
        return None

    @property
    def playing(self) -> bool:
        return False

    async def close(self) -> None:
        return None


class FixedStt:
    """`SpeechToText` that hears `text` in `language` whatever it is given."""

    def __init__(self, text: str, language: str = "en") -> None:
        self.text = text
        self.language = language

    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        return self.text, self.language


class SilentTts:
    """`TextToSpeech` that returns silence as long as the text takes to say at
    `chars_per_second` (16 kHz)."""

    def __init__(self, chars_per_second: float = 18.0) -> None:
        self.chars_per_second = chars_per_second

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        samples = int(len(text) / self.chars_per_second * MIC_RATE_HZ)
        return np.zeros(samples, dtype=np.int16), MIC_RATE_HZ


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, *, step_s: float = 0.02) -> None:
    """Poll `condition` until it holds; an `AssertionError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(step_s)


async def until(condition: Callable[[], bool], timeout_s: float, what: str, *, step_s: float = 0.01) -> None:
    """`wait_until` for a coroutine: polls while the event loop runs the work."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(step_s)


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on `host` that refuses connections while the block runs: bound here but not
    listening, so a connection gets ECONNREFUSED and no other process (a test on another
    worker) can take the port meanwhile, as it could one merely found free and closed again."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        yield int(sock.getsockname()[1])
