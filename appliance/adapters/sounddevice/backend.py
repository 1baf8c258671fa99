"""Opening PortAudio streams (`PortAudioBackend`, or a fake in tests) and re-initialising it."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sounddevice as sd

from appliance.adapters.sounddevice.devices import (
    HINT,
    PA_LOCK,
    DeviceInfo,
    DeviceKind,
    DeviceSpec,
    device_info,
    resolve_device,
)
from appliance.errors import AudioDeviceError

_LOGGER = logging.getLogger(__name__)


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


class _LiveSpeaker(Protocol):
    @property
    def playing(self) -> bool: ...
    def _release_stream(self, reason: str) -> None: ...


_LIVE_SPEAKERS: weakref.WeakSet[_LiveSpeaker] = weakref.WeakSet()


def register_live_speaker(speaker: _LiveSpeaker) -> None:
    """A speaker whose stream must be closed before PortAudio is re-initialised."""
    _LIVE_SPEAKERS.add(speaker)


def unregister_live_speaker(speaker: _LiveSpeaker) -> None:
    _LIVE_SPEAKERS.discard(speaker)


class PortAudioBackend:
    """The real thing: `sounddevice` streams of int16 samples."""

    def lookup(self, spec: DeviceSpec, kind: DeviceKind) -> DeviceInfo:
        with PA_LOCK:
            index = resolve_device(spec, kind)
            try:
                device = sd.query_devices(index, kind=None if index is not None else kind)
            except (sd.PortAudioError, ValueError) as err:
                raise AudioDeviceError(f"no default audio {kind} device ({HINT[kind]}): {err}") from err
            return device_info(device, sd.query_hostapis())

    def open_input(self, request: StreamRequest) -> AudioStream:
        return self._open(sd.InputStream, request)

    def open_output(self, request: StreamRequest) -> AudioStream:
        return self._open(sd.OutputStream, request)

    @staticmethod
    def _open(kind: Callable[..., AudioStream], request: StreamRequest) -> AudioStream:
        with PA_LOCK:
            return kind(
                device=request.device,
                samplerate=request.sample_rate_hz,
                channels=request.channels,
                dtype="int16",
                blocksize=request.block_frames,
                callback=request.callback,
                finished_callback=request.finished_callback,
            )

    def refresh(self) -> None:
        """Re-initialise PortAudio so it enumerates devices again.

        Every open stream dies with it, so the live speakers' streams are closed first (they
        reopen on their next `play()`); while a speaker is playing, the refresh waits for a
        later retry rather than cut it off.
        """
        with PA_LOCK:
            speakers = list(_LIVE_SPEAKERS)
            if any(speaker.playing for speaker in speakers):
                _LOGGER.debug("not re-initialising PortAudio while the speaker is playing")
                return
            for speaker in speakers:
                speaker._release_stream("PortAudio is re-initialised")
            if sd._initialized:
                sd._terminate()
            sd._initialize()


def close_stream(stream: AudioStream) -> None:
    with PA_LOCK:
        try:
            stream.abort()
        finally:
            stream.close()
