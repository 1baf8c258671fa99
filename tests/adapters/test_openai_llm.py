"""OpenAiCompatibleLlm against the scripted OpenAI-compatible server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest

from appliance.adapters.openai_llm import OpenAiCompatibleLlm, _SseEvents
from appliance.errors import AgentError
from appliance.ports import LanguageModel, LlmOutput, TextDelta, ToolCallRequest
from appliance.testing.fakes import refused_port
from appliance.testing.openai_server import (
    Reply,
    ScriptedOpenAiServer,
    ScriptedToolCall,
    error_reply,
    hang_reply,
    text_reply,
    tool_call_reply,
)

T = TypeVar("T")

MESSAGES = [
    {"role": "system", "content": "You are a concise voice assistant."},
    {"role": "user", "content": "Hey, who are you?"},
]
END_CALL_TOOL = {
    "type": "function",
    "function": {
        "name": "end_call",
        "description": "Call this function to end the current conversation when the main task is done.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "The reason for the tool call."},
                "message": {"type": "string", "description": "A farewell message."},
            },
            "required": ["reason"],
        },
    },
}


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout=15)

    return asyncio.run(main())


async def collect(
    llm: OpenAiCompatibleLlm,
    tools: list[dict[str, Any]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[LlmOutput]:
    return [item async for item in llm.stream_chat(MESSAGES, tools, options or {})]


async def with_llm(
    server: ScriptedOpenAiServer, body: Callable[[OpenAiCompatibleLlm], Awaitable[T]], **kwargs: Any
) -> T:
    params: dict[str, Any] = {"model": "gpt-4o", "api_key": None}
    params.update(kwargs)
    llm = OpenAiCompatibleLlm(server.url, **params)
    try:
        return await body(llm)
    finally:
        await llm.aclose()


def test_implements_the_port() -> None:
    """`stream_chat` takes the port's parameters (same names, kinds and defaults) and is an async
    generator, so the session can `aclose()` it to stop a generation."""
    llm: LanguageModel = OpenAiCompatibleLlm("http://127.0.0.1:9/v1", model=None, api_key=None)
    port = inspect.signature(LanguageModel.stream_chat)
    ours = inspect.signature(OpenAiCompatibleLlm.stream_chat)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in port.parameters.values()
    ]
    assert inspect.isasyncgenfunction(OpenAiCompatibleLlm.stream_chat)
    stream = llm.stream_chat([{"role": "user", "content": "hi"}], None, {})
    assert inspect.isasyncgen(stream)
    asyncio.run(stream.aclose())  # type: ignore[attr-defined]
    asyncio.run(llm.aclose())  # type: ignore[attr-defined]


def test_text_is_streamed_in_order() -> None:
    chunks = ("The capital", " of France", " is", " Paris.")
    with ScriptedOpenAiServer([text_reply(*chunks, chunk_delay_s=0.01)]) as server:
        out = run(lambda: with_llm(server, collect))
    assert out == [TextDelta(c) for c in chunks]


def test_tool_call_is_assembled_from_fragments() -> None:
    args = {"reason": "the user said goodbye", "message": "Bye now!"}
    reply = tool_call_reply("end_call", args, text=("Goodbye", "!"), call_id="call_abc", fragment_chars=3)
    with ScriptedOpenAiServer([reply]) as server:
        out = run(lambda: with_llm(server, lambda llm: collect(llm, [END_CALL_TOOL])))
    assert out == [
        TextDelta("Goodbye"),
        TextDelta("!"),
        ToolCallRequest(id="call_abc", name="end_call", arguments=args, raw_arguments=json.dumps(args)),
    ]


def test_unparsable_tool_arguments_keep_the_raw_text() -> None:
    with ScriptedOpenAiServer([tool_call_reply("skip_turn", '{"reason": "thin', fragment_chars=4)]) as server:
        out = run(lambda: with_llm(server, lambda llm: collect(llm, [END_CALL_TOOL])))
    assert len(out) == 1 and isinstance(out[0], ToolCallRequest)
    assert out[0].name == "skip_turn"
    assert out[0].arguments == {}
    assert out[0].raw_arguments == '{"reason": "thin'


def test_request_fields_are_forwarded_like_the_platform_does() -> None:
    extra_body = {"UUID": "123e4567-e89b-12d3-a456-426614174000", "parameter-1": "value-1"}
    options = {
        "temperature": 0.5,
        "max_tokens": 5000,
        "extra_body": extra_body,
        "extra": {"user": "device-1", "stream": False},
    }
    with ScriptedOpenAiServer([text_reply("ok"), text_reply("ok")]) as server:

        async def body(llm: OpenAiCompatibleLlm) -> None:
            await collect(llm, [END_CALL_TOOL], options)
            await collect(llm, None, {"temperature": None, "max_tokens": -1})  # same client, again

        run(lambda: with_llm(server, body, api_key="sk-test-0123456789", headers={"X-Device": "pi"}))
        first, second = server.chat_requests
    assert first.path == "/v1/chat/completions"
    assert first.body == {
        "messages": MESSAGES,
        "stream": True,
        "model": "gpt-4o",
        "temperature": 0.5,
        "max_tokens": 5000,
        "tools": [END_CALL_TOOL],
        "tool_choice": "auto",
        "elevenlabs_extra_body": extra_body,
        "user": "device-1",
    }
    assert first.headers["authorization"] == "Bearer sk-test-0123456789"
    assert first.headers["x-device"] == "pi"
    assert first.headers["content-type"] == "application/json"
    # None temperature, max_tokens -1 and no tools are left out.
    assert second.body == {"messages": MESSAGES, "stream": True, "model": "gpt-4o"}


def test_server_error_is_an_http_error() -> None:
    with (
        ScriptedOpenAiServer([error_reply(500, "upstream model crashed: " + "x" * 400)]) as server,
        pytest.raises(AgentError) as info,
    ):
        run(lambda: with_llm(server, collect))
    err = info.value
    assert err.code == "llm_http_error"
    assert err.retryable
    assert "500" in err.message
    assert "upstream model crashed" in err.message
    assert "x" * 201 not in err.message  # the body is cut to its first 200 chars


def test_unauthorized_mentions_the_key_but_never_its_value() -> None:
    key = "sk-live-SECRET-4242"
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}})
    with ScriptedOpenAiServer([error_reply(401, body)]) as server, pytest.raises(AgentError) as info:
        run(lambda: with_llm(server, collect, api_key=key))
    err = info.value
    assert err.code == "llm_http_error"
    assert not err.retryable
    assert "401" in err.message
    assert "check the API key" in err.message
    assert key not in str(err) and key not in repr(err.args)


def test_connection_refused_is_unreachable() -> None:
    async def body(llm_url: str) -> list[LlmOutput]:
        llm = OpenAiCompatibleLlm(llm_url, model=None, api_key=None)
        try:
            return await collect(llm)
        finally:
            await llm.aclose()

    with refused_port() as port, pytest.raises(AgentError) as info:
        run(lambda: body(f"http://127.0.0.1:{port}/v1"))
    assert info.value.code == "llm_unreachable"
    assert info.value.retryable


def test_no_first_byte_within_the_timeout() -> None:
    with ScriptedOpenAiServer([text_reply("late", first_byte_delay_s=3.0)]) as server:
        start = time.monotonic()
        with pytest.raises(AgentError) as info:
            run(lambda: with_llm(server, collect, timeout_s=0.3))
        elapsed = time.monotonic() - start
    assert info.value.code == "llm_timeout"
    assert info.value.retryable
    assert elapsed < 2.0


def test_hanging_server_times_out() -> None:
    with ScriptedOpenAiServer([hang_reply()]) as server, pytest.raises(AgentError) as info:
        run(lambda: with_llm(server, collect, timeout_s=0.3))
    assert info.value.code == "llm_timeout"


def test_stalled_stream_times_out_after_the_first_delta() -> None:
    seen: list[LlmOutput] = []

    async def body(llm: OpenAiCompatibleLlm) -> None:
        async for item in llm.stream_chat(MESSAGES, None, {}):
            seen.append(item)

    with (
        ScriptedOpenAiServer([text_reply("Hello", " there", chunk_delay_s=[0.0, 3.0])]) as server,
        pytest.raises(AgentError) as info,
    ):
        run(lambda: with_llm(server, body, timeout_s=0.3))
    assert info.value.code == "llm_timeout"
    assert seen == [TextDelta("Hello")]


def test_malformed_sse_json_is_a_bad_response() -> None:
    with (
        ScriptedOpenAiServer([Reply(chunks=("ok",), raw_events=('{"choices": [',))]) as server,
        pytest.raises(AgentError) as info,
    ):
        run(lambda: with_llm(server, collect))
    assert info.value.code == "llm_bad_response"


def test_error_object_in_the_stream_is_a_bad_response() -> None:
    reply = Reply(chunks=("ok",), raw_events=(json.dumps({"error": {"message": "context overflow"}}),))
    with ScriptedOpenAiServer([reply]) as server, pytest.raises(AgentError) as info:
        run(lambda: with_llm(server, collect))
    assert info.value.code == "llm_bad_response"
    assert "context overflow" in info.value.message


def test_connection_dropped_mid_stream_is_an_error() -> None:
    with (
        ScriptedOpenAiServer([Reply(chunks=("a", "b", "c"), drop_after_chunks=1)]) as server,
        pytest.raises(AgentError) as info,
    ):
        run(lambda: with_llm(server, collect))
    assert info.value.code in ("llm_bad_response", "llm_unreachable")
    assert info.value.retryable


def test_a_server_that_ignores_stream_true_still_works() -> None:
    args = {"reason": "done"}
    reply = Reply(
        chunks=("Bye", " now."), tool_calls=(ScriptedToolCall("end_call", args, id="c9"),), not_streamed=True
    )
    with ScriptedOpenAiServer([reply]) as server:
        out = run(lambda: with_llm(server, collect))
    assert out == [
        TextDelta("Bye now."),
        ToolCallRequest(id="c9", name="end_call", arguments=args, raw_arguments=json.dumps(args)),
    ]


def _long_reply() -> Reply:
    return text_reply(*[f"word{i} " for i in range(200)], chunk_delay_s=0.05)


def test_closing_the_iteration_closes_the_connection() -> None:
    with ScriptedOpenAiServer([_long_reply()]) as server:

        async def body(llm: OpenAiCompatibleLlm) -> list[LlmOutput]:
            got: list[LlmOutput] = []
            async with contextlib.aclosing(llm.stream_chat(MESSAGES, None, {})) as stream:
                async for item in stream:
                    got.append(item)
                    break
            return got

        got = run(lambda: with_llm(server, body))
        (request,) = server.chat_requests
        assert request.disconnected.wait(5.0)
        assert not request.completed.is_set()
    assert got == [TextDelta("word0 ")]


def test_cancelling_the_task_closes_the_connection() -> None:
    with ScriptedOpenAiServer([_long_reply()]) as server:

        async def body(llm: OpenAiCompatibleLlm) -> None:
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in llm.stream_chat(MESSAGES, None, {}):
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(lambda: with_llm(server, body))
        (request,) = server.chat_requests
        assert request.disconnected.wait(5.0)
        assert not request.completed.is_set()


def test_sse_parser_tolerates_comments_fields_and_missing_blank_lines() -> None:
    lines = [
        ": keep-alive",
        "event: message",
        'data: {"a": 1}',
        "",
        'data: {"b": 2}',  # no blank line after this one
        "data: [DONE]",
    ]

    async def source() -> AsyncIterator[str]:
        for line in lines:
            yield line

    async def body() -> list[str | None]:
        events = _SseEvents(source())
        return [await events.next_data() for _ in range(4)]

    assert run(body) == ['{"a": 1}', '{"b": 2}', "[DONE]", None]


# --- one overall deadline per request, and bounded sizes -----------------------------------------


def test_a_server_that_trickles_bytes_forever_ends_at_the_overall_deadline() -> None:
    """Every read gets a byte (a per-read timeout never fires), the answer never comes: the
    request ends at `total_timeout_s`, and the connection is closed."""
    from appliance.testing.openai_server import trickle_reply

    with ScriptedOpenAiServer([trickle_reply(0.05)]) as server:

        async def body(llm: OpenAiCompatibleLlm) -> tuple[AgentError, float]:
            llm.total_timeout_s = 0.6
            start = time.monotonic()
            with pytest.raises(AgentError) as info:
                await collect(llm)
            return info.value, time.monotonic() - start

        error, took = run(lambda: with_llm(server, body, timeout_s=0.4))
        (request,) = server.chat_requests
        assert request.disconnected.wait(5.0)
    assert error.code == "llm_timeout" and error.retryable
    assert "did not finish within 0.6 s" in error.message
    assert 0.5 <= took < 3.0, took


def test_a_trickling_request_is_cancelled_at_once() -> None:
    from appliance.testing.openai_server import trickle_reply

    with ScriptedOpenAiServer([trickle_reply(0.05)]) as server:

        async def body(llm: OpenAiCompatibleLlm) -> float:
            task = asyncio.create_task(collect(llm))
            await asyncio.sleep(0.3)  # the headers came, bytes keep trickling in
            assert not task.done()
            start = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - start

        took = run(lambda: with_llm(server, body))
        (request,) = server.chat_requests
        assert request.disconnected.wait(5.0)
    assert took < 2.0, took


def test_a_line_without_end_is_refused_at_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.adapters.openai_llm as module

    monkeypatch.setattr(module, "MAX_LINE_CHARS", 1000)
    reply = Reply(raw_body=b"data: " + b"x" * 5000)
    with ScriptedOpenAiServer([reply]) as server, pytest.raises(AgentError) as info:
        run(lambda: with_llm(server, collect))
    assert info.value.code == "llm_bad_response" and "longer than 1000" in info.value.message


def test_lines_split_on_every_line_ending_across_pieces() -> None:
    from appliance.adapters.openai_llm import _bounded_lines

    async def pieces() -> AsyncIterator[str]:
        for piece in ["data: a\r", "\ndata: b\rdata: c\n", "\n", "data: d"]:
            yield piece

    async def body() -> list[str]:
        return [line async for line in _bounded_lines(pieces())]

    assert run(body) == ["data: a", "data: b", "data: c", "", "data: d"]
