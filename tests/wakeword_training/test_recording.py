"""`enroll --record N`: each take is trimmed, or refused with a reason and asked again (a table of
synthetic takes; an injected microphone; no sound card)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from appliance.errors import ApplianceError, AudioDeviceError
from appliance.ports import Pcm16
from appliance.wakeword_training.recording import RATE_HZ, check_take, record_takes


def quiet(seconds: float, seed: int = 0) -> Pcm16:
    """A quiet room: noise at about -66 dBFS."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE_HZ)) * 16).astype(np.int16)


def voice(seconds: float, amplitude: float = 6000.0, seed: int = 1) -> Pcm16:
    """Speech-like: a 220 Hz tone with harmonics, amplitude-modulated like syllables."""
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    wave = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 440 * t)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return np.clip(wave * envelope * amplitude / 1.5, -32768, 32767).astype(np.int16) + quiet(seconds, seed)


def take(*parts: Pcm16) -> Pcm16:
    return np.concatenate(parts).astype(np.int16)


@pytest.mark.parametrize(
    ("audio", "kept_s", "problem"),
    [
        (take(quiet(0.8), voice(0.8), quiet(1.4)), (1.05, 1.15), None),  # 0.8 s + 0.15 s each side
        (take(voice(0.6), quiet(2.4)), (0.70, 0.80), None),  # speech at once: padded on one side only
        (quiet(3.0), None, "heard nothing"),
        (take(quiet(1.0), voice(0.1), quiet(1.9)), None, "heard nothing"),  # a click, not a phrase
        (take(quiet(0.5), voice(0.8, amplitude=60000), quiet(1.7)), None, "too loud"),
        (take(quiet(0.3), voice(3.5)), None, "s of sound: say just the phrase"),
        (take(quiet(2.2), voice(0.8)), None, "cut off at its end"),
        (np.zeros(0, np.int16), None, "no audio arrived"),
    ],
)
def test_check_take(audio: Pcm16, kept_s: tuple[float, float] | None, problem: str | None) -> None:
    check = check_take(audio)
    if problem is None:
        assert check.problem is None and check.audio is not None
        assert kept_s is not None and kept_s[0] <= check.audio.size / RATE_HZ <= kept_s[1]
    else:
        assert check.audio is None and check.problem is not None and problem in check.problem, check.problem


class BlockMicrophone:
    """The Microphone port over a fixed recording, in 80 ms blocks, then the end of the input."""

    sample_rate_hz = RATE_HZ
    dropped_blocks = 0

    def __init__(self, audio: Pcm16) -> None:
        self.audio = audio
        self.closed = False

    async def frames(self) -> AsyncIterator[Pcm16]:
        block = RATE_HZ * 80 // 1000
        for start in range(0, self.audio.size, block):
            yield self.audio[start : start + block]

    async def close(self) -> None:
        self.closed = True


def good(seed: int) -> Pcm16:
    return take(quiet(0.5, seed), voice(0.8, seed=seed), quiet(1.7, seed))


def test_a_refused_take_is_asked_again() -> None:
    mic = BlockMicrophone(take(good(1), quiet(3.0), good(2), good(3)))
    said: list[str] = []
    takes = asyncio.run(record_takes(mic, 3, said.append, take_s=3.0))
    assert len(takes) == 3 and all(1.0 < t.size / RATE_HZ < 1.2 for t in takes)
    prompts = [s for s in said if s.startswith("say it now")]
    assert prompts == ["say it now (1/3)", "say it now (2/3)", "say it now (2/3)", "say it now (3/3)"]
    assert any(s.startswith("take refused: heard nothing") for s in said)
    assert mic.closed


def test_retries_are_bounded() -> None:
    mic = BlockMicrophone(quiet(3.0 * 8))
    said: list[str] = []
    with pytest.raises(ApplianceError, match=r"3 takes refused .*heard nothing.*enroll needs 3 clear takes"):
        asyncio.run(record_takes(mic, 3, said.append, take_s=3.0, max_retries=2))
    assert len([s for s in said if s.startswith("say it now")]) == 3
    assert mic.closed


def test_an_input_that_ends_early_is_an_error_not_a_short_enrollment() -> None:
    mic = BlockMicrophone(take(good(1), good(2)))
    with pytest.raises(AudioDeviceError, match="ended after 2 of 3 takes"):  # exit 4, as a device
        asyncio.run(record_takes(mic, 3, lambda _: None, take_s=3.0))


def test_a_stalled_microphone_hits_the_take_deadline() -> None:
    class Stalled(BlockMicrophone):
        async def frames(self) -> AsyncIterator[Pcm16]:
            await asyncio.sleep(3600)
            yield self.audio

    async def run() -> None:
        import appliance.wakeword_training.recording as recording

        recording.STALL_S, old = 0.0, recording.STALL_S
        try:
            await record_takes(Stalled(quiet(0.1)), 3, lambda _: None, take_s=0.05)
        finally:
            recording.STALL_S = old

    with pytest.raises(AudioDeviceError, match="delivered no audio"):
        asyncio.run(run())
