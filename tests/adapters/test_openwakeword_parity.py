"""The adapter's own openWakeWord pipeline against openWakeWord 0.6.0 itself, frame by frame.

`OpenWakeWordDetector` runs openWakeWord's ONNX models without the openwakeword package (which
imports scipy and scikit-learn). These tests feed the same real audio, 80 ms at a time, to the
adapter and to `openwakeword.model.Model` (same ONNX files, inference_framework="onnx") and
require the same score for every bundled wake word on every frame. openWakeWord seeds its
feature buffer from numpy's global generator; the reference is built (and reset) right after
seeding it with the adapter's fixed seed, so even the first frames are comparable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.adapters.openwakeword_detector import (
    FRAME_SAMPLES,
    INIT_NOISE_SEED,
    OpenWakeWordDetector,
    WakeWordModelFile,
)
from appliance.adapters.resample import resample
from appliance.testing.speech import concat, espeak_say, noise, read_wav, silence

RATE = 16000
TOLERANCE = 1e-6  # the same ONNX models on the same inputs: equal to float32 precision
BUNDLED = ("hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy", "weather", "timer")
EXAMPLE = Path(__file__).resolve().parents[2] / "appliance" / "assets" / "example-hey-jarvis.wav"


def _model_file(models_dir: Path, name: str) -> Path:
    return sorted((models_dir / name).glob("*.onnx"))[0]


@pytest.fixture(scope="module")
def pair(models_dir: Path) -> tuple[OpenWakeWordDetector, Any]:
    oww_model = pytest.importorskip("openwakeword.model", reason="openwakeword 0.6.0 is the reference")
    feats = models_dir / "oww-features"
    files = [WakeWordModelFile(n, _model_file(models_dir, n)) for n in BUNDLED]
    ours = OpenWakeWordDetector(files, feats / "melspectrogram.onnx", feats / "embedding_model.onnx")
    np.random.seed(INIT_NOISE_SEED)
    reference = oww_model.Model(
        wakeword_models=[str(f.path) for f in files],
        inference_framework="onnx",
        melspec_model_path=str(feats / "melspectrogram.onnx"),
        embedding_model_path=str(feats / "embedding_model.onnx"),
    )
    return ours, reference


def _reference_scores(raw: dict[str, Any]) -> dict[str, float]:
    """openWakeWord's keys are file stems (hey_jarvis_v0.1), or class numbers for the multi-class
    timer model (0 = none): the adapter reports a model's best class under the model's name."""
    out: dict[str, float] = {}
    for name in BUNDLED:
        if name == "timer":
            out[name] = max(float(raw[str(i)]) for i in range(1, 7))
        else:
            out[name] = float(raw[f"{name}_v0.1"])
    return out


def _compare(pair: tuple[OpenWakeWordDetector, Any], audio: np.ndarray) -> dict[str, float]:
    """Reset both, stream `audio` through both; assert equal scores; return each model's peak."""
    ours, reference = pair
    ours.reset()
    np.random.seed(INIT_NOISE_SEED)
    reference.reset()
    peaks = dict.fromkeys(BUNDLED, 0.0)
    for i in range(0, audio.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        frame = audio[i : i + FRAME_SAMPLES]
        got = ours.scores(frame)
        want = _reference_scores(reference.predict(frame))
        for name in BUNDLED:
            assert abs(got[name] - want[name]) <= TOLERANCE, (name, i // FRAME_SAMPLES, got[name], want[name])
            peaks[name] = max(peaks[name], got[name])
    return peaks


def test_example_recording_scores_equal_openwakeword(pair: tuple[OpenWakeWordDetector, Any]) -> None:
    audio, rate = read_wav(EXAMPLE)
    peaks = _compare(pair, resample(audio, rate, RATE))
    assert peaks["hey_jarvis"] > 0.9  # the comparison covers a real detection, not only zeros


def test_synthesized_wake_words_score_equal_openwakeword(
    pair: tuple[OpenWakeWordDetector, Any], say: Callable[[str], np.ndarray]
) -> None:
    audio = concat(
        silence(1.0),
        say("Hey Jarvis!"),
        noise(1.0, level=200.0, seed=3),
        espeak_say("Alexa", voice="en+m3"),
        silence(0.7),
        say("Hey Mycroft, what time is it?"),
        silence(0.5),
        espeak_say("Hey Rhasspy", voice="en+f3"),
        silence(1.0),
    )
    peaks = _compare(pair, audio)
    assert peaks["hey_jarvis"] > 0.5, peaks


def test_speech_and_noise_without_wake_word_score_equal_openwakeword(
    pair: tuple[OpenWakeWordDetector, Any], say: Callable[[str], np.ndarray]
) -> None:
    audio = concat(
        say("The weather today is sunny with a light breeze."),
        noise(2.0, level=3000.0, seed=7),
        say("Please set a timer for five minutes."),
        silence(0.3),
    )
    _compare(pair, audio)


def test_short_clip_right_after_reset_scores_equal_openwakeword(
    pair: tuple[OpenWakeWordDetector, Any], say: Callable[[str], np.ndarray]
) -> None:
    """The first frames after a reset read the seeded noise embeddings and the ones-filled
    melspectrogram buffer: a wake word said at once exercises that start-up path."""
    peaks = _compare(pair, concat(say("Hey Jarvis!"), silence(0.8)))
    assert peaks["hey_jarvis"] > 0.0


def test_idle_path_imports_no_openwakeword_scipy_or_sklearn(models_dir: Path) -> None:
    """`import appliance` and building the listeners as `appliance run` does (default config)
    must not import openwakeword, scipy or scikit-learn."""
    code = textwrap.dedent(
        """
        import sys
        import appliance
        from appliance.config import load_config
        from appliance.runtime.app import load_listeners
        detector, vad = load_listeners(load_config(None))
        import numpy as np
        detector.scores(np.zeros(1280, dtype=np.int16))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("openwakeword", "scipy", "sklearn"))
        print("HEAVY", heavy)
        """
    )
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout


def test_the_run_path_imports_no_scipy() -> None:
    """scipy is a development dependency only: nothing `appliance run` imports may need it (the
    echo canceller and the echo simulation use numpy's FFT). It also cost ~18 MiB at idle."""
    code = textwrap.dedent(
        """
        import sys
        import appliance.cli, appliance.runtime.app, appliance.runtime.echo_simulation
        import appliance.adapters.echo_canceller, appliance.adapters.elevenlabs.session
        import appliance.runtime.local_session, appliance.runtime.remote_agent
        print("HEAVY", sorted(m for m in sys.modules if m.split(".")[0] in ("scipy", "sklearn")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout
