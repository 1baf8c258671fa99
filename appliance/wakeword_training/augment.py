"""Room-like variations of a clean take, with numpy only: noise, gain, reverberation, clipping."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from appliance.ports import Pcm16

RATE_HZ = 16000
Float = npt.NDArray[np.float64]


def noise(n: int, rng: np.random.Generator, color: str = "white") -> Float:
    """Unit-RMS noise: white, pink (≈1/f) or brown (integrated white)."""
    white = rng.standard_normal(n)
    if color == "brown":
        out = np.cumsum(white)
        out -= np.linspace(out[0], out[-1], n) if n > 1 else out
    elif color == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.arange(spectrum.shape[0], dtype=np.float64)
        freqs[0] = 1.0
        out = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    else:
        out = white
    rms = float(np.sqrt(np.mean(out**2))) or 1.0
    return np.asarray(out / rms, dtype=np.float64)


def room_noise(n: int, rng: np.random.Generator, level_rms: float) -> Float:
    color = ("white", "pink", "brown")[int(rng.integers(3))]
    hum = np.zeros(n)
    if rng.random() < 0.3:  # mains hum and a harmonic
        t = np.arange(n) / RATE_HZ
        f = 50.0 if rng.random() < 0.5 else 60.0
        hum = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 3 * f * t)
    return level_rms * (noise(n, rng, color) + 0.3 * hum)


def impulse_response(rng: np.random.Generator, rt60_s: float) -> Float:
    """A synthetic room: a direct path and exponentially decaying noise (60 dB over `rt60_s`)."""
    n = max(1, int(rt60_s * RATE_HZ))
    t = np.arange(n) / RATE_HZ
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    tail[: int(0.002 * RATE_HZ)] = 0.0  # the first reflections arrive after a few ms
    ir = 0.4 * tail / (float(np.sqrt(np.sum(tail**2))) or 1.0)
    ir[0] = 1.0
    return ir


def reverberate(x: Float, ir: Float) -> Float:
    size = x.shape[0] + ir.shape[0] - 1
    nfft = 1 << (size - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: x.shape[0]]
    return np.asarray(y, dtype=np.float64)


def augment(clean: Pcm16, rng: np.random.Generator, strength: float = 1.0) -> Float:
    """One variation of `clean` (float samples on the int16 scale, same length)."""
    x = np.asarray(clean, dtype=np.float64)
    if x.size == 0:
        return x
    if rng.random() < 0.5 * strength:
        x = reverberate(x, impulse_response(rng, float(rng.uniform(0.1, 0.6))))
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak * (10 ** (float(rng.uniform(-26, -1)) / 20) * 32767)  # peak −26…−1 dBFS
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    snr_db = float(rng.uniform(5, 35)) if rng.random() < 0.8 * strength else 60.0
    x = x + room_noise(x.shape[0], rng, rms / 10 ** (snr_db / 20))
    if rng.random() < 0.1 * strength:  # a little clipping: a hot microphone
        limit = float(np.max(np.abs(x))) * 0.6
        x = np.clip(x, -limit, limit) * 1.5
    return x


def to_pcm(x: Float) -> Pcm16:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)
