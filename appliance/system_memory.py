"""The kernel's memory figures (/proc/meminfo), for `doctor` and for `wakeword train`'s warning."""

from __future__ import annotations

from pathlib import Path


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """Each numeric field in bytes ("MemAvailable", "SwapFree", ...); empty if unreadable."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out
