"""The generated negative audio's cache (`evaluate --negative-hours`, enroll's calibration): a chunk
is written whole, and a chunk that cannot be read (a part left by an older version stopped while
writing) is made again instead of failing every later evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.wakeword_training.evaluate import negative_embeddings
from appliance.wakeword_training.train import features_for

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_a_cut_chunk_is_made_again(models_dir: Path, tmp_path: Path) -> None:
    extractor = features_for(models_dir)
    [first] = negative_embeddings(extractor, 1 / 60, 5, tmp_path, split="test")
    [cached] = list(tmp_path.iterdir())
    assert cached.suffix == ".npy"  # nothing else left beside it
    data = cached.read_bytes()
    assert np.array_equal(negative_embeddings(extractor, 1 / 60, 5, tmp_path, split="test")[0], first)
    cached.write_bytes(data[: len(data) // 2])  # as a write stopped half-way left it
    [again] = negative_embeddings(extractor, 1 / 60, 5, tmp_path, split="test")
    assert np.array_equal(again, first)
    assert cached.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == [cached.name]
