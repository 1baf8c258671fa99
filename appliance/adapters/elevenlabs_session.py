"""`ElevenLabsAgentSession`: a remote ElevenLabs Agents conversation behind the AgentSession port.

One `websockets` connection per conversation (a fresh URL for every connection: the signed
URL provider is called again on each reconnect). The protocol itself is the sans-I/O
`appliance.core.elevenlabs_protocol`; this module moves frames and audio:

- microphone frames (16 kHz) → the negotiated `user_input_audio_format` (resampled, µ-law
  encoded if asked) → `user_audio_chunk`s of `chunk_ms`, sent by their own task so control
  frames never queue behind audio. Audio pushed before the conversation is ready (connecting,
  reconnecting) is kept, up to `prebuffer_s`, and sent once it is.
- agent `audio` → decoded → `JitterBuffer` → one `speaker.play()` per chunk, handed over at
  once (the speaker queues them); `interruption` bumps a generation, drops held and stale
  audio (`event_id` at or below the interruption's) and calls `speaker.stop()`, which silences
  the device within one output block.
- `ping` → `pong` at once; `client_tool_call` → the injected tool runner → `client_tool_result`
  (`is_error` on failure or timeout); `agent_tool_response` `end_call` → finish playback, end.
- failures: a lost or stalled connection (no frame for `stall_timeout_s`) reconnects with
  exponential backoff and jitter, up to `reconnect_attempts`; the first retry plays `alert`
  (the error chime). The new conversation gets the transcript so far as a contextual update,
  and the user's last question again if the lost connection never answered it. Past the
  budget the session ends with reason `network_error`. Not retried: a TLS failure
  (`remote_tls_failed`), a `ws://` URL when the base URL is `wss://` (`remote_insecure_url`),
  no usable `conversation_initiation_metadata` within `metadata_timeout_s` or an unsupported
  audio format (`remote_protocol_error`): the session ends at once.
- `end()` while connecting cancels the signed-URL request, the connect and the handshake at
  once; agent audio before the metadata (no known format yet) is never played.
- server text in log lines is escaped (`printable`) and each kind of warning is rate-limited.

Every server event goes to the event sink under the platform's name (`audio` without its
base64: `event_id`, `duration_s`, `sample_rate_hz`), plus `reconnecting` / `reconnected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from appliance.core import elevenlabs_protocol as el
from appliance.core.conversation import ToolCall
from appliance.core.endpointing import UtteranceEnded
from appliance.core.playout import Backoff, JitterBuffer
from appliance.core.ulaw import pcm16_to_ulaw, ulaw_to_pcm16
from appliance.errors import AgentError
from appliance.logs import redact, redact_value
from appliance.ports import MIC_RATE_HZ, Clock, EventSink, Pcm16, Speaker

_LOGGER = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024 * 1024
_S16LE = np.dtype("<i2")
REPLAY_SILENCE_S = 0.8
"""Silence after a replayed question, so the server's turn detection closes the turn."""
_T = TypeVar("_T")
UrlProvider = Callable[[], Awaitable[str]]
ResamplerFactory = Callable[[int, int], Callable[[Pcm16], Pcm16]]
"""(in rate, out rate) → a streaming `process(block) -> block` for one signal."""


class ClientToolRunner(Protocol):
    async def run(self, call: ToolCall) -> tuple[str, bool]:
        """Run a device tool: (result text, is_error)."""
        ...


@dataclass(frozen=True)
class RemoteSettings:
    agent_id: str
    base_url: str = "wss://api.elevenlabs.io"
    chunk_ms: int = 100
    reconnect_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    stall_timeout_s: float = 20.0
    """No frame at all for this long: the connection is dead (reconnect)."""
    open_timeout_s: float = 10.0
    metadata_timeout_s: float = 10.0
    """After the initiation is sent, the server's `conversation_initiation_metadata` is due
    within this long; otherwise the session ends with `remote_protocol_error`."""
    connect_hold_s: float = 5.0
    """While connecting, `busy` holds at most this long per attempt (fast headless runs wait
    for the connection; the no-speech timer is never postponed by a connection stuck longer)."""
    close_timeout_s: float = 1.0
    warn_interval_s: float = 10.0
    """One warning line per kind (malformed frames, server errors...) per this interval."""
    jitter_target_s: float = 0.06
    prebuffer_s: float = 2.0
    first_message_wait_s: float = 1.0
    """After connecting, `busy` holds this long for a first message (fast headless runs)."""
    reply_wait_s: float = 8.0
    """After the user's turn, `busy` holds until the reply's audio or this long."""
    audio_gap_s: float = 0.35
    """A reply counts as finished this long after its last audio chunk (there is no end marker)."""
    end_timeout_s: float = 15.0
    tool_timeout_s: float = 130.0
    """Safety net above the runner's own per-tool timeouts."""
    outbox_s: float = 30.0
    healthy_after_s: float = 10.0
    """A connection that lasted this long resets the reconnect budget (a flapping one does not)."""


class _Linear:
    """Fallback streaming resampler (linear interpolation) when none is injected."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._ratio = in_rate / out_rate
        self._pos = 0.0
        self._last = np.zeros(1, dtype=np.float32)

    def __call__(self, block: Pcm16) -> Pcm16:
        data = np.concatenate([self._last, block.astype(np.float32)])
        positions = np.arange(self._pos, data.size - 1, self._ratio)
        self._pos = float(positions[-1] + self._ratio - (data.size - 1)) if positions.size else self._pos
        self._last = data[-1:]
        out: Pcm16 = np.rint(np.interp(positions, np.arange(data.size), data)).astype(np.int16)
        return out


class ElevenLabsAgentSession:
    def __init__(
        self,
        settings: RemoteSettings,
        initiation: el.InitiationData,
        *,
        speaker: Speaker,
        events: EventSink,
        stopwatch: Clock,
        url_provider: UrlProvider | None = None,
        tools: ClientToolRunner | None = None,
        resampler: ResamplerFactory | None = None,
        rng: Callable[[], float] = random.random,
        alert: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._s = settings
        self._initiation = initiation
        self._speaker = speaker
        self._events = events
        self._stopwatch = stopwatch
        self._url_provider = url_provider
        self._tools = tools
        self._resampler_factory = resampler
        self._rng = rng
        self._alert = alert
        self._proto = el.ElevenLabsProtocol()
        self._history: list[el.TranscriptEntry] = []
        self._ws: ClientConnection | None = None
        self._ready = False
        self._ready_at: float | None = None
        self._failure: el.CloseOutcome | None = None
        """Why this session dropped the current connection itself (stall, protocol error)."""
        self._connect_hold_until = math.inf
        self._limiter = el.WarningLimiter(settings.warn_interval_s)
        self.dropped_unformatted_chunks = 0
        self._last_frame_at = 0.0
        self._connections = 0
        self._closed: asyncio.Future[str] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ending: str | None = None
        self._end_requested = asyncio.Event()
        self._closing_by_us = False
        self._finished = False
        # microphone → server
        self._prebuffer: deque[Pcm16] = deque()
        self._prebuffer_samples = 0
        self._resample: Callable[[Pcm16], Pcm16] | None = None
        self._ulaw = False
        self._chunk_bytes = 3200
        self._pending = bytearray()
        self._outbox: deque[str] = deque()
        self._outbox_ready = asyncio.Event()
        self._pending_control: list[str] = []
        self.dropped_audio_chunks = 0
        # server → speaker
        self._jitter: JitterBuffer[tuple[Pcm16, int]] = JitterBuffer(
            settings.jitter_target_s, settings.jitter_target_s
        )
        self._generation = 0
        self._outstanding = 0
        self._release: asyncio.TimerHandle | None = None
        self._hold_until = 0.0
        self._awaiting_reply = False
        self._last_utterance: UtteranceEnded | None = None
        self._replayed: UtteranceEnded | None = None
        self._samples_pushed = 0
        self._reply_sample = -1
        """`_samples_pushed` when the agent last answered (audio or agent_response)."""
        self._turn_heard = False
        """This connection has heard a user turn (transcript or typed message)."""
        self._first_sample = 0
        """Index (in pushed samples) of the first sample the current connection received."""
        self._muted = False
        self._audio_events: list[tuple[int, float, int]] = []
        self.stale_audio_chunks = 0

    # ------------------------------------------------------------ AgentSession port
    @property
    def busy(self) -> bool:
        if self._finished:
            return False
        now = self._stopwatch.now()
        if not self._ready:
            return now < self._connect_hold_until or now < self._hold_until
        return self._speaking() or now < self._hold_until

    @property
    def conversation_id(self) -> str | None:
        return self._proto.conversation_id

    @property
    def awaiting_reply(self) -> bool:
        """The user's last turn has had no agent audio or response yet."""
        return self._awaiting_reply

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._runner = asyncio.create_task(self._run(), name="elevenlabs-session")

    def push_audio(self, frame: Pcm16) -> None:
        if self._finished:
            return
        self._samples_pushed += frame.size
        if not self._ready:
            self._prebuffer.append(frame)
            self._prebuffer_samples += frame.size
            while self._prebuffer and self._prebuffer_samples > self._s.prebuffer_s * MIC_RATE_HZ:
                self._prebuffer_samples -= self._prebuffer.popleft().size
            return
        self._encode(frame)

    async def speech_started(self, t: float) -> None:
        return None  # barge-in is the server's decision (it sends `interruption`)

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self._last_utterance = utterance
        declared_t = utterance.declared_t if utterance.declared_t >= 0 else utterance.end_t
        ended_at = self._samples_pushed - round((declared_t - utterance.end_t) * MIC_RATE_HZ)
        if self._reply_sample > ended_at:
            return  # the server answered before the device's endpointer closed the turn
        self._awaiting_reply = True
        self._hold(self._s.reply_wait_s)
        if self._ready and self._connections > 1 and self._replayed is not utterance:
            started_at = self._samples_pushed - round((declared_t - utterance.start_t) * MIC_RATE_HZ)
            if started_at < self._first_sample:
                self._replay(utterance)  # it began on the lost connection: ask the new one whole

    async def end(self, reason: str) -> None:
        if self._ending is None:
            self._ending = reason
        self._end_requested.set()

    async def stop(self, reason: str) -> None:
        """End now: playback stops within one output block, later audio is dropped, then close."""
        self._muted = True
        self._interrupt()
        self._hold_until = 0.0
        self._awaiting_reply = False
        await self.end(reason)

    async def closed(self) -> str:
        if self._closed is None:
            raise RuntimeError("session not started")
        try:
            return await asyncio.shield(self._closed)
        finally:
            await self._shutdown()

    # ------------------------------------------------------------ client messages
    async def send_contextual_update(self, text: str) -> bool:
        self._events.emit("contextual_update", text=text)
        return await self._control(self._proto.contextual_update_message(text), queue=True)

    async def send_user_message(self, text: str) -> bool:
        self._events.emit("user_message", text=text)
        self._awaiting_reply = True
        self._turn_heard = True
        self._hold(self._s.reply_wait_s)
        return await self._control(self._proto.user_message(text), queue=True)

    async def send_user_activity(self) -> bool:
        return await self._control(self._proto.user_activity_message(), queue=False)

    async def send_feedback(self, like: bool) -> bool:
        message = self._proto.feedback_message(like)
        if message is None:
            return False
        self._events.emit("feedback", score="like" if like else "dislike")
        return await self._control(message, queue=False)

    def transcript(self) -> list[el.TranscriptEntry]:
        """Everything said so far, across reconnections."""
        return [*self._history, *self._proto.transcript()]

    async def _control(self, message: str, *, queue: bool) -> bool:
        ws = self._ws
        if ws is None or not self._ready:
            if queue and not self._finished:
                self._pending_control.append(message)
                return True
            return False
        try:
            await ws.send(message)
        except ConnectionClosed:
            return False
        return True

    # ------------------------------------------------------------ connection lifecycle
    async def _run(self) -> None:
        reason = "error"
        attempt = 0
        try:
            while True:
                if self._ending is not None:
                    reason = self._ending
                    break
                outcome = await self._connect_and_serve()
                if outcome is None:
                    reason = self._ending or "ended"
                    break
                if outcome.kind is el.CloseKind.ENDED:
                    reason = self._ending or outcome.session_reason
                    break
                self._report(outcome)
                if not outcome.reconnect:
                    reason = outcome.session_reason
                    break
                up_since = self._ready_at
                if up_since is not None and self._stopwatch.now() - up_since >= self._s.healthy_after_s:
                    attempt = 0  # that connection worked for a while: a new outage gets the whole budget
                attempt += 1
                if attempt > self._s.reconnect_attempts:
                    message = (
                        f"the remote agent is unreachable after {self._s.reconnect_attempts} "
                        f"reconnect attempt(s): {outcome.message}"
                    )
                    _LOGGER.error("%s; the session ends", _log_text(message))
                    self._events.emit("error", code="network_error", message=message, stage="remote")
                    reason = "network_error"
                    break
                delay = self._s.backoff.delay(attempt, self._rng)
                self._events.emit(
                    "reconnecting",
                    attempt=attempt,
                    attempts=self._s.reconnect_attempts,
                    delay_s=round(delay, 3),
                )
                _LOGGER.warning(
                    "remote agent: %s; reconnecting in %.2f s (attempt %d of %d)",
                    _log_text(outcome.message),
                    delay,
                    attempt,
                    self._s.reconnect_attempts,
                )
                self._connect_hold_until = self._stopwatch.now() + delay + self._s.connect_hold_s
                if attempt == 1 and self._alert is not None:
                    self._spawn(self._alert(), "alert")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._end_requested.wait(), delay)
        except asyncio.CancelledError:
            self._finish(self._ending or "cancelled")
            raise
        except Exception as err:  # a bug must end the session, not hang it
            _LOGGER.exception("remote session failed")
            self._events.emit("error", code="agent_failed", message=redact(str(err)), stage="remote")
            reason = "error"
        await self._drain(self._s.end_timeout_s)  # what was received is still heard
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        self._finished = True
        for kind, count in self._limiter.pending():
            _LOGGER.warning("%d more %s warning(s) suppressed", count, kind)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(reason)

    def _report(self, outcome: el.CloseOutcome) -> None:
        code = outcome.error_code or {
            el.CloseKind.REJECTED: "remote_rejected",
            el.CloseKind.SERVER_ERROR: "remote_error",
            el.CloseKind.CONNECTION_LOST: "remote_connection_lost",
        }.get(outcome.kind, "remote_error")
        if not outcome.reconnect:
            _LOGGER.error("remote agent: %s; the session ends", _log_text(outcome.message))
        fields: dict[str, Any] = {"code": code, "message": outcome.message, "stage": "remote"}
        if outcome.code is not None:
            fields["close_code"] = outcome.code
        self._events.emit("error", **fields)

    async def _url(self) -> str:
        if self._url_provider is not None:
            return await self._url_provider()
        return el.conversation_url(self._s.base_url, self._s.agent_id)

    async def _open(self) -> ClientConnection | el.CloseOutcome:
        lost = el.CloseKind.CONNECTION_LOST
        try:
            url = await self._url()
            if el.downgrades(self._s.base_url, url):
                return el.CloseOutcome(
                    el.CloseKind.REJECTED,
                    None,
                    False,
                    "remote_error",
                    "the signed URL is ws:// (unencrypted) but appliance.remote.base_url is wss://: refused",
                    "remote_insecure_url",
                )
            return await connect(
                url,
                max_size=MAX_FRAME_BYTES,
                open_timeout=self._s.open_timeout_s,
                ping_interval=10,
                ping_timeout=10,
                close_timeout=self._s.close_timeout_s,
                compression=None,
            )
        except AgentError as err:
            return _agent_error_outcome(err)
        except ssl.SSLError as err:  # before OSError (its base): not a network blip, never retried
            return el.CloseOutcome(
                lost,
                None,
                False,
                "network_error",
                f"the TLS handshake with the server failed ({el.tls_detail(err)}); check the system clock, "
                "the CA certificates and any proxy",
                "remote_tls_failed",
            )
        except InvalidStatus as err:
            status = err.response.status_code
            if status in (401, 403, 404):
                return el.CloseOutcome(
                    el.CloseKind.REJECTED,
                    None,
                    False,
                    "remote_rejected",
                    f"the server refused the connection (HTTP {status}); check agent_id and authentication",
                )
            return el.CloseOutcome(lost, None, True, "network_error", f"HTTP {status} on connect")
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            what = type(err).__name__ + (
                f": {err.strerror}" if isinstance(err, OSError) and err.strerror else ""
            )
            return el.CloseOutcome(lost, None, True, "network_error", f"cannot connect ({what})")

    async def _connect_and_serve(self) -> el.CloseOutcome | None:
        self._history += self._proto.transcript()
        self._proto = el.ElevenLabsProtocol()
        self._ready_at = None
        self._turn_heard = False
        self._failure = None
        self._connect_hold_until = self._stopwatch.now() + self._s.connect_hold_s
        opened = await self._unless_ended(self._open())
        if opened is None or isinstance(opened, el.CloseOutcome):
            return opened  # None: ended while connecting (the request or handshake is cancelled)
        ws = self._ws = opened
        self._last_frame_at = asyncio.get_running_loop().time()
        sender = asyncio.create_task(self._send_audio(ws), name="elevenlabs-send")
        ender = asyncio.create_task(self._end_when_quiet(ws), name="elevenlabs-end")
        watchdog = asyncio.create_task(self._watch_stall(ws), name="elevenlabs-stall")
        metadata = asyncio.create_task(self._watch_metadata(ws), name="elevenlabs-metadata")
        tasks = (sender, ender, watchdog, metadata)
        try:
            await ws.send(self._proto.initiation_message(self._initiation))
            return await self._receive(ws)
        except ConnectionClosed as err:
            return self._failure or self._closed_outcome(err)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._ws = None
            self._ready = False
            self._outbox.clear()
            if ws.state.name != "CLOSED":
                ws.transport.abort()

    async def _unless_ended(self, coro: Coroutine[Any, Any, _T]) -> _T | None:
        """`coro`'s result, or None once `end()` is called first (`coro` is then cancelled)."""
        task = asyncio.ensure_future(coro)
        ended = asyncio.ensure_future(self._end_requested.wait())
        try:
            await asyncio.wait((task, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, ended, return_exceptions=True)
        if task.cancelled():
            return None
        result = task.result()
        if self._end_requested.is_set():
            if isinstance(result, ClientConnection):
                result.transport.abort()  # connected just as the session ended
            return None
        return result

    def _drop_connection(self, ws: ClientConnection, outcome: el.CloseOutcome) -> None:
        """This side gives up the connection (stall, protocol error): `_receive` returns `outcome`."""
        if self._failure is None:
            self._failure = outcome
        ws.transport.abort()

    def _closed_outcome(self, err: ConnectionClosed) -> el.CloseOutcome | None:
        if self._failure is not None:
            return self._failure
        if self._closing_by_us:
            return None
        frame = err.rcvd
        return el.close_outcome(
            frame.code if frame else None, frame.reason if frame else "", self._proto.last_error
        )

    async def _receive(self, ws: ClientConnection) -> el.CloseOutcome | None:
        loop = asyncio.get_running_loop()
        audio_type = el.Audio
        while True:
            try:
                data = await ws.recv(decode=False)  # bytes: json.loads reads UTF-8 itself
            except ConnectionClosed as err:
                return self._closed_outcome(err)
            self._last_frame_at = loop.time()
            event = self._proto.receive(data)
            if type(event) is audio_type:
                self._on_audio(event)  # the hot path: no coroutine
            else:
                failure = await self._handle(event, ws)
                if failure is not None:
                    self._drop_connection(ws, failure)
                    return failure

    async def _watch_stall(self, ws: ClientConnection) -> None:
        """No frame at all for `stall_timeout_s`: the server is gone (one timer, not one per frame)."""
        loop = asyncio.get_running_loop()
        limit = self._s.stall_timeout_s
        while True:
            idle = loop.time() - self._last_frame_at
            if idle >= limit:
                if not self._closing_by_us:
                    self._drop_connection(
                        ws,
                        el.CloseOutcome(
                            el.CloseKind.CONNECTION_LOST,
                            None,
                            True,
                            "network_error",
                            f"no frame from the server for {limit:g} s (stalled)",
                        ),
                    )
                return
            await asyncio.sleep(limit - idle)

    async def _watch_metadata(self, ws: ClientConnection) -> None:
        """The handshake's deadline: no usable metadata in time is a protocol error, not a blip."""
        await asyncio.sleep(self._s.metadata_timeout_s)
        if not self._ready and not self._closing_by_us:
            self._drop_connection(
                ws,
                _protocol_error(
                    f"the server sent no conversation_initiation_metadata within "
                    f"{self._s.metadata_timeout_s:g} s"
                ),
            )

    async def _end_when_quiet(self, ws: ClientConnection) -> None:
        """On `end()` or `end_call`: let the agent finish speaking, then close normally."""
        await self._end_requested.wait()
        deadline = self._stopwatch.now() + self._s.end_timeout_s
        while (
            self._ready
            and self._stopwatch.now() < deadline
            and (self._speaking() or self._stopwatch.now() < self._hold_until)
        ):
            await asyncio.sleep(0.02)
        self._closing_by_us = True
        if not self._ready:  # still in the handshake: nothing to hear, nothing to close politely
            ws.transport.abort()
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._s.close_timeout_s + 0.5):
                await ws.close()
        ws.transport.abort()

    async def _drain(self, timeout_s: float) -> None:
        deadline = self._stopwatch.now() + timeout_s
        while self._speaking() and self._stopwatch.now() < deadline:
            await asyncio.sleep(0.02)

    async def _shutdown(self) -> None:
        self._finished = True
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._release is not None:
            self._release.cancel()
        if self._ws is not None:
            self._ws.transport.abort()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hold(self, seconds: float) -> None:
        self._hold_until = max(self._hold_until, self._stopwatch.now() + seconds)

    # ------------------------------------------------------------ server events
    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """A warning about the server, at most one line per kind per `warn_interval_s`."""
        suppressed = self._limiter.admit(kind, self._stopwatch.now())
        if suppressed is None:
            return
        if suppressed:
            message += f" ({suppressed} more like it suppressed)"
        _LOGGER.warning(message, *args)

    async def _handle(self, event: el.ServerEvent, ws: ClientConnection) -> el.CloseOutcome | None:
        """One server event; a CloseOutcome when the connection must be given up."""
        if self._audio_events:
            self._flush_audio_events()  # the events stream keeps the order frames arrived in
        emit = self._events.emit
        match event:
            case el.Audio():
                self._on_audio(event)
            case el.Ping(event_id=event_id, ping_ms=ping_ms):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._proto.pong_message(event_id))
                emit("ping", event_id=event_id, ping_ms=ping_ms)
            case el.ConversationInitiationMetadata():
                self._on_ready(event, ws)
            case el.RepeatedMetadata(conversation_id=cid):
                self._warn(
                    "repeated_metadata",
                    "the server sent conversation_initiation_metadata again on the same connection "
                    "(%s); ignored",
                    _log_text(cid),
                )
            case el.StaleAudio(event_id=event_id, n_bytes=n_bytes):
                self.stale_audio_chunks += 1
                duration = self._proto.output_format.duration_s(n_bytes)
                emit("audio", event_id=event_id, duration_s=round(duration, 3), dropped="interrupted")
            case el.Interruption(event_id=event_id, reason=reason):
                self._interrupt()
                emit("interruption", event_id=event_id, reason=reason)
            case el.UserTranscript(text=text, event_id=event_id):
                self._awaiting_reply = True
                self._turn_heard = True
                self._hold(self._s.reply_wait_s)
                emit("user_transcript", user_transcript=text, event_id=event_id)
            case el.TentativeUserTranscript(text=text, event_id=event_id):
                emit("tentative_user_transcript", user_transcript=text, event_id=event_id)
            case el.AgentResponse(text=text, event_id=event_id):
                self._answered()
                self._hold_until = max(self._hold_until, self._stopwatch.now() + self._s.audio_gap_s)
                emit("agent_response", agent_response=text, event_id=event_id)
            case el.AgentResponseCorrection(original=original, corrected=corrected, event_id=event_id):
                emit(
                    "agent_response_correction",
                    original_agent_response=original,
                    corrected_agent_response=corrected,
                    event_id=event_id,
                )
            case el.ClientToolCall():
                emit(
                    "client_tool_call",
                    tool_name=event.tool_name,
                    tool_call_id=event.tool_call_id,
                    parameters=dict(event.parameters),
                    expects_response=event.expects_response,
                )
                self._spawn(self._run_tool(event, ws), f"tool-{event.tool_name}")
            case el.InvalidToolCall():
                self._warn(
                    "invalid_tool_call",
                    "invalid client_tool_call %s from the server: %s",
                    _log_text(event.tool_call_id),
                    event.reason,
                )
                emit(
                    "client_tool_call",
                    tool_name=event.tool_name,
                    tool_call_id=event.tool_call_id,
                    parameters={},
                    expects_response=event.expects_response,
                    error=event.reason,
                )
                sent = False
                if event.expects_response:
                    result = f"error: invalid tool call: {event.reason}"
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(
                            self._proto.client_tool_result_message(event.tool_call_id, result, True)
                        )
                        sent = True
                emit(
                    "client_tool_result",
                    tool_name=event.tool_name,
                    tool_call_id=event.tool_call_id,
                    is_error=True,
                    sent=sent,
                    duration_s=0.0,
                )
            case el.AgentToolResponse():
                emit(
                    "agent_tool_response",
                    tool_name=event.tool_name,
                    tool_call_id=event.tool_call_id,
                    tool_type=event.tool_type,
                    is_error=event.is_error,
                )
                if event.tool_name == "end_call" and not event.is_error:
                    await self.end("end_call")
            case el.VadScore(score=score):
                emit("vad_score", vad_score=score)
            case el.InternalTentativeAgentResponse(text=text):
                emit("internal_tentative_agent_response", tentative_agent_response=text)
            case el.InternalTurnProbability(probability=p):
                emit("internal_turn_probability", turn_probability=p)
            case el.AgentChatResponsePart(text=text, part_type=part_type):
                emit("agent_chat_response_part", text=text, part_type=part_type)
            case el.AsrInitiationMetadata(fields=fields):
                emit("asr_initiation_metadata", **_plain(fields))
            case el.McpToolCall(fields=fields) | el.McpConnectionStatus(fields=fields):
                kind = "mcp_tool_call" if isinstance(event, el.McpToolCall) else "mcp_connection_status"
                _LOGGER.info("%s: %s", kind, _log_text(json.dumps(fields, default=str)))
                emit(kind, **_plain(fields))
            case el.ServerError():
                self._warn("server_error", "remote agent error %s: %s", event.code, _log_text(event.message))
                code = f"remote_{event.error_type or event.code or 'error'}"
                emit(
                    "error",
                    code=code,
                    message=event.message,
                    stage="remote",
                    close_code=event.code,
                    error_type=event.error_type,
                )
            case el.Ignored(type=kind):
                _LOGGER.debug("ignoring server message of unknown type %s", _log_text(kind[:80]))
            case el.MalformedFrame(reason=why, excerpt=excerpt, frame_type=frame_type):
                self._warn(
                    "malformed_frame",
                    "malformed frame from the server (%s): %s",
                    _log_text(why),
                    _log_text(excerpt),
                )
                emit("malformed_frame", reason=why)
                if frame_type == "conversation_initiation_metadata" and not self._ready:
                    return _protocol_error(f"unusable conversation_initiation_metadata: {why}")
        return None

    def _on_ready(self, meta: el.ConversationInitiationMetadata, ws: ClientConnection) -> None:
        fmt = self._proto.input_format
        self._ulaw = fmt.encoding == "ulaw"
        self._chunk_bytes = fmt.chunk_bytes(self._s.chunk_ms)
        self._pending = bytearray()
        self._resample = None
        if fmt.sample_rate_hz != MIC_RATE_HZ:
            factory = self._resampler_factory or (lambda a, b: _Linear(a, b))
            self._resample = factory(MIC_RATE_HZ, fmt.sample_rate_hz)
        reconnected = self._connections > 0
        self._connections += 1
        self._ready = True
        self._ready_at = self._stopwatch.now()
        self._hold(self._s.first_message_wait_s)
        self._events.emit(
            "conversation_initiation_metadata",
            conversation_id=meta.conversation_id,
            agent_output_audio_format=meta.agent_output_audio_format,
            user_input_audio_format=meta.user_input_audio_format,
            mode="remote",
        )
        if reconnected:
            self._events.emit("reconnected", conversation_id=meta.conversation_id)
            if self._history:
                said = " ".join(f"{e.role}: {e.text}" for e in self._history)
                self._pending_control.insert(
                    0,
                    self._proto.contextual_update_message(
                        f"The connection dropped and this is the same conversation, continued. So far: {said}"
                    ),
                )
        for message in self._pending_control:
            self._outbox.append(message)
        self._pending_control.clear()
        frames, self._prebuffer = list(self._prebuffer), deque()
        self._first_sample = self._samples_pushed - self._prebuffer_samples
        self._prebuffer_samples = 0
        last = self._last_utterance
        if reconnected and self._awaiting_reply and last is not None and last is not self._replayed:
            self._replay(last)  # the lost connection never answered it: ask again
        for frame in frames:
            self._encode(frame)
        self._outbox_ready.set()

    def _replay(self, utterance: UtteranceEnded) -> None:
        self._replayed = utterance
        self._events.emit("utterance_replayed", duration_s=round(utterance.duration_s, 3))
        self._encode(np.frombuffer(utterance.audio, dtype="<i2").astype(np.int16))
        self._encode(np.zeros(round(REPLAY_SILENCE_S * MIC_RATE_HZ), dtype=np.int16))
        self._hold(self._s.reply_wait_s)

    def _on_audio(self, event: el.Audio) -> None:
        """The hot path: decode, hand to the speaker, then the bookkeeping."""
        if self._muted:
            return
        if not self._ready:  # no metadata yet: the format is unknown, never guessed
            self.dropped_unformatted_chunks += 1
            self._warn("audio_before_metadata", "agent audio before conversation_initiation_metadata dropped")
            return
        fmt = self._proto.output_format
        data = event.audio if fmt.encoding == "pcm" else ulaw_to_pcm16(event.audio)
        # a read-only view, no copy (s16le is the native order of the Pi and x86)
        pcm: Pcm16 = np.frombuffer(data, dtype=_S16LE, count=len(data) >> 1)
        rate = fmt.sample_rate_hz
        now = self._stopwatch.now()
        jitter = self._jitter
        if jitter.flowing:
            self._hand(pcm, rate)
        else:
            for held, held_rate in jitter.push((pcm, rate), pcm.size / rate, now):
                self._hand(held, held_rate)
            self._arm_release()
        self._answered()
        self._hold_until = now + self._s.audio_gap_s  # the reply is here: no more waiting for it
        # written after the play task has handed the samples over (the events stream is not on
        # the hot path), and before any later server event (`_handle` flushes first)
        if not self._audio_events:
            asyncio.get_running_loop().call_soon(self._flush_audio_events)
        self._audio_events.append((event.event_id, round(pcm.size / rate, 3), rate))

    def _flush_audio_events(self) -> None:
        pending, self._audio_events = self._audio_events, []
        for event_id, duration_s, rate in pending:
            self._events.emit("audio", event_id=event_id, duration_s=duration_s, sample_rate_hz=rate)

    def _answered(self) -> None:
        """The agent speaks: a reply if this connection heard a user turn (a new connection's
        first message answers nothing, so a question lost with the old one is still pending)."""
        if self._turn_heard:
            self._awaiting_reply = False
            self._reply_sample = self._samples_pushed

    # ------------------------------------------------------------ playback
    def _speaking(self) -> bool:
        return self._outstanding > 0 or self._jitter.held > 0

    def _hand(self, pcm: Pcm16, rate: int) -> None:
        """Give the chunk to the speaker now: `play()` runs until it first waits (by then the
        samples are in the device's queue) within this step, not one loop iteration later (what
        asyncio's eager tasks do from Python 3.12); the rest of it runs as a task."""
        self._outstanding += 1
        coro = self._play(pcm, rate, self._generation)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return  # played (or queued) already: `_play` did its bookkeeping
        task = asyncio.get_running_loop().create_task(_continue(coro, waiting_on))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self, pcm: Pcm16, rate: int, generation: int) -> None:
        try:
            if generation == self._generation:
                await self._speaker.play(pcm, rate)
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("playing agent audio failed")
        finally:
            self._outstanding -= 1
            if self._outstanding == 0:
                self._jitter.underrun()

    def _arm_release(self) -> None:
        deadline = self._jitter.deadline
        if deadline is None or self._release is not None:
            return
        delay = max(0.0, deadline - self._stopwatch.now())
        self._release = asyncio.get_running_loop().call_later(delay, self._release_due)

    def _release_due(self) -> None:
        self._release = None
        for pcm, rate in self._jitter.due(self._stopwatch.now()):
            self._hand(pcm, rate)
        self._arm_release()

    def _interrupt(self) -> None:
        self._generation += 1
        dropped = self._jitter.clear()
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self._outstanding or dropped:
            self._speaker.stop()

    # ------------------------------------------------------------ microphone
    def _encode(self, frame: Pcm16) -> None:
        pcm = self._resample(frame) if self._resample is not None else frame
        data = np.asarray(pcm, dtype="<i2").tobytes()
        self._pending += pcm16_to_ulaw(data) if self._ulaw else data
        size = self._chunk_bytes
        limit = max(1, int(self._s.outbox_s * 1000 / self._s.chunk_ms))
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            if len(self._outbox) >= limit:
                self._outbox.popleft()
                self.dropped_audio_chunks += 1
            self._outbox.append(self._proto.user_audio_chunk(chunk))
        self._outbox_ready.set()

    async def _send_audio(self, ws: ClientConnection) -> None:
        while True:
            await self._outbox_ready.wait()
            while self._outbox and self._ready:
                await ws.send(self._outbox.popleft())
            self._outbox_ready.clear()

    # ------------------------------------------------------------ tools
    async def _run_tool(self, call: el.ClientToolCall, ws: ClientConnection) -> None:
        started = self._stopwatch.now()
        arguments = dict(call.parameters)
        request = ToolCall(call.tool_call_id, call.tool_name, arguments, json.dumps(arguments))
        if self._tools is None:
            result, is_error = f"error: no device tool '{call.tool_name}'", True
        else:
            try:
                result, is_error = await asyncio.wait_for(self._tools.run(request), self._s.tool_timeout_s)
            except TimeoutError:
                result, is_error = f"error: the tool '{call.tool_name}' did not answer in time", True
            except asyncio.CancelledError:
                raise
            except Exception as err:
                result, is_error = redact(f"error: {type(err).__name__}: {err}"), True
        sent = False
        if call.expects_response and self._ws is ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._proto.client_tool_result_message(call.tool_call_id, result, is_error))
                sent = True
        self._events.emit(
            "client_tool_result",
            tool_name=call.tool_name,
            tool_call_id=call.tool_call_id,
            is_error=is_error,
            sent=sent,
            duration_s=round(self._stopwatch.now() - started, 3),
        )


class _Started:
    """Awaitable that carries on a coroutine already started by hand (`yield from` semantics:
    what it waits on goes to the driving task, results and exceptions come back to it)."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        value = self._waiting_on
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation and close go to the coroutine
                try:
                    value = self._coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = self._coro.send(sent)
                except StopIteration:
                    return


async def _continue(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    await _Started(coro, waiting_on)


def _log_text(text: str) -> str:
    """Server text for a log line: secrets masked, control characters escaped, bounded."""
    return redact(el.printable(text))


def _protocol_error(message: str) -> el.CloseOutcome:
    return el.CloseOutcome(
        el.CloseKind.SERVER_ERROR, None, False, "remote_error", message, "remote_protocol_error"
    )


def _agent_error_outcome(err: AgentError) -> el.CloseOutcome:
    """A failure before the WebSocket (signed URL...) as the session sees it."""
    message = redact(str(err))
    if err.retryable:
        code = None if err.code == "remote_unreachable" else err.code
        return el.CloseOutcome(el.CloseKind.CONNECTION_LOST, None, True, "network_error", message, code)
    if err.code == "remote_auth_failed":
        return el.CloseOutcome(el.CloseKind.REJECTED, None, False, "remote_rejected", message)
    if err.code == "remote_tls_failed":
        return el.CloseOutcome(el.CloseKind.CONNECTION_LOST, None, False, "network_error", message, err.code)
    return el.CloseOutcome(el.CloseKind.REJECTED, None, False, "remote_error", message, err.code)


def _plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Server payload fields as event fields (never overriding `type` or `t`)."""
    out: dict[str, Any] = redact_value(dict(fields))
    for reserved in ("type", "t"):
        if reserved in out:
            out[f"{reserved}_"] = out.pop(reserved)
    return out
