"""The control groups above this process (cgroup v1 or v2): where a CPU quota or a memory limit a
container, a service or `pi-class` sets is found. `runtime.cpus` reads the CPU quota from them,
`wakeword_training.memory` the memory limit."""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def read_text(path: Path) -> str | None:
    """The file's text, stripped; None if it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def directories(
    controller: str, proc_cgroup: str | None = None, root: Path = ROOT, v1_mounts: tuple[str, ...] = ()
) -> list[tuple[Path, int]]:
    """Each cgroup directory of `controller` ("cpu", "memory") over this process, from its own up
    to its hierarchy's mount, with the cgroup version (1 or 2) of its files. `proc_cgroup`: the
    text of /proc/self/cgroup (read when None). A v1 hierarchy is mounted at `root` / the
    controllers its line names, else at the first of `root` / `controller`, `v1_mounts` there."""
    text = proc_cgroup if proc_cgroup is not None else read_text(Path("/proc/self/cgroup"))
    found: list[tuple[Path, int]] = []
    for line in (text or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path.startswith("/"):
            continue
        if hierarchy == "0" and controllers == "":
            mounts, version = [root], 2
        elif controller in controllers.split(","):
            mounts = [root / controllers, root / controller, *(root / m for m in v1_mounts)]
            version = 1
        else:
            continue
        mount = next((m for m in mounts if m.is_dir()), None)
        if mount is None:
            continue
        directory = mount / path.lstrip("/")
        while True:
            found.append((directory, version))
            if directory == mount:
                break
            directory = directory.parent
    return found
