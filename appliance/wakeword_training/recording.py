"""`appliance wakeword enroll NAME --record N`: takes from the microphone.

Each take: a prompt ("say it now (k/N)"), then `take_s` seconds of the microphone (counted in
samples, so a WAV or pipe input gives the same takes on any machine; a wall-clock deadline of
`take_s` + `STALL_S` catches a microphone that stopped delivering). `check_take` trims the
silence around the speech by energy (20 ms frames against the take's own noise floor) and
refuses a take that is silent, too short, clipped or cut off by the end of the window, with a
message that says what to do; a refused take is asked again, at most `max_retries` times in all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from appliance.errors import ApplianceError, AudioDeviceError
from appliance.ports import Microphone, Pcm16

RATE_HZ = 16000
FRAME_S = 0.02
SPEECH_ABOVE_FLOOR_DB = 12.0
"""A frame is speech when it is this much louder than the take's noise floor..."""
MIN_SPEECH_DBFS = -50.0
"""...and louder than this (a quiet room's floor is far below)."""
MIN_SPEECH_S = 0.25
MAX_SPEECH_S = 3.0
CLIP_LEVEL = 32000
MAX_CLIPPED_FRACTION = 0.002
"""More than this share of the speech's samples at full scale: too loud, the take is distorted."""
PAD_S = 0.15
STALL_S = 2.0
DEFAULT_TAKE_S = 3.0
DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class TakeCheck:
    audio: Pcm16 | None
    """The take trimmed to its speech (with `PAD_S` around it); None when refused."""
    problem: str | None = None


def _dbfs(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0
    return 20 * math.log10(max(rms, 1e-9) / 32768.0)


def check_take(audio: Pcm16, rate_hz: int = RATE_HZ) -> TakeCheck:
    """Trim a take to its speech, or say why it cannot be used."""
    n = int(rate_hz * FRAME_S)
    frames = (
        audio[: audio.size - audio.size % n].reshape(-1, n) if audio.size >= n else audio[:0].reshape(0, n)
    )
    if frames.shape[0] == 0:
        return TakeCheck(None, "no audio arrived from the microphone")
    levels = np.array([_dbfs(f) for f in frames])
    floor = float(np.percentile(levels, 10))
    voiced = np.flatnonzero((levels > floor + SPEECH_ABOVE_FLOOR_DB) & (levels > MIN_SPEECH_DBFS))
    peak = float(np.max(levels))
    if voiced.size == 0 or voiced.size * FRAME_S < MIN_SPEECH_S:
        return TakeCheck(None, f"heard nothing (loudest {peak:.0f} dBFS): speak up or move closer")
    first, last = int(voiced[0]), int(voiced[-1])
    span_s = (last - first + 1) * FRAME_S
    if span_s > MAX_SPEECH_S:
        return TakeCheck(None, f"{span_s:.1f} s of sound: say just the phrase, in a quiet moment")
    if last >= frames.shape[0] - 1:
        return TakeCheck(None, "the take was cut off at its end: start right after the prompt")
    speech = frames[first : last + 1].reshape(-1)
    clipped = float(np.mean(np.abs(speech.astype(np.int32)) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED_FRACTION:
        return TakeCheck(None, f"too loud ({clipped:.1%} of the samples clipped): move back or speak softer")
    pad = int(PAD_S / FRAME_S)
    start, end = max(0, first - pad) * n, min(frames.shape[0], last + 1 + pad) * n
    return TakeCheck(np.ascontiguousarray(audio[start:end]))


async def _read_samples(blocks: AsyncIterator[Pcm16], samples: int, deadline_s: float) -> Pcm16:
    parts: list[Pcm16] = []
    have = 0
    try:
        async with asyncio.timeout(deadline_s):
            while have < samples:
                block = await anext(blocks)
                parts.append(block)
                have += block.size
    except StopAsyncIteration:
        pass
    except TimeoutError:
        raise AudioDeviceError(
            f"the microphone delivered no audio for {deadline_s:g} s; check it with `appliance devices`"
        ) from None
    audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    return audio[:samples].astype(np.int16, copy=False)


async def record_takes(
    microphone: Microphone,
    count: int,
    say: Callable[[str], None],
    *,
    take_s: float = DEFAULT_TAKE_S,
    max_retries: int = DEFAULT_RETRIES,
) -> list[Pcm16]:
    """`count` usable takes, asking again after a refused one (at most `max_retries` refusals)."""
    takes: list[Pcm16] = []
    refused = 0
    blocks = microphone.frames()
    samples = int(take_s * microphone.sample_rate_hz)
    try:
        while len(takes) < count:
            say(f"say it now ({len(takes) + 1}/{count})")
            audio = await _read_samples(blocks, samples, take_s + STALL_S)
            if audio.size == 0:
                raise AudioDeviceError(f"the microphone input ended after {len(takes)} of {count} takes")
            check = check_take(audio, microphone.sample_rate_hz)
            if check.audio is not None:
                takes.append(check.audio)
                say(f"take {len(takes)}/{count}: {check.audio.size / microphone.sample_rate_hz:.2f} s")
                continue
            refused += 1
            if refused > max_retries:
                raise ApplianceError(
                    f"{refused} takes refused (the last: {check.problem}); enroll needs {count} clear takes",
                    code="enroll_takes",
                )
            say(f"take refused: {check.problem}; once more")
            if audio.size < samples:
                raise AudioDeviceError(f"the microphone input ended after {len(takes)} of {count} takes")
    finally:
        await microphone.close()
    return takes
