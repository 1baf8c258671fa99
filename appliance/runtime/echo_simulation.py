"""A simulated room echo: what the speaker plays comes back into the microphone.

`EchoMicrophone` wraps a microphone and adds `gain` × the speaker's output, `delay_s` late,
taken from the playback reference (a `MonitoredSpeaker`). With `--realtime` headless runs this
reproduces the agent hearing itself, to measure how often it would interrupt itself (and that
gating prevents it). It backs the `--simulate-echo` flag of `appliance run`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from appliance.ports import MIC_RATE_HZ, Clock, Microphone, Pcm16, PlaybackReference


class EchoMicrophone:
    sample_rate_hz = MIC_RATE_HZ

    def __init__(
        self, inner: Microphone, speaker: PlaybackReference, clock: Clock, gain: float, delay_s: float = 0.03
    ) -> None:
        self._inner = inner
        self._speaker = speaker
        self._clock = clock
        self.gain = gain
        self.delay_s = delay_s
        self.dropped_blocks = 0

    async def frames(self) -> AsyncIterator[Pcm16]:
        async for block in self._inner.frames():
            start = self._clock.now() - block.size / MIC_RATE_HZ - self.delay_s
            echo = self._speaker.reference(start, block.size) * (self.gain * 32768.0)
            mixed = np.clip(block.astype(np.float32) + echo, -32768, 32767)
            yield mixed.astype(np.int16)

    async def close(self) -> None:
        await self._inner.close()
