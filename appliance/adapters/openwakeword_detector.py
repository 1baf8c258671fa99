"""`OpenWakeWordDetector`: the WakeWordDetector port on openWakeWord with ONNX inference.

openWakeWord is used for its feature pipeline (melspectrogram → Google speech embedding) and
its per-model classifiers; decisions (threshold, patience, refractory) are made by
`appliance.core.wakeword.WakeWordGate` on audio time, not by the library.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import ModelError
from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 1280  # 80 ms at 16 kHz: openWakeWord's native step
RAW_BUFFER_SAMPLES = 4000  # ≥ 1280 + 480 samples that the streaming melspectrogram reads


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
        self._trim_audio_buffer()
        # openWakeWord names models by file stem (hey_jarvis_v0.1); we use our names.
        self._names_by_key = {Path(m.path).stem: m.name for m in models}
        self.names = [m.name for m in models]
        _LOGGER.info("wake words loaded: %s", ", ".join(self.names))

    def _trim_audio_buffer(self) -> None:
        """openWakeWord keeps 10 s of raw audio in a deque and copies it to a list on every
        80 ms frame, while its melspectrogram only reads the newest 1,760 samples. Keeping
        0.25 s is enough and removes a large share of the idle-loop cost."""
        pre = getattr(self._model, "preprocessor", None)
        buffer = getattr(pre, "raw_data_buffer", None)
        if pre is not None and isinstance(buffer, deque):
            pre.raw_data_buffer = deque(buffer, maxlen=RAW_BUFFER_SAMPLES)

    def scores(self, frame: Pcm16) -> dict[str, float]:
        raw = self._model.predict(np.asarray(frame, dtype=np.int16))
        return {self._names_by_key.get(key, key): float(value) for key, value in raw.items()}

    def reset(self) -> None:
        self._model.reset()
