"""How many CPUs this process may really use, and the thread counts chosen from it.

`os.cpu_count()` reports the machine's cores, not what a container or a CPU quota leaves the
process: a quota of half a core with 2 llama.cpp threads, which wait for each other at every
step, made the first reply audio 3x later (issue 12, pi-class pi5: 7.0 s against 2.5 s). The
usable count is the smallest of the CPU affinity and every CFS quota above the process (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).

`threads: auto` (the default for llama.cpp and piper) is 1 below 3 usable CPUs and 2 from 3 up:
on a 4-core board, STT, the LLM and the first chunk's synthesis then each keep a core."""

from __future__ import annotations

import math
import os
from pathlib import Path

from appliance import cgroups


def _quota_v2(directory: Path) -> float | None:
    text = cgroups.read_text(directory / "cpu.max")
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(directory: Path) -> float | None:
    quota = cgroups.read_text(directory / "cpu.cfs_quota_us")
    period = cgroups.read_text(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_quota(proc_cgroup: str | None = None, root: Path = cgroups.ROOT) -> float | None:
    """The tightest CFS quota, in CPUs, over this process's cgroup and its parents; None: none.
    `proc_cgroup`: the text of /proc/self/cgroup (read when None)."""
    quotas = [
        quota
        for directory, version in cgroups.directories("cpu", proc_cgroup, root, ("cpu,cpuacct",))
        if (quota := (_quota_v2 if version == 2 else _quota_v1)(directory)) is not None
    ]
    return min(quotas) if quotas else None


def usable_cpus() -> float:
    """CPUs this process may use: its affinity, capped by any CPU quota (at least 0.01)."""
    try:
        count = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        count = float(os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(0.01, min(count, quota) if quota is not None else count)


def auto_threads(cpus: float | None = None) -> int:
    """Threads for one pipeline stage (llama.cpp, piper) that shares the CPUs with the others."""
    usable = usable_cpus() if cpus is None else cpus
    return 2 if math.floor(usable + 1e-9) >= 3 else 1
