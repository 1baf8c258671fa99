"""Two wake words, two agents: each word opens its own agent (headless runs, real models for the
wake words, VAD, STT and TTS; a scripted custom LLM or the fake ElevenLabs server)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.config import load_config, load_config_text
from appliance.runtime.app import RunOptions, load_listeners, preload, run_async
from appliance.runtime.wiring import Preloaded
from appliance.testing.fake_elevenlabs import FakeElevenLabsServer, FakeOptions
from appliance.testing.openai_server import ScriptedOpenAiServer, tool_call_reply
from appliance.testing.speech import concat, silence, write_wav

pytestmark = [pytest.mark.models, pytest.mark.slow]

Events = list[dict[str, Any]]
HOUSEHOLD_PROMPT = "You are the household agent of the Miller family."
CHEF_PROMPT = "You are a cooking assistant for the kitchen."


def words(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower())


def of(events: Events, kind: str) -> Events:
    return [e for e in events if e["type"] == kind]


def run(cfg_path: Path, tmp_path: Path, audio: np.ndarray, preloaded: Preloaded | None = None) -> Events:
    cfg = load_config(cfg_path, log_warnings=False)
    wav = write_wav(tmp_path / "in.wav", audio)
    events_path = tmp_path / "events.jsonl"
    options = RunOptions(input=str(wav), output=str(tmp_path / "out.wav"), events=str(events_path))
    asyncio.run(run_async(cfg, options, preloaded or preload(cfg)))
    return [json.loads(line) for line in events_path.read_text().splitlines()]


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAiServer]:
    with ScriptedOpenAiServer() as server:
        yield server


def test_two_wake_words_open_two_local_agents(
    tmp_path: Path, models_dir: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    goodbye = {"reason": "the user said goodbye", "message": "Goodbye!"}
    scripted.add(tool_call_reply("end_call", goodbye), tool_call_reply("end_call", goodbye))
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "chef.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "Chef",
                "conversation_config": {
                    "agent": {"first_message": "Chef here.", "prompt": {"prompt": CHEF_PROMPT}}
                },
            }
        )
    )
    main = {
        "conversation_config": {
            "agent": {
                "first_message": "Main agent here.",
                "prompt": {
                    "prompt": "You are the main agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": scripted.url, "model_id": "scripted-model"},
                    "built_in_tools": {"end_call": {}},
                },
            },
        },
        "appliance": {
            "wake_words": {
                "words": [
                    {
                        "name": "hey_jarvis",
                        "agent": {
                            "name": "Household",
                            "conversation_config": {
                                "agent": {
                                    "first_message": "Household here.",
                                    "prompt": {"prompt": HOUSEHOLD_PROMPT},
                                }
                            },
                        },
                    },
                    {"name": "alexa", "agent": {"config": "agents/chef.yaml"}},
                ]
            },
        },
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(main))
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Thanks, that is all. Goodbye."), silence(3.0),
        say("Alexa!"), silence(0.5), say("Thanks, that is all. Goodbye."), silence(3.0),
    )  # fmt: skip
    events = run(cfg_path, tmp_path, audio)
    started = [(e["wake_word"], e["agent"], e["agent_mode"]) for e in of(events, "session_started")]
    assert started == [("hey_jarvis", "Household", "local"), ("alexa", "Chef", "local")], started
    spoken = [e["text"] for e in of(events, "audio")]
    assert spoken == ["Household here.", "Goodbye!", "Chef here.", "Goodbye!"], spoken
    systems = [r.body["messages"][0] for r in scripted.chat_requests]
    assert [m["role"] for m in systems] == ["system", "system"]
    assert systems[0]["content"].startswith(HOUSEHOLD_PROMPT), systems[0]
    assert systems[1]["content"].startswith(CHEF_PROMPT), systems[1]
    assert "Main agent" not in json.dumps(events)


@pytest.fixture(scope="module")
def two_word_listeners(models_dir: Path) -> tuple[Any, Any]:
    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    doc = {"appliance": {"wake_words": {"words": [{"name": "hey_jarvis"}, {"name": "alexa"}]}}}
    return load_listeners(load_config_text(yaml.safe_dump(doc), "words.yaml"))


@pytest.mark.parametrize(
    ("wake", "agent_id", "name"),
    [("Hey Jarvis!", "agent_household", "Household"), ("Alexa!", "agent_chef", "agent_chef")],
)
def test_each_wake_word_opens_its_own_remote_agent(
    tmp_path: Path,
    two_word_listeners: tuple[Any, Any],
    say: Callable[[str], np.ndarray],
    wake: str,
    agent_id: str,
    name: str,
) -> None:
    options = FakeOptions(
        scenario="conversation", first_message="Hi there.", transcripts=["Hello."], replies=["Hi."]
    )
    with FakeElevenLabsServer(options) as server:
        config = {
            "appliance": {
                "mode": "remote",
                "remote": {"base_url": server.url, "agent_id": "agent_main", "reconnect_backoff_s": 0.05},
                "wake_words": {
                    "words": [
                        {
                            "name": "hey_jarvis",
                            "agent": {"name": "Household", "mode": "remote", "agent_id": "agent_household"},
                        },
                        {"name": "alexa", "agent": {"mode": "remote", "agent_id": "agent_chef"}},
                    ]
                },
            }
        }
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        audio = concat(silence(1.0), say(wake), silence(0.5), say("Hello there."), silence(2.5))
        preloaded = Preloaded(two_word_listeners[0], two_word_listeners[1], None)
        events = run(cfg_path, tmp_path, audio, preloaded)
        agents = [r.query.get("agent_id") for r in server.records]
    started = [(e["agent"], e["agent_mode"]) for e in of(events, "session_started")]
    assert started == [(name, "remote")], started
    assert agents == [agent_id]
    assert of(events, "conversation_initiation_metadata")


def test_sighup_reloads_a_changed_agent_file(
    tmp_path: Path, models_dir: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    """The service re-reads the word's agent file on SIGHUP: the next "alexa" opens the new agent."""
    goodbye = {"reason": "the user said goodbye", "message": "Goodbye!"}
    scripted.add(tool_call_reply("end_call", goodbye), tool_call_reply("end_call", goodbye))
    chef = tmp_path / "chef.yaml"
    chef.write_text(yaml.safe_dump({"conversation_config": {"agent": {"first_message": "Chef here."}}}))
    main = {
        "conversation_config": {
            "agent": {
                "first_message": "Main agent here.",
                "prompt": {
                    "prompt": "You are the main agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": scripted.url},
                    "built_in_tools": {"end_call": {}},
                },
            },
        },
        "appliance": {
            "status": {"enabled": False},
            "wake_words": {
                "words": [{"name": "hey_jarvis"}, {"name": "alexa", "agent": {"config": "chef.yaml"}}]
            },
        },
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(main))
    events_path = tmp_path / "events.jsonl"
    question = concat(
        silence(0.5), say("Alexa!"), silence(0.5), say("Thanks, that is all. Goodbye."), silence(3.0)
    ).astype("<i2")

    def events() -> Events:
        if not events_path.exists():
            return []
        lines = events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}: {[e['type'] for e in events()]}"
            )
            time.sleep(0.1)

    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(cfg_path), "--input", "-",
         "--events", str(events_path), "--output", str(tmp_path / "out.wav")],
        stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        wait(lambda: bool(of(events(), "appliance_started")), 120, "the start")
        proc.stdin.write(question.tobytes())
        proc.stdin.flush()
        wait(lambda: len(of(events(), "session_ended")) == 1, 60, "the first conversation")
        chef.write_text(
            yaml.safe_dump({"conversation_config": {"agent": {"first_message": "Sous-chef here."}}})
        )
        proc.send_signal(signal.SIGHUP)
        wait(lambda: bool(of(events(), "config_reloaded")), 60, "the reload")
        wait(lambda: len(of(events(), "appliance_started")) == 2, 30, "the new loop")
        proc.stdin.write(question.tobytes())
        proc.stdin.flush()
        wait(lambda: len(of(events(), "session_ended")) == 2, 60, "the second conversation")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    found = events()
    assert [e["text"] for e in of(found, "audio")] == [
        "Chef here.",
        "Goodbye!",
        "Sous-chef here.",
        "Goodbye!",
    ]
    assert of(found, "config_reloaded")[0]["changed"] == ["appliance.wake_words.words[1].agent"]
    assert [e["agent"] for e in of(found, "session_started")] == ["chef", "chef"]
