"""`MonitoredSpeaker`: the speaker, plus a record of what it played and when.

The record is the echo reference: the router asks for the playback level over the last VAD
frame (playback-aware gating), and the echo simulator in `appliance.runtime.echo_simulation` mixes it
back into the microphone. Kept for the last `history_s` seconds, at 16 kHz mono.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import numpy.typing as npt

from appliance.adapters.resample import resample
from appliance.ports import MIC_RATE_HZ, Clock, Pcm16, Speaker

RATE_HZ = MIC_RATE_HZ


class MonitoredSpeaker:
    def __init__(self, inner: Speaker, clock: Clock, history_s: float = 10.0) -> None:
        self.inner = inner
        self._clock = clock
        self._history_s = history_s
        # (start time, samples at 16 kHz float32, stop time or inf)
        self._segments: deque[list[object]] = deque()

    # ------------------------------------------------------------ Speaker port
    @property
    def playing(self) -> bool:
        return self.inner.playing

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        ref = resample(audio, sample_rate_hz, RATE_HZ).astype(np.float32) / 32768.0
        segment: list[object] = [self._clock.now(), ref, math.inf]
        self._segments.append(segment)
        self._forget()
        completed = await self.inner.play(audio, sample_rate_hz)
        if not completed:
            segment[2] = self._clock.now()
        return completed

    def stop(self) -> None:
        now = self._clock.now()
        for segment in self._segments:
            if segment[2] == math.inf:
                segment[2] = now
        self.inner.stop()

    async def close(self) -> None:
        await self.inner.close()

    # ------------------------------------------------------------ reference
    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        """What the speaker played from `t_start` on (clock time), `n_samples` at 16 kHz."""
        out = np.zeros(n_samples, dtype=np.float32)
        for start, samples, stop in list(self._segments):
            assert isinstance(start, float) and isinstance(stop, float) and isinstance(samples, np.ndarray)
            offset = round((t_start - start) * RATE_HZ)
            end_limit = round((stop - start) * RATE_HZ) if stop != math.inf else samples.size
            lo, hi = max(0, offset), min(samples.size, end_limit, offset + n_samples)
            if hi > lo:
                out[lo - offset : hi - offset] += samples[lo:hi]
        return out

    def _forget(self) -> None:
        horizon = self._clock.now() - self._history_s
        while self._segments:
            start, samples, stop = self._segments[0]
            assert isinstance(start, float) and isinstance(samples, np.ndarray) and isinstance(stop, float)
            if min(stop, start + samples.size / RATE_HZ) >= horizon:
                break
            self._segments.popleft()
