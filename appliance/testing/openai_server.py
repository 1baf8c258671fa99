"""A scripted OpenAI-compatible chat-completions server for tests (stdlib only).

    with ScriptedOpenAiServer([text_reply("Hel", "lo"), tool_call_reply("end_call", {"reason": "x"})]) as srv:
        llm = OpenAiCompatibleLlm(srv.url, model="m", api_key="k")
        ...
        srv.requests[0].body["temperature"]

Each `POST /v1/chat/completions` consumes the next scripted `Reply` in order; when the script is
exhausted, the `responder` (if any) picks a reply from the request (by its content: retries and
filler requests then cannot shift the script), else a 500 with a clear body. Streaming replies
are proper SSE (`text/event-stream`, `data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`) over
chunked HTTP/1.1 framing, in the shape OpenAI sends: a role chunk, content chunks, tool-call
fragments split across chunks, a final chunk with `finish_reason`. Every request is recorded
(path, headers, JSON body) together with whether the client went away before the reply was
complete, so tests can assert cancellation closes the connection. `GET /v1/models` answers a
one-model list (readiness probes).

Faults for the fault matrix and the soak: an HTTP error status (`error_reply`), a server that
reads the request and never answers (`hang_reply`), a 200 whose body is not an SSE stream of
chunks (`garbage_reply`), part of a reply then a dropped connection (`half_reply`), and a
stream that never ends (`endless_reply`). A refused connection needs no server: a closed port.

Delays wait on the server's shutdown event, so closing the server never waits for a script.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MODEL_ID = "scripted-model"


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    arguments: Mapping[str, Any] | str
    """A dict is sent as JSON; a string is sent as-is (use it for malformed arguments)."""
    id: str | None = None
    fragment_chars: int = 7
    """The arguments string is split into pieces of this many characters, one per chunk."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build them with the helpers below."""

    chunks: Sequence[str] = ()
    chunk_delay_s: float | Sequence[float] = 0.0
    """Delay before each content chunk (one value for all, or one per chunk)."""
    first_byte_delay_s: float = 0.0
    """Delay before the status line: nothing at all reaches the client until then."""
    tool_calls: Sequence[ScriptedToolCall] = ()
    status: int = 200
    error_body: str = ""
    hang: bool = False
    """Read the request, then never answer (until the server closes)."""
    drop_after_chunks: int | None = None
    """Close the connection abruptly after this many content chunks (no [DONE])."""
    raw_events: Sequence[str] = ()
    """Extra `data:` payloads sent verbatim after the content (e.g. malformed JSON)."""
    finish_reason: str | None = None
    not_streamed: bool = False
    """Answer one `chat.completion` JSON object (a server that ignores `stream: true`)."""
    raw_body: bytes | None = None
    """Answer 200 `text/event-stream` with these bytes as the whole (chunked) body, verbatim."""
    endless: bool = False
    """Stream the content chunks over and over, never finishing (until the client goes away or
    the server closes); `chunk_delay_s` (one value) paces it."""
    trickle_s: float | None = None
    """After the headers, an empty chunk (`delta.content: ""`) every `trickle_s` forever: data
    keeps coming, so no per-read or per-event timeout fires, and the answer never comes."""


def text_reply(
    *chunks: str, chunk_delay_s: float | Sequence[float] = 0.0, first_byte_delay_s: float = 0.0
) -> Reply:
    return Reply(chunks=chunks, chunk_delay_s=chunk_delay_s, first_byte_delay_s=first_byte_delay_s)


def tool_call_reply(
    name: str,
    arguments: Mapping[str, Any] | str,
    *,
    text: Sequence[str] = (),
    call_id: str | None = None,
    fragment_chars: int = 7,
) -> Reply:
    call = ScriptedToolCall(name=name, arguments=arguments, id=call_id, fragment_chars=fragment_chars)
    return Reply(chunks=tuple(text), tool_calls=(call,))


def error_reply(status: int, body: str = "") -> Reply:
    return Reply(status=status, error_body=body or json.dumps({"error": {"message": f"scripted {status}"}}))


def hang_reply() -> Reply:
    return Reply(hang=True)


GARBAGE = (
    b'data: {"choices": [{"delta": {"content": "Hel\n\n'  # JSON cut in the middle
    b"\x00\xff\xfe binary noise \x80\x81\n\n"
    b"data: <html>502 Bad Gateway</html>\n\n"
    b"event: nonsense\ndata: [1, 2, 3]\n\n"
)


def garbage_reply(body: bytes = GARBAGE) -> Reply:
    """A 200 event stream whose body is not OpenAI chunks (and never says [DONE])."""
    return Reply(raw_body=body)


def half_reply(*chunks: str, drop_after: int, chunk_delay_s: float | Sequence[float] = 0.0) -> Reply:
    """The first `drop_after` chunks, then the TCP connection is shut down (no [DONE])."""
    return Reply(chunks=chunks, drop_after_chunks=drop_after, chunk_delay_s=chunk_delay_s)


def endless_reply(*chunks: str, chunk_delay_s: float = 0.002) -> Reply:
    """`chunks` streamed in a loop forever: a model that never stops talking."""
    return Reply(chunks=chunks, endless=True, chunk_delay_s=chunk_delay_s)


def trickle_reply(interval_s: float = 0.1) -> Reply:
    """A 200 event stream that sends an empty chunk every `interval_s`, forever."""
    return Reply(trickle_s=interval_s)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: Any
    """The parsed JSON body (None when absent or not JSON)."""
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when the client closed the connection before the scripted reply was complete."""
    completed: threading.Event = field(default_factory=threading.Event)
    """Set when the whole scripted reply was written."""

    def last_user_text(self) -> str:
        """The content of the last `user` message of a chat request ("" if none)."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        for message in reversed(messages if isinstance(messages, list) else []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else json.dumps(content)
        return ""


Responder = Callable[[RecordedRequest], Reply | None]
"""Picks the reply to a chat request once the script is exhausted (None: the 500)."""


def _arguments_text(call: ScriptedToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


def _completion(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks) or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"call_scripted_{n}",
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_text(call)},
            }
            for n, call in enumerate(reply.tool_calls)
        ]
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL_ID,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedOpenAiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets its connection (a cancelled stream, a pooled connection closed)
        is normal for this server; anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._untrack(self.connection)

    # --- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/").endswith("/models"):
            body = {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "tests"}]}
            self._send_json(200, json.dumps(body))
        else:
            self._send_json(404, json.dumps({"error": {"message": "not found"}}))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = self._record(body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        reply = self.server.owner._next_reply(record)
        if reply is None:
            self._send_json(500, json.dumps({"error": {"message": "no scripted reply left"}}))
            return
        self._play(reply, record)

    # --- helpers --------------------------------------------------------------------------

    def _record(self, body: Any) -> RecordedRequest:
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.owner._add_request(record)
        return record

    def _send_json(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _wait(self, seconds: float, record: RecordedRequest) -> bool:
        """Wait, watching for the client going away; False when it did (or the server closes)."""
        stopping = self.server.owner._stopping
        if seconds <= 0:
            return not self._peer_closed(0.0, record)
        step = 0.02
        remaining = seconds
        while remaining > 0:
            if stopping.is_set():
                return False
            chunk = min(step, remaining)
            if self._peer_closed(chunk, record):
                return False
            remaining -= chunk
        return True

    def _peer_closed(self, timeout_s: float, record: RecordedRequest) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout_s)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                record.disconnected.set()
                return True
        except OSError:
            record.disconnected.set()
            return True
        return False

    def _write_chunk(self, data: bytes, record: RecordedRequest) -> bool:
        try:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:
            record.disconnected.set()
            return False
        return True

    def _event(self, payload: Any, record: RecordedRequest) -> bool:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return self._write_chunk(f"data: {text}\n\n".encode(), record)

    def _play(self, reply: Reply, record: RecordedRequest) -> None:
        owner = self.server.owner
        if reply.hang:
            while not owner._stopping.is_set():
                if self._peer_closed(0.05, record):
                    break
            self.close_connection = True
            return
        if reply.first_byte_delay_s and not self._wait(reply.first_byte_delay_s, record):
            self.close_connection = True
            return
        if reply.status >= 300:
            self._send_json(reply.status, reply.error_body)
            record.completed.set()
            return
        if reply.not_streamed:
            self._send_json(200, json.dumps(_completion(reply)))
            record.completed.set()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if reply.raw_body is not None:
            if self._write_chunk(reply.raw_body, record) and self._write_chunk(b"", record):
                record.completed.set()
            return
        if reply.endless:
            self._endless(reply, record)
            self.close_connection = True
            return
        if reply.trickle_s is not None:
            while self._wait(reply.trickle_s, record) and self._event(_chunk({"content": ""}), record):
                pass
            self.close_connection = True
            return
        if self._stream(reply, record):
            self._write_chunk(b"", record)  # the terminating zero-length chunk
            record.completed.set()
        else:
            self.close_connection = True

    def _endless(self, reply: Reply, record: RecordedRequest) -> None:
        """Content chunks in a loop until the client goes away or the server closes."""
        if not reply.chunks or not self._event(_chunk({"role": "assistant", "content": ""}), record):
            return
        delay = reply.chunk_delay_s if isinstance(reply.chunk_delay_s, int | float) else 0.0
        n = 0
        while not self.server.owner._stopping.is_set():
            if not self._wait(delay, record):
                return
            if not self._event(_chunk({"content": reply.chunks[n % len(reply.chunks)]}), record):
                return
            n += 1

    def _stream(self, reply: Reply, record: RecordedRequest) -> bool:
        chunk = _chunk
        if not self._event(chunk({"role": "assistant", "content": ""}), record):
            return False
        delays = reply.chunk_delay_s
        for i, text in enumerate(reply.chunks):
            delay = delays if isinstance(delays, int | float) else delays[i]
            if delay and not self._wait(delay, record):
                return False
            if not self._event(chunk({"content": text}), record):
                return False
            if reply.drop_after_chunks is not None and i + 1 >= reply.drop_after_chunks:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return False
        for n, call in enumerate(reply.tool_calls):
            args = _arguments_text(call)
            head = {
                "index": n,
                "id": call.id or f"call_scripted_{n}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if not self._event(chunk({"tool_calls": [head]}), record):
                return False
            step = max(1, call.fragment_chars)
            for start in range(0, len(args), step):
                piece = {"index": n, "function": {"arguments": args[start : start + step]}}
                if not self._event(chunk({"tool_calls": [piece]}), record):
                    return False
        for raw in reply.raw_events:
            if not self._event(raw, record):
                return False
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        if not self._event(chunk({}, finish), record):
            return False
        return self._event("[DONE]", record)


class ScriptedOpenAiServer:
    """Serves `replies` in order on 127.0.0.1 (a free port) from a background thread, then
    whatever `responder` picks for each request."""

    def __init__(self, replies: Sequence[Reply] = (), responder: Responder | None = None) -> None:
        self._lock = threading.Lock()
        self._replies = list(replies)
        self.responder = responder
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="openai-server",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The OpenAI-style base URL: `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (chat completions and others), in order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def close(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedOpenAiServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- called from handler threads --------------------------------------------------------

    def _next_reply(self, record: RecordedRequest) -> Reply | None:
        with self._lock:
            if self._replies:
                return self._replies.pop(0)
            responder = self.responder
        return responder(record) if responder is not None else None

    def _add_request(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
