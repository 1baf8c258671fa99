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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from appliance.errors import ModelError
from appliance.ports import Pcm16, WakeWordDetector
from appliance.wake_word_points import operating_point_lines

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
