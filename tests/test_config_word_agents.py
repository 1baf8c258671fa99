"""A wake word that brings its own agent: `appliance.wake_words.words[].agent` (config, check,
events, secrets, reload)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config import Config, load_config
from appliance.core.device import DeviceConfig, DeviceMachine, Emit, WakeWordDetected
from appliance.errors import ConfigError
from appliance.logs import redact
from appliance.preflight import check_config
from appliance.runtime.reload import changed_sections, reload_models
from appliance.runtime.wiring import Preloaded
from appliance.word_agents import deep_merge, start_voices

WORDS = "appliance.wake_words.words"
CHEF = {
    "name": "Chef",
    "conversation_config": {
        "agent": {"first_message": "Chef here.", "prompt": {"prompt": "You are a cooking assistant."}},
        "tts": {"voice_id": "amy"},
    },
}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def main_doc(*words: dict[str, Any], **appliance: Any) -> dict[str, Any]:
    return {
        "conversation_config": {
            "agent": {"first_message": "Hello.", "prompt": {"prompt": "You are the household agent."}}
        },
        "appliance": {
            "local": {
                "voices": {"joe": {"model": "piper-en_US-joe-medium"}, "amy": {"model": "amy.onnx"}},
            },
            "wake_words": {"words": list(words)},
            **appliance,
        },
    }


def load(tmp_path: Path, doc: dict[str, Any]) -> Config:
    return load_config(write(tmp_path / "main.yaml", doc), log_warnings=False)


def problems(tmp_path: Path, doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, doc)
    return err.value.problems


@pytest.mark.parametrize(
    ("base", "over", "merged"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}, {"a": {"b": 3, "c": 2}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # lists replace
        ({"a": {"b": 1}}, {"a": None}, {"a": None}),  # an explicit null replaces
        ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ({"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_deep_merge(base: dict[str, Any], over: dict[str, Any], merged: dict[str, Any]) -> None:
    before = yaml.safe_dump(base)
    assert deep_merge(base, over) == merged
    assert yaml.safe_dump(base) == before  # the base is not changed


def test_a_file_and_inline_overrides_merge_over_the_main_config(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    write(tmp_path / "agents" / "chef.yaml", CHEF)
    cfg = load(
        tmp_path,
        main_doc(
            {"name": "hey_jarvis"},
            {
                "name": "alexa",
                "dynamic_variables": {"room": "kitchen"},
                "agent": {"config": "agents/chef.yaml", "conversation_config": {"agent": {"language": "de"}}},
            },
        ),
    )
    assert set(cfg.word_agents) == {"alexa"}
    chef = cfg.agent_for("alexa")
    assert cfg.agent_for("hey_jarvis") is cfg
    agent = chef.conversation_config.agent
    assert agent.prompt.prompt == "You are a cooking assistant."  # from the file
    assert agent.first_message == "Chef here."
    assert agent.language == "de"  # inline, over the file
    assert chef.conversation_config.tts.voice_id == "amy"
    assert chef.appliance.mode == "local"
    assert [w.name for w in chef.appliance.wake_words.words] == ["alexa"]
    assert chef.appliance.wake_words.words[0].dynamic_variables == {"room": "kitchen"}
    binding = cfg.word_agents["alexa"]
    assert (binding.name, binding.mode, binding.index) == ("Chef", "local", 1)
    assert binding.file == tmp_path / "agents" / "chef.yaml"
    # the main agent is unchanged; the device loads both agents' voices at start
    assert cfg.conversation_config.agent.prompt.prompt == "You are the household agent."
    assert start_voices(cfg, cfg.word_agents) == ["joe", "amy"]


def test_a_remote_word_names_its_agent_and_a_local_main_keeps_its_models(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        main_doc(
            {"name": "hey_jarvis"}, {"name": "alexa", "agent": {"mode": "remote", "agent_id": "agent_chef"}}
        ),
    )
    remote = cfg.agent_for("alexa")
    assert (remote.appliance.mode, remote.appliance.remote.agent_id) == ("remote", "agent_chef")
    assert cfg.appliance.remote.agent_id is None and cfg.uses_local_agent
    # push-to-talk opens the main agent: a local main agent keeps the local models loaded
    word = {"name": "alexa", "agent": {"mode": "remote", "agent_id": "agent_chef"}}
    assert load(tmp_path, main_doc(word)).uses_local_agent
    remote_main = main_doc(word, mode="remote", remote={"agent_id": "agent_main"})
    assert not load(tmp_path, remote_main).uses_local_agent  # no local agent anywhere: nothing loads


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        (
            {"name": "alexa", "agent": {"config": "missing.yaml"}},
            "{WORDS}[0].agent.config ({tmp}/missing.yaml): cannot read the agent file "
            "(No such file or directory)",
        ),
        (
            {"name": "alexa", "agent": {"conversation_config": {"agent": {"prompt": {"temperature": 9}}}}},
            "{WORDS}[0].agent.conversation_config.agent.prompt.temperature: 9 is outside 0–2",
        ),
        (
            {"name": "alexa", "agent": {"conversation_config": {"turn": {"turn_eagerness": "eager-ish"}}}},
            "{WORDS}[0].agent.conversation_config.turn.turn_eagerness: 'eager-ish' is not one of",
        ),
        (
            {"name": "alexa", "agent": {"mode": "remote"}},
            "{WORDS}[0].agent.agent_id: required when the word's mode is 'remote'",
        ),
        (
            {"name": "alexa", "agent": {"mode": "phone", "agent_id": "a"}},
            "{WORDS}[0].agent.mode: 'phone' is not one of",
        ),
        (
            {"name": "alexa", "agent": {"conversation_config": {"agent": {"prompt": {"llm": "custom-llm"}}}}},
            "{WORDS}[0].agent: conversation_config.agent.prompt.custom_llm.url: required when",
        ),
        (
            {
                "name": "alexa",
                "agent": {
                    "conversation_config": {
                        "agent": {"prompt": {"llm": "custom-llm", "custom_llm": {"url": "http://u:pw@h/v1"}}}
                    }
                },
            },
            "{WORDS}[0].agent.conversation_config.agent.prompt: the agent of 'alexa' needs the custom LLM at "
            "http://u:***@h/v1",
        ),
        (
            {"name": "alexa", "agent": {"conversation_config": {"asr": {"keywords": ["chef"]}}}},
            "{WORDS}[0].agent.conversation_config.asr.keywords: the device's one speech recognizer",
        ),
        (
            {"name": "alexa", "agent": {"confg": "chef.yaml"}},
            "{WORDS}[0].agent.confg: unknown key",
        ),
    ],
)
def test_invalid_bindings_name_the_word_and_the_path(
    tmp_path: Path, word: dict[str, Any], expected: str
) -> None:
    found = problems(tmp_path, main_doc(word))
    wanted = expected.format(WORDS=WORDS, tmp=tmp_path)
    assert any(p.startswith(wanted) for p in found), found


def test_an_agent_file_is_checked_on_its_own_first(tmp_path: Path) -> None:
    write(tmp_path / "chef.yaml", {"conversation_config": {"agent": {"language": 7}}, "appliance": {}})
    found = problems(tmp_path, main_doc({"name": "alexa", "agent": {"config": "chef.yaml"}}))
    head = f"{WORDS}[0].agent.config ({tmp_path}/chef.yaml)"
    assert found == [
        f"{head}: appliance: unknown top-level key of an agent file (allowed: conversation_config, "
        "platform_settings, name, tags, agent_id, metadata, workflow, phone_numbers, access_info)"
    ]
    write(tmp_path / "chef.yaml", {"conversation_config": {"agent": {"language": 7}}})
    found = problems(tmp_path, main_doc({"name": "alexa", "agent": {"config": "chef.yaml"}}))
    assert found == [f"{head}: conversation_config.agent.language: 7 is not a string"]
    (tmp_path / "chef.yaml").write_text("conversation_config: [unclosed", encoding="utf-8")
    found = problems(tmp_path, main_doc({"name": "alexa", "agent": {"config": "chef.yaml"}}))
    assert len(found) == 1 and found[0].startswith(f"{head}: line 1, column")


def test_voices_that_do_not_fit_the_cache_are_refused(tmp_path: Path) -> None:
    doc = main_doc(
        {"name": "hey_jarvis"},
        {"name": "alexa", "agent": {"conversation_config": {"tts": {"voice_id": "amy"}}}},
    )
    doc["appliance"]["local"]["voice_cache_size"] = 1
    assert problems(tmp_path, doc) == [
        "appliance.local.voice_cache_size: the wake words' agents need 2 voice models loaded at start "
        "(joe, amy), more than the cache holds (1); raise it (each piper voice takes about 60 MB) or let "
        "agents share a voice"
    ]


def test_secrets_in_an_agent_file_are_refused_and_its_credentials_registered(tmp_path: Path) -> None:
    write(tmp_path / "chef.yaml", {"conversation_config": {"agent": {"prompt": {"api_key": "sk_plain_123"}}}})
    found = problems(tmp_path, main_doc({"name": "alexa", "agent": {"config": "chef.yaml"}}))
    assert found == [
        f"{WORDS}[0].agent.config ({tmp_path}/chef.yaml): conversation_config.agent.prompt.api_key: secrets "
        "are not read from the config file; set the ELEVENLABS_API_KEY environment variable or a systemd "
        "credential"
    ]
    tool = {
        "type": "webhook",
        "name": "recipes",
        "description": "find a recipe",
        "api_schema": {"url": "https://cook:pw-word-agent-77@recipes.example/api"},
    }
    cfg = load(tmp_path, main_doc({"name": "alexa", "agent": {"tools": [tool]}}))
    assert [t.name for t in cfg.agent_for("alexa").appliance.tools] == ["recipes"]
    assert cfg.appliance.tools == []
    assert "pw-word-agent-77" not in redact("calling https://cook:pw-word-agent-77@recipes.example/api")


def test_check_config_prints_which_agent_each_word_opens(tmp_path: Path) -> None:
    write(tmp_path / "chef.yaml", CHEF)
    path = write(
        tmp_path / "main.yaml",
        main_doc(
            {"name": "hey_jarvis"},
            {"name": "alexa", "agent": {"config": "chef.yaml"}},
            {"name": "hey_mycroft", "agent": {"name": "Butler", "mode": "remote", "agent_id": "agent_b"}},
        ),
    )
    cfg, lines = check_config(path)
    assert cfg is not None, lines
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "wake word hey_jarvis: agent main (local, voice joe)\n" in out.stdout
    assert f"wake word alexa: agent Chef (local, voice amy) from {tmp_path}/chef.yaml\n" in out.stdout
    assert "wake word hey_mycroft: agent Butler (remote, agent_id agent_b)\n" in out.stdout


def test_check_config_renders_each_agent_for_its_own_word(tmp_path: Path) -> None:
    doc = main_doc(
        {"name": "hey_jarvis"},
        {
            "name": "alexa",
            "dynamic_variables": {"dish": "soup"},
            "agent": {"conversation_config": {"agent": {"first_message": "Let us cook {{dish}}."}}},
        },
    )
    cfg, lines = check_config(write(tmp_path / "main.yaml", doc))
    assert cfg is not None, lines  # {{dish}} is the chef's alone: the main agent never renders it
    doc["appliance"]["wake_words"]["words"][1]["dynamic_variables"] = {}
    cfg, lines = check_config(write(tmp_path / "main.yaml", doc))
    assert cfg is None
    assert lines == [
        f"{WORDS}[1].agent: conversation_config.agent.first_message: {{{{dish}}}} is not defined; give it a "
        "value in conversation_config.agent.dynamic_variables.dynamic_variable_placeholders or in the "
        "dynamic_variables of every wake word"
    ]


def test_session_started_names_the_agent_the_word_opened() -> None:
    machine = DeviceMachine(DeviceConfig(agents={"alexa": ("Chef", "remote")}, main_mode="local"))
    effects = machine.handle(WakeWordDetected("alexa", 0.9, 1.0), now=1.0)
    assert Emit("session_started", {"wake_word": "alexa", "agent": "Chef", "agent_mode": "remote"}) in effects
    machine = DeviceMachine(DeviceConfig(agents={"alexa": ("Chef", "remote")}, main_mode="auto"))
    effects = machine.handle(WakeWordDetected("hey_jarvis", 0.9, 1.0), now=1.0)
    assert (
        Emit("session_started", {"wake_word": "hey_jarvis", "agent": "main", "agent_mode": "auto"}) in effects
    )


def test_a_reload_rereads_the_agent_file_and_reports_it(tmp_path: Path) -> None:
    chef = write(tmp_path / "chef.yaml", CHEF)
    doc = main_doc({"name": "hey_jarvis"}, {"name": "alexa", "agent": {"config": "chef.yaml"}})
    old = load(tmp_path, doc)
    write(chef, {**CHEF, "conversation_config": {"agent": {"first_message": "Sous-chef here."}}})
    new = load(tmp_path, doc)
    assert new.agent_for("alexa").conversation_config.agent.first_message == "Sous-chef here."
    assert changed_sections(old, new) == [f"{WORDS}[1].agent"]
    calls: list[str] = []
    models = Preloaded(object(), object(), object())  # type: ignore[arg-type]

    def agent_models(cfg: Config) -> Any:
        calls.append("agent")
        return object()

    def listeners(cfg: Config) -> Any:
        calls.append("listeners")
        return object(), object()

    reload_models(old, new, models, load_listeners=listeners, load_agent_models=agent_models)
    assert calls == ["agent"]  # the chef's voice changed (amy → the default): the voices load again
    newer = load(tmp_path, main_doc({"name": "hey_jarvis"}, {"name": "alexa", "agent": {"name": "Cook"}}))
    calls.clear()
    reload_models(new, newer, models, load_listeners=listeners, load_agent_models=agent_models)
    assert calls == []  # same voices, same words: nothing to load


def test_the_commented_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "word-agents.yaml"
    cfg, lines = check_config(example)
    assert cfg is not None, lines
    assert cfg.word_agents["alexa"].name == "Chef"
    assert cfg.agent_for("alexa").conversation_config.agent.first_message.startswith("Chef here.")


def test_a_word_agent_warns_of_its_own_ignored_fields_once(tmp_path: Path) -> None:
    doc = main_doc(
        {"name": "hey_jarvis"},
        {"name": "alexa", "agent": {"conversation_config": {"conversation": {"text_only": True}}}},
    )
    doc["conversation_config"]["agent"]["prompt"]["tool_ids"] = ["tool_1"]  # the main agent's: warned once
    warnings = load(tmp_path, doc).warnings
    mine = [w for w in warnings if w.startswith(f"{WORDS}[1].agent: ")]
    assert len(mine) == 1 and "conversation_config.conversation.text_only: ignored on the device" in mine[0]
    assert len([w for w in warnings if "tool_ids" in w]) == 1


def test_doctor_wants_the_local_models_when_only_a_word_opens_a_local_agent(tmp_path: Path) -> None:
    from appliance.doctor import needed_models

    doc = main_doc({"name": "hey_jarvis"}, mode="remote", remote={"agent_id": "agent_main"})
    assert "whisper-tiny.en" not in needed_models(load(tmp_path, doc))
    doc["appliance"]["wake_words"]["words"].append({"name": "alexa", "agent": {"mode": "local"}})
    assert "whisper-tiny.en" in needed_models(load(tmp_path, doc))


def test_a_remote_word_sends_its_own_overrides_and_variables(tmp_path: Path) -> None:
    from appliance.runtime.remote_agent import initiation_for, remote_settings

    allowed = {"overrides": {"conversation_config_override": {"agent": {"first_message": True}}}}
    doc = main_doc(
        {"name": "hey_jarvis"},
        {
            "name": "alexa",
            "dynamic_variables": {"dish": "soup"},
            "agent": {
                "mode": "remote",
                "agent_id": "agent_chef",
                "conversation_config": {"agent": {"first_message": "Chef here."}},
                "platform_settings": allowed,
            },
        },
    )
    cfg = load(tmp_path, doc)
    chef = cfg.agent_for("alexa")
    assert remote_settings(chef).agent_id == "agent_chef"
    data = initiation_for(chef, "alexa", device_name="pi")
    assert data.conversation_config_override == {"agent": {"first_message": "Chef here."}}
    assert data.dynamic_variables["dish"] == "soup"
    assert initiation_for(cfg, "hey_jarvis", device_name="pi").conversation_config_override == {}
