"""`OpenWakeWordDetector`: the WakeWordDetector port on openWakeWord's ONNX models.

The models (melspectrogram → Google speech embedding → one classifier per wake word) run here
directly on onnxruntime and numpy; the openwakeword package is not imported (it imports scipy
and scikit-learn, about 90 MiB of idle memory). The streaming feature pipeline reproduces
openWakeWord 0.6.0's `utils.AudioFeatures` and `model.Model.predict` for 80 ms frames exactly,
and `tests/adapters/test_openwakeword_parity.py` proves the scores equal the library's on real
audio. Decisions (threshold, patience, refractory) are made by `appliance.core.wakeword.WakeWordGate`
on audio time, not here.

openWakeWord 0.6.0, per 80 ms frame of 1,280 samples (the reference, step by step):
- the melspectrogram model runs on the newest 1,760 samples (the frame plus 480 samples of
  context; fewer on the first frame after a reset) as float32, and its output is scaled by
  `x / 10 + 2`; those rows are appended to a melspectrogram buffer that starts as 76 rows of ones;
- the embedding model runs on the newest 76 melspectrogram rows and appends one 96-value
  embedding to a feature buffer, which starts as the embeddings of 4 s of random noise (windows
  of 76 rows every 8 rows, one batch);
- each classifier reads the newest N embeddings (16 for most models) and returns one score;
- scores are 0 for the first 5 frames after a reset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.ports import MIC_RATE_HZ, Pcm16

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 1280  # 80 ms at 16 kHz: openWakeWord's native step
MELSPEC_CONTEXT_SAMPLES = 480  # 3 hops of 160 samples read before the frame
MELSPEC_WINDOW_ROWS = 76  # melspectrogram rows per embedding
MELSPEC_STEP_ROWS = 8  # rows between the windows of the initial (batch) embeddings
MELSPEC_BINS = 32
WARMUP_FRAMES = 5  # openWakeWord reports 0 until this many frames were predicted
FEATURE_BUFFER_MAX = 120  # openWakeWord keeps ~10 s of embeddings; a classifier reads at most this many
# openWakeWord fills its feature buffer with the embeddings of 4 s of uniform noise in
# [-1000, 1000) from numpy's global generator. A fixed seed makes it deterministic; the parity
# test seeds numpy's global generator with the same value to compare frame by frame.
INIT_NOISE_SEED = 0
INIT_NOISE_SAMPLES = 4 * MIC_RATE_HZ

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class WakeWordModelFile:
    name: str
    path: Path


@dataclass(frozen=True)
class _Classifier:
    name: str
    session: Any  # onnxruntime.InferenceSession
    input_name: str
    frames: int  # embeddings it reads
    outputs: int  # 1, or classes (class 0 = none of them)


def init_noise() -> npt.NDArray[np.int16]:
    """The 4 s of noise openWakeWord embeds to fill its feature buffer, from a fixed seed."""
    rng = np.random.RandomState(INIT_NOISE_SEED)
    return rng.randint(-1000, 1000, INIT_NOISE_SAMPLES).astype(np.int16)


def _session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = max(1, threads)
    if threads > 1:  # threads that sleep between runs: spinning made short clips 1.4x slower
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


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
                    f"wake word '{m.name}' is a .tflite model ({m.path}) for the openwakeword engine, which "
                    "runs ONNX: convert it to .onnx (openWakeWord's training notebook exports both) and drop "
                    "the .onnx beside it, or, for a microWakeWord model (.tflite + .json), set "
                    "engine: microwakeword on the wake word",
                    code="wakeword_tflite",
                )
        try:
            self._melspec = _session(melspec_path)
            self._embedding = _session(embedding_path)
            self._melspec_input = self._melspec.get_inputs()[0].name
            self._embedding_input = self._embedding.get_inputs()[0].name
            self._classifiers = [self._classifier(m) for m in models]
        except ModelError:
            raise
        except Exception as err:
            raise ModelError(f"cannot load wake-word models: {err}", code="wakeword_load") from err
        self._keep = max(c.frames for c in self._classifiers)
        if self._keep > FEATURE_BUFFER_MAX:
            raise ModelError(
                f"wake word model {models[0].path}: reads {self._keep} embeddings, more than openWakeWord "
                f"keeps ({FEATURE_BUFFER_MAX})",
                code="wakeword_load",
            )
        self._initial_features = self._batch_embeddings(init_noise())
        self.names = [m.name for m in models]
        self._raw: npt.NDArray[np.int16] = np.zeros(0, dtype=np.int16)  # newest ≤ 1,760 samples
        self._spec: Float32Array = np.ones((MELSPEC_WINDOW_ROWS, MELSPEC_BINS), dtype=np.float32)
        self._features: Float32Array = self._initial_features[-self._keep :].copy()
        self._frames = 0  # since the last reset
        self.reset()
        _LOGGER.info("wake words loaded (openWakeWord): %s", ", ".join(self.names))

    def _classifier(self, model: WakeWordModelFile) -> _Classifier:
        session = _session(model.path)
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        shape_in, shape_out = list(inp.shape), list(out.shape)
        if len(shape_in) != 3 or not isinstance(shape_in[1], int) or shape_in[2] != 96:
            raise ModelError(
                f"wake word '{model.name}': {model.path} is not an openWakeWord classifier "
                f"(input shape {shape_in}, expected [1, frames, 96])",
                code="wakeword_load",
            )
        outputs = shape_out[1] if len(shape_out) == 2 and isinstance(shape_out[1], int) else 1
        return _Classifier(model.name, session, inp.name, shape_in[1], outputs)

    # -- the feature pipeline -------------------------------------------------------------

    def _melspectrogram(self, samples: npt.NDArray[np.int16]) -> Float32Array:
        out = self._melspec.run(None, {self._melspec_input: samples.astype(np.float32)[None, :]})
        spec: Float32Array = np.squeeze(out[0])
        # openWakeWord's transform (closer to Google's TensorFlow front end), computed in float32
        return np.asarray(spec / 10 + 2, dtype=np.float32)

    def _batch_embeddings(self, samples: npt.NDArray[np.int16]) -> Float32Array:
        spec = self._melspectrogram(samples)
        windows = [
            spec[i : i + MELSPEC_WINDOW_ROWS]
            for i in range(0, spec.shape[0], MELSPEC_STEP_ROWS)
            if spec[i : i + MELSPEC_WINDOW_ROWS].shape[0] == MELSPEC_WINDOW_ROWS
        ]
        batch = np.expand_dims(np.array(windows), axis=-1).astype(np.float32)
        out = self._embedding.run(None, {self._embedding_input: batch})
        features: Float32Array = np.squeeze(out[0]).astype(np.float32)
        return features[-FEATURE_BUFFER_MAX:]

    def scores(self, frame: Pcm16) -> dict[str, float]:
        samples = np.asarray(frame, dtype=np.int16)
        if samples.shape != (FRAME_SAMPLES,):
            raise ValueError(f"wake-word frames are {FRAME_SAMPLES} samples, got {samples.shape}")
        self._raw = np.concatenate((self._raw, samples))[-(FRAME_SAMPLES + MELSPEC_CONTEXT_SAMPLES) :]
        spec = self._melspectrogram(self._raw)
        self._spec = np.concatenate((self._spec, spec))[-MELSPEC_WINDOW_ROWS:]
        window = self._spec[None, :, :, None]
        embedding = self._embedding.run(None, {self._embedding_input: window})[0].reshape(1, -1)
        self._features = np.concatenate((self._features, embedding))[-self._keep :]
        self._frames += 1
        if self._frames <= WARMUP_FRAMES:
            return {c.name: 0.0 for c in self._classifiers}
        return {c.name: self._predict(c) for c in self._classifiers}

    def _predict(self, c: _Classifier) -> float:
        x = self._features[-c.frames :][None, :, :]
        out = c.session.run(None, {c.input_name: x})[0]
        if c.outputs == 1:
            return float(out[0][0])
        return float(np.max(out[0][1:]))  # a multi-class model (timer): its best class

    def reset(self) -> None:
        self._raw = np.zeros(0, dtype=np.int16)
        self._spec = np.ones((MELSPEC_WINDOW_ROWS, MELSPEC_BINS), dtype=np.float32)
        self._features = self._initial_features[-self._keep :].copy()
        self._frames = 0


class OpenWakeWordFeatures:
    """openWakeWord's shared features of a whole clip, for training and measuring classifiers.

    The same melspectrogram and embedding models and the same `x / 10 + 2` transform as the
    detector; the embedding windows (76 rows, one every 8 rows = 80 ms) are aligned to the end
    of the clip, as the streaming detector's newest window is aligned to the newest frame.

    `threads`: the models' intra-op threads (the idle detector runs on one; training and
    evaluating on `wakeword_training.train.FEATURE_THREADS`)."""

    def __init__(self, melspec_path: Path, embedding_path: Path, threads: int = 1) -> None:
        for item in (melspec_path, embedding_path):
            if not item.is_file():
                raise ModelError(
                    f"wake-word feature model {item} does not exist; run 'appliance models provision'",
                    code="wakeword_missing",
                )
        self._melspec = _session(melspec_path, threads)
        self._embedding = _session(embedding_path, threads)
        self._melspec_input = self._melspec.get_inputs()[0].name
        self._embedding_input = self._embedding.get_inputs()[0].name

    def embeddings(self, samples: npt.NDArray[np.int16], batch: int = 256) -> Float32Array:
        """One 96-value embedding per 80 ms of `samples` (rows aligned to the end; [n, 96])."""
        out = self._melspec.run(None, {self._melspec_input: samples.astype(np.float32)[None, :]})
        spec = np.asarray(np.squeeze(out[0], axis=(0, 1)) / 10 + 2, dtype=np.float32)
        starts = list(range(spec.shape[0] - MELSPEC_WINDOW_ROWS, -1, -MELSPEC_STEP_ROWS))[::-1]
        if not starts:
            return np.zeros((0, 96), dtype=np.float32)
        rows: list[Float32Array] = []
        for i in range(0, len(starts), batch):
            windows = np.stack([spec[s : s + MELSPEC_WINDOW_ROWS] for s in starts[i : i + batch]])
            emb = self._embedding.run(None, {self._embedding_input: windows[:, :, :, None]})[0]
            rows.append(np.asarray(emb, dtype=np.float32).reshape(len(windows), -1))
        return np.concatenate(rows)
