"""Synthesized speech for tests, benchmarks and the bundled example recording.

Uses the registry piper voice (joe, CC0) or espeak-ng, resampled to 16 kHz mono int16.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.adapters.resample import resample
from appliance.audio_files import joe_voice_paths, read_wav, write_wav
from appliance.ports import MIC_RATE_HZ, Pcm16

__all__ = ["joe_voice_paths", "read_wav", "write_wav"]

RATE_HZ = MIC_RATE_HZ


@functools.lru_cache(maxsize=1)
def _joe() -> Any:
    from piper import PiperVoice

    model, config = joe_voice_paths()
    return PiperVoice.load(model, config_path=config)


def piper_say(text: str, length_scale: float = 1.0) -> Pcm16:
    from piper import SynthesisConfig

    voice = _joe()
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)))
    audio = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in chunks])
    return resample(audio, chunks[0].sample_rate, RATE_HZ)


def piper_say_exact(text: str, length_scale: float = 1.0) -> Pcm16:
    """`piper_say` without Piper's random noise (`noise_scale` and `noise_w_scale` 0): the same
    text always gives the same samples, so an input built from it cannot vary between runs."""
    from piper import SynthesisConfig

    voice = _joe()
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, syn_config=config))
    audio = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in chunks])
    return resample(audio, chunks[0].sample_rate, RATE_HZ)


def espeak_say(text: str, voice: str = "en-us") -> Pcm16:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run([exe, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        audio, rate = read_wav(path)
    return resample(audio, rate, RATE_HZ)


def silence(seconds: float) -> Pcm16:
    return np.zeros(round(seconds * RATE_HZ), dtype=np.int16)


def noise(seconds: float, level: float = 300.0, seed: int = 0) -> Pcm16:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, int(seconds * RATE_HZ)), -32768, 32767).astype(np.int16)


def concat(*parts: Pcm16) -> Pcm16:
    return np.concatenate(parts).astype(np.int16)
