"""`OpenAiCompatibleLlm`: the `LanguageModel` port over any OpenAI-compatible chat-completions server.

This is the ElevenLabs "custom LLM" contract seen from the client side: `POST {base_url}/chat/completions`
with `stream: true`, answered with SSE `data: {chunk}` lines and a final `data: [DONE]`. The body
carries what the platform sends its custom LLMs: `messages`, `model`, `temperature`, `max_tokens`,
`tools` (+ `tool_choice: "auto"`), and `elevenlabs_extra_body` (the agent's extra body, as-is).
Keys under `options["extra"]` are merged at the top level (e.g. `user`, `top_p`).

Text deltas are yielded as they arrive; tool calls are assembled from their streamed fragments
(by `index`: id, function name, argument pieces) and yielded once the stream has ended.

Failures raise `AgentError` with a stable code:
  - `llm_unreachable` (retryable): connection refused, DNS failure, connect timeout, connection lost.
  - `llm_timeout` (retryable): no response within `timeout_s`, or no data for `timeout_s` mid-stream.
  - `llm_http_error`: non-2xx (status and the start of the body; 429 and 5xx are retryable).
  - `llm_bad_response` (retryable): malformed SSE JSON, an error object in the stream, a cut stream.
The API key travels only in the `Authorization: Bearer` header; it, secret-looking headers and a
password in the URL are registered with `logs.register_secret`. `options["headers"]` adds headers
to one request (a conversation's `{variable_name}` headers); `api_version`, when set, is sent as
the `api-version` query parameter. `probe_llm` asks, within a few seconds, whether the server
answers (at start and in `appliance doctor`).

Stopping the iteration early (`aclose()`, a cancelled task) closes the HTTP response, which
closes the connection: the server sees the client go away and can stop generating.

Deadlines: `timeout_s` bounds each wait (the response, each piece of the stream), and
`total_timeout_s` bounds the whole request, from the POST to the last byte (httpx's timeouts
are per read: a server that trickles a byte now and then would otherwise hold a turn forever).
Lines and the whole stream are bounded in size too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.errors import AgentError
from appliance.logs import redact, register_secret
from appliance.ports import LlmOutput, TextDelta, ToolCallRequest

_LOGGER = logging.getLogger(__name__)

_BODY_PREVIEW_CHARS = 200
TOTAL_TIMEOUT_S = 90.0
"""One request, from the POST to the last byte of the stream."""
MAX_LINE_CHARS = 1 << 20
MAX_STREAM_CHARS = 16 << 20
CLOSE_TIMEOUT_S = 1.0
_PROTECTED_KEYS = frozenset({"messages", "stream"})
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "passw", "cookie", "signature", "credential")


def secret_header(name: str) -> bool:
    """A header whose value is a credential (masked in every log line, event and error)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_HEADER_WORDS)


def register_url_credentials(url: str) -> None:
    """Mask the password (or a lone user name, used as a token) of `user:pass@host` URLs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return
    register_secret(parsed.password or parsed.username or None)


def endpoint(base_url: str, path: str, api_version: str | None = None) -> str:
    """`path` under an OpenAI-style base URL (`.../v1`), keeping its query and credentials, with
    `api-version=<api_version>` added when set."""
    url = httpx.URL(base_url)
    url = url.copy_with(path=url.path.rstrip("/") + "/" + path)
    return str(url.copy_merge_params({"api-version": api_version}) if api_version else url)


def url_auth(api_key: str | None) -> httpx.Auth | None:
    """With a key, `Authorization: Bearer` stands; without, a `user:pass@` in the URL is sent as
    HTTP Basic auth (httpx's default)."""
    return httpx.Auth() if api_key else None


def request_headers(api_key: str | None, headers: Mapping[str, str] | None, *, accept: str) -> dict[str, str]:
    """The configured headers, then `Authorization: Bearer <api_key>` (the key wins)."""
    out = {"Accept": accept}
    out.update(headers or {})
    if api_key:
        for name in [n for n in out if n.lower() == "authorization"]:
            del out[name]
        out["Authorization"] = f"Bearer {api_key}"
    return out


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects streamed `delta.tool_calls` fragments into complete `ToolCallRequest`s."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def add(self, fragments: list[Any]) -> None:
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, Mapping):
                raise ValueError("tool call fragment is not an object")
            index = fragment.get("index", position)
            if not isinstance(index, int):
                raise ValueError("tool call index is not an integer")
            call = self._calls.setdefault(index, _PartialCall())
            if fragment.get("id") and not call.id:
                call.id = str(fragment["id"])
            function = fragment.get("function") or {}
            if not isinstance(function, Mapping):
                raise ValueError("tool call function is not an object")
            if function.get("name"):
                call.name += str(function["name"])
            if function.get("arguments"):
                call.arguments.append(str(function["arguments"]))

    def calls(self) -> list[ToolCallRequest]:
        result = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            raw = "".join(partial.arguments)
            result.append(
                ToolCallRequest(
                    id=partial.id or f"call_{index}",
                    name=partial.name,
                    arguments=parse_arguments(raw),
                    raw_arguments=raw,
                )
            )
        return result


def parse_arguments(raw: str) -> dict[str, Any]:
    """The JSON object in `raw`; {} when empty, malformed or not an object."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class OpenAiCompatibleLlm:
    """Streams chat completions from an OpenAI-compatible server (one `httpx.AsyncClient` per instance)."""

    total_timeout_s: float = TOTAL_TIMEOUT_S
    """The overall deadline of one request (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
        api_version: str | None = None,
    ) -> None:
        register_secret(api_key)
        register_url_credentials(base_url)
        for name, value in (headers or {}).items():
            if secret_header(name):
                register_secret(value)
        self._url = endpoint(base_url, "chat/completions", api_version)
        self._model = model
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client = httpx.AsyncClient(
            headers=request_headers(api_key, headers, accept="text/event-stream"),
            auth=url_auth(api_key),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            follow_redirects=False,
        )

    @property
    def url(self) -> str:
        return redact(self._url)

    def build_body(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The JSON body `stream_chat` posts for these arguments."""
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if self._model:
            body["model"] = self._model
        if options.get("temperature") is not None:
            body["temperature"] = options["temperature"]
        max_tokens = options.get("max_tokens")
        if max_tokens is not None and max_tokens != -1:
            body["max_tokens"] = max_tokens
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if options.get("extra_body") is not None:
            body["elevenlabs_extra_body"] = options["extra_body"]
        for key, value in (options.get("extra") or {}).items():
            if key not in _PROTECTED_KEYS:
                body[key] = value
        return body

    async def stream_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[LlmOutput, None]:
        body = self.build_body(messages, tools, options)
        _LOGGER.debug("POST %s (%d messages, %d tools)", self.url, len(messages), len(tools or ()))
        request = self._client.build_request("POST", self._url, json=body, headers=options.get("headers"))
        deadline = asyncio.get_running_loop().time() + self.total_timeout_s
        try:
            async with asyncio.timeout_at(self._until(deadline)):
                response = await self._client.send(request, stream=True)
        except TimeoutError as err:
            raise self._deadline_error(deadline, "no response") from err
        except httpx.HTTPError as err:
            raise self._transport_error(err) from err
        try:
            if not response.is_success:
                raise await self._http_error(response, deadline)
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # The server ignored `stream: true`: take the whole completion at once.
                for item in await self._whole_completion(response, deadline):
                    yield item
                return
            assembler = ToolCallAssembler()
            events = _SseEvents(_bounded_lines(response.aiter_text()))
            finished = False
            while True:
                try:
                    async with asyncio.timeout_at(self._until(deadline)):
                        data = await events.next_data()
                except TimeoutError as err:
                    raise self._deadline_error(deadline, "the stream stalled") from err
                except httpx.HTTPError as err:
                    raise self._transport_error(err) from err
                if data is None:
                    if not finished:
                        raise AgentError(
                            "the LLM stream ended before [DONE]", code="llm_bad_response", retryable=True
                        )
                    break
                if data.strip() == "[DONE]":
                    break
                for text, done in _parse_chunk(data, assembler):
                    finished = finished or done
                    if text:
                        yield TextDelta(text)
            for call in assembler.calls():
                yield call
        finally:
            try:  # bounded, also when cancelled: a stop never waits on the server
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await response.aclose()
            except (TimeoutError, httpx.HTTPError) as err:
                _LOGGER.debug("closing the LLM response: %s", type(err).__name__)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- errors ---------------------------------------------------------------------------

    def _until(self, deadline: float) -> float:
        """The end of the next wait: `timeout_s` from now, and never past the overall deadline."""
        return min(deadline, asyncio.get_running_loop().time() + self._timeout_s)

    def _deadline_error(self, deadline: float, what: str) -> AgentError:
        if asyncio.get_running_loop().time() < deadline - 0.01:
            return self._timeout_error(what)
        return AgentError(
            f"LLM at {self.url} timed out: the answer did not finish within {self.total_timeout_s:g} s "
            f"({what})",
            code="llm_timeout",
            retryable=True,
        )

    def _timeout_error(self, what: str) -> AgentError:
        return AgentError(
            f"LLM at {self.url} timed out: {what} within {self._timeout_s:g} s",
            code="llm_timeout",
            retryable=True,
        )

    def _transport_error(self, err: httpx.HTTPError) -> AgentError:
        detail = redact(str(err) or type(err).__name__)
        where = self.url
        if isinstance(err, httpx.ConnectTimeout):
            message = f"cannot reach the LLM at {where}: no connection within {self._connect_timeout_s:g} s"
            code = "llm_unreachable"
        elif isinstance(err, httpx.TimeoutException):
            return self._timeout_error("no data")
        elif isinstance(err, httpx.ConnectError):
            message, code = f"cannot reach the LLM at {where}: {detail}", "llm_unreachable"
        elif isinstance(err, httpx.RemoteProtocolError):
            message, code = f"the LLM at {where} broke the HTTP protocol: {detail}", "llm_bad_response"
        elif isinstance(err, httpx.TransportError):
            message, code = f"lost the connection to the LLM at {where}: {detail}", "llm_unreachable"
        else:
            message, code = f"LLM request to {where} failed: {detail}", "llm_bad_response"
        return AgentError(message, code=code, retryable=True)

    async def _http_error(self, response: httpx.Response, deadline: float) -> AgentError:
        status = response.status_code
        try:
            async with asyncio.timeout_at(self._until(deadline)):
                raw = await _read_bounded(response, _BODY_PREVIEW_CHARS * 8)
            preview = raw.decode("utf-8", "replace")[:_BODY_PREVIEW_CHARS]
        except (TimeoutError, httpx.HTTPError):
            preview = ""
        preview = redact(preview.strip())
        message = f"LLM at {self.url} answered HTTP {status}"
        if status in (401, 403):
            message += ": check the API key (set in the environment)"
        if preview:
            message += f"; body: {preview}"
        return AgentError(message, code="llm_http_error", retryable=status == 429 or status >= 500)

    async def _whole_completion(self, response: httpx.Response, deadline: float) -> list[LlmOutput]:
        try:
            async with asyncio.timeout_at(self._until(deadline)):
                raw = await _read_bounded(response, MAX_STREAM_CHARS)
        except TimeoutError as err:
            raise self._deadline_error(deadline, "the response body") from err
        except httpx.HTTPError as err:
            raise self._transport_error(err) from err
        try:
            payload = json.loads(raw)
            message = payload["choices"][0]["message"]
            content = message.get("content") or ""
            assembler = ToolCallAssembler()
            assembler.add(list(message.get("tool_calls") or []))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise _bad_json(raw.decode("utf-8", "replace")) from err
        out: list[LlmOutput] = [TextDelta(content)] if content else []
        out.extend(assembler.calls())
        return out


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body, or its first `limit` bytes when longer (a JSON answer longer than that is
    then malformed, and says so)."""
    raw = bytearray()
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) >= limit:
            break
    return bytes(raw[:limit])


async def _bounded_lines(text: AsyncIterator[str]) -> AsyncIterator[str]:
    """Lines of a text stream (`\n`, `\r\n` or `\r`), each at most `MAX_LINE_CHARS` and all
    together at most `MAX_STREAM_CHARS`: a server that never ends a line cannot fill memory."""
    buffer, total = "", 0
    async for piece in text:
        total += len(piece)
        if total > MAX_STREAM_CHARS:
            raise AgentError(
                f"the LLM stream is longer than {MAX_STREAM_CHARS} characters", code="llm_bad_response"
            )
        buffer += piece
        while True:
            cut = min((i for i in (buffer.find("\n"), buffer.find("\r")) if i >= 0), default=-1)
            if cut < 0 or (cut == len(buffer) - 1 and buffer[cut] == "\r"):
                break  # no end of line yet (a `\r` may be the first half of `\r\n`)
            line, sep = buffer[:cut], buffer[cut]
            skip = 2 if sep == "\r" and buffer[cut + 1 : cut + 2] == "\n" else 1
            buffer = buffer[cut + skip :]
            yield line
        if len(buffer) > MAX_LINE_CHARS:
            raise AgentError(
                f"the LLM sent a line longer than {MAX_LINE_CHARS} characters", code="llm_bad_response"
            )
    if buffer:
        yield buffer.rstrip("\r")


def _bad_json(data: str) -> AgentError:
    preview = redact(data[:_BODY_PREVIEW_CHARS])
    return AgentError(f"malformed chunk from the LLM: {preview!r}", code="llm_bad_response", retryable=True)


def _parse_chunk(data: str, assembler: ToolCallAssembler) -> list[tuple[str, bool]]:
    """(text, finished) for each choice of one `chat.completion.chunk`; tool fragments go to `assembler`."""
    try:
        chunk = json.loads(data)
    except ValueError as err:
        raise _bad_json(data) from err
    if not isinstance(chunk, dict):
        raise _bad_json(data)
    if chunk.get("error"):
        error = chunk["error"]
        detail = error.get("message") if isinstance(error, dict) else error
        preview = redact(str(detail))[:_BODY_PREVIEW_CHARS]
        raise AgentError(f"the LLM reported an error: {preview}", code="llm_bad_response", retryable=True)
    out: list[tuple[str, bool]] = []
    try:
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if delta.get("tool_calls"):
                assembler.add(list(delta["tool_calls"]))
            out.append((content if isinstance(content, str) else "", choice.get("finish_reason") is not None))
    except (AttributeError, TypeError, ValueError) as err:
        raise _bad_json(data) from err
    return out


class _SseEvents:
    """The `data` of each server-sent event read from a line iterator (None at the end)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self._data: list[str] = []

    async def next_data(self) -> str | None:
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                if self._data:
                    return self._take()
                return None
            if not line:
                if self._data:
                    return self._take()
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            name, _, value = line.partition(":")
            if name != "data":
                continue  # event:, id:, retry:
            value = value.removeprefix(" ")
            if self._data and _complete_json("\n".join(self._data)):
                # A server that omits the blank line between events.
                pending = self._take()
                self._data.append(value)
                return pending
            self._data.append(value)

    def _take(self) -> str:
        data = "\n".join(self._data)
        self._data.clear()
        return data


def _complete_json(text: str) -> bool:
    if text.strip() == "[DONE]":
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --- is the server there? (start and `appliance doctor`) --------------------------------------

_PROBE_BODY_LIMIT = 64 * 1024
_CUSTOM_LLM = "conversation_config.agent.prompt.custom_llm"


@dataclass(frozen=True)
class LlmProbe:
    """The answer to "does the custom LLM answer?": a one-line detail, and a fix when it does not."""

    ok: bool
    detail: str
    fix: str | None = None


class _ProbeFailed(Exception):
    def __init__(self, probe: LlmProbe) -> None:
        super().__init__(probe.detail)
        self.probe = probe


def probe_llm(
    base_url: str,
    model: str | None,
    api_key: str | None,
    headers: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 3.0,
    chat: bool = False,
    api_version: str | None = None,
) -> LlmProbe:
    """Ask the server at `base_url` whether it answers, within `timeout_s` overall (blocking).

    `GET /models` first (cheap, costs no tokens); a server without that route (404/405) or
    `chat=True` also gets a 1-token streamed chat completion, the request a conversation makes.
    Down, HTTP errors, a refused key, a hang and an answer that is not OpenAI-shaped all fail
    with the cause. The work runs on a daemon thread, so a server that trickles bytes cannot
    hold the caller past the deadline."""
    register_secret(api_key)
    register_url_credentials(base_url)
    where = redact(base_url.rstrip("/"))
    result: list[LlmProbe] = []

    def work() -> None:
        try:
            result.append(_probe(base_url, model, api_key, headers, timeout_s, chat, api_version, where))
        except Exception as err:  # never let the probe thread die silently
            result.append(LlmProbe(False, redact(f"the check of the LLM at {where} failed: {err!r}")))

    thread = threading.Thread(target=work, name="llm-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.25)
    if not result:
        return LlmProbe(
            False,
            f"the LLM at {where} gave no complete answer within {timeout_s:g} s",
            f"is the server running and not overloaded? check {_CUSTOM_LLM}.url",
        )
    return result[0]


def _probe(
    base_url: str,
    model: str | None,
    api_key: str | None,
    headers: Mapping[str, str] | None,
    timeout_s: float,
    chat: bool,
    api_version: str | None,
    where: str,
) -> LlmProbe:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(
        headers=request_headers(api_key, headers, accept="application/json"),
        auth=url_auth(api_key),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
    ) as client:
        try:
            status, content_type, raw = _probe_request(
                client, "GET", endpoint(base_url, "models", api_version), None, deadline
            )
            if status not in (404, 405):
                _judge_status(status, raw, where, "GET /models")
                listed = _model_list(raw)
                if listed is None:
                    raise _ProbeFailed(
                        LlmProbe(
                            False,
                            f"the LLM at {where} answered GET /models with something that is not an "
                            f"OpenAI model list: {_preview(raw)!r}",
                            f"is {_CUSTOM_LLM}.url the OpenAI-compatible base URL (usually ending in /v1)?",
                        )
                    )
                note = "" if not model or model in listed else f"; model {model!r} is not in its list"
                if not chat:
                    return LlmProbe(True, f"{where} answers (GET /models: {len(listed)} model(s){note})")
            body: dict[str, Any] = {"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
            body.update({"stream": True} | ({"model": model} if model else {}))
            started = time.monotonic()
            status, content_type, raw = _probe_request(
                client,
                "POST",
                endpoint(base_url, "chat/completions", api_version),
                body,
                deadline,
                first_event=True,
            )
            _judge_status(status, raw, where, "POST /chat/completions")
            _judge_completion(content_type, raw, where)
            took = time.monotonic() - started
            return LlmProbe(True, f"{where} answers a 1-token chat request ({took:.2f} s)")
        except _ProbeFailed as failed:
            return failed.probe
        except httpx.TimeoutException:
            return LlmProbe(
                False,
                f"the LLM at {where} gave no answer within {timeout_s:g} s",
                "is the server running and not overloaded?",
            )
        except httpx.ConnectError as err:
            return LlmProbe(
                False,
                redact(f"cannot reach the LLM at {where}: {err or type(err).__name__}"),
                f"is the server running? check {_CUSTOM_LLM}.url and the network",
            )
        except httpx.HTTPError as err:
            return LlmProbe(
                False,
                redact(f"the request to the LLM at {where} failed: {type(err).__name__}: {err}"),
                f"check {_CUSTOM_LLM}.url and the server's log",
            )


def _probe_request(
    client: httpx.Client,
    method: str,
    url: str,
    body: Mapping[str, Any] | None,
    deadline: float,
    *,
    first_event: bool = False,
) -> tuple[int, str, bytes]:
    """(status, content type, the start of the body): at most 64 KiB, up to the first SSE event
    when `first_event`; `httpx.ReadTimeout` past `deadline`."""
    with client.stream(method, url, json=body) as response:
        content_type = response.headers.get("content-type", "")
        raw = b""
        for piece in response.iter_bytes():
            raw += piece
            if len(raw) >= _PROBE_BODY_LIMIT:
                break
            if first_event and content_type.startswith("text/event-stream") and b"\n\n" in raw:
                break
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the answer did not finish in time")
        return response.status_code, content_type, raw


def _preview(raw: bytes) -> str:
    return redact(raw[:_BODY_PREVIEW_CHARS].decode("utf-8", "replace").strip())


def _judge_status(status: int, raw: bytes, where: str, what: str) -> None:
    if 200 <= status < 300:
        return
    preview = _preview(raw)
    detail = f"the LLM at {where} answered {what} with HTTP {status}" + (f": {preview}" if preview else "")
    if status in (401, 403):
        fix = (
            "check the API key: APPLIANCE_LLM_API_KEY, or the platform secret named by "
            f"{_CUSTOM_LLM}.api_key (APPLIANCE_SECRET_<ID>)"
        )
    elif 300 <= status < 400:
        fix = f"use the final URL in {_CUSTOM_LLM}.url (redirects are not followed)"
    elif status >= 500 or status == 429:
        fix = "the LLM server is failing or overloaded: see its log"
    else:
        fix = f"check {_CUSTOM_LLM} (url, model_id, request_headers)"
    raise _ProbeFailed(LlmProbe(False, detail, fix))


def _model_list(raw: bytes) -> list[str] | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    return [str(item.get("id")) for item in data if isinstance(item, dict)]


def _judge_completion(content_type: str, raw: bytes, where: str) -> None:
    text = raw.decode("utf-8", "replace")
    payload: Any = None
    if content_type.startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                with contextlib.suppress(ValueError):
                    payload = json.loads(data)
                break
    else:
        with contextlib.suppress(ValueError):
            payload = json.loads(text)
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict | str):
        error = payload["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise _ProbeFailed(
            LlmProbe(
                False,
                redact(f"the LLM at {where} reported an error: {str(message)[:_BODY_PREVIEW_CHARS]}"),
                "see the LLM server's log",
            )
        )
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        raise _ProbeFailed(
            LlmProbe(
                False,
                f"the LLM at {where} did not answer a chat request like an OpenAI-compatible server: "
                f"{_preview(raw)!r}",
                f"is {_CUSTOM_LLM}.url the OpenAI-compatible base URL (usually ending in /v1)?",
            )
        )
