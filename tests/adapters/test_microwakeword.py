"""microWakeWord as the second wake-word engine: real models, real router, synthesized speech."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from appliance.adapters.microwakeword_detector import (
    MicroWakeWordDetector,
    MicroWakeWordModel,
    calibrate,
    read_model_config,
)
from appliance.adapters.openwakeword_detector import OpenWakeWordDetector
from appliance.config import load_config_text
from appliance.core.device import DeviceEvent, WakeWordDetected
from appliance.core.endpointing import EndpointConfig, Endpointer
from appliance.core.wakeword import WakeWordGate, WakeWordRule
from appliance.errors import ModelError
from appliance.ports import WakeWordDetector
from appliance.runtime.app import load_listeners
from appliance.runtime.router import AudioRouter
from appliance.runtime.wake_words import CombinedWakeWordDetector
from appliance.testing.speech import concat, noise, silence

pytest.importorskip("pymicro_wakeword")


def _json(models_dir: Path, word: str) -> Path:
    return models_dir / f"mww-{word}" / f"{word}.json"


@pytest.fixture(scope="module")
def micro(models_dir: Path) -> MicroWakeWordDetector:
    return MicroWakeWordDetector(
        [
            MicroWakeWordModel("hey_jarvis", _json(models_dir, "hey_jarvis")),
            MicroWakeWordModel("okay_nabu", _json(models_dir, "okay_nabu")),
        ]
    )


def wakes(detector: WakeWordDetector, audio: np.ndarray) -> list[WakeWordDetected]:
    """80 ms blocks through the real router's idle path (VAD gate off: the engine alone)."""
    detector.reset()
    events: list[DeviceEvent] = []
    router = AudioRouter(
        detector=detector,
        gate=WakeWordGate({n: WakeWordRule(n) for n in detector.names}),
        vad=_NoVad(),
        endpointer=Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(1),
        post=events.append,
        wake_vad_gate=None,
    )
    for i in range(0, audio.size - 1279, 1280):
        events.extend(router._process_sync(audio[i : i + 1280]))
    return [e for e in events if isinstance(e, WakeWordDetected)]


class _NoVad:
    frame_samples = 512

    def probability(self, frame: np.ndarray) -> float:
        return 0.0

    def reset(self) -> None:
        pass


def test_calibration_puts_the_model_cutoff_at_one_half() -> None:
    assert calibrate(0.0, 0.97) == 0.0
    assert calibrate(0.97, 0.97) == pytest.approx(0.5)
    assert calibrate(0.485, 0.97) == pytest.approx(0.25)
    assert calibrate(0.985, 0.97) == pytest.approx(0.75)
    assert calibrate(1.0, 0.97) == pytest.approx(1.0)
    assert calibrate(0.969, 0.97) < 0.5 < calibrate(0.971, 0.97)


def test_hey_jarvis_fires_once_right_after_the_phrase(
    micro: MicroWakeWordDetector, say: Callable[[str], np.ndarray]
) -> None:
    phrase = say("Hey Jarvis!")
    end_s = (1.0 * 16000 + phrase.size) / 16000
    found = wakes(micro, concat(silence(1.0), phrase, silence(1.5)))
    assert [w.name for w in found] == ["hey_jarvis"]
    assert end_s - 0.4 < found[0].audio_t <= end_s + 0.5
    assert found[0].score > 0.5


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda say: concat(say("The weather today is sunny with a light breeze."), silence(1)),
            id="speech",
        ),
        pytest.param(lambda say: concat(say("Please call Jarvis later, okay?"), silence(1)), id="near-miss"),
        pytest.param(lambda say: noise(5.0, level=2000.0), id="loud-noise"),
        pytest.param(lambda say: silence(3.0), id="silence"),
    ],
)
def test_no_false_wake(
    micro: MicroWakeWordDetector,
    say: Callable[[str], np.ndarray],
    make: Callable[[Callable[[str], np.ndarray]], np.ndarray],
) -> None:
    assert wakes(micro, make(say)) == []


def test_reset_forgets_the_streaming_state(
    micro: MicroWakeWordDetector, say: Callable[[str], np.ndarray]
) -> None:
    """After a detection and a reset, silence scores 0 at once (no leftover from the phrase)."""
    phrase = say("Hey Jarvis!")
    for i in range(0, phrase.size - 1279, 1280):
        micro.scores(phrase[i : i + 1280])
    micro.reset()
    assert micro.scores(np.zeros(1280, dtype=np.int16)) == {"hey_jarvis": 0.0, "okay_nabu": 0.0}


def test_wrong_frame_size_is_refused(micro: MicroWakeWordDetector) -> None:
    with pytest.raises(ValueError, match="1280 samples"):
        micro.scores(np.zeros(1000, dtype=np.int16))


def test_model_description_errors_name_the_file(tmp_path: Path, models_dir: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"bad\.json: not a readable microWakeWord JSON"):
        read_model_config(bad)
    bad.write_text(json.dumps({"type": "openwakeword"}), encoding="utf-8")
    with pytest.raises(ModelError, match='expected "type": "micro"'):
        read_model_config(bad)
    src = json.loads(_json(models_dir, "hey_jarvis").read_text(encoding="utf-8"))
    bad.write_text(
        json.dumps({**src, "micro": {**src["micro"], "probability_cutoff": 1.5}}), encoding="utf-8"
    )
    with pytest.raises(ModelError, match="probability_cutoff"):
        read_model_config(bad)
    bad.write_text(json.dumps(src), encoding="utf-8")  # names hey_jarvis.tflite, not beside it
    with pytest.raises(ModelError, match=r"hey_jarvis\.tflite it names does not exist"):
        read_model_config(bad)
    with pytest.raises(ModelError, match="does not exist"):
        MicroWakeWordDetector([MicroWakeWordModel("x", tmp_path / "absent.json")])


def _config(models_dir: Path, words: str, custom_dir: Path | None = None) -> str:
    custom = f"    custom_dir: {custom_dir}\n" if custom_dir else ""
    return f"appliance:\n  models_dir: {models_dir}\n  wake_words:\n{custom}    words:\n{words}"


def _load(text: str) -> WakeWordDetector:
    detector: WakeWordDetector = load_listeners(load_config_text(text, "<test>"))[0]
    return detector


def test_engine_is_chosen_per_wake_word_in_the_config(
    models_dir: Path, say: Callable[[str], np.ndarray]
) -> None:
    detector = _load(
        _config(models_dir, "      - {name: hey_jarvis, engine: microwakeword}\n      - {name: alexa}\n")
    )
    assert isinstance(detector, CombinedWakeWordDetector)
    assert detector.names == ["alexa", "hey_jarvis"]  # openWakeWord's words first, then microWakeWord's
    found = wakes(detector, concat(silence(1.0), say("Hey Jarvis!"), silence(1.5)))
    assert [w.name for w in found] == ["hey_jarvis"]

    only_oww = _load(_config(models_dir, "      - {name: hey_jarvis}\n"))
    assert isinstance(only_oww, OpenWakeWordDetector)  # the default engine for a bundled name
    okay_nabu = _load(_config(models_dir, "      - {name: okay_nabu}\n"))
    assert isinstance(okay_nabu, MicroWakeWordDetector)  # only microWakeWord has it


def test_custom_tflite_and_json_run_on_microwakeword(
    tmp_path: Path, models_dir: Path, say: Callable[[str], np.ndarray]
) -> None:
    """A custom microWakeWord model (.tflite + .json) in the custom folder is found by its name
    and runs, where an openWakeWord .tflite used to be refused."""
    custom = tmp_path / "wake"
    custom.mkdir()
    shutil.copy(models_dir / "mww-hey_jarvis" / "hey_jarvis.tflite", custom / "hey_computer.tflite")
    description = json.loads(_json(models_dir, "hey_jarvis").read_text(encoding="utf-8"))
    description["model"] = "hey_computer.tflite"
    (custom / "hey_computer.json").write_text(json.dumps(description), encoding="utf-8")
    detector = _load(_config(models_dir, "      - {name: hey_computer}\n", custom))
    assert isinstance(detector, MicroWakeWordDetector) and detector.names == ["hey_computer"]
    found = wakes(detector, concat(silence(1.0), say("Hey Jarvis!"), silence(1.5)))
    assert [w.name for w in found] == ["hey_computer"]
