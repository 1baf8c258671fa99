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


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used(tmp_path: Path) -> None:
    import os

    from appliance.wakeword_training.evaluate import trim_cache

    sizes = {"a": 400, "b": 300, "c": 200, "d": 500, "e": 100}
    for age, (name, size) in enumerate(sizes.items()):  # a oldest ... e newest
        path = tmp_path / f"negative-{name}.npy"
        path.write_bytes(b"x" * size)
        os.utime(path, (1000 + age, 1000 + age))
    (tmp_path / "other.txt").write_bytes(b"y" * 5000)  # not the cache's: never touched
    kept = {tmp_path / "negative-a.npy", tmp_path / "negative-d.npy"}  # just used: never dropped
    trim_cache(tmp_path, kept, max_bytes=1100)
    # 1500 bytes: b (oldest not kept) goes, 1200; then c, 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "negative-a.npy",
        "negative-d.npy",
        "negative-e.npy",
        "other.txt",
    ]
    assert all(os.stat(p).st_mtime > 2000 for p in kept)  # touched: the most recently used now
    trim_cache(tmp_path, kept, max_bytes=10)  # over budget with only the kept ones left: they stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["negative-a.npy", "negative-d.npy", "other.txt"]


def test_a_chunk_made_without_piper_is_cached_apart() -> None:
    import hashlib

    from appliance.wakeword_training.evaluate import chunk_key

    # with Piper the names are the ones earlier versions wrote (their caches stay valid)
    assert chunk_key("test", 0, 3, piper=True) == hashlib.sha256(b"v2:test:0:3").hexdigest()[:16]
    assert chunk_key("validation", 1, 0, piper=True) == hashlib.sha256(b"v3:validation:1:0").hexdigest()[:16]
    # without it a minute sounds otherwise (espeak-ng voices only): never read for one with Piper
    keys = {
        chunk_key(s, seed, i, p)
        for s in ("test", "validation")
        for seed in (0, 1)
        for i in (0, 8)
        for p in (True, False)
    }
    assert len(keys) == 16
