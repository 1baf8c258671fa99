"""Voices of the fake server: text → 16 kHz mono int16 speech (tones, or piper)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from appliance.ports import MIC_RATE_HZ, Pcm16

RATE_HZ = MIC_RATE_HZ
Voice = Callable[[str], Pcm16]
"""Text → 16 kHz mono int16 speech."""


def tone(seconds: float, freq_hz: float = 220.0, level: float = 0.3) -> Pcm16:
    t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
    return (np.sin(2 * math.pi * freq_hz * t) * level * 32767).astype(np.int16)


def tone_voice(text: str) -> Pcm16:
    """A tone burst per word (0.22 s, pitch from the word) with short gaps: fast and deterministic."""
    parts: list[Pcm16] = []
    for word in text.split() or ["."]:
        parts.append(tone(0.22, 160.0 + (sum(map(ord, word)) % 12) * 20.0))
        parts.append(np.zeros(round(0.05 * RATE_HZ), dtype=np.int16))
    return np.concatenate(parts)


def piper_voice(text: str) -> Pcm16:
    """Piper's joe without its sampling noise: the same text gives the same samples on every run,
    so a test that listens to the agent (whisper) hears the same words every time."""
    from appliance.testing.speech import piper_say_exact

    return piper_say_exact(text)
