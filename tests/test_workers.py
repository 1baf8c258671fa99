"""How many workers the suite runs on (`-n auto`, tests/conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("suite_conftest", Path(__file__).parent / "conftest.py")
assert _spec is not None and _spec.loader is not None
suite_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite_conftest)


@pytest.mark.parametrize(
    ("cpus", "memory_gib", "workers"),
    [
        (2, 24.0, 2),  # this box: one per core
        (4, 7.8, 1),  # a Pi 5 with 8 GB: memory decides
        (4, 3.7, 1),  # a Pi 4 with 4 GB: one worker, never none
        (1, 64.0, 1),
        (16, 64.0, suite_conftest.MAX_WORKERS),  # a big machine: capped
        (8, 12.0, 3),
    ],
)
def test_workers_follow_cpus_and_memory(cpus: int, memory_gib: float, workers: int) -> None:
    assert suite_conftest.workers_for(cpus, memory_gib) == workers
