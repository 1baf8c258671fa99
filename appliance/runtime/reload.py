"""Config reload (SIGHUP): what changed, which loaded models can be kept, what needs a restart.

Models are the slow part of a start (seconds on a Pi), so a reload keeps every model whose
inputs did not change: the wake-word detector (its words, model folders, and the size and
modification time of each word's model files when the config loaded), the VAD (the
model folder) and the agent's models (mode, `appliance.local`, the custom LLM endpoint).
Audio devices stay open across a reload (changing `appliance.audio` devices or blocks, or the
status socket, needs a restart; `appliance.audio.output_volume` applies at once).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from appliance.config import Config, resolve_models_dir
from appliance.word_agents import start_voices

if TYPE_CHECKING:
    from appliance.ports import VoiceActivityDetector, WakeWordDetector
    from appliance.runtime.local_agent import LocalModels
    from appliance.runtime.wiring import Preloaded

_LOGGER = logging.getLogger(__name__)

RESTART_ONLY = ("audio", "status")
"""`appliance.*` sections read once at start (output_volume excepted)."""


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def sections(config: Config) -> dict[str, Any]:
    """Every top-level and `appliance.*` section, as plain data, for comparison."""
    out = {
        "conversation_config": _dump(config.conversation_config),
        "platform_settings": _dump(config.platform_settings),
    }
    for name, value in _dump(config.appliance).items():
        out[f"appliance.{name}"] = value
    for binding in config.word_agents.values():  # an agent file can change on its own
        agent = binding.config
        out[f"appliance.wake_words.words[{binding.index}].agent"] = [
            _dump(agent.conversation_config),
            _dump(agent.platform_settings),
            _dump(agent.appliance.remote),
            [_dump(t) for t in agent.appliance.tools],
        ]
    return out


def changed_sections(old: Config, new: Config) -> list[str]:
    a, b = sections(old), sections(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def needs_restart(old: Config, new: Config) -> list[str]:
    """Changed settings that a reload does not apply (the audio devices stay open)."""
    out: list[str] = []
    old_audio = _dump(old.appliance.audio)
    new_audio = _dump(new.appliance.audio)
    for key in sorted(old_audio):
        if key != "output_volume" and old_audio[key] != new_audio[key]:
            out.append(f"appliance.audio.{key}")
    if _dump(old.appliance.status) != _dump(new.appliance.status):
        out.append("appliance.status")
    return out


def _listener_inputs(config: Config) -> Any:
    words = _dump(config.appliance.wake_words)
    for word in words["words"]:
        word.pop("dynamic_variables", None)  # sent with sessions; the detector does not use them
        word.pop("agent", None)  # the word's agent: sessions, rebuilt with every loop
        for key in ("threshold", "patience_frames", "refractory_s"):
            word.pop(key, None)  # applied by the gate, rebuilt with every loop
    # the words' model files as they were when the config loaded: a word trained again under the
    # same name (new NAME.onnx) is reloaded though the config text is the same
    files = {name: point.files for name, point in config.wake_word_points.items()}
    return (str(resolve_models_dir(config)), str(config.base_dir), words, files)


def _agent_inputs(config: Config) -> Any:
    prompt = config.conversation_config.agent.prompt
    custom = _dump(prompt.custom_llm) if prompt.custom_llm is not None else None
    return (
        config.appliance.mode,
        config.llm_backend,
        str(resolve_models_dir(config)),
        str(config.base_dir),
        _dump(config.appliance.local),
        _dump(config.appliance.remote),
        custom,
        config.uses_local_agent,
        start_voices(config, config.word_agents),  # the voices the words' agents load at start
    )


def reload_models(
    old: Config,
    new: Config,
    models: Preloaded,
    *,
    load_listeners: Callable[[Config], tuple[WakeWordDetector, VoiceActivityDetector]],
    load_agent_models: Callable[[Config], LocalModels | None],
) -> Preloaded:
    """Models for `new`: those of `models` whose inputs did not change, the rest loaded.
    Blocking (run it on a worker thread); raises like the loaders when a model is missing."""
    detector, vad, agent = models.detector, models.vad, models.local_models
    if _listener_inputs(old) != _listener_inputs(new):
        _LOGGER.info("wake words changed: loading the wake-word and VAD models")
        detector, vad = load_listeners(new)
    if _agent_inputs(old) != _agent_inputs(new):
        _LOGGER.info("agent models changed: loading them")
        agent = load_agent_models(new)
    return replace(models, detector=detector, vad=vad, local_models=agent)


def release_models(old: Preloaded, keep: Preloaded) -> None:
    """Free what `old` holds and `keep` does not share (the replaced agent's threads, LLM)."""
    agent = old.local_models
    if agent is None or agent is keep.local_models:
        return
    for name in ("stt_executor", "tts_executor"):
        pool = getattr(agent, name, None)
        if isinstance(pool, ThreadPoolExecutor):
            pool.shutdown(wait=False, cancel_futures=True)
    close = getattr(getattr(agent, "llm", None), "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()
