"""Microphone and speaker on PortAudio through `sounddevice`, with device lookup and recovery.

Threading rule: the PortAudio callback threads only copy samples in or out of lock-free
`collections.deque`s and wake the event loop with `loop.call_soon_threadsafe`; resampling,
logging and every decision happen on the asyncio side.

PortAudio is process-global and enumerates devices once, at initialisation. To see a USB device
that was unplugged and plugged back, the microphone's recovery re-initialises PortAudio
(`sd._terminate(); sd._initialize()`), which invalidates every open stream: `PortAudioBackend`
first closes the streams of the live speakers (they reopen on their next `play()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import sounddevice as sd

from appliance.adapters.resample import BlockAssembler, Resampler
from appliance.errors import AudioDeviceError
from appliance.ports import MIC_RATE_HZ, Pcm16

_LOGGER = logging.getLogger(__name__)

DeviceKind = Literal["input", "output"]
DeviceSpec = str | int | None

_HINT = {
    "input": "is a microphone plugged in? `appliance devices` lists what PortAudio sees",
    "output": "is a speaker plugged in? `appliance devices` lists what PortAudio sees",
}
_DROP_LOG_INTERVAL_S = 10.0

# PortAudio calls (query, open, close, re-initialise) are serialised; callbacks never take it.
_PA_LOCK = threading.RLock()


@dataclass(frozen=True)
class DeviceInfo:
    """One device as PortAudio reports it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate_hz: float
    host_api: str

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def describe(self) -> str:
        return (
            f"[{self.index}] {self.name} ({self.host_api}, {self.max_input_channels} in, "
            f"{self.max_output_channels} out, {self.default_sample_rate_hz:g} Hz)"
        )


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio sees right now (empty without a sound card)."""
    with _PA_LOCK:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
    return [_device_info(d, host_apis) for d in devices]


def _device_info(device: dict[str, Any], host_apis: Any) -> DeviceInfo:
    host_index = int(device.get("hostapi", -1))
    host_api = str(host_apis[host_index]["name"]) if 0 <= host_index < len(host_apis) else "?"
    return DeviceInfo(
        index=int(device["index"]),
        name=str(device["name"]),
        max_input_channels=int(device["max_input_channels"]),
        max_output_channels=int(device["max_output_channels"]),
        default_sample_rate_hz=float(device["default_samplerate"]),
        host_api=host_api,
    )


def resolve_device(
    spec: DeviceSpec, kind: DeviceKind, devices: Iterable[DeviceInfo] | None = None
) -> int | None:
    """The PortAudio index for a config value: None (the default device), an index, or a name.

    A name matches case-insensitively, exactly or as a substring; with several matches the
    exact one wins, else the lowest index. Raises `AudioDeviceError` listing the candidates.
    """
    candidates = [d for d in (list_devices() if devices is None else devices) if d.channels(kind) > 0]
    if not candidates:
        raise AudioDeviceError(f"no audio {kind} devices found ({_HINT[kind]})")
    if spec is None:
        return None
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        if any(d.index == spec for d in candidates):
            return spec
        raise _not_found(f"no audio {kind} device has index {spec}", kind, candidates)
    wanted = spec.strip().casefold()
    exact = [d for d in candidates if d.name.casefold() == wanted]
    matches = exact or [d for d in candidates if wanted in d.name.casefold()]
    if not matches:
        raise _not_found(f"no audio {kind} device matches {spec!r}", kind, candidates)
    if len(matches) > 1:
        _LOGGER.info(
            "audio %s device %r matches %d devices; using %s",
            kind,
            spec,
            len(matches),
            matches[0].describe(),
        )
    return matches[0].index


def _not_found(head: str, kind: DeviceKind, candidates: list[DeviceInfo]) -> AudioDeviceError:
    listing = "\n".join(f"  {d.describe()}" for d in candidates)
    return AudioDeviceError(f"{head}; available {kind} devices:\n{listing}")


def default_backoff_s(attempt: int) -> float:
    """0.5 s, doubling, at most 10 s (attempt 0 is the first retry)."""
    return float(min(0.5 * 2.0 ** min(attempt, 16), 10.0))


# --------------------------------------------------------------------------- backend


Callback = Callable[..., None]


@dataclass(frozen=True)
class StreamRequest:
    """What an adapter asks the backend to open."""

    device: int | None
    sample_rate_hz: int
    channels: int
    block_frames: int
    callback: Callback
    finished_callback: Callable[[], None]


class AudioStream(Protocol):
    """The part of `sd.InputStream` / `sd.OutputStream` the adapters use."""

    def start(self) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class AudioBackend(Protocol):
    """Device lookup and stream opening; `PortAudioBackend` in production, a fake in tests."""

    def lookup(self, spec: DeviceSpec, kind: DeviceKind) -> DeviceInfo: ...
    def open_input(self, request: StreamRequest) -> AudioStream: ...
    def open_output(self, request: StreamRequest) -> AudioStream: ...
    def refresh(self) -> None: ...


_LIVE_SPEAKERS: weakref.WeakSet[SounddeviceSpeaker] = weakref.WeakSet()


class PortAudioBackend:
    """The real thing: `sounddevice` streams of int16 samples."""

    def lookup(self, spec: DeviceSpec, kind: DeviceKind) -> DeviceInfo:
        with _PA_LOCK:
            index = resolve_device(spec, kind)
            try:
                device = sd.query_devices(index, kind=None if index is not None else kind)
            except (sd.PortAudioError, ValueError) as err:
                raise AudioDeviceError(f"no default audio {kind} device ({_HINT[kind]}): {err}") from err
            return _device_info(device, sd.query_hostapis())

    def open_input(self, request: StreamRequest) -> AudioStream:
        with _PA_LOCK:
            stream: AudioStream = sd.InputStream(
                device=request.device,
                samplerate=request.sample_rate_hz,
                channels=request.channels,
                dtype="int16",
                blocksize=request.block_frames,
                callback=request.callback,
                finished_callback=request.finished_callback,
            )
            return stream

    def open_output(self, request: StreamRequest) -> AudioStream:
        with _PA_LOCK:
            stream: AudioStream = sd.OutputStream(
                device=request.device,
                samplerate=request.sample_rate_hz,
                channels=request.channels,
                dtype="int16",
                blocksize=request.block_frames,
                callback=request.callback,
                finished_callback=request.finished_callback,
            )
            return stream

    def refresh(self) -> None:
        """Re-initialise PortAudio so it enumerates devices again.

        Every open stream dies with it, so the live speakers' streams are closed first (they
        reopen on their next `play()`); while a speaker is playing, the refresh waits for a
        later retry rather than cut it off.
        """
        with _PA_LOCK:
            speakers = list(_LIVE_SPEAKERS)
            if any(speaker.playing for speaker in speakers):
                _LOGGER.debug("not re-initialising PortAudio while the speaker is playing")
                return
            for speaker in speakers:
                speaker._release_stream("PortAudio is re-initialised")
            if sd._initialized:
                sd._terminate()
            sd._initialize()


def _close_stream(stream: AudioStream) -> None:
    with _PA_LOCK:
        try:
            stream.abort()
        finally:
            stream.close()


# --------------------------------------------------------------------------- microphone


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
            _close_stream(stream)
            raise
        with _PA_LOCK:
            if self._closed:  # close() ran while this thread was opening
                context.closing = True
                _close_stream(stream)
                return
            self.device_info = info
            self._context = context
        _LOGGER.info("microphone open: %s at %d Hz, %d channel(s)", info.name, rate, channels)

    def _close_current(self) -> None:
        with _PA_LOCK:
            context, self._context = self._context, None
            if context is not None and context.stream is not None:
                context.closing = True
                _close_stream(context.stream)

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


# --------------------------------------------------------------------------- speaker


class _Playback:
    """One `play()` call's samples at the device rate, consumed by the callback.

    `sealed` is False while the resampler may still owe this playback its filter tail: the
    callback then waits at the end of `data` (playing silence) instead of finishing it. The loop
    seals it either by appending the flushed tail (no successor came) or because the next
    `play()` continues the same resampler stream (its output starts with this tail).
    """

    __slots__ = (
        "cancelled",
        "data",
        "future",
        "generation",
        "loop",
        "low_water",
        "low_water_sent",
        "position",
        "sealed",
    )

    def __init__(
        self,
        data: npt.NDArray[np.int16],
        generation: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.data = data
        self.generation = generation
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()
        self.low_water: asyncio.Future[bool] = loop.create_future()
        self.low_water_sent = False
        self.position = 0
        self.cancelled = False
        self.sealed = False


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class SounddeviceSpeaker:
    """A PortAudio output device, playing int16 audio of any rate.

    The output stream runs continuously (silence when idle: no start-up delay or click per
    utterance) at the device's native rate (or `device_rate_hz`). `play()` resamples to that
    rate and queues the samples; the callback copies them out block by block and resolves the
    `play()` once its last sample is handed to the device. Back-to-back `play()` calls at the
    same rate (streamed TTS chunks) share one streaming resampler, so chunk edges do not click;
    the filter tail is flushed when the queue is about to run dry. `stop()` empties the queue
    and bumps a generation number that the callback checks at every block, so output is silent
    from the next block on. If the stream dies, pending `play()`s return False and the next
    `play()` reopens the device (raising `AudioDeviceError` if it is still gone).
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        *,
        output_block_ms: int = 20,
        volume: float = 1.0,
        device_rate_hz: int | None = None,
        device_channels: int | None = None,
        backend: AudioBackend | None = None,
        stall_timeout_s: float = 2.0,
    ) -> None:
        self.device = device
        self.output_block_ms = output_block_ms
        self.output_underflows = 0
        self._device_rate_hz = device_rate_hz
        self._device_channels = device_channels
        self._backend: AudioBackend = backend if backend is not None else PortAudioBackend()
        self._stall_timeout_s = stall_timeout_s
        self._volume = 1.0
        self.volume = volume
        self._queue: deque[_Playback] = deque()
        self._current: _Playback | None = None  # owned by the callback thread
        self._pending: set[_Playback] = set()
        self._generation = 0
        self._resampler: Resampler | None = None
        self._tail_owner: _Playback | None = None  # the playback the resampler still owes a tail
        self._low_water_frames = 0
        self._stream: AudioStream | None = None
        self._stream_alive: list[bool] = [False]  # per opened stream; False once it has ended
        self._last_callback = time.monotonic()
        self._closed = False
        self.sample_rate_hz = 0
        self.channels = 0
        self._open()  # raises AudioDeviceError when there is no output device
        _LIVE_SPEAKERS.add(self)

    # ----- public

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = float(min(2.0, max(0.0, value)))

    @property
    def playing(self) -> bool:
        return bool(self._pending)

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        if self._closed:
            return False
        if audio.size == 0:
            return True
        if self._stream is None or not self._stream_alive[0]:
            await asyncio.to_thread(self._reopen)
            if self._closed:
                return False
        playback = _Playback(
            self._resample(audio, sample_rate_hz), self._generation, asyncio.get_running_loop()
        )
        self._tail_owner = playback
        ahead = sum(p.data.size - p.position for p in self._pending)
        self._pending.add(playback)
        self._queue.append(playback)
        if ahead + playback.data.size <= self._low_water_frames:
            # The device reaches its end within a few blocks: no time to wait for a successor.
            self._seal(playback, flush=True)
        interval = max(0.01, min(0.25, self._stall_timeout_s / 4))
        try:
            while True:
                waiting = {playback.future} if playback.sealed else {playback.future, playback.low_water}
                done, _ = await asyncio.wait(waiting, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
                if playback.future.done():
                    return playback.future.result()
                if playback.low_water in done and not playback.sealed:
                    self._seal(playback, flush=True)
                if not done:
                    failure = self._stream_failure()
                    if failure == "stalled":
                        await asyncio.to_thread(self._release_stream, failure)
                    if failure:
                        return False
        except asyncio.CancelledError:
            playback.cancelled = True
            raise
        finally:
            playback.cancelled = playback.cancelled or not playback.future.done()
            if self._tail_owner is playback:
                self._tail_owner = None
            self._pending.discard(playback)

    def stop(self) -> None:
        self._generation += 1
        self._queue.clear()
        self._tail_owner = None
        self._resampler = None
        for playback in list(self._pending):
            _settle(playback.future, False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        _LIVE_SPEAKERS.discard(self)
        await asyncio.to_thread(self._release_stream, None)

    # ----- resampling (event loop)

    def _resample(self, audio: Pcm16, rate_hz: int) -> npt.NDArray[np.int16]:
        previous = self._tail_owner
        resampler = self._resampler
        continues = (
            previous is not None
            and not previous.sealed
            and previous.generation == self._generation
            and resampler is not None
            and resampler.in_rate_hz == rate_hz
            and resampler.out_rate_hz == self.sample_rate_hz
        )
        if continues and previous is not None and resampler is not None:
            previous.sealed = True  # its filter tail starts this playback's samples
        else:
            if previous is not None and not previous.sealed:
                self._seal(previous, flush=True)
            resampler = self._resampler = Resampler(rate_hz, self.sample_rate_hz)
        return resampler.process(audio)

    def _seal(self, playback: _Playback, *, flush: bool) -> None:
        """Give `playback` the resampler's remaining tail and let the callback finish it."""
        if flush and self._resampler is not None and self._tail_owner is playback:
            tail = self._resampler.flush()
            if tail.size:
                playback.data = np.concatenate([playback.data, tail])
        if self._tail_owner is playback:
            self._tail_owner = None
        playback.sealed = True  # after `data`: the callback reads `sealed` first

    def _stream_failure(self) -> str | None:
        if self._stream is None or not self._stream_alive[0]:
            _LOGGER.warning("speaker stream ended during playback; reopening on the next play")
            return "ended"
        silent_s = time.monotonic() - self._last_callback
        if silent_s > self._stall_timeout_s:
            _LOGGER.warning("speaker stalled (no callback for %.1f s); reopening", silent_s)
            return "stalled"
        return None

    # ----- streams

    def _reopen(self) -> None:
        with _PA_LOCK:
            if self._stream is not None and not self._stream_alive[0]:
                self._release_stream("the stream ended")
            self._open()

    def _open(self) -> None:
        with _PA_LOCK:
            if self._stream is not None or self._closed:
                return
            alive = [True]
            info = self._backend.lookup(self.device, "output")
            rate = self._device_rate_hz or round(info.default_sample_rate_hz)
            channels = self._device_channels or max(1, min(2, info.max_output_channels))
            block_frames = max(1, round(rate * self.output_block_ms / 1000))
            request = StreamRequest(
                device=info.index if self.device is not None else None,
                sample_rate_hz=rate,
                channels=channels,
                block_frames=block_frames,
                callback=self._callback,
                finished_callback=lambda: alive.__setitem__(0, False),
            )
            try:
                stream = self._backend.open_output(request)
            except sd.PortAudioError as err:
                raise AudioDeviceError(f"cannot open audio output device {info.describe()}: {err}") from err
            try:
                stream.start()
            except BaseException as err:
                _close_stream(stream)
                if isinstance(err, sd.PortAudioError):
                    raise AudioDeviceError(f"cannot start audio output {info.describe()}: {err}") from err
                raise
            self._last_callback = time.monotonic()
            self._low_water_frames = 3 * block_frames
            self._stream = stream
            self._stream_alive = alive
            self.sample_rate_hz = rate
            self.channels = channels
            self.device_info = info
            _LOGGER.info("speaker open: %s at %d Hz, %d channel(s)", info.name, rate, channels)

    def _release_stream(self, reason: str | None) -> None:
        """Any thread: close the stream; the next `play()` reopens it."""
        with _PA_LOCK:
            stream, self._stream = self._stream, None
            self._stream_alive = [False]
            if stream is None:
                return
            if reason:
                _LOGGER.info("speaker stream closed: %s", reason)
            _close_stream(stream)

    # ----- PortAudio thread

    def _callback(self, outdata: Any, frames: int, _time_info: Any, status: Any) -> None:
        try:
            self._last_callback = time.monotonic()
            if status and getattr(status, "output_underflow", False):
                self.output_underflows += 1
            filled = 0
            generation = self._generation
            volume = self._volume
            while filled < frames:
                playback = self._current
                if playback is None:
                    try:
                        playback = self._queue.popleft()
                    except IndexError:
                        break
                    self._current = playback
                if playback.generation != generation or playback.cancelled:
                    self._current = None
                    continue
                sealed = playback.sealed  # read before `data`: see `_seal`
                data = playback.data
                n = min(frames - filled, data.size - playback.position)
                if n > 0:
                    chunk = data[playback.position : playback.position + n]
                    if volume != 1.0:
                        chunk = np.clip(np.rint(chunk * volume), -32768, 32767).astype(np.int16)
                    outdata[filled : filled + n] = chunk[:, None]
                    playback.position += n
                    filled += n
                remaining = data.size - playback.position
                if not playback.low_water_sent and remaining <= self._low_water_frames:
                    playback.low_water_sent = True
                    self._call_soon(playback, _settle, playback.low_water, True)
                if remaining > 0:
                    continue
                if not sealed:
                    break  # the tail is on its way: silence until then
                self._current = None
                self._call_soon(playback, _settle, playback.future, True)
            if filled < frames:
                outdata[filled:] = 0
        except Exception:  # never raise into PortAudio; play silence instead
            with contextlib.suppress(Exception):
                outdata.fill(0)

    @staticmethod
    def _call_soon(playback: _Playback, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            playback.loop.call_soon_threadsafe(fn, *args)
