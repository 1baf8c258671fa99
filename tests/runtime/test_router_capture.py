"""Capture what the router receives in a (real-time) run and replay it offline to the same
decision (`appliance.testing.router_capture`): fakes, explicit arrival times."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core.endpointing import EndpointConfig, Endpointer
from appliance.core.wakeword import WakeWordGate, WakeWordRule
from appliance.ports import Pcm16
from appliance.runtime.router import AudioRouter
from appliance.testing.router_capture import RouterCapture, capturing, replay

RATE = 16000
BLOCK = 1280


class Speaker:
    """A playback record as `MonitoredSpeaker` keeps it: (start, samples, stop) by clock time."""

    def __init__(self) -> None:
        self._segments: list[tuple[float, npt.NDArray[np.float32], float]] = []

    def play(self, at: float, samples: npt.NDArray[np.float32]) -> None:
        self._segments.append((at, samples, math.inf))

    @property
    def playing(self) -> bool:
        return bool(self._segments)

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        out = np.zeros(n_samples, dtype=np.float32)
        for start, samples, _ in self._segments:
            offset = round((t_start - start) * RATE)
            lo, hi = max(0, offset), min(samples.size, offset + n_samples)
            if hi > lo:
                out[lo - offset : hi - offset] += samples[lo:hi]
        return out


class Subtracting:
    """A canceller that removes `share` of the echo (the echo is half the reference)."""

    name = "fake"
    lookback_samples = 0

    def __init__(self, share: float = 0.5) -> None:
        self.share = share

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        out = mic.astype(np.float64) - self.share * 0.5 * reference * 32768.0
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def pause(self) -> None:
        pass


class LoudVad:
    frame_samples = 512

    def probability(self, frame: Pcm16) -> float:
        return 1.0 if float(np.mean(np.abs(frame.astype(np.float64)))) > 3000.0 else 0.0

    def reset(self) -> None:
        pass


class NeverWakes:
    frame_samples = BLOCK

    def scores(self, frame: Pcm16) -> dict[str, float]:
        return {"hey_jarvis": 0.0}

    def reset(self) -> None:
        pass


def _router(playback: Any, now: Any, share: float = 0.5) -> AudioRouter:
    return AudioRouter(
        detector=NeverWakes(),
        gate=WakeWordGate({"hey_jarvis": WakeWordRule("hey_jarvis")}),
        vad=LoudVad(),
        endpointer=Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(1),
        post=lambda event: None,
        playback=playback,
        echo=Subtracting(share),
        now=now,
    )


def _run(capture: RouterCapture) -> None:
    """Blocks arriving a few ms late; the agent plays a loud tone from 0.4 s whose echo the
    canceller only halves: the VAD hears it, speech starts."""
    clock = [0.0]
    speaker = Speaker()
    with capturing(capture):
        router = _router(speaker, lambda: clock[0])
    router.set_listening(True)
    late = [0.001, 0.004, 0.0035, 0.006] * 10

    async def main() -> None:
        for k, d in enumerate(late):
            clock[0] = 0.08 * (k + 1) + d
            if k == 4:
                speaker.play(0.4, np.full(RATE, 0.5, np.float32))
            echo = 0.5 * speaker.reference(0.08 * k - 0.03, BLOCK) * 32768.0
            await router.process(np.rint(echo).astype(np.int16))

    asyncio.run(main())


def test_a_captured_run_replays_to_the_same_decisions(tmp_path: Path) -> None:
    capture = RouterCapture()
    _run(capture)
    decided = [e for b in capture.blocks for e in b.events]
    assert decided and decided[0].startswith("SpeechStarted@")
    assert capture.settings["echo"] == "fake" and capture.settings["linear_echo"] is None
    capture.save(tmp_path / "run.npz")
    loaded = RouterCapture.load(tmp_path / "run.npz")
    assert [b.events for b in loaded.blocks] == [b.events for b in capture.blocks]
    assert [b.arrived for b in loaded.blocks] == [b.arrived for b in capture.blocks]
    for from_chunks in (False, True):
        again = replay(loaded, _router, from_chunks)
        assert again.differs == [] and again.mismatched_reads == 0
        assert [e for es in again.events for e in es] == decided


def test_a_replay_with_another_rule_decides_on_the_same_input(tmp_path: Path) -> None:
    """The point of it: the captured blocks through a router built otherwise (here: a canceller
    that removes the whole echo) decide otherwise, and say where."""
    capture = RouterCapture()
    _run(capture)
    again = replay(capture, lambda playback, now: _router(playback, now, share=1.0))
    first = next(i for i, b in enumerate(capture.blocks) if b.events)
    assert again.differs[0] == first and not any(again.events)
    assert again.mismatched_reads == 0


def test_the_capture_is_bounded() -> None:
    capture = RouterCapture(max_blocks=5)
    _run(capture)
    assert len(capture.blocks) == 5 and capture.truncated
    assert all(len(b.reads) == 1 for b in capture.blocks)
