"""A wake word that brings its own agent: `appliance.wake_words.words[].agent`.

A binding is an agent file (`config: PATH`, relative to the main file: the same format as the
main file's `conversation_config` / `platform_settings`, a platform export works), inline
overrides in the platform's own names (`conversation_config`, `platform_settings`), device
`tools` in place of `appliance.tools`, and its own `mode` (`local`, `remote` or `auto`) with an
`agent_id` for the remote agent. The file is deep-merged over the main config, then the inline
overrides over that (mappings merge key by key; lists and values replace). The result is a
whole `Config` per bound word (`WordBinding.config`), validated and with its secrets registered
like the main one, which the existing session factories build sessions from.

What is shared, and so bounded: every local agent runs on the device's one STT and one LLM
(`MAX_LOCAL_LLMS` = 1, the models `appliance.local` names, chosen by the main
`conversation_config`): a word whose merged config picks another LLM (`prompt.llm`,
`prompt.custom_llm`) or other STT keywords (`asr.keywords`) is refused, since a second LLM
would not fit a Pi's memory, and loading one at the wake word would be slow. Each word's voice
(`tts.voice_id`, one of `appliance.local.voices`) is loaded at start; all of them together must
fit `appliance.local.voice_cache_size` (distinct model files), or one would be evicted and
reloaded at a wake word.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from appliance.agent_config import ConversationConfig, PlatformSettings, agent_warnings
from appliance.config import EXPORT_KEYS, Config, display_url
from appliance.config import _joint_checks as joint_checks
from appliance.config import _strip_secrets as strip_secrets
from appliance.config import _validate as validate_section
from appliance.config_parse import MAX_CONFIG_BYTES, is_json, lone_surrogates, parse_json, parse_yaml
from appliance.core.device import MAIN_AGENT
from appliance.errors import ConfigError
from appliance.field_support import ignored_field_warnings
from appliance.validation import show

MAX_LOCAL_LLMS = 1
"""Distinct LLMs the local agents may need together: the device's one (see the module text)."""
AGENT_FILE_SECTIONS = ("conversation_config", "platform_settings")


@dataclass(frozen=True)
class WordBinding:
    """One wake word's agent: its name, mode and whole merged configuration."""

    word: str
    index: int
    name: str
    mode: str
    config: Config
    """The merged configuration (its `wake_words.words` is this word alone)."""
    file: Path | None = None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`: mappings key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_agent_file(path: Path, where: str) -> tuple[dict[str, Any], list[str]]:
    """The agent file's document (plain-string secrets removed) and its problems,
    each prefixed with `where` and the file name."""
    head = f"{where} ({path})"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return {}, [f"{head}: not UTF-8 text (bad byte at offset {err.start})"]
    except OSError as err:
        return {}, [f"{head}: cannot read the agent file ({err.strerror or err})"]
    if len(raw) > MAX_CONFIG_BYTES:
        return {}, [f"{head}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; not an agent file"]
    try:
        data = parse_json(text) if is_json(text, str(path)) else parse_yaml(text)
    except ConfigError as err:
        return {}, [f"{head}: {p}" for p in err.problems]
    if not isinstance(data, dict):
        keys = ", ".join(AGENT_FILE_SECTIONS)
        return {}, [f"{head}: the document is not a mapping (expected keys: {keys})"]
    problems: list[str] = []
    lone_surrogates(data, "", problems)
    doc = strip_secrets(data, "", problems)
    assert isinstance(doc, dict)
    for key in doc:
        if key not in AGENT_FILE_SECTIONS and key not in EXPORT_KEYS:
            allowed = ", ".join(AGENT_FILE_SECTIONS + EXPORT_KEYS)
            problems.append(f"{key}: unknown top-level key of an agent file (allowed: {allowed})")
    return doc, [f"{head}: {p}" for p in problems]


def _llm_identity(config: Config) -> tuple[object, ...]:
    prompt = config.conversation_config.agent.prompt
    custom = prompt.custom_llm.model_dump(mode="json") if prompt.custom_llm is not None else None
    return (config.llm_backend, custom if config.llm_backend == "openai" else None)


def _describe_llm(config: Config) -> str:
    if config.llm_backend == "llama_cpp":
        return f"llama.cpp {config.appliance.local.llm.model}"
    custom = config.conversation_config.agent.prompt.custom_llm
    if custom is None or custom.url is None:
        return "a custom LLM without a URL"
    model = f"model {custom.model_id}" if custom.model_id else "the server's default model"
    return f"the custom LLM at {display_url(custom.url)} ({model})"


def shared_model_problems(main: Config, bindings: Mapping[str, WordBinding]) -> list[str]:
    """Local agents share the device's STT and LLM, and their voices load at start."""
    problems: list[str] = []
    local_words = [b for b in bindings.values() if b.mode in ("local", "auto")]
    for b in local_words:
        where = f"appliance.wake_words.words[{b.index}].agent"
        if _llm_identity(b.config) != _llm_identity(main):
            problems.append(
                f"{where}.conversation_config.agent.prompt: the agent of {show(b.word)} needs "
                f"{_describe_llm(b.config)}, but the device runs one LLM for every local agent "
                f"(at most {MAX_LOCAL_LLMS}: {_describe_llm(main)}, from the main conversation_config); "
                "remove its llm/custom_llm override or make it the same"
            )
        if b.config.conversation_config.asr.keywords != main.conversation_config.asr.keywords:
            problems.append(
                f"{where}.conversation_config.asr.keywords: the device's one speech recognizer uses the main "
                "config's keywords; a word's agent cannot change them"
            )
    return problems


def start_voices(main: Config, bindings: Mapping[str, WordBinding]) -> list[str]:
    """The local voices loaded at start: the default, `preload_voices`, each local agent's voice."""
    local = main.appliance.local
    names = [local.default_voice, *local.preload_voices]
    agents = [main] if main.appliance.mode != "remote" else []  # words without an agent, push-to-talk
    agents += [b.config for b in bindings.values() if b.mode in ("local", "auto")]
    for cfg in agents:
        names.append(cfg.voice(cfg.conversation_config.tts.voice_id)[0])
    return list(dict.fromkeys(n for n in names if n in local.voices))


def voice_problems(main: Config, bindings: Mapping[str, WordBinding]) -> list[str]:
    local = main.appliance.local
    names = start_voices(main, bindings)
    models = {local.voices[n].model for n in names}
    if len(models) <= local.voice_cache_size:
        return []
    return [
        f"appliance.local.voice_cache_size: the wake words' agents need {len(models)} voice models loaded at "
        f"start ({', '.join(names)}), more than the cache holds ({local.voice_cache_size}); raise it "
        "(each piper voice takes about 60 MB) or let agents share a voice"
    ]


def bind_word_agents(
    doc: Mapping[str, Any], main: Config
) -> tuple[dict[str, WordBinding], list[str], list[str]]:
    """`(bindings by word, problems, warnings)` for every word with an `agent`; `doc` is the
    main document (secrets stripped), `main` its `Config`."""
    bindings: dict[str, WordBinding] = {}
    problems: list[str] = []
    warnings: list[str] = []
    main_warnings = set(main.warnings)
    for i, word in enumerate(main.appliance.wake_words.words):
        agent = word.agent
        if agent is None:
            continue
        where = f"appliance.wake_words.words[{i}].agent"
        cc_raw = doc.get("conversation_config") or {}
        ps_raw = doc.get("platform_settings") or {}
        name, agent_id, file = agent.name, agent.agent_id, None
        if agent.config is not None:
            file = main.resolve_path(agent.config)
            file_doc, file_problems = read_agent_file(file, f"{where}.config")
            if not file_problems:  # the file alone first, so its errors name the file
                head = f"{where}.config ({file}): "
                cc_file = file_doc.get("conversation_config")
                validate_section(ConversationConfig, cc_file, head + "conversation_config", file_problems)
                ps_file = file_doc.get("platform_settings")
                validate_section(PlatformSettings, ps_file, head + "platform_settings", file_problems)
            if file_problems:
                problems += file_problems
                continue
            cc_raw = deep_merge(cc_raw, file_doc.get("conversation_config") or {})
            ps_raw = deep_merge(ps_raw, file_doc.get("platform_settings") or {})
            exported_id = file_doc.get("agent_id")
            agent_id = agent_id or (exported_id if isinstance(exported_id, str) and exported_id else None)
            exported_name = file_doc.get("name")
            name = name or (exported_name if isinstance(exported_name, str) and exported_name else file.stem)
        cc_raw = deep_merge(cc_raw, agent.conversation_config)
        ps_raw = deep_merge(ps_raw, agent.platform_settings)
        before = len(problems)
        cc = validate_section(ConversationConfig, cc_raw, f"{where}.conversation_config", problems)
        ps = validate_section(PlatformSettings, ps_raw, f"{where}.platform_settings", problems)
        mode = agent.mode or main.appliance.mode
        if agent.mode is not None and agent.mode != "local" and agent_id is None:
            problems.append(f"{where}.agent_id: required when the word's mode is {show(agent.mode)}")
        elif mode != "local" and agent_id is None:
            agent_id = main.appliance.remote.agent_id
        if cc is None or ps is None or len(problems) > before:
            continue
        ap = main.appliance
        solo = word.model_copy(update={"agent": None})
        word_ap = ap.model_copy(
            update={
                "mode": mode,
                "remote": ap.remote.model_copy(update={"agent_id": agent_id}),
                "wake_words": ap.wake_words.model_copy(update={"words": [solo]}),
                "tools": list(agent.tools) if agent.tools is not None else ap.tools,
            }
        )
        more_problems, more_warnings = joint_checks(cc, word_ap)
        problems += [f"{where}: {p}" for p in more_problems]
        ignored = ignored_field_warnings(cc, "conversation_config") if mode != "remote" else []
        fresh = [w for w in agent_warnings(cc) + more_warnings + ignored if w not in main_warnings]
        warnings += [f"{where}: {w}" for w in fresh]
        config = replace(main, conversation_config=cc, platform_settings=ps, appliance=word_ap, warnings=[])
        label = name or (agent_id if mode == "remote" and agent_id else word.name)
        bindings[word.name] = WordBinding(word.name, i, label, mode, config, file)
    if not problems:
        problems += shared_model_problems(main, bindings) + voice_problems(main, bindings)
    return bindings, problems, warnings


def agent_summary(main: Config) -> list[str]:
    """For `check-config`: which agent each wake word opens."""
    lines: list[str] = []
    bindings: Mapping[str, WordBinding] = main.word_agents
    for word in main.appliance.wake_words.words:
        b = bindings.get(word.name)
        cfg = b.config if b is not None else main
        mode = b.mode if b is not None else main.appliance.mode
        name = b.name if b is not None else MAIN_AGENT
        where = f" from {b.file}" if b is not None and b.file is not None else ""
        if mode == "local":
            detail = f"local, voice {cfg.voice(cfg.conversation_config.tts.voice_id)[0]}"
        else:
            detail = f"{mode}, agent_id {cfg.appliance.remote.agent_id}"
        lines.append(f"wake word {word.name}: agent {name} ({detail}){where}")
    return lines
