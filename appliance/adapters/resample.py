"""Streaming resampling and channel downmix for int16 audio, shared by the audio adapters.

Why soxr: it is a high-quality band-limited resampler (no audible aliasing when a 44.1/48 kHz
microphone is brought down to 16 kHz for the wake word and VAD models) and its `ResampleStream`
keeps the filter state across blocks, so resampling 80 ms device blocks one by one gives the same
signal as resampling the whole recording at once: no clicks or phase jumps at block edges. The
stdlib alternative, `audioop.ratecv`, is linear interpolation without an anti-alias filter, and
`audioop` is deprecated and gone in Python 3.13.

Conventions: int16 in (or float in [-1, 1] for float WAV files), int16 mono out; multi-channel
input is `[frames, channels]` and is averaged to mono before resampling (cheaper and the same
result). Equal rates pass mono int16 through untouched, so a 16 kHz mono source is bit-exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from appliance.ports import Pcm16

_INT16_SCALE = 32768.0

AudioArray = npt.NDArray[Any]
"""int16 or floating-point samples, 1-D mono or 2-D `[frames, channels]`."""


def to_int16(audio: npt.NDArray[np.floating[Any]]) -> Pcm16:
    """Float samples in [-1, 1] to int16, rounded, with clipping."""
    scaled = np.rint(np.asarray(audio, dtype=np.float32) * _INT16_SCALE)
    out: Pcm16 = np.clip(scaled, -32768, 32767).astype(np.int16)
    return out


def to_float32(audio: AudioArray) -> npt.NDArray[np.float32]:
    """int16 (or any float) samples to float32 in [-1, 1]."""
    if np.issubdtype(audio.dtype, np.floating):
        return np.asarray(audio, dtype=np.float32)
    if audio.dtype != np.int16:
        raise TypeError(f"expected int16 or float samples, got {audio.dtype}")
    return audio.astype(np.float32) / np.float32(_INT16_SCALE)


def downmix(audio: AudioArray) -> AudioArray:
    """Average `[frames, channels]` to mono `[frames]`; mono input is returned unchanged.

    int16 stays int16 (rounded integer mean, exact when the channels are equal); float stays
    float32.
    """
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"expected [frames] or [frames, channels], got shape {audio.shape}")
    if audio.shape[1] == 1:
        return audio[:, 0]
    if audio.dtype == np.int16:
        mean = audio.astype(np.int32).sum(axis=1) / audio.shape[1]
        mixed: Pcm16 = np.clip(np.rint(mean), -32768, 32767).astype(np.int16)
        return mixed
    mixed_float: npt.NDArray[np.float32] = to_float32(audio).mean(axis=1, dtype=np.float32)
    return mixed_float


class Resampler:
    """Streaming resampler to int16 mono: feed blocks with `process`, end with `flush`.

    Not thread-safe: use it from one consumer (the microphone resamples on the asyncio side,
    never in the PortAudio callback).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, *, quality: str = "HQ") -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream: Any = None
        if in_rate_hz != out_rate_hz:
            self._stream = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32", quality=quality)

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, audio: AudioArray, *, last: bool = False) -> Pcm16:
        """Resample one block (`last=True` on the final block flushes the filter tail)."""
        mono = downmix(audio)
        if self._stream is None:
            if mono.dtype == np.int16:
                return np.ascontiguousarray(mono)
            return to_int16(mono)
        out = self._stream.resample_chunk(np.ascontiguousarray(to_float32(mono)), last=last)
        result = to_int16(out)
        if last:
            self._stream.clear()
        return result

    def flush(self) -> Pcm16:
        """The samples still inside the filter; the resampler is ready for a new signal after."""
        return self.process(np.zeros(0, dtype=np.float32), last=True)

    def reset(self) -> None:
        """Forget the filter state (for a new, unrelated signal)."""
        if self._stream is not None:
            self._stream.clear()


def resample(audio: AudioArray, in_rate_hz: int, out_rate_hz: int) -> Pcm16:
    """One-shot: a whole clip to int16 mono at `out_rate_hz` (length = round(n * out / in))."""
    resampler = Resampler(in_rate_hz, out_rate_hz)
    return resampler.process(audio, last=True)


class BlockAssembler:
    """Re-cuts a stream of variable-length mono int16 pieces into blocks of `block_samples`."""

    def __init__(self, block_samples: int) -> None:
        if block_samples <= 0:
            raise ValueError("block_samples must be positive")
        self.block_samples = block_samples
        self._pieces: list[Pcm16] = []
        self._pending = 0

    @property
    def pending_samples(self) -> int:
        return self._pending

    def push(self, audio: Pcm16) -> list[Pcm16]:
        """Add samples; return every complete block now available (possibly none)."""
        if audio.size:
            self._pieces.append(audio)
            self._pending += int(audio.size)
        if self._pending < self.block_samples:
            return []
        joined = np.concatenate(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
        full = (self._pending // self.block_samples) * self.block_samples
        blocks = [joined[i : i + self.block_samples].copy() for i in range(0, full, self.block_samples)]
        rest = joined[full:]
        self._pieces = [rest.copy()] if rest.size else []
        self._pending = int(rest.size)
        return blocks

    def flush(self) -> Pcm16 | None:
        """The final partial block, if any."""
        if not self._pending:
            return None
        rest = np.concatenate(self._pieces) if len(self._pieces) > 1 else self._pieces[0]
        self._pieces = []
        self._pending = 0
        return rest.copy()
