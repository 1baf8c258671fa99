"""Simulated rooms for the echo tests and the `agent.echo` benchmark.

A `Room` is a shoebox with a reverberation time and a speaker–microphone distance;
`impulse_response(room)` computes its impulse response with pyroomacoustics (the image source
method, a dev dependency), deterministically, and caches it in the temp folder keyed by the
room's parameters (an RT60 0.8 s room takes seconds to compute). `write_ir_wav` makes the file
`appliance run --simulate-echo-ir` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RATE_HZ = 16000
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Room:
    name: str
    size_m: tuple[float, float, float]
    rt60_s: float
    distance_m: float
    """Speaker to microphone (the microphone sits beside the speaker, at the same height)."""

    @property
    def label(self) -> str:
        return f"{self.name} (RT60 {self.rt60_s:g} s, {self.distance_m * 100:g} cm)"


SMALL = Room("small", (3.0, 2.5, 2.4), rt60_s=0.2, distance_m=0.04)
LIVING = Room("living", (5.0, 4.0, 2.6), rt60_s=0.5, distance_m=0.15)
HALL = Room("hall", (6.0, 4.5, 2.8), rt60_s=0.8, distance_m=0.5)
CLOSE_HALL = Room("hall-close", (6.0, 4.5, 2.8), rt60_s=0.8, distance_m=0.04)
ROOMS = (SMALL, LIVING, CLOSE_HALL, HALL)
"""RT60 0.2–0.8 s, speaker–microphone 4–50 cm; SMALL is the smallest room."""


def cache_dir() -> Path:
    return Path(os.environ.get("APPLIANCE_ROOM_CACHE") or Path(tempfile.gettempdir()) / "appliance-rooms")


def impulse_response(room: Room) -> npt.NDArray[np.float64]:
    """The room's impulse response at 16 kHz, scaled to unit energy (cached)."""
    key = json.dumps({"v": _CACHE_VERSION, **asdict(room), "name": None}, sort_keys=True)
    path = cache_dir() / f"room-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        try:
            cached: npt.NDArray[np.float64] = np.load(path)
            return cached
        except (OSError, ValueError):
            pass  # a torn write: compute it again
    ir = _compute(room)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, ir)
    os.replace(tmp, path)
    return ir


def _compute(room: Room) -> npt.NDArray[np.float64]:
    import pyroomacoustics as pra

    size = list(room.size_m)
    absorption, max_order = pra.inverse_sabine(room.rt60_s, size)
    shoebox: Any = pra.ShoeBox(
        size, fs=RATE_HZ, materials=pra.Material(absorption), max_order=max_order, use_rand_ism=False
    )
    speaker = np.array([size[0] * 0.37, size[1] * 0.41, 1.0])  # off-centre: no symmetric flutter
    shoebox.add_source(speaker)
    shoebox.add_microphone(speaker + np.array([room.distance_m, 0.0, 0.0]))
    shoebox.compute_rir()
    ir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    out: npt.NDArray[np.float64] = ir / np.sqrt(np.sum(ir**2))
    return out


def write_ir_wav(path: Path, ir: npt.NDArray[np.float64], rate_hz: int = RATE_HZ) -> Path:
    """16-bit mono WAV, peak at -1 dBFS (the loader scales to unit energy again)."""
    scaled = ir / np.max(np.abs(ir)) * 0.89
    pcm = np.clip(np.rint(scaled * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm.tobytes())
    return path


def erle_db(mic: npt.NDArray[Any], cleaned: npt.NDArray[Any]) -> float:
    """Echo return loss enhancement: how much weaker the echo is after the canceller, in dB."""
    before = float(np.sum(np.asarray(mic, dtype=np.float64) ** 2))
    after = float(np.sum(np.asarray(cleaned, dtype=np.float64) ** 2))
    return 10.0 * float(np.log10(max(before, 1e-9) / max(after, 1e-9)))


def speech_like(
    seconds: float, *, seed: int, f0_hz: float = 120.0, level: float = 0.1
) -> npt.NDArray[np.float64]:
    """A deterministic stand-in for a talker (no model, no randomness between runs): syllables
    of 120–300 ms with pauses, a harmonic source gliding around `f0_hz` through two formant
    resonances that change per syllable. RMS over the voiced parts is about `level`."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    n = round(seconds * RATE_HZ)
    out = np.zeros(n, dtype=np.float64)
    t = 0
    while t < n:
        length = int(rng.uniform(0.12, 0.30) * RATE_HZ)
        gap = int(rng.choice([0.03, 0.06, 0.25], p=[0.5, 0.35, 0.15]) * RATE_HZ)
        seg = min(length, n - t)
        time = np.arange(seg) / RATE_HZ
        f0 = f0_hz * (1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * time + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(f0) / RATE_HZ
        source = sum(np.sin(k * phase) / k for k in range(1, 30)) + 0.05 * rng.standard_normal(seg)
        for formant, width in ((rng.uniform(300, 900), 90.0), (rng.uniform(900, 2500), 150.0)):
            b, a = signal.iirpeak(formant, formant / width, fs=RATE_HZ)
            source = signal.lfilter(b, a, source) + 0.3 * source
        envelope = np.sin(np.pi * np.arange(seg) / seg) ** 0.5
        out[t : t + seg] = source * envelope
        t += seg + gap
    voiced = out[np.abs(out) > 0]
    rms = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0
    scaled: npt.NDArray[np.float64] = out * (level / rms)
    return scaled
