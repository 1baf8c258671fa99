"""Which engine runs each configured wake word, and the one detector the router sees.

`appliance.wake_words.words[].engine` picks openWakeWord (ONNX classifiers on a shared feature
front end) or microWakeWord (small streaming TensorFlow Lite models, pymicro-wakeword). When it
is not set, the model decides: a bundled name runs on openWakeWord if openWakeWord has it (all
but okay_nabu), else on microWakeWord (`mww-<name>` in the manifest); a `path` or a custom model
runs on microWakeWord when it is a `.json` or a `.tflite` with a microWakeWord `.json` beside it,
else on openWakeWord (`.onnx`). Words of both engines can be mixed; `CombinedWakeWordDetector`
then feeds every frame to both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from appliance.errors import ModelError
from appliance.ports import Pcm16, WakeWordDetector

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.models.manifest import Manifest

_LOGGER = logging.getLogger(__name__)

Engine = Literal["openwakeword", "microwakeword"]
OPENWAKEWORD: Engine = "openwakeword"
MICROWAKEWORD: Engine = "microwakeword"
MICRO_PREFIX = "mww-"  # manifest names of the bundled microWakeWord models: mww-hey_jarvis, ...


@dataclass(frozen=True)
class ResolvedWakeWord:
    name: str
    engine: Engine
    path: Path | None  # a model file (.onnx, or a microWakeWord .json); None: `bundled` below
    bundled: str | None  # manifest name of a bundled model


def _micro_json(path: Path) -> Path | None:
    """The microWakeWord description for a model path, if it is one."""
    if path.suffix.lower() == ".json":
        return path
    beside = path.with_suffix(".json")
    if path.suffix.lower() == ".tflite" and beside.is_file():
        return beside
    return None


def resolve_wake_word(
    index: int,
    name: str,
    engine: Engine | None,
    path: Path | None,
    custom: Mapping[str, Path],
    custom_dir: Path | None,
    bundled: Mapping[str, str],
) -> ResolvedWakeWord:
    """Decide the engine and the model of one configured word (`bundled`: manifest name → kind).

    `path` is the word's resolved `path`, `custom` the custom folder's models by stem."""
    where = f"appliance.wake_words.words[{index}]"
    if path is not None:
        micro = _micro_json(path)
        chosen = engine or (MICROWAKEWORD if micro else OPENWAKEWORD)
        if chosen == MICROWAKEWORD:
            if micro is None:
                raise ModelError(
                    f"{where}.path: {path} is not a microWakeWord model; engine microwakeword needs the "
                    ".json (or a .tflite with its .json beside it)",
                    code="wakeword_missing",
                )
            return ResolvedWakeWord(name, MICROWAKEWORD, micro, None)
        return ResolvedWakeWord(name, OPENWAKEWORD, path, None)
    json_file = custom_dir / f"{name}.json" if custom_dir is not None else None
    micro_custom = json_file if json_file is not None and json_file.is_file() else None
    if name in custom or micro_custom is not None:
        found = custom.get(name)
        onnx = found if found is not None and found.suffix.lower() == ".onnx" else None
        chosen = engine or (OPENWAKEWORD if onnx is not None or micro_custom is None else MICROWAKEWORD)
        if chosen == MICROWAKEWORD:
            if micro_custom is None:
                raise ModelError(
                    f"{where}.engine: microwakeword needs {name}.json (and the .tflite it names) in the "
                    f"custom wake word folder {custom_dir}",
                    code="wakeword_missing",
                )
            return ResolvedWakeWord(name, MICROWAKEWORD, micro_custom, None)
        if found is None:
            raise ModelError(
                f"{where}.engine: openwakeword needs {name}.onnx in the custom wake word folder {custom_dir} "
                f"(it has the microWakeWord model {name}.json: use engine microwakeword)",
                code="wakeword_missing",
            )
        return ResolvedWakeWord(name, OPENWAKEWORD, found, None)
    oww = bundled.get(name) == "wakeword"
    micro_name = MICRO_PREFIX + name
    mww = bundled.get(micro_name) == "microwakeword"
    chosen = engine or (OPENWAKEWORD if oww or not mww else MICROWAKEWORD)
    if chosen == OPENWAKEWORD and oww:
        return ResolvedWakeWord(name, OPENWAKEWORD, None, name)
    if chosen == MICROWAKEWORD and mww:
        return ResolvedWakeWord(name, MICROWAKEWORD, None, micro_name)
    choices = _bundled_names(bundled, chosen if engine else None)
    raise ModelError(
        f"appliance.wake_words.words: unknown wake word '{name}'"
        + (f" for engine {engine}" if engine else "")
        + f": not a bundled model ({', '.join(choices)}) and not in the custom folder "
        f"{custom_dir or '(none configured)'}",
        code="wakeword_missing",
    )


def resolve_config_wake_words(config: Config, manifest: Manifest) -> list[ResolvedWakeWord]:
    """Every configured wake word with its engine and model (raises ModelError with the path)."""
    from appliance.models.store import find_custom_wakewords

    wake = config.appliance.wake_words
    custom_dir = config.resolve_path(wake.custom_dir) if wake.custom_dir else None
    custom = find_custom_wakewords(custom_dir) if custom_dir is not None else {}
    bundled = {name: str(manifest.get(name).kind) for name in manifest.names}
    for line in operating_point_lines(config.wake_word_points):  # which threshold, from where
        _LOGGER.info("%s", line)
    return [
        resolve_wake_word(
            i,
            word.name,
            word.engine,
            config.resolve_path(word.path) if word.path else None,
            custom,
            custom_dir,
            bundled,
        )
        for i, word in enumerate(wake.words)
    ]


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


def metadata_path(
    name: str, engine: Engine | None, path: Path | None, custom_dir: Path | None
) -> Path | None:
    """`NAME.wakeword.json` beside a trained/custom openWakeWord model, if there is one.

    `path`: the word's resolved `path` (an `.onnx`); else the custom folder's `NAME.onnx`, which
    `resolve_wake_word` prefers to a bundled model of the same name. microWakeWord models: None."""
    if engine == MICROWAKEWORD:
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
        meta = metadata_path(
            word.name, word.engine, config.resolve_path(word.path) if word.path else None, custom_dir
        )
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


def _bundled_names(bundled: Mapping[str, str], engine: Engine | None) -> list[str]:
    oww = [n for n, kind in bundled.items() if kind == "wakeword"]
    mww = [n.removeprefix(MICRO_PREFIX) for n, kind in bundled.items() if kind == "microwakeword"]
    if engine == OPENWAKEWORD:
        return oww
    if engine == MICROWAKEWORD:
        return mww
    return oww + [n for n in mww if n not in oww]


class CombinedWakeWordDetector:
    """Several detectors (one per engine) behind the one WakeWordDetector the router uses."""

    def __init__(self, detectors: list[WakeWordDetector]) -> None:
        sizes = {d.frame_samples for d in detectors}
        if len(sizes) != 1:
            raise ModelError(
                f"wake-word engines disagree on the frame size: {sorted(sizes)}", code="wakeword_load"
            )
        self.frame_samples = sizes.pop()
        self._detectors = detectors
        self.names = [n for d in detectors for n in d.names]

    def scores(self, frame: Pcm16) -> dict[str, float]:
        out: dict[str, float] = {}
        for detector in self._detectors:
            out.update(detector.scores(frame))
        return out

    def reset(self) -> None:
        for detector in self._detectors:
            detector.reset()


def build_detector(words: list[ResolvedWakeWord], model_path: Any) -> WakeWordDetector:
    """Load the detectors for `words`; `model_path(name)` is the model store's folder of a model."""
    from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile

    detectors: list[WakeWordDetector] = []
    oww: list[WakeWordModelFile] = []
    for word in (w for w in words if w.engine == OPENWAKEWORD):
        if word.path is not None:
            oww.append(WakeWordModelFile(word.name, word.path))
        else:
            assert word.bundled is not None
            onnx = sorted(Path(model_path(word.bundled)).glob("*.onnx"))
            oww.append(WakeWordModelFile(word.name, onnx[0] if onnx else Path(model_path(word.bundled))))
    if oww:
        features = Path(model_path("oww-features"))
        detectors.append(
            OpenWakeWordDetector(oww, features / "melspectrogram.onnx", features / "embedding_model.onnx")
        )
    micro = [w for w in words if w.engine == MICROWAKEWORD]
    if micro:
        from appliance.adapters.microwakeword_detector import MicroWakeWordDetector, MicroWakeWordModel

        models = []
        for word in micro:
            if word.path is not None:
                models.append(MicroWakeWordModel(word.name, word.path))
            else:
                assert word.bundled is not None
                stem = word.bundled.removeprefix(MICRO_PREFIX)
                models.append(MicroWakeWordModel(word.name, Path(model_path(word.bundled)) / f"{stem}.json"))
        detectors.append(MicroWakeWordDetector(models))
    if len(detectors) == 1:
        return detectors[0]
    _LOGGER.info("wake words on %d engines", len(detectors))
    return CombinedWakeWordDetector(detectors)
