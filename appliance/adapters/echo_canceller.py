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
- the high-pass filter the module recommends in front of the canceller.

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
with 10 ms-multiple blocks, the default, there is no lag and no padding).
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


class EchoCancellerUnavailable(RuntimeError):
    """The engine's library is not installed or its native code does not load here."""


class WebRtcEchoCanceller:
    """`ports.EchoCanceller` on the WebRTC AEC3 (livekit's packaging of the module)."""

    name = "webrtc"

    def __init__(self, *, stream_delay_ms: int = 0, high_pass_filter: bool = True) -> None:
        self.echo_path = EchoPathCheck()
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
        self._pending_mic = np.zeros(0, dtype=np.int16)
        self._pending_ref = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(0, dtype=np.int16)


ENGINES: dict[str, Callable[[], WebRtcEchoCanceller]] = {"webrtc": WebRtcEchoCanceller}
"""`appliance.audio.echo_cancellation` engine names → constructors."""
