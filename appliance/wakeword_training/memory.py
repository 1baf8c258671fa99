"""How much memory `wakeword train` may use here, to warn before a training the kernel would kill
for memory half-way (a 2 GB Raspberry Pi 4, a Pi 3, a service's memory limit)."""

from __future__ import annotations

from pathlib import Path

from appliance.system_memory import read_meminfo

# `appliance wakeword train` with the default data set: 1,705 MB maximum resident set
# (`/usr/bin/time -v appliance wakeword train "hey computer"`; 2,355 MB before `train_mlp`
# normalized a block at a time), plus a margin
TRAIN_PEAK_BYTES = 1_900 * 2**20
_UNLIMITED = 1 << 60  # cgroup v1 writes a number near 2^63 for "no limit"


def _meminfo_room(meminfo: Path) -> int | None:
    """MemAvailable + SwapFree (bytes): what the system can give without killing anything."""
    values = read_meminfo(meminfo)
    if "MemAvailable" not in values:
        return None
    return values["MemAvailable"] + values.get("SwapFree", 0)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2): no limit


def _cgroup_room(proc_cgroup: Path, cgroup_root: Path) -> int | None:
    """The memory cgroup's limit minus its usage (bytes), None without a limit (v1 or v2)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):  # v1
            folder = cgroup_root / "memory" / relative
            limit = _read_int(folder / "memory.limit_in_bytes")
            usage = _read_int(folder / "memory.usage_in_bytes")
        elif controllers == "" and (cgroup_root / relative / "memory.max").exists():  # v2
            folder = cgroup_root / relative
            limit = _read_int(folder / "memory.max")
            usage = _read_int(folder / "memory.current")
        else:
            continue
        if limit is not None and limit < _UNLIMITED:
            return max(0, limit - (usage or 0))
    return None


def room_for_training(
    meminfo: Path = Path("/proc/meminfo"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> int | None:
    """The bytes this process may still take: the system's (available memory and free swap) or its
    memory cgroup's, whichever is less; None if neither can be read."""
    known = [r for r in (_meminfo_room(meminfo), _cgroup_room(proc_cgroup, cgroup_root)) if r is not None]
    return min(known) if known else None
