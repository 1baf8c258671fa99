"""The idle benchmark runs end to end in a tiny configuration and produces sane tables.

Only shapes and signs are checked, never timings: performance is measured by
`python -m benchmarks.run`, not asserted in tests (see benchmarks/README.md).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import idle_loop, run  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.slow]


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (row, key)


def test_idle_benchmark_quick_run_has_expected_tables(models_dir: Path) -> None:
    names = run.select(["idle"])
    assert names == ["idle.cpu", "idle.latency", "idle.latency.runs", "idle.memory"]
    results = run.run(names, quick=True, out=None)
    json.dumps(results)  # what --json writes

    # 1. CPU per 80 ms frame: 2 s of audio = 25 blocks per configuration, one pass
    cpu = {row["component"]: row for row in results["idle.cpu"]["rows"]}
    measured = [name for name, _ in idle_loop.CPU_CONFIGS]
    assert list(cpu) == [*measured, "VAD gate cost (router − gate off)"]
    for name in measured:
        row = cpu[name]
        assert row["frames"] == 25
        _positive(row, "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU ms/frame", "% of one core")
        assert row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"] <= row["max ms"]
    router = cpu[measured[0]]
    assert router["× router"] == pytest.approx(1.0)
    assert router["false wakes"] == 0
    assert router["verdict"] in {"PASS", "FAIL"}
    assert router["÷ target"] == pytest.approx(router["% of one core"] / idle_loop.CPU_TARGET_PCT)

    # 2. latency: both synthesized phrases detected, within a plausible window of audio time
    summary = results["idle.latency"]["rows"]
    assert len(summary) == 2
    for row in summary:
        assert row["utterances"] == row["detected"] == 2
        assert row["verdict"] in {"PASS", "FAIL"}
        assert row["min ms"] <= row["median ms"] <= row["p90 ms"] <= row["max ms"]
    per_phrase = results["idle.latency.runs"]["rows"]
    assert [r["#"] for r in per_phrase] == [1, 2]
    for row in per_phrase:
        assert row["score"] >= 0.5
        assert -500.0 < row["latency ms"] < 1000.0
        _positive(row, "phrase end s", "detected s", "block ms")

    # 3. memory: fresh processes, each stage at least the bare baseline
    memory = results["idle.memory"]["rows"]
    assert len(memory) == 5
    for row in memory:
        _positive(row, "RSS MiB")
    assert memory[0]["Δ vs baseline MiB"] == 0
    assert all(row["Δ vs baseline MiB"] > 0 for row in memory[1:])

    # every table prints as aligned text: a header, a rule, one line per row
    for name in names:
        rows = results[name]["rows"]
        lines = run.format_table(rows).splitlines()
        assert len(lines) == len(rows) + 2
        assert lines[0].split()[0] == next(iter(rows[0]))
