"""`MicroWakeWordDetector`: the WakeWordDetector port on microWakeWord (pymicro-wakeword).

microWakeWord models are small streaming TensorFlow Lite networks (about 50-80 KB, int8) run by
pymicro-wakeword's own TensorFlow Lite C library, on 40 spectrogram features computed every
10 ms by pymicro-features (the microcontroller front end). A model is a `.json` file (what
ESPHome and Home Assistant use: `{"type": "micro", "model": "x.tflite", "micro":
{"probability_cutoff": ..., "sliding_window_size": ...}}`) and the `.tflite` it names.

Per 80 ms frame (8 feature steps) the model runs every `stride` steps (3, from the model's
input shape); its probability, averaged over the last `sliding_window_size` runs, is what the
library compares with the model's `probability_cutoff`. The frame's score is the highest of
those averages, rescaled so that the model's cutoff sits at 0.5, piecewise linearly
(0 → 0, cutoff → 0.5, 1 → 1): `appliance.wake_words.words[].threshold` then means the same for
both engines (0.5, the default, is the model author's operating point; higher is stricter).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ModelError
from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 1280  # 80 ms at 16 kHz, the same frame as openWakeWord (8 feature steps)
CALIBRATED_CUTOFF = 0.5  # where the model's probability_cutoff lands on the score scale


@dataclass(frozen=True)
class MicroWakeWordModel:
    """A configured microWakeWord model: our name for it and its `.json` file."""

    name: str
    config: Path


@dataclass(frozen=True)
class MicroModelConfig:
    tflite: Path
    probability_cutoff: float
    sliding_window_size: int
    wake_word: str


def read_model_config(path: Path) -> MicroModelConfig:
    """Read and check a microWakeWord `.json` (clear errors naming the file)."""
    if not path.is_file():
        raise ModelError(
            f"microWakeWord model file {path} does not exist; a microWakeWord model is a .json "
            "and the .tflite it names, side by side",
            code="wakeword_missing",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(
            f"{path}: not a readable microWakeWord JSON file: {err}", code="wakeword_load"
        ) from err
    micro = data.get("micro") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("type") != "micro" or not isinstance(micro, dict):
        raise ModelError(
            f'{path}: not a microWakeWord model description (expected "type": "micro" and a "micro" '
            'section; openWakeWord models are .onnx files for engine "openwakeword")',
            code="wakeword_load",
        )
    model = data.get("model")
    cutoff = micro.get("probability_cutoff")
    window = micro.get("sliding_window_size")
    if not isinstance(model, str) or not model:
        raise ModelError(f'{path}: "model" must name the .tflite file', code="wakeword_load")
    if not isinstance(cutoff, int | float) or isinstance(cutoff, bool) or not 0 < cutoff < 1:
        raise ModelError(
            f'{path}: "micro.probability_cutoff" must be a number between 0 and 1, got {cutoff!r}',
            code="wakeword_load",
        )
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 100:
        raise ModelError(
            f'{path}: "micro.sliding_window_size" must be an integer from 1 to 100, got {window!r}',
            code="wakeword_load",
        )
    tflite = path.parent / model
    if not tflite.is_file():
        raise ModelError(f"{path}: the model file {tflite} it names does not exist", code="wakeword_missing")
    return MicroModelConfig(tflite, float(cutoff), window, str(data.get("wake_word") or path.stem))


def calibrate(probability: float, cutoff: float) -> float:
    """Map a microWakeWord probability to a score with the model's cutoff at 0.5."""
    p = min(max(probability, 0.0), 1.0)
    if p <= cutoff:
        return CALIBRATED_CUTOFF * p / cutoff
    return CALIBRATED_CUTOFF + (1.0 - CALIBRATED_CUTOFF) * (p - cutoff) / (1.0 - cutoff)


class MicroWakeWordDetector:
    frame_samples = FRAME_SAMPLES

    def __init__(self, models: list[MicroWakeWordModel]) -> None:
        if not models:
            raise ModelError("no microWakeWord model configured", code="wakeword_missing")
        configs = [read_model_config(m.config) for m in models]
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ModelError(
                "pymicro-wakeword is not installed; run 'pip install pymicro-wakeword' "
                "(a dependency of the appliance)",
                code="wakeword_missing",
            ) from err
        self._models: list[tuple[str, float, Any]] = []
        for m, cfg in zip(models, configs, strict=True):
            try:
                engine = MicroWakeWord(
                    m.name,
                    wake_word=cfg.wake_word,
                    tflite_model=cfg.tflite,
                    probability_cutoff=cfg.probability_cutoff,
                    sliding_window_size=cfg.sliding_window_size,
                    trained_languages=[],
                    libtensorflowlite_c_path=_tflite_library(),
                )
            except ModelError:
                raise
            except Exception as err:
                raise ModelError(
                    f"cannot load microWakeWord model {cfg.tflite}: {err}", code="wakeword_load"
                ) from err
            self._models.append((m.name, cfg.probability_cutoff, engine))
        self._features = MicroWakeWordFeatures()
        self.names = [m.name for m in models]
        _LOGGER.info("wake words loaded (microWakeWord): %s", ", ".join(self.names))

    def scores(self, frame: Pcm16) -> dict[str, float]:
        samples = np.asarray(frame, dtype=np.int16)
        if samples.shape != (FRAME_SAMPLES,):
            raise ValueError(f"wake-word frames are {FRAME_SAMPLES} samples, got {samples.shape}")
        best = dict.fromkeys(self.names, 0.0)
        for features in self._features.process_streaming(samples.astype("<i2").tobytes()):
            for name, _, engine in self._models:
                p = engine.process_streaming_prob(features)
                if p is not None and p > best[name]:
                    best[name] = float(p)
        return {name: calibrate(best[name], cutoff) for name, cutoff, _ in self._models}

    def reset(self) -> None:
        self._features.reset()
        for _, _, engine in self._models:
            engine.reset()  # reloads the interpreter: the streaming model keeps internal state


def _tflite_library() -> Path:
    """pymicro-wakeword's bundled TensorFlow Lite C library (found without importing it twice)."""
    import pymicro_wakeword

    lib_dir = Path(pymicro_wakeword.__file__).parent / "lib"
    found = sorted(lib_dir.glob("*tensorflowlite_c.*"))
    if not found:
        raise ModelError(
            f"pymicro-wakeword has no TensorFlow Lite library for this platform in {lib_dir} "
            "(it ships Linux x86_64 and aarch64 wheels; 32-bit ARM is not supported)",
            code="wakeword_load",
        )
    return found[0]
