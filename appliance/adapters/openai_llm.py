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
The API key travels only in the `Authorization` header and is registered with `logs.register_secret`.

Stopping the iteration early (`aclose()`, a cancelled task) closes the HTTP response, which
closes the connection: the server sees the client go away and can stop generating.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.errors import AgentError
from appliance.logs import redact, register_secret
from appliance.ports import LlmOutput, TextDelta, ToolCallRequest

_LOGGER = logging.getLogger(__name__)

_BODY_PREVIEW_CHARS = 200
_PROTECTED_KEYS = frozenset({"messages", "stream"})
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret")


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

    def __init__(
        self,
        base_url: str,
        model: str | None,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        register_secret(api_key)
        for name, value in (headers or {}).items():
            if any(word in name.lower() for word in _SECRET_HEADER_WORDS):
                register_secret(value)
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        request_headers = {"Accept": "text/event-stream"}
        request_headers.update(headers or {})
        if api_key:
            request_headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=request_headers,
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
        request = self._client.build_request("POST", self._url, json=body)
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.send(request, stream=True)
        except TimeoutError as err:
            raise self._timeout_error("no response") from err
        except httpx.HTTPError as err:
            raise self._transport_error(err) from err
        try:
            if not response.is_success:
                raise await self._http_error(response)
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                # The server ignored `stream: true`: take the whole completion at once.
                for item in await self._whole_completion(response):
                    yield item
                return
            assembler = ToolCallAssembler()
            events = _SseEvents(response.aiter_lines())
            finished = False
            while True:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        data = await events.next_data()
                except TimeoutError as err:
                    raise self._timeout_error("the stream stalled") from err
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
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- errors ---------------------------------------------------------------------------

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

    async def _http_error(self, response: httpx.Response) -> AgentError:
        status = response.status_code
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await response.aread()
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

    async def _whole_completion(self, response: httpx.Response) -> list[LlmOutput]:
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await response.aread()
        except TimeoutError as err:
            raise self._timeout_error("the response body") from err
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
