"""`OpenWakeWordDetector`: the WakeWordDetector port on openWakeWord with ONNX inference.

openWakeWord is used for its feature pipeline (melspectrogram → Google speech embedding) and
its per-model classifiers; decisions (threshold, patience, refractory) are made by
`appliance.core.wakeword.WakeWordGate` on audio time, not by the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import ModelError
from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 1280  # 80 ms at 16 kHz: openWakeWord's native step


@dataclass(frozen=True)
class WakeWordModelFile:
    name: str
    path: Path


class OpenWakeWordDetector:
    frame_samples = FRAME_SAMPLES

    def __init__(self, models: list[WakeWordModelFile], melspec_path: Path, embedding_path: Path) -> None:
        if not models:
            raise ModelError("no wake-word model configured", code="wakeword_missing")
        for item in [*(m.path for m in models), melspec_path, embedding_path]:
            if not item.is_file():
                raise ModelError(
                    f"wake-word model file {item} does not exist; run 'appliance models provision' "
                    "or put the model in the custom wake-word folder",
                    code="wakeword_missing",
                )
        for m in models:
            if m.path.suffix == ".tflite":
                raise ModelError(
                    f"wake word '{m.name}' is a .tflite model ({m.path}); the appliance runs openWakeWord "
                    "on onnxruntime: convert it to .onnx (openWakeWord's training notebook exports both) "
                    "and drop the .onnx beside it",
                    code="wakeword_tflite",
                )
        try:
            from openwakeword.model import Model
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ModelError(
                "openwakeword is not installed; run 'pip install --no-deps openwakeword==0.6.0' "
                "(systemd/bootstrap.sh does it)",
                code="wakeword_missing",
            ) from err
        try:
            self._model = Model(
                wakeword_models=[str(m.path) for m in models],
                inference_framework="onnx",
                melspec_model_path=str(melspec_path),
                embedding_model_path=str(embedding_path),
            )
        except Exception as err:
            raise ModelError(f"cannot load wake-word models: {err}", code="wakeword_load") from err
        # openWakeWord names models by file stem (hey_jarvis_v0.1); we use our names.
        self._names_by_key = {Path(m.path).stem: m.name for m in models}
        self.names = [m.name for m in models]
        _LOGGER.info("wake words loaded: %s", ", ".join(self.names))

    def scores(self, frame: Pcm16) -> dict[str, float]:
        raw = self._model.predict(np.asarray(frame, dtype=np.int16))
        return {self._names_by_key.get(key, key): float(value) for key, value in raw.items()}

    def reset(self) -> None:
        self._model.reset()
