"""Training's feature models on several threads compute what the idle detector's single thread
computes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.wakeword_training.train import FEATURE_THREADS, features_for


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
@pytest.mark.parametrize("seconds", [2.5, 20.0])  # a positive take's window; part of a minute of speech
def test_threaded_features_equal_the_single_thread_ones(models_dir: Path, seconds: float) -> None:
    from appliance.testing.speech import espeak_say

    rng = np.random.default_rng(7)
    speech = espeak_say("hello lamp, and then something else entirely", "en-us+m3").astype(np.float64)
    clip = np.resize(speech, int(seconds * 16000)) + rng.normal(0, 300, int(seconds * 16000))
    clip = np.clip(clip, -32768, 32767).astype(np.int16)
    one = features_for(models_dir, threads=1).embeddings(clip)
    many = features_for(models_dir).embeddings(clip)  # training's FEATURE_THREADS
    assert FEATURE_THREADS > 1
    assert many.shape == one.shape and one.shape[0] > 0 and one.shape[1] == 96
    # the same on this box; float32 sums in another order may move a value by ~2e-5 elsewhere
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-4)
