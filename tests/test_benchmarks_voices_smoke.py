"""The voice benchmarks run in their quick configuration and produce sane tables.

Only shapes and signs are checked, never timings (see benchmarks/README.md).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import run, voices  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.slow]


def test_voice_benchmarks_are_registered_and_run_quick() -> None:
    assert run.select(["voices"]) == ["voices.switch", "voices.memory"]
    results = run.run(["voices.switch", "voices.memory"], quick=True, out=None)

    switch = {row["second segment"]: row for row in results["voices.switch"]["rows"]}
    assert list(switch) == list(voices.SCENARIOS)
    assert switch[voices.NO_SWITCH]["× no switch"] == pytest.approx(1.0)
    assert switch[voices.COLD]["runs"] == 1 and switch[voices.CACHED]["runs"] == 2
    for row in switch.values():
        assert 0 < row["min ms"] <= row["median ms"] <= row["max ms"]
        assert math.isfinite(row["× no switch"]) and row["audible gap ms"] >= 0
    # a cold load builds an ONNX session: slower than any cached synthesis
    assert switch[voices.COLD]["median ms"] > switch[voices.CACHED]["max ms"]

    memory = results["voices.memory"]["rows"]
    assert [row["stage"] for row in memory] == list(voices.RSS_STAGES[:4])
    assert [row["models loaded"] for row in memory] == [0, 1, 1, 2]
    assert memory[0]["Δ MiB"] is None
    # a distinct voice file costs far more than a variant of a loaded one
    assert memory[3]["Δ MiB"] > 2 * max(memory[2]["Δ MiB"], 1.0)
    for name in ("voices.switch", "voices.memory"):
        assert len(run.format_table(results[name]["rows"]).splitlines()) == len(results[name]["rows"]) + 2
