"""One connection of the fake server as scenarios script it, its options and its record."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from appliance.core.elevenlabs_protocol import parse_audio_format
from appliance.core.ulaw import pcm16_to_ulaw, ulaw_to_pcm16
from appliance.ports import Pcm16
from appliance.testing.fake_elevenlabs.hearing import TurnDetector, UserTurn
from appliance.testing.fake_elevenlabs.voices import RATE_HZ, Voice, tone_voice

_LOGGER = logging.getLogger(__name__)


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
    faulty_first: int = 0
    """`signed_url_fault` and `metadata_fields` apply to the first this many signed-URL requests and
    connections only (0: to all): the fault, then a device that works again."""
    flood: int = 300
    """`noisy`: how many malformed frames to send."""


def faulty(options: FakeOptions, index: int) -> bool:
    """Whether the `index`-th (from 0) signed-URL request or connection gets the configured fault."""
    return options.faulty_first == 0 or index < options.faulty_first


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


class FakeConversation:
    """One client connection, seen from the server: what scenarios script."""

    def __init__(
        self, options: FakeOptions, ws: ServerConnection, record: ConnectionRecord, index: int
    ) -> None:
        self.opts = options
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
            **(self.opts.metadata_fields if faulty(self.opts, self.index) else {}),
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
