"""How much memory `wakeword train` may use here, to warn before a training the kernel would kill
for memory half-way (a 2 GB Raspberry Pi 4, a Pi 3, a service's memory limit)."""

from __future__ import annotations

from pathlib import Path

from appliance import cgroups
from appliance.system_memory import read_meminfo

# `appliance wakeword train` with the default data set: 1,705 MB maximum resident set
# (`/usr/bin/time -v appliance wakeword train "hey computer"`; 2,355 MB before `train_mlp`
# normalized a block at a time), plus a margin
TRAIN_PEAK_BYTES = 1_900 * 2**20
# what one more training window (--negative-features) adds to the peak: 20,000 windows took the
# maximum resident set from 1,705 to 2,488 MB ("hello lamp", seed 0): the fit's copies of it
WINDOW_BYTES = 42 * 1024
_UNLIMITED = 1 << 60  # cgroup v1 writes a number near 2^63 for "no limit"
# the limit's and the usage's file, by cgroup version
_LIMIT_AND_USAGE = {
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes"),
    2: ("memory.max", "memory.current"),
}


def _meminfo_room(meminfo: Path) -> int | None:
    """MemAvailable + SwapFree (bytes): what the system can give without killing anything."""
    values = read_meminfo(meminfo)
    if "MemAvailable" not in values:
        return None
    return values["MemAvailable"] + values.get("SwapFree", 0)


def _read_int(path: Path) -> int | None:
    text = cgroups.read_text(path)
    return int(text) if text is not None and text.isdigit() else None  # "max" (cgroup v2): no limit


def _cgroup_room(proc_cgroup: Path, cgroup_root: Path) -> int | None:
    """The tightest memory cgroup limit minus its usage (bytes) over this process's cgroup and its
    parents (v1 or v2), None without a limit."""
    rooms = []
    for folder, version in cgroups.directories("memory", cgroups.read_text(proc_cgroup) or "", cgroup_root):
        limit_file, usage_file = _LIMIT_AND_USAGE[version]
        limit = _read_int(folder / limit_file)
        if limit is not None and limit < _UNLIMITED:
            rooms.append(max(0, limit - (_read_int(folder / usage_file) or 0)))
    return min(rooms) if rooms else None


def room_for_training(
    meminfo: Path = Path("/proc/meminfo"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = cgroups.ROOT,
) -> int | None:
    """The bytes this process may still take: the system's (available memory and free swap) or its
    memory cgroup's, whichever is less; None if neither can be read."""
    known = [r for r in (_meminfo_room(meminfo), _cgroup_room(proc_cgroup, cgroup_root)) if r is not None]
    return min(known) if known else None
