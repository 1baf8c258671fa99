"""A simulated room echo: what the speaker plays comes back into the microphone.

`EchoMicrophone` wraps a microphone and adds the speaker's output, taken from the playback
reference (a `MonitoredSpeaker`), `delay_s` late (the devices' latency) and scaled by `gain`:
either as a pure delayed copy, or convolved with a room impulse response
(`--simulate-echo-ir FILE.wav`, `load_impulse_response`) and optionally with a sample-rate
drift between the speaker and the microphone (`--simulate-echo-drift-ppm`). With `--realtime`
headless runs this reproduces the agent hearing itself in a room, to measure how often it would
interrupt itself and how well the echo canceller removes it. It backs `--simulate-echo GAIN`.

The convolution streams with bounded memory: each block's echo is the IR applied to the last
`len(IR) + block` samples of playback (the reference history is the filter's state), computed
with one FFT per block against the IR's cached spectrum.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.core.micclock import MicClock, waited_for
from appliance.ports import MIC_RATE_HZ, Clock, Microphone, Pcm16, PlaybackReference

MAX_IR_S = 2.0
"""Longest impulse response accepted (after trimming trailing silence): RT60 0.8 s rooms need
about 1 s."""
MAX_DRIFT_PPM = 1000.0
DRIFT_RESTART_S = 3.0
"""The simulated drift starts over after the speaker has been silent this long (more than any
accepted impulse response): an output stream that restarts between two agent turns."""


class SimulationError(ValueError):
    """A bad `--simulate-echo*` argument (the CLI exits 2 with this message)."""


def load_impulse_response(path: str | Path) -> npt.NDArray[np.float64]:
    """A room impulse response WAV (mono, any rate, 8–32-bit PCM or float) as 16 kHz samples,
    trailing silence trimmed, scaled to unit energy: GAIN is then the echo's level relative to
    the playback, as for the pure delayed echo."""
    import soxr

    from appliance.adapters.wav_audio import decode_samples, read_wav_format
    from appliance.errors import AudioDeviceError

    where = f"--simulate-echo-ir: {path}"
    try:
        with open(path, "rb") as f:
            fmt = read_wav_format(f, str(path))
            if fmt.channels != 1:
                raise SimulationError(f"{where}: {fmt.channels} channels; a room impulse response is mono")
            if fmt.frames > MAX_IR_S * 4 * fmt.sample_rate_hz:
                raise SimulationError(
                    f"{where}: {fmt.duration_s:.1f} s long; at most {MAX_IR_S:g} s of response is used"
                )
            data = decode_samples(f.read(fmt.frames * fmt.frame_bytes), fmt)[:, 0]
    except OSError as err:
        raise SimulationError(f"{where}: cannot read the file ({err.strerror or err})") from None
    except AudioDeviceError as err:
        raise SimulationError(
            f"{where}: {err.message.removeprefix(f'cannot read WAV file {path}: ')}"
        ) from None
    ir = data.astype(np.float64) / (32768.0 if data.dtype == np.int16 else 1.0)
    if not np.all(np.isfinite(ir)):
        raise SimulationError(f"{where}: the samples are not finite numbers")
    if fmt.sample_rate_hz != MIC_RATE_HZ and ir.size:
        ir = np.asarray(soxr.resample(ir, fmt.sample_rate_hz, MIC_RATE_HZ, quality="VHQ"), dtype=np.float64)
    peak = float(np.max(np.abs(ir))) if ir.size else 0.0
    if peak <= 0.0:
        raise SimulationError(f"{where}: the impulse response is silent")
    # trailing silence (below -100 dB of the peak) adds cost, no echo
    last = int(np.flatnonzero(np.abs(ir) > peak * 1e-5)[-1]) + 1
    ir = ir[:last]
    if ir.size > MAX_IR_S * MIC_RATE_HZ:
        raise SimulationError(
            f"{where}: {ir.size / MIC_RATE_HZ:.1f} s of response; at most {MAX_IR_S:g} s is accepted"
        )
    normalized: npt.NDArray[np.float64] = ir / np.sqrt(np.sum(ir**2))
    return normalized


def check_drift_ppm(ppm: float) -> float:
    if not np.isfinite(ppm) or abs(ppm) > MAX_DRIFT_PPM:
        raise SimulationError(f"--simulate-echo-drift-ppm: {ppm:g} is outside ±{MAX_DRIFT_PPM:g} ppm")
    return ppm


class EchoMicrophone:
    sample_rate_hz = MIC_RATE_HZ

    def __init__(
        self,
        inner: Microphone,
        speaker: PlaybackReference,
        clock: Clock,
        gain: float,
        delay_s: float = 0.03,
        *,
        impulse_response: npt.NDArray[np.float64] | None = None,
        drift_ppm: float = 0.0,
    ) -> None:
        self._inner = inner
        self.gain = gain
        self.delay_s = delay_s
        self.dropped_blocks = 0
        self._echo = RoomEcho(speaker, impulse_response, drift_ppm)
        self._clock = clock

    async def frames(self) -> AsyncIterator[Pcm16]:
        # A room's echo is continuous: the echo timeline advances with the microphone's samples,
        # from the blocks' arrivals at their earliest (`core.micclock`: a block late behind a
        # stall did not end late; only a lasting shift, dropped blocks, moves it).
        timeline = MicClock(MIC_RATE_HZ)  # as the router's
        asked: float | None = None  # when the reader asked for this block
        async for block in self._inner.frames():
            now = self._clock.now()
            end = timeline.block_end(block.size, now, waited_for(now, asked))
            start = end - block.size / MIC_RATE_HZ - self.delay_s
            echo = self._echo.render(start, block.size) * (self.gain * 32768.0)
            mixed = np.clip(block.astype(np.float64) + echo, -32768, 32767)
            yield np.rint(mixed).astype(np.int16)
            asked = self._clock.now()

    async def close(self) -> None:
        await self._inner.close()


class RoomEcho:
    """What the microphone picks up of the playback: `render(t, n)` = the playback convolved
    with the impulse response (unit energy; a single tap if None), `n` samples from clock time
    `t`, with the speaker's clock `drift_ppm` fast (negative: slow) against the microphone's.

    The drift accumulates while the speaker keeps playing and starts over once it has been
    silent for `DRIFT_RESTART_S` (an output stream that restarts between turns), so the
    simulated echo never wanders off the reference history."""

    def __init__(
        self,
        speaker: PlaybackReference,
        impulse_response: npt.NDArray[np.float64] | None = None,
        drift_ppm: float = 0.0,
    ) -> None:
        self._speaker = speaker
        self._ir = None if impulse_response is None else np.asarray(impulse_response, dtype=np.float64)
        self._drift = check_drift_ppm(drift_ppm) * 1e-6
        self._anchor: float | None = None
        self._silent = True
        self._quiet_since: float | None = None
        self._spectra: dict[int, npt.NDArray[np.complex128]] = {}

    @property
    def taps(self) -> int:
        return 1 if self._ir is None else int(self._ir.size)

    def render(self, t_start: float, n: int) -> npt.NDArray[np.float64]:
        if n <= 0:
            return np.zeros(0, dtype=np.float64)
        if self._drift == 0.0:
            return self._convolve(t_start, n)
        anchor = t_start if self._anchor is None else self._anchor
        # speaker time for each microphone sample: it runs (1 + drift) as fast
        lead = (t_start - anchor) * self._drift
        begin = t_start + lead
        span = n * (1.0 + self._drift)
        m = int(np.ceil(span)) + 2
        grid = self._convolve(begin, m)
        if not self._silent:
            self._quiet_since = None
            self._anchor = anchor  # the drift counts from the first sound
        elif self._quiet_since is None:
            self._quiet_since = t_start
        elif t_start - self._quiet_since >= DRIFT_RESTART_S:
            self._anchor = None  # the speaker has been silent a while: the drift starts over
        positions = np.arange(n, dtype=np.float64) * (1.0 + self._drift)
        return np.interp(positions, np.arange(m, dtype=np.float64), grid)

    def _convolve(self, t_start: float, n: int) -> npt.NDArray[np.float64]:
        taps = self.taps
        x = self._speaker.reference(t_start - (taps - 1) / MIC_RATE_HZ, n + taps - 1).astype(np.float64)
        self._silent = not np.any(x)
        if self._ir is None or self._silent:
            return x if self._ir is None else np.zeros(n, dtype=np.float64)
        size = 1 << (n + taps - 2).bit_length()  # a power of two: numpy's FFT is fastest there
        spectrum = self._spectra.get(size)
        if spectrum is None:
            if len(self._spectra) >= 4:  # block sizes rarely vary; bound the cache anyway
                self._spectra.clear()
            spectrum = self._spectra[size] = np.fft.rfft(self._ir, size)
        y = np.fft.irfft(np.fft.rfft(x, size) * spectrum, size)
        out: npt.NDArray[np.float64] = y[taps - 1 : taps - 1 + n]
        return out
