"""The wake-word classifier's fit on small synthetic windows: frame dropout is seeded, keeps the
exported scores on the same scale, and leaves the no-dropout fit as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.wakeword_training.model import train_mlp


def _windows(seed: int, frames: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Positives carry a pattern in every frame, negatives are noise around zero."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(0, 1, (frames, 96))
    pos = pattern + rng.normal(0, 0.8, (60, frames, 96))
    neg = rng.normal(0, 1, (240, frames, 96))
    return np.concatenate([pos, neg]), np.concatenate([np.ones(60), np.zeros(240)])


def test_frame_dropout_is_deterministic_and_still_separates() -> None:
    x, y = _windows(0)
    a = train_mlp(x, y, seed=2, hidden=8, epochs=60, frame_dropout=0.3)
    b = train_mlp(x, y, seed=2, hidden=8, epochs=60, frame_dropout=0.3)
    assert np.array_equal(a.w1, b.w1) and np.array_equal(a.b2, b.b2)
    scores = a.scores(x)
    assert scores[y > 0.5].min() > scores[y < 0.5].max()


def test_frame_dropout_rescales_the_first_layer_and_keeps_the_initial_draw() -> None:
    # a frame is seen (1 - p) of the time in training and always at inference: the exported first
    # layer is scaled by (1 - p); the masks come from their own stream, so the weights start from
    # the same draw as a fit without dropout (epochs=0: the initial weights themselves)
    x, y = _windows(0)
    plain = train_mlp(x, y, seed=2, hidden=8, epochs=0)
    dropped = train_mlp(x, y, seed=2, hidden=8, epochs=0, frame_dropout=0.25)
    assert np.allclose(dropped.w1, 0.75 * plain.w1)
    assert np.array_equal(dropped.w2, plain.w2)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_frame_dropout_out_of_range_is_refused(p: float) -> None:
    x, y = _windows(0)
    with pytest.raises(ValueError, match="frame_dropout"):
        train_mlp(x, y, seed=0, hidden=4, epochs=2, frame_dropout=p)


def test_an_ensemble_exports_as_one_model_scoring_the_mean_of_its_members(tmp_path: Path) -> None:
    import onnxruntime as ort

    from appliance.wakeword_training.model import Ensemble, to_onnx

    x, y = _windows(0)
    a = train_mlp(x, y, seed=1, hidden=6, epochs=30)
    b = train_mlp(x[::-1], y[::-1], seed=2, hidden=6, epochs=30, frame_dropout=0.2)
    ensemble = Ensemble((a, b))
    path = tmp_path / "e.onnx"
    path.write_bytes(to_onnx(ensemble, "e"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [6, 96]
    [got] = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    assert got.shape == (len(x), 1)
    assert np.allclose(got[:, 0], (a.scores(x) + b.scores(x)) / 2, atol=1e-5)
    assert not np.allclose(got[:, 0], a.scores(x), atol=1e-3)  # both members count


def test_an_ensemble_needs_members_of_one_input_size() -> None:
    from appliance.wakeword_training.model import Ensemble

    x, y = _windows(0)
    short, _ = _windows(0, frames=4)
    with pytest.raises(ValueError, match="same input size"):
        Ensemble(
            (train_mlp(x, y, seed=0, hidden=2, epochs=1), train_mlp(short, y, seed=0, hidden=2, epochs=0))
        )
    with pytest.raises(ValueError):
        Ensemble(())


@pytest.mark.parametrize("field, value", [("members", 0), ("frame_dropout", 1.0), ("frame_dropout", -0.2)])
def test_a_training_size_out_of_range_is_refused(field: str, value: float) -> None:
    import dataclasses

    from appliance.wakeword_training.train import TrainSize

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(TrainSize(), **{field: value})


def _pool_stream(
    pattern: np.ndarray, decoy: float, seed: int, blocks: int = 40, noise: float = 1.0
) -> np.ndarray:
    """An embedding stream of `blocks` window-long blocks: noise, every other block the positives'
    pattern at `decoy` strength (speech that sounds a little like the phrase)."""
    rng = np.random.default_rng(seed)
    frames = pattern.shape[0]
    out = rng.normal(0, noise, (blocks * frames, 96))
    for b in range(0, blocks, 2):
        out[b * frames : (b + 1) * frames] += decoy * pattern
    return out.astype(np.float32)


def test_the_hard_round_mines_the_pool_for_what_the_first_fit_still_likes() -> None:
    from appliance.wakeword_training.train import TrainSize, _fit_member, sliding

    frames = 6
    x, y = _windows(0, frames)
    pattern = np.random.default_rng(0).normal(0, 1, (frames, 96))  # the positives' (as `_windows`)
    size = TrainSize(hidden=8, epochs=60, l2=1e-3, frame_dropout=0.0)
    plain, none_pooled = _fit_member(x, y, size, seed=3)
    assert none_pooled == 0
    # decoys the first fit scores high: they join the second fit, which then scores them lower
    decoys = [_pool_stream(pattern, 0.7, seed) for seed in (10, 11)]
    mined, pooled = _fit_member(x, y, size, seed=3, pool=decoys)
    windows = np.concatenate([sliding(s, 2, frames) for s in decoys])
    assert pooled > 0
    assert mined.scores(windows).mean() < plain.scores(windows).mean() - 0.1
    assert mined.scores(x)[y > 0.5].min() > 0.5  # the phrase itself still fires
    # a quiet pool, nothing the first fit likes: nothing added, the same classifier
    quiet_pool = [_pool_stream(pattern, 0.0, 12, noise=0.2)]
    quiet, none_added = _fit_member(x, y, size, seed=3, pool=quiet_pool)
    assert none_added == 0 and np.array_equal(quiet.w1, plain.w1)
    with pytest.raises(ValueError, match="hard_negative_pool_minutes"):
        TrainSize(hard_negative_pool_minutes=-1)


def test_normalizing_a_block_at_a_time_changes_no_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """The windows are normalized `NORMALIZE_BLOCK` at a time (no float64 copy of them all): the
    fitted weights are the same bits whatever the block, a last partial block included."""
    import appliance.wakeword_training.model as model

    rng = np.random.default_rng(5)
    x = (rng.normal(size=(50, 4, 96)) * 3 + 1).astype(np.float32)
    y = (rng.random(50) < 0.3).astype(np.float64)
    fitted = []
    for block in (4096, 1, 7):  # all at once, one by one, 7 blocks and one of 1 window
        monkeypatch.setattr(model, "NORMALIZE_BLOCK", block)
        m = model.train_mlp(x, y, seed=2, hidden=4, epochs=5, frame_dropout=0.2)
        fitted.append((m.w1, m.b1, m.w2, m.b2))
    for other in fitted[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(fitted[0], other, strict=True))
