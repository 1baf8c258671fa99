"""The fake server: one port for the conversation WebSocket and the signed-URL endpoint,
running one scenario object per connection (`scenarios.py` has them by name)."""

from __future__ import annotations

import asyncio
import http
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from appliance.core.elevenlabs_protocol import CONVERSATION_PATH, SIGNED_URL_PATH
from appliance.testing.fake_elevenlabs.conversation import (
    ConnectionRecord,
    FakeConversation,
    FakeOptions,
    Scenario,
    faulty,
)
from appliance.testing.fake_elevenlabs.scenarios import scenario as named_scenario

_LOGGER = logging.getLogger(__name__)


class FakeElevenLabsServer:
    """Runs in a background thread with its own event loop (usable from sync and async tests)."""

    def __init__(
        self,
        options: FakeOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scenario: Scenario | None = None,
    ) -> None:
        """`scenario`: what each connection runs (default: the one named by `options.scenario`)."""
        self.options = options or FakeOptions()
        self.host = host
        self._port = port
        self.records: list[ConnectionRecord] = []
        self.signed_url_requests: list[dict[str, str]] = []
        self.on_connection_end: Callable[[ConnectionRecord], None] | None = None
        self._signatures: set[str] = set()
        self._scenario = scenario or named_scenario(self.options.scenario)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing: asyncio.Event | None = None  # set by stop(): held handshakes end at once

    # ------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The base URL for `appliance.remote.base_url`: ws://HOST:PORT."""
        return f"ws://{self.host}:{self._port}"

    @property
    def http_url(self) -> str:
        """The base URL for the SDK: `ElevenLabs(base_url=...)`."""
        return f"http://{self.host}:{self._port}"

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeElevenLabsServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="fake-elevenlabs", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"fake ElevenLabs server failed to start: {self._error}") from self._error

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            if self._closing is not None:
                loop.call_soon_threadsafe(self._closing.set)
            loop.call_soon_threadsafe(server.close)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return condition()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as err:  # reported by start()
            self._error = err
            self._ready.set()

    async def serve(self, on_listening: Callable[[int], None] | None = None) -> None:
        """Serve until `stop()` (or cancellation); sets `port` once listening and then calls
        `on_listening` with it (port 0 asks for any free one)."""
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        async with serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._process_request,
            max_size=16 * 1024 * 1024,
            compression=None,
            ping_interval=None,
        ) as server:
            self._server = server
            self._port = int(next(iter(server.sockets)).getsockname()[1])
            self._ready.set()
            if on_listening is not None:
                on_listening(self._port)
            await server.wait_closed()

    # ------------------------------------------------------------ HTTP + handshake
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        opts = self.options
        if parts.path == SIGNED_URL_PATH:
            self.signed_url_requests.append({k.lower(): v for k, v in request.headers.raw_items()})
            if opts.api_key is None or request.headers.get("xi-api-key") != opts.api_key:
                return _json(
                    connection, http.HTTPStatus.UNAUTHORIZED, {"detail": {"status": "invalid_api_key"}}
                )
            if opts.agent_id is not None and query.get("agent_id") != opts.agent_id:
                return _json(connection, http.HTTPStatus.NOT_FOUND, {"detail": {"status": "agent_not_found"}})
            signature = secrets.token_urlsafe(24)
            self._signatures.add(signature)
            agent = query.get("agent_id", "")
            signed = f"ws://{self.host}:{self._port}{CONVERSATION_PATH}?" + urlencode(
                {"agent_id": agent, "conversation_signature": signature}
            )
            if opts.signed_url_fault is not None and faulty(opts, len(self.signed_url_requests) - 1):
                return await self._signed_url_fault(connection, opts.signed_url_fault, signed)
            return _json(connection, http.HTTPStatus.OK, {"signed_url": signed})
        if opts.handshake_delay_s > 0 and await self._held(opts.handshake_delay_s):
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        if parts.path != CONVERSATION_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if opts.agent_id is not None and query.get("agent_id") != opts.agent_id:
            return connection.respond(http.HTTPStatus.FORBIDDEN, "unknown agent\n")
        if opts.api_key is not None:
            signature = query.get("conversation_signature", "")
            if signature not in self._signatures:
                return connection.respond(http.HTTPStatus.FORBIDDEN, "a valid signed URL is required\n")
            self._signatures.discard(signature)  # single use
        return None

    async def _held(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the server is stopping; True when it is stopping."""
        assert self._closing is not None
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    async def _signed_url_fault(self, connection: ServerConnection, fault: str, signed: str) -> Response:
        if fault == "not_json":
            return connection.respond(http.HTTPStatus.OK, "<html>Please log in to the Wi-Fi</html>\n")
        if fault == "no_signed_url":
            return _json(connection, http.HTTPStatus.OK, {"url": signed})
        if fault.startswith("http_"):
            status = http.HTTPStatus(int(fault.removeprefix("http_")))
            return _json(connection, status, {"detail": {"status": status.phrase}})
        if fault != "trickle":
            raise ValueError(f"unknown signed_url_fault {fault!r}")
        body = json.dumps({"signed_url": signed}).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        transport = connection.transport
        for byte in head.encode() + body:  # one byte at a time: every read succeeds, slowly
            if transport.is_closing():
                break
            transport.write(bytes([byte]))
            if await self._held(self.options.trickle_interval_s):
                break
        transport.abort()
        return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        parts = urlsplit(ws.request.path)
        record = ConnectionRecord(
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
        )
        self.records.append(record)
        conv = FakeConversation(self.options, ws, record, len(self.records) - 1)
        reader = asyncio.create_task(conv.reader())
        pinger: asyncio.Task[None] | None = None
        try:
            if not await conv.initiated():
                await ws.close(1008, "conversation_initiation_client_data expected first")
                return
            pinger = asyncio.create_task(conv.pinger())
            await self._scenario(conv)
            if not conv.gone.is_set():
                await conv.gone.wait()
        except ConnectionClosed:
            pass
        except Exception:
            _LOGGER.exception("fake scenario %s failed", self.options.scenario)
        finally:
            for task in (pinger, reader):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (pinger, reader) if t is not None), return_exceptions=True)
            record.ended = True
            if self.on_connection_end is not None:
                self.on_connection_end(record)


def _json(connection: ServerConnection, status: http.HTTPStatus, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body))
    headers = Headers(response.headers)
    del headers["Content-Type"]
    headers["Content-Type"] = "application/json"
    response.headers = headers
    return response
