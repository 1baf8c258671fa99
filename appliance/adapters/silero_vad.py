"""`SileroVad`: the VoiceActivityDetector port on the Silero VAD v5/v6 ONNX model.

Runs on onnxruntime with one thread, no torch. The model keeps a recurrent state and needs
the last 64 samples of the previous frame as context; both are reset between utterances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.ports import MIC_RATE_HZ, Pcm16

FRAME_SAMPLES = 512  # 32 ms at 16 kHz, the size Silero v5/v6 is trained on
_CONTEXT = 64


class SileroVad:
    frame_samples = FRAME_SAMPLES

    def __init__(self, model_path: Path) -> None:
        if not model_path.is_file():
            raise ModelError(
                f"VAD model {model_path} does not exist; run 'appliance models provision'",
                code="vad_missing",
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelError(f"cannot load VAD model {model_path}: {err}", code="vad_load") from err
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ModelError(
                f"{model_path} is not a Silero VAD v5/v6 model (inputs {sorted(inputs)})", code="vad_load"
            )
        self._sr = np.array(MIC_RATE_HZ, dtype=np.int64)
        self.reset()

    def twin(self) -> SileroVad:
        """A second VAD on the same loaded model with its own state (for another stream; run on
        the same thread as this one)."""
        other = object.__new__(SileroVad)
        other._session, other._sr = self._session, self._sr
        other.reset()
        return other

    def reset(self) -> None:
        self._state: npt.NDArray[np.float32] = np.zeros((2, 1, 128), dtype=np.float32)
        self._context: npt.NDArray[np.float32] = np.zeros((1, _CONTEXT), dtype=np.float32)

    def probability(self, frame: Pcm16) -> float:
        if frame.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"Silero VAD needs {FRAME_SAMPLES} samples per frame, got {frame.shape[0]}")
        x = np.concatenate([self._context, (frame.astype(np.float32) / 32768.0).reshape(1, -1)], axis=1)
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -_CONTEXT:]
        return float(out[0, 0])
