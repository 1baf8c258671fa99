"""Playback-aware gating: remove the agent's own voice from the microphone before the VAD.

While the agent speaks, each microphone block is compared with what the speaker played over
the last `max_delay_s` (the echo reference): the best single delayed, scaled copy of the
reference (a one-tap echo path, found by cross-correlation) is subtracted and the VAD runs on
what is left. A pure echo leaves almost nothing, so the agent does not interrupt itself;
the user's voice is uncorrelated with the reference and stays. This is gating, not full echo
cancellation: a reverberant room leaves a residual that a real AEC (its own issue) removes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from appliance.ports import MIC_RATE_HZ, Pcm16

RATE_HZ = MIC_RATE_HZ


class EchoSuppressor:
    """`ports.EchoCanceller`: the `gate` setting of `appliance.audio.echo_cancellation`, and the
    fallback when the configured canceller cannot load."""

    name = "gate"

    def __init__(self, max_delay_s: float = 0.12) -> None:
        self.max_delay_samples = int(max_delay_s * RATE_HZ)
        self.last_gain = 0.0
        self.last_delay_s = 0.0
        self.blocks = 0

    @property
    def lookback_samples(self) -> int:
        return self.max_delay_samples

    def pause(self) -> None:
        """Stateless between blocks: nothing to forget."""

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        """`reference`: the playback (float scale, 16 kHz) from `max_delay_s` before the block
        starts to its end, i.e. `mic.size + max_delay_samples` samples."""
        n, d = mic.size, self.max_delay_samples
        if n == 0 or reference.size != n + d or not np.any(reference):
            return mic
        m = mic.astype(np.float32) / 32768.0
        corr = np.correlate(reference, m, mode="valid")  # corr[k] = <reference[k:k+n], m>
        sq = np.concatenate([[0.0], np.cumsum(reference.astype(np.float64) ** 2)])
        energy = sq[n : n + d + 1] - sq[0 : d + 1]
        score = np.where(energy > 1e-9, corr * corr / np.maximum(energy, 1e-9), 0.0)
        k = int(np.argmax(score))
        if energy[k] <= 1e-9:
            return mic
        gain = max(0.0, float(corr[k] / energy[k]))
        self.last_gain, self.last_delay_s = gain, (d - k) / RATE_HZ
        self.blocks += 1
        residual = m - gain * reference[k : k + n]
        return np.clip(residual * 32768.0, -32768, 32767).astype(np.int16)
