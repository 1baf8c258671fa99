"""WakeWordGate: threshold, patience and refractory period on audio time."""

from __future__ import annotations

import pytest

from appliance.core.wakeword import WakeWordGate, WakeWordRule

F = 0.08  # one openWakeWord frame


def run(gate: WakeWordGate, scores: list[dict[str, float]]) -> list[tuple[str, float]]:
    out = []
    for i, s in enumerate(scores):
        d = gate.process(s, round((i + 1) * F, 3))
        if d is not None:
            out.append((d.name, d.t))
    return out


@pytest.mark.parametrize(
    ("rule", "series", "expected"),
    [
        # threshold: 0.5 fires on the frame that reaches it
        (WakeWordRule("w", 0.5), [0.1, 0.4, 0.6, 0.9, 0.2], [("w", 0.24)]),
        # just below threshold never fires
        (WakeWordRule("w", 0.5), [0.49] * 10, []),
        # patience 3: needs three consecutive frames above threshold
        (WakeWordRule("w", 0.5, patience_frames=3), [0.6, 0.6, 0.1, 0.6, 0.6, 0.6], [("w", 0.48)]),
        # patience 3 never satisfied
        (WakeWordRule("w", 0.5, patience_frames=3), [0.6, 0.6, 0.1, 0.6, 0.6, 0.1], []),
        # refractory 0.5 s: a second peak 0.24 s later is ignored, one 0.64 s later fires
        (
            WakeWordRule("w", 0.5, refractory_s=0.5),
            [0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9],
            [("w", 0.08), ("w", 0.72)],
        ),
    ],
)
def test_gate_table(rule: WakeWordRule, series: list[float], expected: list[tuple[str, float]]) -> None:
    gate = WakeWordGate({rule.name: rule})
    assert run(gate, [{rule.name: s} for s in series]) == expected


def test_best_model_wins_and_all_models_go_quiet() -> None:
    gate = WakeWordGate({"a": WakeWordRule("a", 0.5), "b": WakeWordRule("b", 0.5, refractory_s=1.0)})
    d = gate.process({"a": 0.6, "b": 0.95}, 1.0)
    assert d is not None and (d.name, d.score) == ("b", 0.95)
    # "a" is blocked too (one wake per utterance), for its own refractory of 2 s
    assert gate.process({"a": 0.99, "b": 0.1}, 2.5) is None
    assert gate.process({"a": 0.99, "b": 0.1}, 3.08) is not None


def test_per_model_thresholds() -> None:
    gate = WakeWordGate({"a": WakeWordRule("a", 0.9), "b": WakeWordRule("b", 0.3)})
    d = gate.process({"a": 0.8, "b": 0.35}, 0.08)
    assert d is not None and d.name == "b"


def test_reset_forgets_patience_but_keeps_refractory() -> None:
    gate = WakeWordGate({"w": WakeWordRule("w", 0.5, patience_frames=2, refractory_s=1.0)})
    assert gate.process({"w": 0.9}, 0.08) is None
    gate.reset()
    assert gate.process({"w": 0.9}, 0.16) is None  # count restarted
    assert gate.process({"w": 0.9}, 0.24) is not None
    gate.reset()
    assert gate.process({"w": 0.9}, 0.5) is None
    assert gate.process({"w": 0.9}, 0.58) is None  # still refractory until 1.24


def test_unknown_model_scores_are_ignored() -> None:
    gate = WakeWordGate({"w": WakeWordRule("w")})
    assert gate.process({"other": 1.0}, 0.08) is None
