"""Config reload: what changed, which models are kept, what needs a restart."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from appliance.config import Config, load_config_text
from appliance.runtime.app import Preloaded
from appliance.runtime.reload import changed_sections, needs_restart, release_models, reload_models


def config(**appliance: Any) -> Config:
    doc = {
        "conversation_config": {"agent": {"first_message": appliance.pop("first_message", "")}},
        "appliance": appliance,
    }
    return load_config_text(yaml.safe_dump(doc), "test.yaml")


class Loaders:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def listeners(self, cfg: Config) -> tuple[Any, Any]:
        self.calls.append("listeners")
        return object(), object()

    def agent(self, cfg: Config) -> Any:
        self.calls.append("agent")
        return object()


def reload(old: Config, new: Config, models: Preloaded) -> tuple[Preloaded, list[str]]:
    loaders = Loaders()
    out = reload_models(old, new, models, load_listeners=loaders.listeners, load_agent_models=loaders.agent)
    return out, loaders.calls


def test_unchanged_models_are_kept() -> None:
    models = Preloaded(object(), object(), object())
    old = config()
    # prompt, first message, thresholds, VAD and chimes do not touch the loaded models
    new = config(
        first_message="Hello!",
        wake_words={"words": [{"name": "hey_jarvis", "threshold": 0.7, "dynamic_variables": {"room": "x"}}]},
        vad={"no_speech_timeout_s": 5},
        chimes={"enabled": False},
    )
    out, calls = reload(old, new, models)
    assert calls == []
    assert (
        out.detector is models.detector and out.vad is models.vad and out.local_models is models.local_models
    )
    assert changed_sections(old, new) == [
        "appliance.chimes",
        "appliance.vad",
        "appliance.wake_words",
        "conversation_config",
    ]


def test_changed_models_are_loaded() -> None:
    models = Preloaded(object(), object(), object())
    out, calls = reload(config(), config(wake_words={"words": [{"name": "alexa"}]}), models)
    assert calls == ["listeners"] and out.detector is not models.detector
    assert out.local_models is models.local_models
    out, calls = reload(config(), config(local={"stt": {"beam_size": 2}}), models)
    assert calls == ["agent"] and out.local_models is not models.local_models
    assert out.detector is models.detector


def test_a_word_trained_again_is_reloaded_though_the_config_is_the_same(tmp_path: Path) -> None:
    """`appliance wakeword train` writes NAME.onnx and NAME.wakeword.json again under the same
    name: the next SIGHUP loads the new model and runs it at the new point."""
    model, meta = tmp_path / "hey_computer.onnx", tmp_path / "hey_computer.wakeword.json"

    def write(blob: bytes, threshold: float, mtime_ns: int) -> None:
        model.write_bytes(blob)
        meta.write_text(json.dumps({"threshold": threshold, "patience_frames": 2}), encoding="utf-8")
        for f in (model, meta):
            os.utime(f, ns=(mtime_ns, mtime_ns))

    def word_config() -> Config:
        return config(wake_words={"custom_dir": str(tmp_path), "words": [{"name": "hey_computer"}]})

    write(b"first model", 0.8, 1_000_000_000)
    models = Preloaded(object(), object(), object())
    old = word_config()
    out, calls = reload(old, word_config(), models)
    assert calls == [] and out.detector is models.detector  # nothing changed on disk
    write(b"trained again", 0.95, 2_000_000_000)
    new = word_config()
    out, calls = reload(old, new, models)
    assert calls == ["listeners"] and out.detector is not models.detector
    assert out.local_models is models.local_models
    point = new.wake_word_points["hey_computer"]
    assert (point.threshold, point.patience_frames, point.threshold_from) == (0.95, 2, str(meta))
    # only the modification time changes (the same size): reloaded too
    write(b"trained again", 0.95, 3_000_000_000)
    assert reload(new, word_config(), models)[1] == ["listeners"]


def test_audio_devices_and_the_socket_need_a_restart_but_the_volume_does_not() -> None:
    old = config()
    assert needs_restart(old, config(audio={"output_volume": 0.5})) == []
    assert needs_restart(old, config(audio={"input_device": "USB", "input_block_ms": 40})) == [
        "appliance.audio.input_block_ms",
        "appliance.audio.input_device",
    ]
    assert needs_restart(old, config(status={"socket": "/tmp/x.sock"})) == ["appliance.status"]


def test_release_frees_only_what_is_not_shared() -> None:
    class Agent:
        def __init__(self) -> None:
            self.stt_executor = ThreadPoolExecutor(1)
            self.tts_executor = ThreadPoolExecutor(1)
            self.closed = False
            self.llm = self

        def close(self) -> None:
            self.closed = True

    shared, old_agent = Agent(), Agent()
    release_models(Preloaded(None, None, shared), Preloaded(None, None, shared))
    assert not shared.closed
    release_models(Preloaded(None, None, old_agent), Preloaded(None, None, shared))
    assert old_agent.closed and old_agent.stt_executor._shutdown
    release_models(Preloaded(None, None, None), Preloaded(None, None, shared))  # remote mode: no agent
    shared.stt_executor.shutdown()
    shared.tts_executor.shutdown()
    old_agent.tts_executor.shutdown()
