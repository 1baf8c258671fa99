"""A small numpy MLP on openWakeWord features, and its export as an openWakeWord-shaped ONNX model.

[batch, 16, 96] → flatten → (standardize, folded into the first layer) → Dense(hidden) → ReLU →
Dense(1) → Sigmoid → [batch, 1]. Training is full-batch Adam in float64 from a seeded generator,
so the same data and seed give the same weights, and the exported file is byte-identical.
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
) -> Mlp:
    """Fit on windows `x` [n, 16, 96] with labels `y` (1 positive, 0 negative)."""
    rng = np.random.default_rng(seed)
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    labels = np.asarray(y, dtype=np.float64)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0) + 1e-3
    xs = (flat - mean) / std
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
        pre = xs @ w1 + b1
        h = np.maximum(pre, 0.0)
        z = (h @ w2 + b2)[:, 0]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        dz = (weights * (p - labels))[:, None]  # gradient of the weighted cross-entropy
        grads = [
            xs.T @ ((dz @ w2.T) * (pre > 0)) + l2 * w1,
            ((dz @ w2.T) * (pre > 0)).sum(axis=0),
            h.T @ dz + l2 * w2,
            dz.sum(axis=0),
        ]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] = params[i] - lr * (m[i] / (1 - 0.9**step)) / (np.sqrt(v[i] / (1 - 0.999**step)) + 1e-8)
    w1, b1, w2, b2 = params
    return Mlp(w1 / std[:, None], b1 - (mean / std) @ w1, w2, b2)


def to_onnx(model: Mlp, name: str) -> bytes:
    """The serialized ONNX model (opset 13, IR 8: loads on onnxruntime ≥ 1.10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(array: Float, tensor: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), tensor)

    frames = model.w1.shape[0] // FEATURES  # FRAMES, or the `context_frames` it was trained on
    shape = numpy_helper.from_array(np.array([-1, frames * FEATURES], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["z1"]),
        helper.make_node("Add", ["z1", "b2"], ["z2"]),
        helper.make_node("Sigmoid", ["z2"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", frames, FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [shape, init(model.w1, "w1"), init(model.b1, "b1"), init(model.w2, "w2"), init(model.b2, "b2")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="appliance-wakeword", ir_version=8
    )
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())
