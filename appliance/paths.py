"""Where the appliance keeps its runtime socket and its state, under systemd and outside it.

Under systemd the unit's `RuntimeDirectory=appliance` / `StateDirectory=appliance` give
`$RUNTIME_DIRECTORY` (/run/appliance) and `$STATE_DIRECTORY` (/var/lib/appliance). Run by
hand, the socket lives in `$XDG_CACHE_HOME/appliance` (~/.cache/appliance) and the state in
`$XDG_STATE_HOME/appliance` (~/.local/state/appliance).

`write_atomic` is how the appliance and its commands replace a file there (or anywhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOCKET_NAME = "appliance.sock"
SERVICE_SOCKET = Path("/run/appliance") / SOCKET_NAME


def _first(env: Mapping[str, str], name: str) -> Path | None:
    """The first path of a systemd directory variable (they are colon-separated lists)."""
    value = env.get(name, "").split(":")[0].strip()
    return Path(value) if value else None


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the appliance serves its status feed when `appliance.status.socket` is unset."""
    env = os.environ if env is None else env
    runtime = _first(env, "RUNTIME_DIRECTORY")
    if runtime is not None:
        return runtime / SOCKET_NAME
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else _home(env) / ".cache"
    return cache / "appliance" / SOCKET_NAME


def client_socket_candidates(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where a client looks for the feed: this environment's default, then the service's."""
    env = os.environ if env is None else env
    first = default_socket_path(env)
    return [first] if first == SERVICE_SOCKET else [first, SERVICE_SOCKET]


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    state = _first(env, "STATE_DIRECTORY")
    if state is not None:
        return state
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else _home(env) / ".local" / "state"
    return base / "appliance"


def recordings_dir(env: Mapping[str, str] | None = None) -> Path:
    return state_dir(env) / "recordings"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` all at once: whoever reads it (the appliance starting up) finds the old
    file or the new one, never a part; after a crash or a power cut, no half-written file either.
    `mode`: a new file's permissions (before the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
