"""A trained wake word's operating point: the threshold and patience it runs at.

`appliance wakeword train` writes `NAME.wakeword.json` beside `NAME.onnx`; a word whose config
does not set `threshold` / `patience_frames` runs at the file's (an explicit config value wins,
field by field). Read when the configuration loads, so `check-config`, a SIGHUP reload and the
start agree; a malformed file is a configuration problem naming the word and the file. Below the
configuration in the layers (it imports nothing from runtime)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config import Config

METADATA_SUFFIX = ".wakeword.json"  # written by `appliance wakeword train` beside NAME.onnx
MAX_METADATA_BYTES = 1 << 20
MAX_PATIENCE_FRAMES = 25  # as `appliance.wake_words.words[].patience_frames`


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold and patience a word runs at, and where each came from (for the log)."""

    name: str
    threshold: float
    patience_frames: int
    threshold_from: str  # "config", "default", or the metadata file's path
    patience_from: str
    # (path, size, mtime in ns) of the word's model and metadata files when the configuration
    # loaded: a SIGHUP reload reloads the detector when they changed (a word trained again under
    # the same name), even if the config text did not (`runtime.reload`)
    files: tuple[tuple[str, int, int], ...] = ()


def model_file_stamps(
    name: str, path: Path | None, custom_dir: Path | None
) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime_ns) of each file a word's model may be read from that exists: its
    `path` and the files of the same stem beside it (.onnx, .tflite, microWakeWord .json,
    NAME.wakeword.json), else the custom folder's NAME.* of those kinds. Bundled models: none."""
    if path is not None:
        stem, folder = path.stem, path.parent
        candidates = [path]
    elif custom_dir is not None:
        stem, folder = name, custom_dir
        candidates = []
    else:
        return ()
    candidates += [folder / f"{stem}{suffix}" for suffix in (".onnx", ".tflite", ".json", METADATA_SUFFIX)]
    out: dict[str, tuple[str, int, int]] = {}
    for file in candidates:
        try:
            st = file.stat()
        except OSError:
            continue
        out[str(file)] = (str(file), st.st_size, st.st_mtime_ns)
    return tuple(out[k] for k in sorted(out))


def metadata_path(name: str, engine: str | None, path: Path | None, custom_dir: Path | None) -> Path | None:
    """`NAME.wakeword.json` beside a trained/custom openWakeWord model, if there is one.

    `path`: the word's resolved `path` (an `.onnx`); else the custom folder's `NAME.onnx`, which
    `resolve_wake_word` prefers to a bundled model of the same name. microWakeWord models: None."""
    if engine == "microwakeword":
        return None
    if path is not None:
        model = path if path.suffix.lower() == ".onnx" else None
    elif custom_dir is not None:
        model = custom_dir / f"{name}.onnx"
    else:
        model = None
    if model is None or not model.is_file():
        return None
    meta = model.with_name(model.stem + METADATA_SUFFIX)
    return meta if meta.is_file() else None


def read_operating_point(path: Path) -> tuple[float, int | None]:
    """`(threshold, patience_frames or None)` of a metadata file; ValueError naming the file and
    the field when it is not a JSON object with a threshold in (0, 1) and a patience in 1–25."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_METADATA_BYTES + 1)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise ValueError(f"{path}: larger than 1 MiB; not a wake-word metadata file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not valid JSON ({str(err)[:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise ValueError(f"{path}: threshold must be a number between 0 and 1 (exclusive), got {threshold!r}")
    patience = data.get("patience_frames")
    if patience is not None and (
        isinstance(patience, bool)
        or not isinstance(patience, int)
        or not 1 <= patience <= MAX_PATIENCE_FRAMES
    ):
        raise ValueError(
            f"{path}: patience_frames must be a whole number 1–{MAX_PATIENCE_FRAMES}, got {patience!r}"
        )
    return float(threshold), patience


def operating_points(config: Config) -> tuple[dict[str, OperatingPoint], list[str]]:
    """Each configured word's threshold and patience: from the config where it sets them, else
    from the word's metadata file (a trained word), else the config's defaults. Second: problems
    (a malformed metadata file), one line each, with the word's dotted path and the file."""
    wake = config.appliance.wake_words
    custom_dir = config.resolve_path(wake.custom_dir) if wake.custom_dir else None
    points: dict[str, OperatingPoint] = {}
    problems: list[str] = []
    for i, word in enumerate(wake.words):
        word_path = config.resolve_path(word.path) if word.path else None
        meta = metadata_path(word.name, word.engine, word_path, custom_dir)
        explicit = word.model_fields_set
        threshold, patience = word.threshold, word.patience_frames
        from_meta: tuple[float, int | None] = (threshold, None)
        if meta is not None and not {"threshold", "patience_frames"} <= explicit:
            try:
                from_meta = read_operating_point(meta)
            except ValueError as err:
                problems.append(f"appliance.wake_words.words[{i}] ({word.name}): {err}")
                continue
        t_meta = meta is not None and "threshold" not in explicit
        p_meta = meta is not None and "patience_frames" not in explicit and from_meta[1] is not None
        if t_meta:
            threshold = from_meta[0]
        if p_meta and from_meta[1] is not None:
            patience = from_meta[1]
        points[word.name] = OperatingPoint(
            word.name,
            threshold,
            patience,
            "config" if "threshold" in explicit else str(meta) if t_meta else "default",
            "config" if "patience_frames" in explicit else str(meta) if p_meta else "default",
            model_file_stamps(word.name, word_path, custom_dir),
        )
    return points, problems


def operating_point_lines(points: Mapping[str, OperatingPoint]) -> list[str]:
    """One line per word for `check-config` and the start-up log."""
    where = {"config": "set in the config", "default": "the config's default"}

    def said(origin: str) -> str:
        return where.get(origin, f"from {origin}")

    lines = []
    for p in points.values():
        if p.threshold_from == p.patience_from:
            how = said(p.threshold_from)
        else:
            how = f"threshold {said(p.threshold_from)}, patience {said(p.patience_from)}"
        lines.append(
            f"wake word {p.name}: threshold {p.threshold:g}, patience {p.patience_frames} frame(s) ({how})"
        )
    return lines
