"""`ElevenLabsAgentSession`: a remote ElevenLabs Agents conversation behind the AgentSession port.

A thin shell around `core.remote_session.RemoteSessionMachine`, which makes every decision
(connecting, the handshake's deadline, stalls, the reconnect budget, replay, the busy hold,
ending). This module feeds it events (server frames parsed by its protocol, the socket opening
and closing, microphone audio, timers, finished plays, tool results) and runs its effects with
`websockets` (a fresh URL from the injected provider for every connection), the speaker, the
tool runner and `audio` (microphone encoding, plays started within the step).
Events go through one queue: what an effect reports at once is handled after the effects
before it. A bug in the machine ends the session with an `error` (`agent_failed`), never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, assert_never

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from appliance.adapters.elevenlabs.audio import MicEncoder, start_now
from appliance.adapters.elevenlabs.audio import ResamplerFactory as ResamplerFactory
from appliance.core import elevenlabs_protocol as el
from appliance.core import remote_session as rs
from appliance.core.common import ArmTimer, CancelTimer, Emit, Timer, TimerFired
from appliance.core.conversation import ToolCall
from appliance.core.endpointing import UtteranceEnded
from appliance.core.remote_session import RemoteSettings as RemoteSettings
from appliance.core.ulaw import ulaw_to_pcm16
from appliance.errors import AgentError
from appliance.logs import redact, redact_value
from appliance.ports import Clock, EventSink, Pcm16, Speaker

_LOGGER = logging.getLogger(__name__)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

MAX_FRAME_BYTES = 16 * 1024 * 1024
_S16LE = np.dtype("<i2")
UrlProvider = Callable[[], Awaitable[str]]


class ClientToolRunner(Protocol):
    async def run(self, call: ToolCall) -> tuple[str, bool]:
        """Run a device tool: (result text, is_error)."""
        ...


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
        self._m = rs.RemoteSessionMachine(settings, initiation, rng)
        self._speaker = speaker
        self._events = events
        self._stopwatch = stopwatch
        self._url_provider = url_provider
        self._tools = tools
        self._alert = alert
        self._ws: ClientConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._closed: asyncio.Future[str] | None = None
        self._inbox: deque[rs.RemoteEvent] = deque()
        self._feeding = False
        self._broken = False
        self._mic = MicEncoder(settings.chunk_ms, settings.outbox_s, resampler)

    # ------------------------------------------------------------ AgentSession port
    @property
    def busy(self) -> bool:
        return not self._broken and self._m.busy(self._stopwatch.now())

    @property
    def conversation_id(self) -> str | None:
        return self._m.proto.conversation_id

    @property
    def awaiting_reply(self) -> bool:
        """The user's last turn has had no agent audio or response yet."""
        return self._m.awaiting_reply

    @property
    def stale_audio_chunks(self) -> int:
        return self._m.stale_audio_chunks

    @property
    def dropped_audio_chunks(self) -> int:
        return self._mic.dropped

    async def start(self) -> None:
        self._closed = asyncio.get_running_loop().create_future()
        self._feed(rs.Start())

    def push_audio(self, frame: Pcm16) -> None:
        if not self._m.finished:
            self._feed(rs.MicAudio(np.asarray(frame, dtype=_S16LE).tobytes()))

    async def speech_started(self, t: float) -> None:
        return None  # barge-in is the server's decision (it sends `interruption`)

    async def utterance(self, utterance: UtteranceEnded) -> None:
        self._feed(rs.UtteranceClosed(utterance))

    async def end(self, reason: str) -> None:
        self._feed(rs.EndRequested(reason))

    async def stop(self, reason: str) -> None:
        """End now: playback stops within one output block, later audio is dropped, then close."""
        self._feed(rs.EndRequested(reason, immediate=True))

    async def closed(self) -> str:
        if self._closed is None:
            raise RuntimeError("session not started")
        try:
            return await asyncio.shield(self._closed)
        finally:
            await self._shutdown()

    async def send_contextual_update(self, text: str) -> bool:
        return self._control(rs.ControlRequest("contextual_update", text))

    async def send_user_message(self, text: str) -> bool:
        return self._control(rs.ControlRequest("user_message", text))

    async def send_user_activity(self) -> bool:
        return self._control(rs.ControlRequest("user_activity"))

    async def send_feedback(self, like: bool) -> bool:
        return self._control(rs.ControlRequest("feedback", like=like))

    def transcript(self) -> list[el.TranscriptEntry]:
        """Everything said so far, across reconnections."""
        return self._m.transcript()

    def _control(self, request: rs.ControlRequest) -> bool:
        """True when the message was sent or is kept until the conversation is ready."""
        effects = self._m.handle(request, self._stopwatch.now())
        for effect in effects:
            self._run(effect)
        return any(isinstance(effect, rs.Send | rs.Queued) for effect in effects)

    # ------------------------------------------------------------ the machine
    def _feed(self, event: rs.RemoteEvent) -> None:
        self._inbox.append(event)
        if self._feeding:
            return  # reported by an effect of the event being handled: handled right after
        self._feeding = True
        try:
            while self._inbox:
                for effect in self._m.handle(self._inbox.popleft(), self._stopwatch.now()):
                    self._run(effect)
        except Exception as err:  # a bug must end the session, not hang it
            _LOGGER.exception("remote session failed")
            self._events.emit("error", code="agent_failed", message=redact(str(err)), stage="remote")
            self._inbox.clear()
            self._broken = True
            self._resolve("error")
        finally:
            self._feeding = False

    def _run(self, effect: rs.Effect) -> None:
        match effect:
            case rs.Play(audio=audio, format=fmt, generation=generation):
                data = audio if fmt.encoding == "pcm" else ulaw_to_pcm16(audio)
                # a read-only view, no copy (s16le is the native order of the Pi and x86)
                self._hand(
                    np.frombuffer(data, dtype=_S16LE, count=len(data) >> 1), fmt.sample_rate_hz, generation
                )
            case Emit(type=kind, fields=fields):
                self._events.emit(kind, **redact_value(fields))
            case rs.SendAudio(pcm=pcm):
                self._mic.encode(np.frombuffer(pcm, dtype=_S16LE))
            case rs.Send(text=text):
                if self._ws is not None:
                    self._spawn(self._send(self._ws, text), "elevenlabs-control")
            case rs.Queued():
                pass
            case ArmTimer(name=name, deadline=deadline):
                self._cancel(name)
                delay = max(0.0, deadline - self._stopwatch.now())
                self._timers[name] = asyncio.get_running_loop().call_later(delay, self._fire, name)
            case CancelTimer(name=name):
                self._cancel(name)
            case rs.FetchUrl(connection=n):
                self._connecting = self._spawn(self._fetch(n), "elevenlabs-url")
            case rs.OpenSocket(connection=n, url=url):
                self._connecting = self._spawn(self._serve(n, url), "elevenlabs-session")
            case rs.CancelConnect():
                if self._connecting is not None:
                    self._connecting.cancel()
            case rs.Close(graceful=graceful):
                if self._ws is not None:
                    if graceful:
                        self._spawn(self._close(self._ws), "elevenlabs-close")
                    else:
                        self._ws.transport.abort()
            case rs.ConfigureInput(format=fmt):
                self._mic.configure(fmt)
            case rs.StopPlayback():
                self._speaker.stop()
            case rs.RunTool(connection=n, call=call, expects_response=expects):
                self._spawn(self._run_tool(n, call, expects), f"tool-{call.name}")
            case rs.Alert():
                if self._alert is not None:
                    self._spawn(self._alert(), "alert")
            case rs.Log(level=level, message=message):
                _LOGGER.log(_LEVELS[level], "%s", redact(message))
            case rs.Finish(reason=reason):
                self._resolve(reason)
            case _:
                assert_never(effect)

    def _fire(self, name: Timer) -> None:
        self._timers.pop(name, None)
        self._feed(TimerFired(name))

    def _cancel(self, name: Timer) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _resolve(self, reason: str) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(reason)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutdown(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            self._ws.transport.abort()

    # ------------------------------------------------------------ connection
    async def _fetch(self, n: int) -> None:
        try:
            if self._url_provider is None:
                url = el.conversation_url(self._s.base_url, self._s.agent_id)
            else:
                url = await self._url_provider()
        except Exception as err:
            self._feed(rs.ConnectFailed(n, _failure(err)))
            return
        self._feed(rs.UrlObtained(n, url))

    async def _serve(self, n: int, url: str) -> None:
        try:
            ws = await connect(
                url,
                max_size=MAX_FRAME_BYTES,
                open_timeout=self._s.open_timeout_s,
                ping_interval=10,
                ping_timeout=10,
                close_timeout=self._s.close_timeout_s,
                compression=None,
            )
        except Exception as err:
            self._feed(rs.ConnectFailed(n, _failure(err)))
            return
        self._ws = ws
        sender = asyncio.create_task(self._mic.pump(ws.send), name="elevenlabs-send")
        code, reason = None, ""
        try:
            self._feed(rs.Connected(n))
            while True:
                data = await ws.recv(decode=False)  # bytes: json.loads reads UTF-8 itself
                self._feed(self._m.proto.receive(data))  # audio: handed to the speaker in this step
        except ConnectionClosed as err:
            code, reason = (err.rcvd.code, err.rcvd.reason) if err.rcvd else (None, "")
        except Exception:  # whatever the library raises, the machine must hear that the socket is gone
            _LOGGER.exception("receiving from the remote agent failed")
        finally:
            sender.cancel()
            self._ws = None
            self._mic.outbox.clear()
            ws.transport.abort()
        self._feed(rs.SocketClosed(n, code, reason))

    async def _send(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    async def _close(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._s.close_timeout_s + 0.5):
                await ws.close()
        ws.transport.abort()

    # ------------------------------------------------------------ playback
    def _hand(self, pcm: Pcm16, rate: int, generation: int) -> None:
        """Give the chunk to the speaker now: `play()` runs until it first waits (by then the
        samples are in the device's queue) within this step, not one loop iteration later (what
        asyncio's eager tasks do from Python 3.12); the rest of it runs as a task."""
        rest = start_now(self._play(pcm, rate, generation))
        if rest is not None:  # else played (or queued) already: `_play` reported it
            self._spawn(rest, "elevenlabs-play")

    async def _play(self, pcm: Pcm16, rate: int, generation: int) -> None:
        try:
            if generation == self._m.generation:  # not interrupted since
                await self._speaker.play(pcm, rate)
        except asyncio.CancelledError:
            raise
        except Exception:
            _LOGGER.exception("playing agent audio failed")
        finally:
            self._feed(rs.PlayDone())

    # ------------------------------------------------------------ tools
    async def _run_tool(self, n: int, call: ToolCall, expects_response: bool) -> None:
        started = self._stopwatch.now()
        if self._tools is None:
            result, is_error = f"error: no device tool '{call.name}'", True
        else:
            try:
                result, is_error = await asyncio.wait_for(self._tools.run(call), self._s.tool_timeout_s)
            except TimeoutError:
                result, is_error = f"error: the tool '{call.name}' did not answer in time", True
            except asyncio.CancelledError:
                raise
            except Exception as err:
                result, is_error = redact(f"error: {type(err).__name__}: {err}"), True
        self._feed(rs.ToolDone(n, call, expects_response, result, is_error, self._stopwatch.now() - started))


def _failure(err: Exception) -> el.CloseOutcome:
    """Why a connection could not be made, as the machine sees it."""
    match err:
        case AgentError():  # from the URL provider (signed URLs), classified already
            return rs.agent_error_outcome(err.code, err.retryable, redact(str(err)))
        case ssl.SSLError():  # before OSError (its base): not a network blip
            return rs.tls_outcome(el.tls_detail(err))
        case InvalidStatus():
            return rs.http_status_outcome(err.response.status_code)
        case OSError() | TimeoutError() | InvalidHandshake() | InvalidURI():
            strerror = err.strerror if isinstance(err, OSError) else None
            return rs.network_outcome(type(err).__name__ + (f": {strerror}" if strerror else ""))
    _LOGGER.error("connecting to the remote agent failed", exc_info=err)  # a bug: never a hang
    return rs.internal_failure(redact(f"{type(err).__name__}: {err}"))
