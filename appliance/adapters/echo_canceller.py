"""Acoustic echo cancellation with the WebRTC audio processing module (AEC3), as packaged by
livekit (`livekit.rtc.AudioProcessingModule`).

While the agent speaks (and for the echo tail after), every microphone block is split into
10 ms frames (160 samples at 16 kHz, what the module works on); for each frame, the playback
over the same 10 ms goes in as the reverse (far-end) stream first, then the microphone frame
is processed in place. AEC3 brings what the issue asks for:
- delay estimation: it is delay-agnostic (matched filters find the render-to-capture delay,
  so the speaker's output latency and the acoustic path need no calibration; the stream-delay
  hint is only a hint) and re-aligns when the delay changes, which is how it tolerates clock
  drift between the output and input devices;
- an adaptive linear filter (a coarse and a refined one, double-talk safe step control) and a
  residual echo suppressor that models the room's reverberation tail;
- the high-pass filter the module recommends in front of the canceller;
- after it, `ResidualEchoSuppressor`: the late reverberation of a large room that AEC3's short
  filter leaves (output one 10 ms hop late).

Where there is no echo at all (headphones, a speaker across the house, a headless run without a
simulated echo), AEC3 still assumes one until its transparent mode sets in (about 9 s of
playback) and suppresses the user's voice meanwhile, so they could not barge in. `EchoPathCheck`
guards that: it accumulates the cross-correlation of the microphone with the last 0.5 s of
playback; while the best lag explains almost nothing of the microphone (correlation < 0.2, after
1 s of playback), the block passes unchanged. Any echo path scores 0.6–1.0 here (a reverberant
room at 50 cm included), and until the check has seen enough playback the canceller's output is
used: an echo is assumed, never ruled out early. The module keeps adapting either way.

Each turn of the agent starts from a fresh module (`pause` marks the end of one): AEC3 starts
out cautious (it suppresses hard until its filter converges), while a module adapted on the
wake chime and then the user's question over the chime's tail (a common sequence) was measured
to let the first ~0.5 s of the next reply through almost uncancelled. Keeping one module across
turns was measured again with the faster barge-in rule (`core/endpointing.py`): in the `agent.echo`
rooms it let more echo through (VAD runs on the residual in quiet sessions 12 vs 3; a
self-interruption in the hall at gains 1 and 2) and was not faster for talk-over. The echo path
check keeps its state across turns (the room did not change).

Blocks of any size work: samples past the last whole 10 ms frame wait for the next block
(the output then lags the input by those samples, at most 159, padded once with silence;
with 10 ms-multiple blocks, the default, there is no such lag and no padding), besides the
residual echo suppressor's one hop (160 samples).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)

RATE_HZ = 16000
FRAME_SAMPLES = 160  # 10 ms: the audio processing module's frame
_BYTES = FRAME_SAMPLES * 2


class EchoPathCheck:
    """Is any of the playback in the microphone? The peak normalized cross-correlation of the
    microphone with the playback over lags 0–`max_lag_s`, accumulated over the blocks with
    playback in them (exponential memory of about `memory_s`)."""

    def __init__(
        self,
        *,
        max_lag_s: float = 0.5,
        memory_s: float = 1.5,
        evidence_s: float = 1.0,
        absent_below: float = 0.2,
        present_above: float = 0.3,
    ) -> None:
        self.lag_samples = int(max_lag_s * RATE_HZ)
        self._memory_s = memory_s
        self._evidence_s = evidence_s
        self._absent_below = absent_below
        self._present_above = present_above
        self._cross = np.zeros(self.lag_samples + 1, dtype=np.float64)
        self._mic_energy = 0.0
        self._ref_energy = 0.0
        self._heard_s = 0.0
        self.correlation = 1.0
        self.present = True
        """False once enough playback went by with no trace of it in the microphone."""

    def update(self, mic: npt.NDArray[np.float64], reference: npt.NDArray[np.float64]) -> bool:
        """`reference`: the playback from `lag_samples` before the block to its end."""
        n, d = mic.size, self.lag_samples
        ref_energy = float(np.dot(reference, reference)) * n / reference.size
        if ref_energy < n * 1e-7:  # about -70 dBFS: nothing played, no evidence either way
            return self.present
        size = 1 << (n + d - 1).bit_length()  # a power of two: numpy's FFT is fastest there
        # cross[k] = sum_j mic[j] * reference[j + k]: the echo of lag d - k
        cross = np.fft.irfft(np.fft.rfft(reference, size) * np.conj(np.fft.rfft(mic, size)), size)[: d + 1]
        keep = float(np.exp(-(n / RATE_HZ) / self._memory_s))
        self._cross = keep * self._cross + cross
        self._mic_energy = keep * self._mic_energy + float(np.dot(mic, mic))
        self._ref_energy = keep * self._ref_energy + ref_energy
        self._heard_s += n / RATE_HZ
        self.correlation = float(np.max(np.abs(self._cross))) / max(
            float(np.sqrt(self._mic_energy * self._ref_energy)), 1e-12
        )
        if self.correlation > self._present_above:
            self.present = True
        elif self.correlation < self._absent_below and self._heard_s >= self._evidence_s:
            self.present = False
        return self.present


class ResidualEchoSuppressor:
    """A spectral post-filter after AEC3 for the reverberation its linear filter does not reach.

    AEC3's adaptive filter is short (tens of ms); in a reverberant room (RT60 0.8 s) its output
    keeps a late-reverb residual (ERLE about 22 dB at 50 cm). This stage predicts the residual's
    power in each frequency bin from the playback's power over the last `taps` 10 ms hops (a
    non-negative power-domain filter per bin, learned by NLMS on the hops with playback where
    AEC3's output is at most `adapt_below` of the microphone's energy) and attenuates each bin by
    `1 - over * predicted / actual`, at most to `floor`. Powers, not waveforms: it cannot fight
    AEC3's own filter (a waveform NLMS in front of it did: -11 to -34 dB elsewhere).

    Measured on `agent.echo` (hall 50 cm: ERLE 21.9 -> 26.2 dB; 0 self-interruptions in all 12
    room x gain rows; barge-in unchanged in sum). A floor of 0.1 made the unconverged residual
    in the first turn's second second cleaner speech to the VAD (a self-interruption in the
    hall); so did learning only where AEC3 removed 6 dB or more (0.25; it learned too little,
    24.5 dB). The cost: it learns from double talk too, so a user talking over the agent for
    long loses a few dB more the longer they talk (the first 0.5 s within 3 dB).

    Short-time Fourier frames of 20 ms, 10 ms hop, square-root Hann windows (overlap-add
    reconstructs the input exactly where the gain is 1): the output lags by one hop (160
    samples). The learned filter stays across turns (the room does not change)."""

    def __init__(
        self,
        *,
        taps: int = 40,
        over: float = 2.0,
        floor: float = 0.3,
        step: float = 0.3,
        adapt_below: float = 1.0,
    ) -> None:
        self.hop = FRAME_SAMPLES
        self.taps = taps
        self._over, self._floor, self._step, self._adapt_below = over, floor, step, adapt_below
        n = 2 * self.hop
        self._window = np.sqrt(np.hanning(n + 1)[:n])
        bins = self.hop + 1
        self.weights = np.zeros((bins, taps))
        """[bin, i]: the residual's power per playback power `taps - 1 - i` hops earlier."""
        self._history = np.zeros((taps - 1, bins))
        self._prev_out = np.zeros(self.hop)
        self._prev_ref = np.zeros(self.hop)
        self._ola = np.zeros(self.hop)

    def pause(self) -> None:
        """Between turns: forget the audio (its last hop is dropped), keep the learned filter."""
        self._history[:] = 0.0
        self._prev_out[:] = 0.0
        self._prev_ref[:] = 0.0
        self._ola[:] = 0.0

    def process(
        self,
        cleaned: npt.NDArray[np.float64],
        reference: npt.NDArray[np.float64],
        mic: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Whole hops of AEC3's output, the playback and the raw microphone over the same time
        (float scale); returns as many samples, one hop late."""
        h = self.hop
        m = cleaned.size // h
        if m == 0:
            return np.zeros(0)
        out_seq = np.concatenate([self._prev_out, cleaned])
        ref_seq = np.concatenate([self._prev_ref, reference])
        self._prev_out, self._prev_ref = cleaned[-h:].copy(), reference[-h:].copy()
        frames = np.lib.stride_tricks.sliding_window_view(out_seq, 2 * h)[::h][:m]
        y = np.fft.rfft(frames * self._window, axis=1)
        x = np.fft.rfft(
            np.lib.stride_tricks.sliding_window_view(ref_seq, 2 * h)[::h][:m] * self._window, axis=1
        )
        py = y.real**2 + y.imag**2
        px = x.real**2 + x.imag**2
        full = np.concatenate([self._history, px])
        self._history = full[-(self.taps - 1) :].copy()
        lagged = np.lib.stride_tricks.sliding_window_view(full, self.taps, axis=0)  # [hop, bin, tap]
        predicted = np.einsum("jbi,bi->jb", lagged, self.weights)
        gain = np.maximum(self._floor, 1.0 - self._over * predicted / np.maximum(py, 1e-12))
        z = np.fft.irfft(y * gain, 2 * h, axis=1) * self._window
        out = z[:, :h].copy()
        out[0] += self._ola
        out[1:] += z[:-1, h:]
        self._ola = z[-1, h:].copy()
        # learn on hops where AEC3 removed most of the microphone (the echo alone) with playback
        mic_e = np.sum(mic[: m * h].reshape(m, h) ** 2, axis=1)
        out_e = np.sum(cleaned[: m * h].reshape(m, h) ** 2, axis=1)
        learn = (out_e <= self._adapt_below * mic_e) & (px.sum(axis=1) > 1e-6)
        for j in np.flatnonzero(learn):
            v = lagged[j]
            err = py[j] - np.sum(v * self.weights, axis=1)
            norm = np.sum(v * v, axis=1) + 1e-12
            self.weights = np.maximum(0.0, self.weights + self._step * (err / norm)[:, None] * v)
        result: npt.NDArray[np.float64] = out.reshape(-1)
        return result


class EchoCancellerUnavailable(RuntimeError):
    """The engine's library is not installed or its native code does not load here."""


class WebRtcEchoCanceller:
    """`ports.EchoCanceller` on the WebRTC AEC3 (livekit's packaging of the module)."""

    name = "webrtc"

    def __init__(
        self, *, stream_delay_ms: int = 0, high_pass_filter: bool = True, residual_suppression: bool = True
    ) -> None:
        self.echo_path = EchoPathCheck()
        self.residual = ResidualEchoSuppressor() if residual_suppression else None
        self.lookback_samples = self.echo_path.lag_samples
        self.passed_blocks = 0
        """Blocks passed through unchanged: no echo path found."""
        # Found now (a missing engine falls back to gating at build time), loaded at the agent's
        # first speech: the library and one module cost about 26 MiB, which an idle device
        # listening for its wake word should not carry.
        if importlib.util.find_spec("livekit") is None:
            raise EchoCancellerUnavailable("livekit is not installed")
        self._high_pass_filter = high_pass_filter
        self._apm: Any = None
        self._new_module: Callable[[], Any] = lambda: None
        self._failed = False
        self._fresh = True
        self.restarts = 0
        self._stream_delay_ms = stream_delay_ms
        self._near_buf = bytearray(_BYTES)
        self._far_buf = bytearray(_BYTES)
        self._near = np.frombuffer(self._near_buf, dtype=np.int16)
        self._far = np.frombuffer(self._far_buf, dtype=np.int16)
        self._near_frame: Any = None
        self._far_frame: Any = None
        self._pending_mic = np.zeros(0, dtype=np.int16)
        self._pending_ref = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)
        self.frames = 0
        """10 ms frames processed so far."""
        self.cpu_s = 0.0
        """Thread CPU time spent in `process` so far (the module runs in the calling thread)."""
        self.padded_samples = 0

    def _load(self) -> bool:
        """Import the library and start the module (once); False, said once, if it fails."""
        if self._apm is not None or self._failed:
            return not self._failed
        try:
            from livekit import rtc

            high_pass = self._high_pass_filter
            self._new_module = lambda: rtc.AudioProcessingModule(
                echo_cancellation=True, high_pass_filter=high_pass
            )
            self._apm = self._new_module()
            self._near_frame = rtc.AudioFrame(self._near_buf, RATE_HZ, 1, FRAME_SAMPLES)
            self._far_frame = rtc.AudioFrame(self._far_buf, RATE_HZ, 1, FRAME_SAMPLES)
        except Exception as err:  # ImportError, OSError (native library), the FFI's RuntimeError
            self._failed = True
            _LOGGER.warning(
                "the WebRTC echo canceller does not start (%s); the microphone passes unchanged", err
            )
            return False
        return True

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        n = int(mic.size)
        if n == 0 or not self._load():
            return mic
        if reference.size != n + self.lookback_samples:
            raise ValueError(
                f"reference has {reference.size} samples for a {n}-sample block "
                f"(expected {n + self.lookback_samples}: {self.lookback_samples} before it)"
            )
        t0 = time.thread_time()
        echo_present = self.echo_path.update(mic.astype(np.float64) / 32768.0, reference.astype(np.float64))
        ref = np.clip(np.rint(reference[self.lookback_samples :] * 32768.0), -32768, 32767).astype(np.int16)
        if self._pending_mic.size:
            mic_all = np.concatenate([self._pending_mic, mic])
            ref_all = np.concatenate([self._pending_ref, ref])
        else:
            mic_all, ref_all = mic, ref
        if not self._fresh:  # a new turn after a pause: start from the module's initial state
            self._apm = self._new_module()
            self._fresh = True
            self.restarts += 1
        whole = mic_all.size // FRAME_SAMPLES * FRAME_SAMPLES
        cleaned = np.empty(whole, dtype=np.int16)
        for start in range(0, whole, FRAME_SAMPLES):
            end = start + FRAME_SAMPLES
            self._far[:] = ref_all[start:end]
            self._apm.process_reverse_stream(self._far_frame)
            self._apm.set_stream_delay_ms(self._stream_delay_ms)
            self._near[:] = mic_all[start:end]
            self._apm.process_stream(self._near_frame)
            cleaned[start:end] = self._near
        if self.residual is not None and whole:
            suppressed = self.residual.process(
                cleaned.astype(np.float64) / 32768.0,
                ref_all[:whole].astype(np.float64) / 32768.0,
                mic_all[:whole].astype(np.float64) / 32768.0,
            )
            cleaned = np.clip(np.rint(suppressed * 32768.0), -32768, 32767).astype(np.int16)
        self.frames += whole // FRAME_SAMPLES
        self._pending_mic = mic_all[whole:].copy()
        self._pending_ref = ref_all[whole:].copy()
        out = np.concatenate([self._out, cleaned]) if self._out.size else cleaned
        if out.size < n:  # samples wait for a whole frame: the output lags by them (once)
            pad = n - out.size
            self.padded_samples += pad
            out = np.concatenate([np.zeros(pad, dtype=np.int16), out])
        result, self._out = out[:n], out[n:].copy()
        if not echo_present:
            self.passed_blocks += 1
            result = mic  # no echo to remove: the user's voice as it is
        self.cpu_s += time.thread_time() - t0
        return result

    def pause(self) -> None:
        """Drop the partial frame and the lag (at most 10 ms of the echo tail's end); the next
        turn starts from a fresh module (see the module docstring)."""
        self._fresh = False
        if self.residual is not None:
            self.residual.pause()
        self._pending_mic = np.zeros(0, dtype=np.int16)
        self._pending_ref = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)


ENGINES: dict[str, Callable[[], WebRtcEchoCanceller]] = {"webrtc": WebRtcEchoCanceller}
"""`appliance.audio.echo_cancellation` engine names → constructors."""
