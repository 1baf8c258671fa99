"""Audio plumbing of the remote session (`session.py`), no decisions in it.

- `MicEncoder`: 16 kHz microphone frames → the negotiated `user_input_audio_format` (resampled,
  µ-law encoded if asked) → `user_audio_chunk` frames of `chunk_ms`, in an outbox that keeps at
  most `outbox_s` (the oldest chunks go first) and that `pump` sends.
- `start_now`: run a coroutine until it first waits, within the current step (a play hands its
  samples to the speaker at once, not one loop iteration later); the rest is a task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import numpy as np

from appliance.adapters.resample import Resampler
from appliance.core.elevenlabs_protocol import AudioFormat, ElevenLabsProtocol
from appliance.core.ulaw import pcm16_to_ulaw
from appliance.ports import MIC_RATE_HZ, Pcm16

ResamplerFactory = Callable[[int, int], Callable[[Pcm16], Pcm16]]
"""(in rate, out rate) → a streaming `process(block) -> block` for one signal."""


def _soxr(in_rate: int, out_rate: int) -> Callable[[Pcm16], Pcm16]:
    return Resampler(in_rate, out_rate).process


class MicEncoder:
    def __init__(self, chunk_ms: int, outbox_s: float, resampler: ResamplerFactory | None = None) -> None:
        self._chunk_ms = chunk_ms
        self._limit = max(1, int(outbox_s * 1000 / chunk_ms))
        self._factory = resampler or _soxr
        self._resample: Callable[[Pcm16], Pcm16] | None = None
        self._ulaw = False
        self._chunk_bytes = 3200
        self._pending = bytearray()
        self.outbox: deque[str] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        """Chunks dropped because the outbox was full (the connection could not keep up)."""

    def configure(self, fmt: AudioFormat) -> None:
        """A new connection's input format: what was pending is dropped."""
        self._ulaw = fmt.encoding == "ulaw"
        self._chunk_bytes = fmt.chunk_bytes(self._chunk_ms)
        self._pending = bytearray()
        self.outbox.clear()
        rate = fmt.sample_rate_hz
        self._resample = None if rate == MIC_RATE_HZ else self._factory(MIC_RATE_HZ, rate)

    def encode(self, frame: Pcm16) -> None:
        pcm = self._resample(frame) if self._resample is not None else frame
        data = np.asarray(pcm, dtype="<i2").tobytes()
        self._pending += pcm16_to_ulaw(data) if self._ulaw else data
        size = self._chunk_bytes
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            if len(self.outbox) >= self._limit:
                self.outbox.popleft()
                self.dropped += 1
            self.outbox.append(ElevenLabsProtocol.user_audio_chunk(chunk))
        self._ready.set()

    async def pump(self, send: Callable[[str], Awaitable[None]]) -> None:
        """Send the outbox as it fills, until cancelled (or `send` raises)."""
        while True:
            await self._ready.wait()
            while self.outbox:
                await send(self.outbox.popleft())
            self._ready.clear()


def start_now(coro: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run `coro` until it first waits; None if it finished, else an awaitable for the rest."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return _Started(coro, waiting_on)


class _Started:
    """Carries on a coroutine already started by hand (`yield from` semantics: what it waits on
    goes to the driving task, results and exceptions come back to it)."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        value = self._waiting_on
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation and close go to the coroutine
                try:
                    value = self._coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = self._coro.send(sent)
                except StopIteration:
                    return
