"""Remote mode end to end: the real appliance (wake word, VAD, loop) against the fake ElevenLabs
server on 127.0.0.1: a private agent through the CLI, drops, stalls, realtime barge-in, and the
`auto` failover to the local agent (whisper + piper + a scripted OpenAI-compatible LLM)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.config import load_config, load_config_text
from appliance.runtime.app import Preloaded, RunOptions, load_listeners, run_async
from appliance.testing.fake_elevenlabs import FakeElevenLabsServer, FakeOptions, tone_voice
from appliance.testing.fakes import refused_port
from appliance.testing.openai_server import ScriptedOpenAiServer, text_reply
from appliance.testing.speech import concat, read_wav, silence, write_wav

pytestmark = [pytest.mark.models, pytest.mark.slow]

RATE = 16000
Events = list[dict[str, Any]]
QUESTION = "What is the capital of France?"


def words(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower())


def types(events: Events) -> list[str]:
    return [e["type"] for e in events if e["type"] not in ("audio", "ping")]


def of(events: Events, kind: str) -> Events:
    return [e for e in events if e["type"] == kind]


def hear(whisper: Any, path: Path) -> str:
    from appliance.adapters.resample import resample

    audio, rate = read_wav(path)
    text, _ = whisper.transcribe(resample(audio, rate, RATE), "en")
    return words(str(text))


@pytest.fixture(scope="module")
def listeners(models_dir: Path) -> tuple[Any, Any]:
    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    return load_listeners(load_config(None))


@pytest.fixture(scope="module")
def question_wav(say: Callable[[str], np.ndarray]) -> np.ndarray:
    return concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say(QUESTION), silence(2.5))


def remote_config(server: FakeElevenLabsServer, mode: str = "remote", **remote: Any) -> dict[str, Any]:
    return {
        "appliance": {
            "mode": mode,
            "remote": {
                "base_url": server.url,
                "agent_id": "agent_fake",
                "reconnect_backoff_s": 0.05,
                "stall_timeout_s": 5,
                **remote,
            },
        }
    }


def run_inprocess(
    listeners: tuple[Any, Any],
    tmp_path: Path,
    config: dict[str, Any],
    audio: np.ndarray,
    *,
    realtime: bool = False,
    local_models: Any = None,
) -> tuple[Events, Path]:
    cfg = load_config_text(yaml.safe_dump(config), "test.yaml")
    wav = write_wav(tmp_path / "in.wav", audio)
    out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
    options = RunOptions(input=str(wav), output=str(out), events=str(events_path), realtime=realtime)
    asyncio.run(run_async(cfg, options, Preloaded(listeners[0], listeners[1], local_models)))
    return [json.loads(line) for line in events_path.read_text().splitlines()], out


# ---------------------------------------------------------------------- the CLI, a private agent
def test_cli_private_agent_run_is_heard_back_and_the_key_never_shows(
    tmp_path: Path, models_dir: Path, whisper: Any, say: Callable[[str], np.ndarray], question_wav: np.ndarray
) -> None:
    """`appliance run --events` in remote mode with a signed URL: the event stream, the agent's
    audio in out.wav (transcribed back), and the API key nowhere in the events or the logs."""
    key = "sk_e2e_secret_0123456789"
    options = FakeOptions(
        scenario="conversation",
        api_key=key,
        agent_id="agent_fake",
        first_message="Hi there.",
        transcripts=[QUESTION],
        replies=["The capital of France is Paris."],
        voice=say,
        ping_interval_s=0.5,
    )
    with FakeElevenLabsServer(options) as server:
        config = remote_config(server, requires_auth=True)
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        wav = write_wav(tmp_path / "in.wav", question_wav)
        out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
        env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir), "ELEVENLABS_API_KEY": key}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "run",
                "--config",
                str(cfg_path),
                "--input",
                str(wav),
                "--output",
                str(out),
                "--events",
                str(events_path),
                "--log-level",
                "DEBUG",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        record = server.records[0]
        signature = record.query["conversation_signature"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    t = types(events)
    spine = [
        "wake_word_detected",
        "session_started",
        "conversation_initiation_metadata",
        "agent_response",
        "speech_started",
        "user_transcript",
        "agent_response",
        "session_ended",
    ]
    assert [x for x in t if x in spine] == spine, t
    # the device's own end of the utterance races the server's transcript and reply (the
    # server decides its turn on the audio it received): only its place within the turn is fixed
    assert t.index("speech_started") < t.index("utterance_ended") < t.index("session_ended"), t
    assert of(events, "conversation_initiation_metadata")[0]["mode"] == "remote"
    assert of(events, "user_transcript")[0]["user_transcript"] == QUESTION
    assert of(events, "ping") and record.pongs
    audio = of(events, "audio")
    assert audio and all("audio_base_64" not in e and e["sample_rate_hz"] == 16000 for e in audio)
    # the server heard the question as audio and got the device's initiation data
    assert record.turns and record.initiation is not None
    assert record.initiation["dynamic_variables"]["device_wake_word"] == "hey_jarvis"
    heard = hear(whisper, out)  # whisper tiny is small: a few words suffice
    assert "there" in heard and ("paris" in heard or "capital" in heard), heard
    # the key went only into the header of the signed-URL request
    assert server.signed_url_requests[0]["xi-api-key"] == key
    everything = events_path.read_text() + proc.stderr + proc.stdout
    assert " DEBUG appliance." in proc.stderr  # the most talkative log level
    assert key not in everything and signature not in everything


# ---------------------------------------------------------------------- network failures
def test_a_drop_mid_question_reconnects_and_the_question_is_still_answered(
    listeners: tuple[Any, Any], tmp_path: Path, question_wav: np.ndarray
) -> None:
    options = FakeOptions(scenario="drop", transcripts=[QUESTION], replies=["Paris."], ping_interval_s=0.5)
    with FakeElevenLabsServer(options) as server:
        events, out = run_inprocess(listeners, tmp_path, remote_config(server), question_wav)
        first, second = server.records
    t = types(events)
    assert t.index("error") < t.index("reconnecting") < t.index("reconnected") < t.index("session_ended")
    assert of(events, "error")[0]["code"] == "remote_connection_lost"
    assert of(events, "utterance_replayed")  # the lost connection never answered: asked again
    assert second.turns and "Paris." in [e["agent_response"] for e in of(events, "agent_response")]
    assert of(events, "session_ended")[0]["reason"] == "input_ended"
    assert first.close_code == 1006
    # every chunk of the agent's audio was played (out.wav also holds the chimes)
    agent_s = sum(e["duration_s"] for e in of(events, "audio") if "dropped" not in e)
    expected = (2 * tone_voice("Hello! How can I help you today?").size + tone_voice("Paris.").size) / RATE
    assert agent_s == pytest.approx(expected, abs=0.02)
    played, rate = read_wav(out)
    assert played.size / rate > agent_s


def test_a_stalled_server_is_replaced_and_the_conversation_goes_on(
    listeners: tuple[Any, Any], tmp_path: Path, question_wav: np.ndarray
) -> None:
    options = FakeOptions(scenario="stall", transcripts=[QUESTION], replies=["Paris."], ping_interval_s=0.3)
    with FakeElevenLabsServer(options) as server:
        events, _ = run_inprocess(listeners, tmp_path, remote_config(server, stall_timeout_s=1), question_wav)
    errors = of(events, "error")
    assert errors[0]["code"] == "remote_connection_lost" and "stalled" in errors[0]["message"]
    assert of(events, "reconnected")
    assert "Paris." in [e["agent_response"] for e in of(events, "agent_response")]


def test_remote_mode_ends_the_session_clearly_when_the_server_is_unreachable(
    listeners: tuple[Any, Any], tmp_path: Path, question_wav: np.ndarray
) -> None:
    config = remote_config(FakeElevenLabsServer(), reconnect_attempts=2)
    with refused_port() as port:
        config["appliance"]["remote"]["base_url"] = f"ws://127.0.0.1:{port}"
        events, _ = run_inprocess(listeners, tmp_path, config, question_wav)
    assert [e["attempt"] for e in of(events, "reconnecting")] == [1, 2]
    assert of(events, "error")[-1]["code"] == "network_error"
    assert [e["reason"] for e in of(events, "session_ended")] == ["network_error"]
    assert types(events)[-1] == "appliance_stopped"  # back to idle, then the input ended: never stuck


def test_an_unsupported_audio_format_ends_the_session_with_a_clear_error_and_the_device_listens_again(
    listeners: tuple[Any, Any], tmp_path: Path, question_wav: np.ndarray
) -> None:
    options = FakeOptions(scenario="conversation", metadata_fields={"agent_output_audio_format": "mp3_44100"})
    with FakeElevenLabsServer(options) as server:
        events, _ = run_inprocess(listeners, tmp_path, remote_config(server), question_wav)
    (error,) = of(events, "error")
    assert error["code"] == "remote_protocol_error" and "mp3_44100" in error["message"]
    assert [e["reason"] for e in of(events, "session_ended")] == ["remote_error"]  # the error chime
    assert not of(events, "audio") and not of(events, "reconnecting")
    t = types(events)
    assert t.index("error") < t.index("session_ended") < t.index("appliance_stopped")
    # the session ended long before the input did: the device was listening again
    assert of(events, "session_ended")[0]["t"] < of(events, "appliance_stopped")[0]["t"] - 1.0


# ---------------------------------------------------------------------- barge-in, in real time
def test_realtime_barge_in_stops_the_remote_agent(
    listeners: tuple[Any, Any], tmp_path: Path, say: Callable[[str], np.ndarray]
) -> None:
    story = "Once upon a time there was a fisherman who rowed out to sea every single morning at dawn."
    options = FakeOptions(
        scenario="interrupt",
        first_message="",
        replies=[story, "Okay."],
        pace=1.0,
        ahead_s=0.3,
        voice=say,
    )
    audio = concat(
        silence(1.0),
        say("Hey Jarvis!"),
        silence(0.5),
        say("Tell me a story."),
        silence(2.5),
        say("Stop, stop please."),
        silence(2.5),
    )
    with FakeElevenLabsServer(options) as server:
        events, out = run_inprocess(listeners, tmp_path, remote_config(server), audio, realtime=True)
    interruption = of(events, "interruption")[0]
    correction = of(events, "agent_response_correction")[0]
    assert correction["original_agent_response"] == story
    assert (
        story.startswith(correction["corrected_agent_response"])
        and correction["corrected_agent_response"] != story
    )
    played = [
        e for e in of(events, "audio") if e["event_id"] == interruption["event_id"] and "dropped" not in e
    ]
    assert all(e["t"] <= interruption["t"] for e in played)
    assert [e for e in of(events, "audio") if e.get("dropped") == "interrupted"]
    # out.wav follows the input's timeline: nothing of the story after the interruption (+ one block)
    wav, rate = read_wav(out)
    stop = round((interruption["t"] + 0.1) * rate)  # + one output block, and a loaded machine
    reply_start = round(of(events, "agent_response")[1]["t"] * rate)
    assert reply_start > stop + rate // 2  # "Okay." comes after the user has finished
    assert not np.any(wav[stop:reply_start])


# ---------------------------------------------------------------------- auto: failover to local
@pytest.fixture(scope="module")
def local_models(models_dir: Path) -> Any:
    from appliance.runtime.local_agent import load_local_models

    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    cfg = load_config_text(yaml.safe_dump(_local_part("http://127.0.0.1:9/v1")), "local.yaml")
    return load_local_models(cfg)


def _local_part(llm_url: str) -> dict[str, Any]:
    return {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You are a test agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": llm_url, "model_id": "scripted-model"},
                },
            },
            "turn": {"soft_timeout_config": {"timeout_seconds": -1}},
        },
        "appliance": {
            "local": {
                "llm": {"backend": "openai"},
                # without Piper's sampling noise: what whisper hears of the answer cannot vary
                "voices": {
                    "joe": {"model": "piper-en_US-joe-medium", "noise_scale": 0.0, "noise_w_scale": 0.0}
                },
            }
        },
    }


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAiServer]:
    with ScriptedOpenAiServer() as server:
        yield server


def auto_run(
    listeners: tuple[Any, Any],
    local_models: Any,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    server: FakeElevenLabsServer,
    audio: np.ndarray,
    *,
    base_url: str | None = None,
    **remote: Any,
) -> Events:
    from appliance.adapters.openai_llm import OpenAiCompatibleLlm

    config = _local_part(scripted.url)
    config["appliance"].update(remote_config(server, mode="auto", **remote)["appliance"])
    if base_url is not None:
        config["appliance"]["remote"]["base_url"] = base_url
    models = dataclasses.replace(local_models, llm=OpenAiCompatibleLlm(scripted.url, "scripted-model", None))
    events, _ = run_inprocess(listeners, tmp_path, config, audio, local_models=models)
    return events


def test_auto_mode_answers_on_the_local_agent_when_the_server_is_down(
    listeners: tuple[Any, Any],
    local_models: Any,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    question_wav: np.ndarray,
    whisper: Any,
) -> None:
    scripted.add(text_reply("The local agent says Paris."))
    with refused_port() as port:
        events = auto_run(
            listeners,
            local_models,
            tmp_path,
            scripted,
            FakeElevenLabsServer(),
            question_wav,
            base_url=f"ws://127.0.0.1:{port}",
            reconnect_attempts=1,
        )
    t = types(events)
    assert (
        t.index("reconnecting") < t.index("failover") < t.index("user_transcript") < t.index("agent_response")
    )
    assert of(events, "failover")[0] == {
        **of(events, "failover")[0],
        "to": "local",
        "reason": "network_error",
    }
    assert "capital" in words(of(events, "user_transcript")[0]["user_transcript"])  # whisper, on the device
    assert of(events, "agent_response")[0]["agent_response"] == "The local agent says Paris."
    heard = hear(whisper, tmp_path / "out.wav")
    assert "local" in heard or "paris" in heard, heard


def test_auto_mode_continues_a_dropped_conversation_locally_with_its_transcript(
    listeners: tuple[Any, Any],
    local_models: Any,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    question_wav: np.ndarray,
) -> None:
    scripted.add(text_reply("Paris, said the local agent."))
    options = FakeOptions(
        scenario="drop", transcripts=[QUESTION], first_message="Hello from the cloud.", ping_interval_s=0.5
    )
    with FakeElevenLabsServer(options) as server:
        events = auto_run(
            listeners, local_models, tmp_path, scripted, server, question_wav, reconnect_attempts=0
        )
    assert of(events, "failover")[0]["reason"] == "network_error"
    responses = [e["agent_response"] for e in of(events, "agent_response")]
    assert responses == ["Hello from the cloud.", "Paris, said the local agent."]
    # the local LLM got the remote conversation as context, then the question (answered again locally)
    messages = scripted.chat_requests[0].body["messages"]
    context = " ".join(str(m["content"]) for m in messages if m["role"] == "system")
    assert "The conversation so far (with the online agent)" in context and QUESTION in context
    assert "capital" in words(messages[-1]["content"]) and messages[-1]["role"] == "user"
