"""The speaker: a continuous PortAudio output stream fed by `play()` calls of any rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import sounddevice as sd

from appliance.adapters.resample import Resampler
from appliance.adapters.sounddevice.backend import (
    AudioBackend,
    AudioStream,
    PortAudioBackend,
    StreamRequest,
    close_stream,
    register_live_speaker,
    unregister_live_speaker,
)
from appliance.adapters.sounddevice.devices import PA_LOCK, DeviceSpec
from appliance.errors import AudioDeviceError
from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)


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
        register_live_speaker(self)

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
        unregister_live_speaker(self)
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
        with PA_LOCK:
            if self._stream is not None and not self._stream_alive[0]:
                self._release_stream("the stream ended")
            self._open()

    def _open(self) -> None:
        with PA_LOCK:
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
                close_stream(stream)
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
        with PA_LOCK:
            stream, self._stream = self._stream, None
            self._stream_alive = [False]
            if stream is None:
                return
            if reason:
                _LOGGER.info("speaker stream closed: %s", reason)
            close_stream(stream)

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
