"""`wakeword train` warns before a training the kernel would kill for memory: the room is the
system's (available memory and free swap) or the memory cgroup's (v1 or v2), whichever is less."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.wakeword_training.memory import TRAIN_PEAK_BYTES, room_for_training

MB = 2**20


def _meminfo(tmp: Path, available_kb: int | None, swap_kb: int = 0) -> Path:
    lines = ["MemTotal:        8000000 kB", f"SwapFree:        {swap_kb} kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:    {available_kb} kB")
    path = tmp / "meminfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cgroup(tmp: Path, folder: str, files: dict[str, str], self_lines: str) -> tuple[Path, Path]:
    """A cgroup tree under tmp/cg with `files` in `folder`, and /proc/self/cgroup's `self_lines`."""
    (tmp / "cg" / folder).mkdir(parents=True)
    for name, value in files.items():
        (tmp / "cg" / folder / name).write_text(f"{value}\n")
    (tmp / "self_cgroup").write_text(self_lines)
    return tmp / "self_cgroup", tmp / "cg"


def _v1(tmp: Path, limit: int, usage: int) -> tuple[Path, Path]:
    files = {"memory.limit_in_bytes": str(limit), "memory.usage_in_bytes": str(usage)}
    return _cgroup(tmp, "memory/pi", files, "5:devices:/\n4:memory:/pi\n0::/\n")


def _v2(tmp: Path, limit: str, current: int) -> tuple[Path, Path]:
    files = {"memory.max": limit, "memory.current": str(current)}
    return _cgroup(tmp, "system.slice/appliance.service", files, "0::/system.slice/appliance.service\n")


def test_the_system_memory_and_swap_without_a_cgroup_limit(tmp_path: Path) -> None:
    cgroup, root = _v2(tmp_path, "max", 10 * MB)  # no limit
    room = room_for_training(_meminfo(tmp_path, 1_500_000, swap_kb=1_000_000), cgroup, root)
    assert room == (1_500_000 + 1_000_000) * 1024


def test_a_cgroup_v1_limit_under_the_system_memory(tmp_path: Path) -> None:
    cgroup, root = _v1(tmp_path, 2048 * MB, 100 * MB)  # `pi-class pi4`
    assert room_for_training(_meminfo(tmp_path, 20_000_000), cgroup, root) == 1948 * MB


def test_a_cgroup_v1_without_a_limit(tmp_path: Path) -> None:
    cgroup, root = _v1(tmp_path, 9223372036854771712, 100 * MB)
    assert room_for_training(_meminfo(tmp_path, 3_000_000), cgroup, root) == 3_000_000 * 1024


def test_a_cgroup_v2_limit_a_service_sets(tmp_path: Path) -> None:
    cgroup, root = _v2(tmp_path, str(1024 * MB), 24 * MB)
    room = room_for_training(_meminfo(tmp_path, 20_000_000), cgroup, root)
    assert room == 1000 * MB and room < TRAIN_PEAK_BYTES


@pytest.mark.parametrize("available", [None, "unreadable"])
def test_nothing_readable_is_no_figure_not_a_guess(tmp_path: Path, available: str | None) -> None:
    meminfo = _meminfo(tmp_path, None) if available is None else tmp_path / "missing"
    assert room_for_training(meminfo, tmp_path / "no_cgroup", tmp_path / "no_root") is None


def test_a_parent_cgroups_limit_binds_the_child(tmp_path: Path) -> None:
    # a v2 slice with 1,500 MB over a service without its own limit: the tightest up the tree
    cgroup, root = _v2(tmp_path, "max", 10 * MB)
    (root / "system.slice" / "memory.max").write_text(f"{1500 * MB}\n")
    (root / "system.slice" / "memory.current").write_text(f"{300 * MB}\n")
    assert room_for_training(_meminfo(tmp_path, 20_000_000), cgroup, root) == 1200 * MB
