"""A fake ElevenLabs Agents server: the documented WebSocket protocol on 127.0.0.1, scripted.

For tests, benchmarks and trying the appliance without an account:

    appliance fake-server --port 8765 --scenario conversation
    # appliance.remote: {base_url: ws://127.0.0.1:8765, agent_id: agent_fake}

    with FakeElevenLabsServer(FakeOptions(scenario="tool")) as server:
        ... server.url (ws://127.0.0.1:PORT), server.http_url, server.records ...

One port serves both the conversation WebSocket (`/v1/convai/conversation?agent_id=…`) and the
HTTP `GET /v1/convai/conversation/get-signed-url?agent_id=…` (through websockets'
`process_request` hook). With `api_key` set, the signed-URL endpoint checks `xi-api-key` and
hands out single-use `ws://…&conversation_signature=…` URLs, which the WebSocket then requires.

Faults before the conversation: `signed_url_fault` (`trickle`: the answer one byte every
`trickle_interval_s`; `not_json`, `no_signed_url`, `http_404`, `http_500`...) and
`handshake_delay_s` (the WebSocket upgrade is answered that late). `metadata_fields` overrides
fields of `conversation_initiation_metadata` (e.g. `agent_output_audio_format: mp3_44100`).

The fake has no speech recognition: it hears *that* the user spoke, from the energy and duration
of the received `user_audio_chunk`s, and answers with scripted transcripts and replies (spoken by
`voice`, piper or tones). Scenarios are in `appliance.testing.fake_elevenlabs_scenarios`.
Everything a client sends is recorded (`ConnectionRecord`), with monotonic timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http
import json
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from appliance.core.elevenlabs_protocol import CONVERSATION_PATH, SIGNED_URL_PATH, parse_audio_format
from appliance.core.ulaw import pcm16_to_ulaw, ulaw_to_pcm16
from appliance.ports import Pcm16

_LOGGER = logging.getLogger(__name__)

RATE_HZ = 16000
Voice = Callable[[str], Pcm16]
"""Text → 16 kHz mono int16 speech."""


def tone(seconds: float, freq_hz: float = 220.0, level: float = 0.3) -> Pcm16:
    t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
    return (np.sin(2 * math.pi * freq_hz * t) * level * 32767).astype(np.int16)


def tone_voice(text: str) -> Pcm16:
    """A tone burst per word (0.22 s, pitch from the word) with short gaps: fast and deterministic."""
    parts: list[Pcm16] = []
    for word in text.split() or ["."]:
        parts.append(tone(0.22, 160.0 + (sum(map(ord, word)) % 12) * 20.0))
        parts.append(np.zeros(round(0.05 * RATE_HZ), dtype=np.int16))
    return np.concatenate(parts)


def piper_voice(text: str) -> Pcm16:
    from appliance.testing.speech import piper_say

    return piper_say(text)


@dataclass
class FakeOptions:
    scenario: str = "conversation"
    agent_id: str | None = None
    """Only this agent id is accepted (None: any)."""
    api_key: str | None = None
    """Set: the agent is private (signed URLs with this `xi-api-key` only)."""
    output_format: str = "pcm_16000"
    input_format: str = "pcm_16000"
    first_message: str = "Hello! How can I help you today?"
    transcripts: Sequence[str] = ()
    """What the fake 'hears' for each user turn, in order (cycled)."""
    replies: Sequence[str] = ()
    """What it answers for each user turn, in order (cycled)."""
    chunk_ms: int = 100
    pace: float = 0.0
    """Audio sending speed: 0 = as fast as possible, 1 = real time."""
    ahead_s: float = 0.0
    """With pace > 0, how far ahead of real time the audio may run."""
    ping_interval_s: float | None = 2.0
    ping_ms: int = 50
    speech_rms: float = 400.0
    min_speech_ms: int = 120
    end_silence_ms: int = 500
    tool_name: str = "get_battery"
    tool_parameters: dict[str, Any] = field(default_factory=lambda: {"unit": "percent"})
    close_code: int = 1008
    """`error_close`: the close code to end with."""
    stream_s: float = 10.0
    """`stream` / `interrupt_stream`: seconds of continuous agent audio."""
    interrupt_after_s: float = 1.0
    voice: Voice | None = None
    """None: tones."""
    signed_url_fault: str | None = None
    """`trickle`, `not_json`, `no_signed_url` or `http_<status>`: the signed-URL endpoint misbehaves."""
    trickle_interval_s: float = 5.0
    handshake_delay_s: float = 0.0
    """The WebSocket upgrade is answered this late (a hanging handshake)."""
    metadata_fields: dict[str, Any] = field(default_factory=dict)
    """Fields of `conversation_initiation_metadata_event` to send instead of the negotiated ones."""
    flood: int = 300
    """`noisy`: how many malformed frames to send."""


@dataclass
class ConnectionRecord:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    initiation: dict[str, Any] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    """Every client message except audio chunks, parsed (or {'raw': text})."""
    audio_chunks: int = 0
    audio_bytes: int = 0
    audio_received_at: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, bytes) of each user_audio_chunk."""
    pongs: list[int] = field(default_factory=list)
    pong_delays_ms: list[float] = field(default_factory=list)
    conversation_id: str = ""
    sent_types: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every server message except audio, as sent."""
    audio_sent: list[tuple[int, int]] = field(default_factory=list)
    """(event_id, decoded bytes) of each agent audio frame sent."""
    audio_sent_at: list[float] = field(default_factory=list)
    """Monotonic time just before each agent audio frame was written."""
    interruption_sent_at: list[float] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)
    """Speech seconds of each user turn heard."""
    close_code: int | None = None
    ended: bool = False

    def types(self) -> list[str]:
        return [str(m.get("type", "?")) for m in self.received]


@dataclass
class UserTurn:
    speech_s: float
    text: str | None = None
    """Set for a typed `user_message` (the fake knows what it says)."""


class TurnDetector:
    """User speech from received audio: on after `min_speech_ms` loud, off after `end_silence_ms`."""

    def __init__(self, rate_hz: int, rms: float, min_speech_ms: int, end_silence_ms: int) -> None:
        self.frame = max(1, rate_hz // 50)  # 20 ms
        self.rate_hz = rate_hz
        self.rms = rms
        self.min_frames = max(1, min_speech_ms // 20)
        self.end_frames = max(1, end_silence_ms // 20)
        self._rest = np.zeros(0, dtype=np.float32)
        self._voiced = 0
        self._silent = 0
        self._speech_frames = 0
        self.speaking = False

    def feed(self, pcm: Pcm16) -> list[tuple[str, float]]:
        """('start', 0) / ('end', speech seconds) transitions found in this audio."""
        data = np.concatenate([self._rest, pcm.astype(np.float32)])
        n = data.size // self.frame
        self._rest = data[n * self.frame :]
        out: list[tuple[str, float]] = []
        for i in range(n):
            frame = data[i * self.frame : (i + 1) * self.frame]
            loud = float(np.sqrt(np.mean(frame * frame))) > self.rms
            if not self.speaking:
                self._voiced = self._voiced + 1 if loud else 0
                if self._voiced >= self.min_frames:
                    self.speaking, self._speech_frames, self._silent = True, self._voiced, 0
                    out.append(("start", 0.0))
            else:
                self._speech_frames += 1
                self._silent = 0 if loud else self._silent + 1
                if self._silent >= self.end_frames:
                    self.speaking, self._voiced = False, 0
                    out.append(("end", (self._speech_frames - self._silent) * 0.02))
        return out


class FakeConversation:
    """One client connection, seen from the server: what scenarios script."""

    def __init__(
        self, server: FakeElevenLabsServer, ws: ServerConnection, record: ConnectionRecord, index: int
    ) -> None:
        self.server = server
        self.opts = server.options
        self.ws = ws
        self.record = record
        self.index = index
        """0 for the first connection the server has seen, 1 for the second..."""
        self.conversation_id = f"conv_fake_{secrets.token_hex(6)}"
        record.conversation_id = self.conversation_id
        self.output = parse_audio_format(self.opts.output_format)
        self.metadata_sent = 0
        self.input = parse_audio_format(self.opts.input_format)
        self._event_id = 0
        self._turns: asyncio.Queue[UserTurn | None] = asyncio.Queue()
        self._tool_results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._user_started = asyncio.Event()
        self._initiated = asyncio.Event()
        self._detector = TurnDetector(
            self.input.sample_rate_hz, self.opts.speech_rms, self.opts.min_speech_ms, self.opts.end_silence_ms
        )
        self._pings: dict[int, float] = {}
        self.gone = asyncio.Event()
        self.silent = False
        """True: no more pings (a stalled server)."""

    # ------------------------------------------------------------ sending
    def next_event_id(self) -> int:
        self._event_id += 1
        return self._event_id

    async def send(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type"))
        self.record.sent_types.append(kind)
        text = json.dumps(message)
        if kind == "audio":
            event = message["audio_event"]
            b64 = str(event["audio_base_64"])
            self.record.audio_sent.append(
                (event["event_id"], len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("="))))
            )
            self.record.audio_sent_at.append(time.monotonic())  # the last thing before the write
        else:
            self.record.sent.append(message)
            if kind == "interruption":
                self.record.interruption_sent_at.append(time.monotonic())
        await self.ws.send(text)

    async def send_raw(self, text: str) -> None:
        self.record.sent_types.append("raw")
        await self.ws.send(text)

    async def metadata(self) -> None:
        self.metadata_sent += 1
        fields = {
            "conversation_id": self.conversation_id,
            "agent_output_audio_format": self.output.name,
            "user_input_audio_format": self.input.name,
            **self.opts.metadata_fields,
        }
        await self.send(
            {"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": fields}
        )

    def encode(self, audio16k: Pcm16) -> bytes:
        """16 kHz int16 → the agent output format's bytes."""
        from appliance.adapters.resample import resample

        pcm = (
            resample(audio16k, RATE_HZ, self.output.sample_rate_hz)
            if self.output.sample_rate_hz != RATE_HZ
            else audio16k
        )
        data = np.asarray(pcm, dtype="<i2").tobytes()
        return pcm16_to_ulaw(data) if self.output.encoding == "ulaw" else data

    def audio_message(self, chunk: bytes, event_id: int) -> dict[str, Any]:
        return {
            "type": "audio",
            "audio_event": {"audio_base_64": base64.b64encode(chunk).decode(), "event_id": event_id},
        }

    async def say(
        self,
        text: str,
        *,
        audio: Pcm16 | None = None,
        event_id: int | None = None,
        response: bool = True,
        interruptible: bool = False,
        interrupt_after_s: float | None = None,
    ) -> bool:
        """Speak `text` (agent_response with the first chunk, then audio chunks). False if interrupted."""
        event_id = event_id if event_id is not None else self.next_event_id()
        voice = self.opts.voice or tone_voice
        data = self.encode(voice(text) if audio is None else audio)
        step = self.output.chunk_bytes(self.opts.chunk_ms)
        self._user_started.clear()
        started = time.monotonic()
        sent_s = 0.0
        cut_at = math.inf if interrupt_after_s is None else started + interrupt_after_s
        for offset in range(0, len(data), step):
            chunk = data[offset : offset + step]
            if offset == 0 and response:
                await self.send(
                    {
                        "type": "agent_response",
                        "agent_response_event": {"agent_response": text, "event_id": event_id},
                    }
                )
            if self.opts.pace > 0:
                due = started + max(0.0, sent_s - self.opts.ahead_s) / self.opts.pace
                await self._wait_until(min(due, cut_at), interruptible)
            if (interruptible and self._user_started.is_set()) or time.monotonic() >= cut_at:
                await self.interrupt(event_id, text, sent_s / max(1e-9, self.output.duration_s(len(data))))
                with contextlib.suppress(ConnectionClosed):  # in flight when the server noticed: stale
                    await self.send(self.audio_message(chunk, event_id))
                return False
            await self.send(self.audio_message(chunk, event_id))
            sent_s += self.output.duration_s(len(chunk))
        return True

    async def _wait_until(self, t: float, interruptible: bool) -> None:
        """Sleep until monotonic time `t`, or until the user starts speaking (`interruptible`)."""
        delay = t - time.monotonic()
        if delay <= 0:
            return
        if interruptible:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._user_started.wait(), delay)
        else:
            await asyncio.sleep(delay)

    async def interrupt(self, event_id: int, text: str, fraction: float) -> None:
        await self.send({"type": "interruption", "interruption_event": {"event_id": event_id}})
        words = text.split()
        heard = " ".join(words[: int(len(words) * min(1.0, fraction))])
        await self.send(
            {
                "type": "agent_response_correction",
                "agent_response_correction_event": {
                    "original_agent_response": text,
                    "corrected_agent_response": heard,
                    "event_id": event_id,
                },
            }
        )

    async def transcript(self, text: str, event_id: int | None = None) -> None:
        await self.send(
            {
                "type": "user_transcript",
                "user_transcription_event": {
                    "user_transcript": text,
                    "event_id": event_id or self._event_id + 1,
                },
            }
        )

    async def tool_call(
        self, name: str, parameters: Any, *, timeout_s: float = 10.0
    ) -> dict[str, Any] | None:
        """Send a client_tool_call (`parameters` as given, even if not an object); its result or None."""
        call_id = f"call_{secrets.token_hex(4)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._tool_results[call_id] = future
        await self.send(
            {
                "type": "client_tool_call",
                "client_tool_call": {
                    "tool_name": name,
                    "tool_call_id": call_id,
                    "parameters": parameters,
                    "expects_response": True,
                    "event_id": self._event_id,
                },
            }
        )
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None

    async def agent_tool_response(self, name: str, tool_type: str = "system") -> None:
        await self.send(
            {
                "type": "agent_tool_response",
                "agent_tool_response": {
                    "tool_name": name,
                    "tool_call_id": f"{name}_{secrets.token_hex(4)}",
                    "tool_type": tool_type,
                    "is_error": False,
                    "event_id": self._event_id,
                },
            }
        )

    async def ping(self) -> None:
        event_id = self.next_event_id()
        self._pings[event_id] = time.monotonic()
        await self.send({"type": "ping", "ping_event": {"event_id": event_id, "ping_ms": self.opts.ping_ms}})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def drop(self) -> None:
        """Abrupt loss: the TCP connection goes away without a close frame."""
        self.ws.transport.abort()

    # ------------------------------------------------------------ receiving
    async def initiated(self, timeout_s: float = 5.0) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._initiated.wait(), timeout_s)
        return self._initiated.is_set()

    async def next_turn(self) -> UserTurn | None:
        """The next user turn (speech then silence, or a typed user_message); None when the client left."""
        return await self._turns.get()

    def user_speaking(self) -> bool:
        return self._detector.speaking

    async def reader(self) -> None:
        try:
            async for data in self.ws:
                self._receive(data)
        except ConnectionClosed:
            pass
        finally:
            self.record.ended = True
            self.record.close_code = self.ws.close_code
            self.gone.set()
            self._turns.put_nowait(None)

    def _receive(self, data: str | bytes) -> None:
        now = time.monotonic()
        if isinstance(data, bytes):
            self.record.received.append({"type": "binary", "bytes": len(data)})
            return
        try:
            message = json.loads(data)
        except ValueError:
            self.record.received.append({"type": "raw", "raw": data[:200]})
            return
        if not isinstance(message, dict):
            self.record.received.append({"type": "raw", "raw": data[:200]})
            return
        if "user_audio_chunk" in message:
            raw = base64.b64decode(message["user_audio_chunk"])
            self.record.audio_chunks += 1
            self.record.audio_bytes += len(raw)
            self.record.audio_received_at.append((now, len(raw)))
            pcm = ulaw_to_pcm16(raw) if self.input.encoding == "ulaw" else raw
            for change, speech_s in self._detector.feed(np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")):
                if change == "start":
                    self._user_started.set()
                else:
                    self.record.turns.append(speech_s)
                    self._turns.put_nowait(UserTurn(speech_s))
            return
        self.record.received.append(message)
        kind = message.get("type")
        if kind == "conversation_initiation_client_data":
            self.record.initiation = message
            self._initiated.set()
        elif kind == "pong":
            event_id = message.get("event_id")
            if isinstance(event_id, int):
                self.record.pongs.append(event_id)
                if event_id in self._pings:
                    self.record.pong_delays_ms.append((now - self._pings.pop(event_id)) * 1000)
        elif kind == "client_tool_result":
            self.record.tool_results.append(message)
            future = self._tool_results.pop(str(message.get("tool_call_id")), None)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "user_message":
            self._turns.put_nowait(UserTurn(0.0, str(message.get("text", ""))))

    async def pinger(self) -> None:
        if not self.opts.ping_interval_s:
            return
        with contextlib.suppress(ConnectionClosed):
            while not self.gone.is_set():
                await asyncio.sleep(self.opts.ping_interval_s)
                if not self.silent:
                    await self.ping()


Scenario = Callable[[FakeConversation], Awaitable[None]]


class FakeElevenLabsServer:
    """Runs in a background thread with its own event loop (usable from sync and async tests)."""

    def __init__(self, options: FakeOptions | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options or FakeOptions()
        self.host = host
        self._port = port
        self.records: list[ConnectionRecord] = []
        self.signed_url_requests: list[dict[str, str]] = []
        self.on_connection_end: Callable[[ConnectionRecord], None] | None = None
        self._signatures: set[str] = set()
        self._scenario = _scenario(self.options.scenario)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

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

    async def serve(self) -> None:
        """Serve until `stop()` (or cancellation); sets `port` once listening."""
        self._loop = asyncio.get_running_loop()
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
            if opts.signed_url_fault is not None:
                return await self._signed_url_fault(connection, opts.signed_url_fault, signed)
            return _json(connection, http.HTTPStatus.OK, {"signed_url": signed})
        if opts.handshake_delay_s > 0:
            await asyncio.sleep(opts.handshake_delay_s)
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
            await asyncio.sleep(self.options.trickle_interval_s)
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
        conv = FakeConversation(self, ws, record, len(self.records) - 1)
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


def _scenario(name: str) -> Scenario:
    from appliance.testing.fake_elevenlabs_scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return SCENARIOS[name]


# ---------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake server in the foreground until interrupted."""
    from appliance.testing.fake_elevenlabs_scenarios import SCENARIOS

    p = argparse.ArgumentParser(prog="appliance fake-server", description=main.__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--scenario", default="conversation", choices=sorted(SCENARIOS))
    p.add_argument("--agent-id", help="accept only this agent id (default: any)")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="make the agent private: signed URLs require the key in this environment variable",
    )
    p.add_argument("--output-format", default="pcm_16000")
    p.add_argument("--input-format", default="pcm_16000")
    p.add_argument("--voice", choices=["piper", "tones"], default="piper")
    p.add_argument("--pace", type=float, default=1.0, help="audio speed: 0 = burst, 1 = real time (default)")
    p.add_argument("--ahead", type=float, default=0.5, help="seconds of audio sent ahead of real time")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--ping-interval", type=float, default=2.0)
    p.add_argument("--stream-seconds", type=float, default=10.0)
    p.add_argument("--interrupt-after", type=float, default=1.0)
    p.add_argument("--record", metavar="JSONL", help="append each finished connection's record to this file")
    args = p.parse_args(argv)
    voice: Voice = tone_voice
    if args.voice == "piper":
        from appliance.testing.speech import joe_voice_paths

        try:
            joe_voice_paths()
            voice = piper_voice
        except RuntimeError as err:
            print(f"speaking in tones: {err}", file=sys.stderr)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            p.error(f"--api-key-env: {args.api_key_env} is not set")
    options = FakeOptions(
        scenario=args.scenario,
        agent_id=args.agent_id,
        api_key=api_key,
        output_format=args.output_format,
        input_format=args.input_format,
        voice=voice,
        pace=args.pace,
        ahead_s=args.ahead,
        chunk_ms=args.chunk_ms,
        ping_interval_s=args.ping_interval or None,
        stream_s=args.stream_seconds,
        interrupt_after_s=args.interrupt_after,
    )
    server = FakeElevenLabsServer(options, host=args.host, port=args.port)
    if args.record:
        path = Path(args.record)

        def write(record: ConnectionRecord) -> None:
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)) + "\n")

        server.on_connection_end = write
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    print(
        f"fake ElevenLabs server on ws://{args.host}:{args.port} (scenario {args.scenario}); "
        f"appliance.remote.base_url: ws://{args.host}:{args.port}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(server.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
