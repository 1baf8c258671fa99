"""The microphone: a PortAudio input as 16 kHz mono blocks, reopened when the device comes back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.adapters.resample import BlockAssembler, Resampler
from appliance.adapters.sounddevice.backend import (
    AudioBackend,
    AudioStream,
    PortAudioBackend,
    StreamRequest,
    close_stream,
    default_backoff_s,
)
from appliance.adapters.sounddevice.devices import PA_LOCK, DeviceSpec
from appliance.ports import MIC_RATE_HZ, Pcm16

_LOGGER = logging.getLogger(__name__)

_DROP_LOG_INTERVAL_S = 10.0


class StreamState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    RECONNECTING = "reconnecting"


StateListener = Callable[[StreamState, str | None], None]


class _InputContext:
    """One opened input stream: its rate, and whether its end is expected."""

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.closing = False
        self.stream: AudioStream | None = None


class SounddeviceMicrophone:
    """A PortAudio input device as 16 kHz mono int16 blocks of `input_block_ms`, forever.

    The stream runs at the device's native rate (or `device_rate_hz`) with up to 2 channels
    (or `device_channels`); the callback queues raw blocks in a bounded queue of
    `input_queue_blocks` (full: the oldest block is dropped and counted in `dropped_blocks`),
    and `frames()` downmixes and resamples on the consumer side. When the stream fails, ends
    or stalls, the microphone closes it and reopens with backoff until the device is back;
    `frames()` just waits meanwhile. `state` and `on_state_change` expose this.
    """

    sample_rate_hz: int = MIC_RATE_HZ

    def __init__(
        self,
        device: DeviceSpec = None,
        *,
        input_block_ms: int = 80,
        input_queue_blocks: int = 32,
        device_rate_hz: int | None = None,
        device_channels: int | None = None,
        backend: AudioBackend | None = None,
        backoff_s: Callable[[int], float] = default_backoff_s,
        stall_timeout_s: float = 2.0,
    ) -> None:
        self.device = device
        self.input_block_ms = input_block_ms
        self.input_queue_blocks = max(1, input_queue_blocks)
        self.dropped_blocks = 0
        self.input_overflows = 0
        self.reconnects = 0
        self._device_rate_hz = device_rate_hz
        self._device_channels = device_channels
        self._backend: AudioBackend = backend if backend is not None else PortAudioBackend()
        self._backoff_s = backoff_s
        self._stall_timeout_s = stall_timeout_s
        self._queue: deque[tuple[int, npt.NDArray[np.int16]]] = deque()
        self._listeners: list[StateListener] = []
        self._state = StreamState.CLOSED
        self._context: _InputContext | None = None
        self._last_callback = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._data_ready: asyncio.Event | None = None
        self._failed: asyncio.Event | None = None
        self._failure: str | None = None
        self._waiting = False
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._dropped_logged = 0
        self._drop_log_at = 0.0
        # Fail fast on a wrong name or a machine without any microphone.
        self.device_info = self._backend.lookup(device, "input")

    # ----- public

    @property
    def state(self) -> StreamState:
        return self._state

    def on_state_change(self, listener: StateListener) -> None:
        """Call `listener(state, reason)` on the event loop at every state change."""
        self._listeners.append(listener)

    async def frames(self) -> AsyncIterator[Pcm16]:
        self._start()
        assert self._data_ready is not None
        block_samples = MIC_RATE_HZ * self.input_block_ms // 1000
        assembler = BlockAssembler(block_samples)
        resampler: Resampler | None = None
        while not self._closed:
            try:
                rate, block = self._queue.popleft()
            except IndexError:
                self._data_ready.clear()
                self._waiting = True
                if not self._queue:
                    await self._data_ready.wait()
                self._waiting = False
                continue
            if resampler is None or resampler.in_rate_hz != rate:
                resampler = Resampler(rate, MIC_RATE_HZ)
            for out in assembler.push(resampler.process(block)):
                yield out
            self._log_drops()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._data_ready is not None:
            self._data_ready.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await asyncio.to_thread(self._close_current)
        self._set_state(StreamState.CLOSED, None)

    # ----- PortAudio thread

    def _callback(
        self, context: _InputContext, indata: Any, _frames: int, _time_info: Any, status: Any
    ) -> None:
        try:
            self._last_callback = time.monotonic()
            if status and getattr(status, "input_overflow", False):
                self.input_overflows += 1
            self._queue.append((context.sample_rate_hz, np.array(indata, dtype=np.int16, copy=True)))
            # Drop oldest. The consumer may pop concurrently: every popleft here really drops
            # a block, so the count stays exact (at worst one block more than needed goes).
            while len(self._queue) > self.input_queue_blocks:
                try:
                    self._queue.popleft()
                except IndexError:
                    break
                self.dropped_blocks += 1
            if self._waiting:
                self._wake_threadsafe(self._wake_consumer)
        except Exception:  # never raise into PortAudio
            pass

    def _finished(self, context: _InputContext) -> None:
        if not context.closing:
            self._wake_threadsafe(lambda: self._fail("the input stream ended unexpectedly"))

    def _wake_threadsafe(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed
            loop.call_soon_threadsafe(fn)

    # ----- event loop

    def _wake_consumer(self) -> None:
        if self._data_ready is not None:
            self._data_ready.set()

    def _fail(self, reason: str) -> None:
        if self._failed is not None and not self._failed.is_set():
            self._failure = reason
            self._failed.set()

    def _start(self) -> None:
        if self._supervisor is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._data_ready = asyncio.Event()
        self._failed = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(), name="microphone-supervisor")

    def _set_state(self, state: StreamState, reason: str | None) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            try:
                listener(state, reason)
            except Exception:
                _LOGGER.exception("microphone state listener failed")

    async def _supervise(self) -> None:
        attempt = 0
        outage_started = 0.0
        while not self._closed:
            if attempt:
                await asyncio.sleep(self._backoff_s(attempt - 1))
                try:
                    await asyncio.to_thread(self._backend.refresh)
                except Exception as err:
                    _LOGGER.debug("refreshing the audio device list failed: %s", err)
            try:
                await asyncio.to_thread(self._open)
            except Exception as err:
                if self._state != StreamState.RECONNECTING:
                    outage_started = time.monotonic()
                    _LOGGER.warning("microphone unavailable, retrying until it is back: %s", err)
                    self._set_state(StreamState.RECONNECTING, str(err))
                else:
                    _LOGGER.debug("microphone still unavailable (attempt %d): %s", attempt, err)
                attempt += 1
                continue
            if attempt:
                self.reconnects += 1
                outage_s = time.monotonic() - outage_started
                _LOGGER.info("microphone back after %.1f s: %s", outage_s, self.device_info.name)
            attempt = 0
            self._set_state(StreamState.OPEN, None)
            reason = await self._watch()
            if self._closed:
                break
            try:
                await asyncio.to_thread(self._close_current)
            except Exception as err:
                _LOGGER.debug("closing the failed input stream: %s", err)
            outage_started = time.monotonic()
            _LOGGER.warning("microphone lost (%s); reconnecting", reason)
            self._set_state(StreamState.RECONNECTING, reason)
            attempt = 1

    def _open(self) -> None:
        """Worker thread: look the device up again (by name) and start a stream on it."""
        info = self._backend.lookup(self.device, "input")
        rate = self._device_rate_hz or round(info.default_sample_rate_hz)
        channels = self._device_channels or max(1, min(2, info.max_input_channels))
        context = _InputContext(rate)
        request = StreamRequest(
            device=info.index if self.device is not None else None,
            sample_rate_hz=rate,
            channels=channels,
            block_frames=max(1, round(rate * self.input_block_ms / 1000)),
            callback=lambda *args: self._callback(context, *args),
            finished_callback=lambda: self._finished(context),
        )
        stream = self._backend.open_input(request)
        context.stream = stream
        self._last_callback = time.monotonic()
        try:
            stream.start()
        except BaseException:
            context.closing = True
            close_stream(stream)
            raise
        with PA_LOCK:
            if self._closed:  # close() ran while this thread was opening
                context.closing = True
                close_stream(stream)
                return
            self.device_info = info
            self._context = context
        _LOGGER.info("microphone open: %s at %d Hz, %d channel(s)", info.name, rate, channels)

    def _close_current(self) -> None:
        with PA_LOCK:
            context, self._context = self._context, None
            if context is not None and context.stream is not None:
                context.closing = True
                close_stream(context.stream)

    async def _watch(self) -> str:
        """Until the stream fails, ends or stalls; returns why."""
        assert self._failed is not None
        self._failed.clear()
        self._failure = None
        interval = max(0.01, min(0.25, self._stall_timeout_s / 4))
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._failed.wait(), timeout=interval)
            if self._failure is not None:
                return self._failure
            silent_s = time.monotonic() - self._last_callback
            if silent_s > self._stall_timeout_s:
                return f"no audio from the device for {silent_s:.1f} s"
        return "closed"

    def _log_drops(self) -> None:
        dropped = self.dropped_blocks
        if dropped == self._dropped_logged:
            return
        now = time.monotonic()
        if now - self._drop_log_at >= _DROP_LOG_INTERVAL_S:
            _LOGGER.warning(
                "microphone queue full: dropped %d oldest block(s) (%d in total); the consumer is too slow",
                dropped - self._dropped_logged,
                dropped,
            )
            self._dropped_logged = dropped
            self._drop_log_at = now
