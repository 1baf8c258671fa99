"""The local agent and its custom LLM, through the real session factory and real HTTP: the key
and headers the server receives, one conversation id everywhere, and the check at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.config import Config, custom_llm_access, load_config_text
from appliance.core.endpointing import UtteranceEnded
from appliance.ports import LlmOutput, Pcm16, TextDelta
from appliance.runtime.local_agent import LocalModels, custom_llm_client, local_session_factory
from appliance.runtime.local_session import LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.testing.fakes import (
    FixedClock,
    FixedStt,
    RecordingEvents,
    RecordingSpeaker,
    refused_port,
    until,
)
from appliance.testing.openai_server import ScriptedOpenAiServer, text_reply

PROMPT = "You are a test agent in conversation {{system__conversation_id}}."


class FakeTts:
    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        return np.zeros(160 * len(text.split()), dtype=np.int16), 16000


class RecordingLlm:
    """For the llama.cpp-side test: what the session sends, and one reply."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], Mapping[str, Any]]] = []

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        self.calls.append((messages, options))
        await asyncio.sleep(0)
        yield TextDelta("It is noon.")


def custom_config(url: str, **custom: Any) -> Config:
    doc = {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": PROMPT,
                    "llm": "custom-llm",
                    "custom_llm": {"url": url, "model_id": "scripted-model", **custom},
                },
                "dynamic_variables": {"dynamic_variable_placeholders": {"secret__user_token": ""}},
            },
            "turn": {"soft_timeout_config": {"timeout_seconds": -1}},
        },
        "appliance": {
            "wake_words": {
                "words": [
                    {"name": "hey_jarvis"},
                    {"name": "alexa"},
                ]
            }
        },
    }
    return load_config_text(yaml.safe_dump(doc), "test.yaml", log_warnings=False)


def models_for(config: Config, llm: Any, access: Any = None) -> LocalModels:
    executor = ThreadPoolExecutor(1)
    return LocalModels(
        stt=FixedStt("What time is it?"),
        llm=llm,
        tts=FakeTts(),
        concurrent_llm=True,
        stt_executor=executor,
        tts_executor=executor,
        llm_access=access,
    )


async def one_turn(session: LocalAgentSession, events: RecordingEvents) -> None:
    await session.start()
    await session.speech_started(0.0)
    await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
    await until(lambda: bool(events.of("agent_response")) and not session.busy, 10.0, "the agent's answer")
    await session.end("test")
    await asyncio.wait_for(session.closed(), 5)


def run_session(
    config: Config, models: LocalModels, wake_word: str
) -> tuple[LocalAgentSession, RecordingEvents]:
    async def main() -> tuple[LocalAgentSession, RecordingEvents]:
        events, clock = RecordingEvents(), FixedClock()
        make = local_session_factory(
            config, models, speaker=RecordingSpeaker(), events=events, clock=clock, timers=Timers(clock)
        )
        session = make(wake_word)
        assert isinstance(session, LocalAgentSession)
        await asyncio.wait_for(one_turn(session, events), 20)
        close = getattr(models.llm, "aclose", None)
        if close is not None:
            await close()
        return session, events

    try:
        return asyncio.run(main())
    finally:
        models.stt_executor.shutdown()


def test_the_custom_llm_gets_the_key_the_headers_and_one_conversation_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APPLIANCE_LLM_API_KEY", "sk-wired-0123456789")
    monkeypatch.setenv("APPLIANCE_SECRET_ORG_TOKEN", "org-secret-4242")
    monkeypatch.setenv("APPLIANCE_SECRET_USER_TOKEN", "ut-env-9876")  # secret__user_token
    headers = {
        "X-Org": "acme",
        "X-Org-Token": {"secret_id": "org-token"},
        "X-User-Token": {"variable_name": "secret__user_token"},
    }
    with ScriptedOpenAiServer([text_reply("It is ", "noon.")]) as server:
        config = custom_config(server.url, request_headers=headers)
        assert config.llm_backend == "openai"
        access = custom_llm_access(config)
        assert access is not None
        llm = custom_llm_client(access, probe_timeout_s=3.0)
        session, events = run_session(config, models_for(config, llm, access), "alexa")
        probe, chat = server.requests
    assert (probe.method, probe.path) == ("GET", "/v1/models")
    assert probe.headers["authorization"] == "Bearer sk-wired-0123456789"
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.headers["authorization"] == "Bearer sk-wired-0123456789"
    assert chat.headers["x-org"] == "acme"
    assert chat.headers["x-org-token"] == "org-secret-4242"
    assert chat.headers["x-user-token"] == "ut-env-9876"  # from the environment, never the file
    assert chat.body["model"] == "scripted-model"
    # One conversation id: the prompt's system__conversation_id is the session's and the events'.
    system = chat.body["messages"][0]["content"]
    assert system == f"You are a test agent in conversation {session.conversation_id}."
    assert session.conversation_id.startswith("local_") and len(session.conversation_id) == 22
    [metadata] = events.of("conversation_initiation_metadata")
    assert metadata["conversation_id"] == session.conversation_id
    assert events.of("agent_response")[0]["agent_response"] == "It is noon."


def test_with_the_local_model_the_ids_match_and_no_headers_are_sent() -> None:
    config = load_config_text(
        yaml.safe_dump(
            {"conversation_config": {"agent": {"first_message": "", "prompt": {"prompt": PROMPT}}}}
        ),
        "test.yaml",
        log_warnings=False,
    )
    assert config.llm_backend == "llama_cpp"
    llm = RecordingLlm()
    session, _ = run_session(config, models_for(config, llm), "hey_jarvis")
    [(messages, options)] = llm.calls
    assert messages[0]["content"].startswith(
        f"You are a test agent in conversation {session.conversation_id}."
    )
    assert "headers" not in options


# ------------------------------------------------------------------------------ the check at start


class _Answer(BaseHTTPRequestHandler):
    """GET /v1/models answered with a fixed status and body (or never)."""

    status = 200
    body = b""
    hang = False

    def do_GET(self) -> None:
        if self.hang:
            time.sleep(3)
            return
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def answering(status: int = 200, body: bytes = b"", hang: bool = False) -> Iterator[str]:
    handler = type("Handler", (_Answer,), {"status": status, "body": body, "hang": hang})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url(stack: contextlib.ExitStack) -> str:
    """A URL whose port refuses connections until `stack` closes."""
    return f"http://127.0.0.1:{stack.enter_context(refused_port())}/v1"


@pytest.mark.parametrize(
    ("server", "cause"),
    [
        ("down", "cannot reach the LLM at http://127.0.0.1:"),
        ("500", 'answered GET /models with HTTP 500: {"error": "upstream exploded"}'),
        ("garbage", "something that is not an OpenAI model list: '<html>oops</html>'"),
        ("hang", "gave no answer within 0.5 s"),
    ],
)
def test_start_warns_clearly_when_the_custom_llm_does_not_answer_and_comes_up(
    server: str, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    answers: dict[str, dict[str, Any]] = {
        "500": {"status": 500, "body": b'{"error": "upstream exploded"}'},
        "garbage": {"body": b"<html>oops</html>"},
        "hang": {"hang": True},
    }
    with contextlib.ExitStack() as stack:
        url = (
            closed_port_url(stack) if server == "down" else stack.enter_context(answering(**answers[server]))
        )
        access = custom_llm_access(custom_config(url))
        assert access is not None
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="appliance.runtime.local_agent"):
            llm = custom_llm_client(access, probe_timeout_s=0.5)
        took = time.monotonic() - started
    assert llm is not None  # the device comes up
    assert took < 1.5  # bounded by the deadline, even for a server that never answers
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert text.startswith("custom LLM check failed: ") and cause in text, text
    assert "starting anyway: conversations fail until it answers" in text


def test_start_says_the_custom_llm_answers(caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedOpenAiServer() as server:
        access = custom_llm_access(custom_config(server.url))
        assert access is not None
        with caplog.at_level(logging.INFO, logger="appliance.runtime.local_agent"):
            custom_llm_client(access, probe_timeout_s=3.0)
        assert [r.method for r in server.requests] == ["GET"]  # no chat: the script is untouched
    messages = [r.getMessage() for r in caplog.records]
    assert f"custom LLM: {server.url} answers (GET /models: 1 model(s))" in messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("expects_response", "sent_back"),
    [(True, '"level": 87'), (False, "ok (the tool runs without sending a response)")],
)
def test_expects_response_false_does_not_wait_for_the_client_tool(
    expects_response: bool, sent_back: str
) -> None:
    from appliance.testing.openai_server import tool_call_reply

    tool = {
        "type": "client",
        "name": "get_battery",
        "description": "Battery level",
        "handler": "appliance.testing.example_tools:get_battery",
        "expects_response": expects_response,
    }
    with ScriptedOpenAiServer([tool_call_reply("get_battery", {}), text_reply("Done.")]) as server:
        doc_tools = [tool]
        config = load_config_text(
            yaml.safe_dump(
                {
                    "conversation_config": {
                        "agent": {
                            "first_message": "",
                            "prompt": {
                                "prompt": "You help.",
                                "llm": "custom-llm",
                                "custom_llm": {"url": server.url, "model_id": "m"},
                            },
                        },
                        "turn": {"soft_timeout_config": {"timeout_seconds": -1}},
                    },
                    "appliance": {"tools": doc_tools},
                }
            ),
            "test.yaml",
            log_warnings=False,
        )
        access = custom_llm_access(config)
        assert access is not None
        llm = custom_llm_client(access, probe_timeout_s=3.0)
        run_session(config, models_for(config, llm, access), "alexa")
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2
    (tool_message,) = [m for m in chats[1].body["messages"] if m.get("role") == "tool"]
    assert sent_back in tool_message["content"]


class SpeedTts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        self.calls.append((text, speed))
        return np.zeros(160 * len(text.split()), dtype=np.int16), 16000


def test_after_a_language_switch_the_presets_speed_and_prompt_apply() -> None:
    from appliance.testing.openai_server import tool_call_reply

    preset = {"overrides": {"agent": {"prompt": {"prompt": "Du hilfst."}}, "tts": {"speed": 1.15}}}
    script = [
        tool_call_reply("language_detection", {"reason": "asked", "language": "de"}),
        text_reply("Gerne."),
    ]
    with ScriptedOpenAiServer(script) as server:
        doc = {
            "conversation_config": {
                "agent": {
                    "first_message": "",
                    "prompt": {
                        "prompt": "You help.",
                        "llm": "custom-llm",
                        "custom_llm": {"url": server.url, "model_id": "m"},
                        "built_in_tools": {"language_detection": {}},
                    },
                },
                "tts": {"speed": 0.9},
                "turn": {"soft_timeout_config": {"timeout_seconds": -1}},
                "language_presets": {"de": preset},
            },
        }
        config = load_config_text(yaml.safe_dump(doc), "test.yaml", log_warnings=False)
        access = custom_llm_access(config)
        assert access is not None
        models = models_for(config, custom_llm_client(access, probe_timeout_s=3.0), access)
        tts = SpeedTts()
        models.tts = tts
        run_session(config, models, "alexa")
        chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert [c.body["messages"][0]["content"] for c in chats] == ["You help.", "Du hilfst."]
    assert tts.calls == [("Gerne.", 1.15)]
