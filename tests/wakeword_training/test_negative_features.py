"""`train --negative-features`: openWakeWord feature windows a maker brings as negatives, checked
before anything slow, sampled with the seed, and trained on."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.cli import main
from appliance.wakeword_training import negative_features as nf


def _windows(n: int, frames: int = 16, dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, frames, 96)).astype(dtype)


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p / "missing.npy", "does not exist"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "t.npy").write_text("not numpy") and p / "t.npy", "is not a NumPy .npy file"),
        (lambda p: _save(p / "w.npy", _windows(3, 16)[:, :, :32]), "shape (3, 16, 32)"),
        (lambda p: _save(p / "f.npy", _windows(3, 8)), "shape (3, 8, 96)"),
        (lambda p: _save(p / "v.npy", np.zeros((5, 95), np.float32)), "shape (5, 95)"),
        (lambda p: _save(p / "s.npy", np.zeros((15, 96), np.float32)), "no windows (a stream of 15"),
        (lambda p: _save(p / "i.npy", np.zeros((3, 16, 96), np.int16)), "int16 values"),
        (lambda p: _save(p / "e.npy", np.zeros((0, 16, 96), np.float32)), "holds no windows"),
    ],
)
def test_a_file_that_is_not_feature_windows_is_named_with_the_reason(
    tmp_path: Path, make: object, said: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ValueError) as info:
        nf.check(path, 16)
    assert said in str(info.value) and str(path) in str(info.value)


def test_an_npz_archive_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=_windows(2))
    with pytest.raises(ValueError, match="archive of several arrays"):
        nf.check(tmp_path / "a.npz", 16)
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert zf.namelist() == ["x.npy"]


def test_samples_are_the_seeds_rows_in_file_order_as_float32(tmp_path: Path) -> None:
    data = _windows(500, frames=20, dtype=np.float16)
    path = _save(tmp_path / "w.npy", data)
    assert nf.check(path, 16) == 500
    a = nf.sample(path, 50, seed=1, context_frames=16)
    assert a.dtype == np.float32 and a.shape == (50, 16, 96)
    assert np.array_equal(a, nf.sample(path, 50, seed=1, context_frames=16))
    assert not np.array_equal(a, nf.sample(path, 50, seed=2, context_frames=16))
    # each sampled window is a row of the file (its last 16 frames), in file order
    last = data[:, -16:, :].astype(np.float32)
    rows = [int(np.flatnonzero((last == w).all(axis=(1, 2)))[0]) for w in a]
    assert rows == sorted(rows) and len(set(rows)) == 50
    everything = nf.sample(path, 10_000, seed=1, context_frames=16)  # more than it holds: all of them
    assert np.array_equal(everything, last)


def test_a_stream_of_embeddings_gives_every_run_of_16_as_a_window(tmp_path: Path) -> None:
    stream = np.random.default_rng(3).normal(size=(100, 96)).astype(np.float32)
    path = _save(tmp_path / "stream.npy", stream)
    assert nf.check(path, 16) == 85
    a = nf.sample(path, 20, seed=0, context_frames=16)
    starts = [next(t for t in range(85) if np.array_equal(stream[t : t + 16], w)) for w in a]
    assert starts == sorted(starts) and len(set(starts)) == 20
    assert np.array_equal(nf.sample(path, 1000, seed=0, context_frames=16)[-1], stream[84:])


def test_a_window_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    data = _windows(10)
    data[4, 3, 7] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        nf.sample(_save(tmp_path / "n.npy", data), 10, seed=0, context_frames=16)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--negative-features", "MISSING"], "--negative-features: MISSING does not exist"),
        (["--negative-features", "BAD"], "--negative-features: BAD holds an array of shape (4, 16, 95)"),
        (["--negative-feature-windows", "10"], "--negative-feature-windows: only with --negative-features"),
        (["--negative-features", "GOOD", "--negative-feature-windows", "0"], "give 1–200,000 windows, got 0"),
        (["--negative-features", "GOOD", "--negative-feature-windows", "200001"], "got 200001"),
    ],
)
def test_train_refuses_bad_feature_options_before_anything_slow(
    tmp_path: Path,
    extra: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
    forbid_slow: Callable[..., None],
) -> None:
    import appliance.wakeword_training.train as train

    forbid_slow((train, "train_word"), (train, "features_for"))
    files = {
        "MISSING": tmp_path / "missing.npy",
        "BAD": _save(tmp_path / "bad.npy", np.zeros((4, 16, 95), np.float32)),
        "GOOD": _save(tmp_path / "good.npy", _windows(4)),
    }
    argv = [str(files[a]) if a in files else a for a in extra]
    out = tmp_path / "out"
    assert main(["wakeword", "train", "hey there", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    for key, path in files.items():
        said = said.replace(key, str(path))
    assert said in err
    assert not out.exists()


def test_the_windows_join_the_negatives_and_the_metadata_says_so(models_dir: Path, tmp_path: Path) -> None:
    from appliance.testing.speech import espeak_say
    from appliance.wakeword_training.train import MICRO, features_for, sliding, train_word

    extractor = features_for(models_dir)
    speech = espeak_say("the lamp on the table is bright and the hallway is dark tonight", "en+m3")
    windows = sliding(extractor.embeddings(speech), 1)
    path = _save(tmp_path / "real_speech.npy", windows.astype(np.float16))
    common = {"seed": 3, "size": MICRO, "show_progress": False}
    plain = train_word("hello lamp", "hello_lamp", tmp_path / "a", models_dir, **common)  # type: ignore[arg-type]
    with_file = train_word(
        "hello lamp", "hello_lamp", tmp_path / "b", models_dir, negative_features=path,
        negative_feature_windows=5, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    meta = json.loads(with_file.metadata_path.read_text())
    assert meta["training"]["feature_file"] == "real_speech.npy"
    assert meta["training"]["feature_file_windows"] == 5
    assert json.loads(plain.metadata_path.read_text())["training"]["feature_file_windows"] == 0
    assert (
        meta["training"]["near_miss_and_noise_windows"]
        == json.loads(plain.metadata_path.read_text())["training"]["near_miss_and_noise_windows"]
    )
    assert with_file.model_path.read_bytes() != plain.model_path.read_bytes()


def test_the_memory_warning_counts_the_feature_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import appliance.wakeword_training.memory as memory
    import appliance.wakeword_training.train as train

    def stop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped before training (test)")

    monkeypatch.setattr(memory, "room_for_training", lambda: memory.TRAIN_PEAK_BYTES + 100 * 2**20)
    monkeypatch.setattr(train, "train_word", stop)
    good = str(_save(tmp_path / "good.npy", _windows(4)))
    argv = ["wakeword", "train", "hey there", "--out", str(tmp_path / "out")]
    main(argv)
    assert "may be killed for memory" not in capsys.readouterr().err  # 100 MB to spare
    main([*argv, "--negative-features", good, "--negative-feature-windows", "2000"])  # 84 MB more
    assert "may be killed for memory" not in capsys.readouterr().err
    main([*argv, "--negative-features", good, "--negative-feature-windows", "3000"])  # 126 MB more
    peak = (memory.TRAIN_PEAK_BYTES + 3000 * memory.WINDOW_BYTES) / 2**20
    assert f"training needs about {peak:,.0f} MB at its peak" in capsys.readouterr().err
