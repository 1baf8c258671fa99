"""The custom LLM client's key, headers, URL credentials and api_version as the server receives
them, and `probe_llm` (does the server answer?) against real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from appliance.adapters.openai_llm import OpenAiCompatibleLlm, probe_llm
from appliance.errors import AgentError
from appliance.logs import MASK
from appliance.testing.fakes import refused_port
from appliance.testing.openai_server import ScriptedOpenAiServer, error_reply, hang_reply, text_reply

MESSAGES = [{"role": "user", "content": "Hi"}]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def chat(url: str, options: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
    async def main() -> list[Any]:
        params: dict[str, Any] = {"model": "m", "api_key": None, **kwargs}
        llm = OpenAiCompatibleLlm(url, **params)
        try:
            return [item async for item in llm.stream_chat(MESSAGES, None, options or {})]
        finally:
            await llm.aclose()

    return asyncio.run(asyncio.wait_for(main(), 15))


def test_key_configured_headers_and_per_conversation_headers_are_sent() -> None:
    with ScriptedOpenAiServer([text_reply("ok")]) as server:
        chat(
            server.url,
            {"headers": {"X-User-Token": "ut-1"}},
            api_key="sk-access-0123",
            headers={"X-Org": "acme", "Authorization": "Basic c3RhbGU="},
        )
        [request] = server.chat_requests
    assert request.headers["authorization"] == "Bearer sk-access-0123"  # the key wins
    assert request.headers["x-org"] == "acme"
    assert request.headers["x-user-token"] == "ut-1"
    assert "headers" not in request.body  # options["headers"] is not part of the body


def test_a_url_password_is_basic_auth_without_a_key_and_never_shown() -> None:
    password = unique("pw-")
    with ScriptedOpenAiServer(
        [text_reply("ok"), text_reply("ok"), error_reply(500, f"echo {password}")]
    ) as server:
        url = server.url.replace("http://", f"http://bob:{password}@")
        chat(url)
        chat(url, api_key="sk-wins-0123")
        with pytest.raises(AgentError) as info:
            chat(url)
        basic, bearer, _ = server.chat_requests
    assert basic.headers["authorization"] == "Basic " + base64.b64encode(f"bob:{password}".encode()).decode()
    assert bearer.headers["authorization"] == "Bearer sk-wins-0123"
    assert password not in str(info.value)
    assert f"bob:{MASK}@127.0.0.1" in str(info.value) and f"echo {MASK}" in str(info.value)


def test_api_version_is_a_query_parameter_and_a_base_url_query_is_kept() -> None:
    with ScriptedOpenAiServer() as server:
        # The scripted server routes on the exact path, so the request is answered 404: what
        # matters is what it received.
        with pytest.raises(AgentError):
            chat(server.url + "?tenant=t1", api_version="2024-06-01")
        [request] = server.chat_requests
    assert request.path == "/v1/chat/completions?tenant=t1&api-version=2024-06-01"


# ------------------------------------------------------------------------------ probe_llm


def test_probe_lists_models_without_spending_a_reply() -> None:
    with ScriptedOpenAiServer() as server:
        probe = probe_llm(server.url, "scripted-model", "sk-probe-1", {"X-Org": "acme"}, timeout_s=3)
        other = probe_llm(server.url, "other-model", None, timeout_s=3)
        first, _ = server.requests
    assert probe.ok and probe.detail == f"{server.url} answers (GET /models: 1 model(s))"
    assert other.ok and other.detail.endswith("; model 'other-model' is not in its list)")
    assert (first.method, first.path) == ("GET", "/v1/models")
    assert first.headers["authorization"] == "Bearer sk-probe-1" and first.headers["x-org"] == "acme"


def test_probe_with_chat_asks_for_one_token() -> None:
    with ScriptedOpenAiServer([text_reply("OK")]) as server:
        probe = probe_llm(server.url, "scripted-model", None, timeout_s=3, chat=True)
        [request] = server.chat_requests
    assert probe.ok and "answers a 1-token chat request" in probe.detail
    assert request.body == {
        "messages": [{"role": "user", "content": "Say OK."}],
        "max_tokens": 1,
        "stream": True,
        "model": "scripted-model",
    }


def test_probe_failures_name_the_cause() -> None:
    key = unique("sk-refused-")
    with ScriptedOpenAiServer(
        [error_reply(500, "model crashed"), error_reply(401, f"bad key {key}"), hang_reply()]
    ) as server:
        crashed = probe_llm(server.url, None, None, timeout_s=3, chat=True)
        refused = probe_llm(server.url, None, key, timeout_s=3, chat=True)
        started = time.monotonic()
        hung = probe_llm(server.url, None, None, timeout_s=0.5, chat=True)
        took = time.monotonic() - started
    assert not crashed.ok
    assert (
        crashed.detail
        == f"the LLM at {server.url} answered POST /chat/completions with HTTP 500: model crashed"
    )
    assert crashed.fix == "the LLM server is failing or overloaded: see its log"
    assert not refused.ok and "HTTP 401" in refused.detail and key not in refused.detail
    assert refused.fix is not None and "APPLIANCE_LLM_API_KEY" in refused.fix
    assert not hung.ok and hung.detail == f"the LLM at {server.url} gave no answer within 0.5 s"
    assert took < 1.5
    with refused_port() as port:
        down = probe_llm(f"http://127.0.0.1:{port}/v1", None, None, timeout_s=3)
    assert not down.ok and down.detail.startswith("cannot reach the LLM at http://127.0.0.1:")
    assert down.fix is not None and "custom_llm.url" in down.fix
