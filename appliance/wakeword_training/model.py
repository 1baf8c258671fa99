"""A small numpy MLP on openWakeWord features, and its export as an openWakeWord-shaped ONNX model.

[batch, 16, 96] → flatten → (standardize, folded into the first layer) → Dense(hidden) → ReLU →
Dense(1) → Sigmoid → [batch, 1]. An `Ensemble` of such MLPs (each fitted on its own draw of the
data) is exported as one graph of the same shape: the members' hidden layers side by side, one
sigmoid each, their mean the score. Training is full-batch Adam from a seeded generator (the two
big matrix products in float32, about twice as fast, the rest in float64), so the same data and
seed give the same weights on the same machine, and the exported file is byte-identical.
Optionally each step hides a random share of each window's embeddings (`frame_dropout`: set to
the features' mean), so no single 80 ms frame decides; the first layer is scaled back at the end
(the usual dropout rescaling), so the exported graph is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRAMES = 16
FEATURES = 96
Float = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Mlp:
    w1: Float  # [frames × 96 (1536), hidden], standardization folded in
    b1: Float  # [hidden]
    w2: Float  # [hidden, 1]
    b2: Float  # [1]

    def scores(self, x: npt.NDArray[np.floating]) -> Float:
        """Scores of [n, 16, 96] windows (float64; the ONNX model computes them in float32)."""
        flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
        h = np.maximum(flat @ self.w1 + self.b1, 0.0)
        z = (h @ self.w2 + self.b2)[:, 0]
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))), dtype=np.float64)


@dataclass(frozen=True)
class Ensemble:
    """MLPs of the same input shape whose scores are averaged (in the exported graph)."""

    members: tuple[Mlp, ...]

    def __post_init__(self) -> None:
        if not self.members or len({m.w1.shape[0] for m in self.members}) != 1:
            raise ValueError("an ensemble needs one or more MLPs of the same input size")


def check_frame_dropout(p: float) -> None:
    """`frame_dropout` must hide less than every frame (and not a negative share)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"frame_dropout must be in [0, 1), got {p}")


NORMALIZE_BLOCK = 4096  # windows normalized at a time (`train_mlp`)


def train_mlp(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    *,
    seed: int,
    hidden: int = 32,
    epochs: int = 300,
    lr: float = 0.003,
    l2: float = 1e-3,
    negative_weight: float = 4.0,
    frame_dropout: float = 0.0,
) -> Mlp:
    """Fit on windows `x` [n, frames, 96] with labels `y` (1 positive, 0 negative); with
    `frame_dropout` p, each step hides each embedding of each window with probability p."""
    check_frame_dropout(frame_dropout)
    rng = np.random.default_rng(seed)
    masks = np.random.default_rng([seed, 1])  # its own stream: the weights' draw is unchanged
    n, frames = x.shape[0], x.shape[1]
    flat = x.reshape(n, -1)
    labels = np.asarray(y, dtype=np.float64)
    # the statistics in float64, the windows normalized a block at a time: no float64 copy of
    # them all (it was the training's peak memory, ~0.5 GB), the same numbers
    mean = flat.mean(axis=0, dtype=np.float64)
    std = flat.std(axis=0, dtype=np.float64) + 1e-3
    xs = np.empty(flat.shape, np.float32)  # the two big products in float32: ~2× faster
    for start in range(0, n, NORMALIZE_BLOCK):
        block = flat[start : start + NORMALIZE_BLOCK].astype(np.float64)
        xs[start : start + NORMALIZE_BLOCK] = ((block - mean) / std).astype(np.float32)
    d = xs.shape[1]
    params = [
        rng.normal(0, np.sqrt(2.0 / d), (d, hidden)),
        np.zeros(hidden),
        rng.normal(0, np.sqrt(1.0 / hidden), (hidden, 1)),
        np.zeros(1),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    pos = labels.sum()
    weights = np.where(labels > 0.5, 1.0 / max(pos, 1.0), negative_weight / max(len(labels) - pos, 1.0))
    weights = weights / weights.sum()
    for step in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        xin = xs
        if frame_dropout > 0:
            keep = masks.random((n, frames, 1)) >= frame_dropout
            xin = (xs.reshape(n, frames, -1) * keep).reshape(n, -1)
        pre = (xin @ w1.astype(np.float32)).astype(np.float64) + b1
        h = np.maximum(pre, 0.0)
        z = (h @ w2 + b2)[:, 0]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        dz = (weights * (p - labels))[:, None]  # gradient of the weighted cross-entropy
        dpre = (dz @ w2.T) * (pre > 0)
        grads = [
            (xin.T @ dpre.astype(np.float32)).astype(np.float64) + l2 * w1,
            dpre.sum(axis=0),
            h.T @ dz + l2 * w2,
            dz.sum(axis=0),
        ]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] = params[i] - lr * (m[i] / (1 - 0.9**step)) / (np.sqrt(v[i] / (1 - 0.999**step)) + 1e-8)
    w1, b1, w2, b2 = params
    w1 = w1 * (1.0 - frame_dropout)  # a frame is seen (1 − p) of the time in training, always here
    return Mlp(w1 / std[:, None], b1 - (mean / std) @ w1, w2, b2)


def _stacked(model: Mlp | Ensemble) -> tuple[Float, Float, Float, Float]:
    """One MLP's weights, or an ensemble's as one wider layer: the hidden units side by side,
    a block-diagonal second layer with one output (logit) per member."""
    members = model.members if isinstance(model, Ensemble) else (model,)
    w1 = np.concatenate([m.w1 for m in members], axis=1)
    b1 = np.concatenate([m.b1 for m in members])
    w2 = np.zeros((w1.shape[1], len(members)))
    col = 0
    for k, m in enumerate(members):
        w2[col : col + m.w2.shape[0], k] = m.w2[:, 0]
        col += m.w2.shape[0]
    b2 = np.array([float(m.b2[0]) for m in members])
    return w1, b1, w2, b2


def to_onnx(model: Mlp | Ensemble, name: str) -> bytes:
    """The serialized ONNX model (opset 13, IR 8: loads on onnxruntime ≥ 1.10); an ensemble's
    score is the mean of its members' sigmoids (one matrix product per layer for all of them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(array: Float, tensor: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), tensor)

    w1, b1, w2, b2 = _stacked(model)
    frames = w1.shape[0] // FEATURES  # FRAMES, or the `context_frames` it was trained on
    shape = numpy_helper.from_array(np.array([-1, frames * FEATURES], dtype=np.int64), "shape")
    single = w2.shape[1] == 1
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["z1"]),
        helper.make_node("Add", ["z1", "b2"], ["z2"]),
        helper.make_node("Sigmoid", ["z2"], ["score" if single else "member_scores"]),
    ]
    if not single:
        nodes.append(helper.make_node("ReduceMean", ["member_scores"], ["score"], axes=[1], keepdims=1))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", frames, FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [shape, init(w1, "w1"), init(b1, "b1"), init(w2, "w2"), init(b2, "b2")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="appliance-wakeword", ir_version=8
    )
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())
