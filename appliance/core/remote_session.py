"""The remote (ElevenLabs Agents) conversation as a pure machine: `handle(event, now) -> effects`.

Every decision of a remote session lives here; `adapters/elevenlabs/session.py` only moves bytes
(signed-URL request, WebSocket, microphone encoding, speaker) and runs the effects. Events are the
protocol's parsed server events (`elevenlabs_protocol.ServerEvent`) and the local facts below.

Lifecycle (`Phase`): IDLE → CONNECTING (signed URL, socket) → HANDSHAKE (initiation sent, waiting
for `conversation_initiation_metadata`) → READY → CLOSING → [BACKOFF → CONNECTING ...] →
DRAINING (playing what was received) → FINISHED.

Rules, each with its table of tests in `tests/core/test_remote_session.py`:
- **Deadlines**: the metadata is due `metadata_timeout_s` after the socket opens; no frame for
  `stall_timeout_s` means the server is gone; a graceful end waits at most `end_timeout_s` for
  the agent to finish speaking, and so does draining. No poll: every wait is a timer.
- **Reconnect budget**: a lost or stalled connection reconnects after `backoff.delay(attempt,
  rng)` (jitter injected), up to `reconnect_attempts`; a connection that stayed up for
  `healthy_after_s` resets the budget. The first retry plays the alert. Never retried: a
  rejection, a TLS failure, an insecure URL, a protocol error (no or unusable metadata).
- **Replay**: a new connection gets the transcript so far as a contextual update, and the user's
  last question again (its audio, then `REPLAY_SILENCE_S`) if the lost connection never answered.
- **Busy hold** (fast headless runs pause their input while busy): while the agent speaks (audio
  handed to the speaker or held by the jitter buffer), `first_message_wait_s` after connecting,
  `reply_wait_s` after the user's turn (until the reply's first audio), `audio_gap_s` after each
  chunk, and while connecting at most `connect_hold_s` per attempt.
- **Formats**: audio is played only in the format the metadata named; before it, it is dropped.
- **Ending**: `end()` lets the agent finish (speech and holds), then closes; `stop()` silences at
  once. While connecting or in the handshake, both cancel at once.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, assert_never

from appliance.core import elevenlabs_protocol as el
from appliance.core.common import ArmTimer, CancelTimer, Emit, Event, Timer, TimerFired
from appliance.core.conversation import ToolCall
from appliance.core.endpointing import SAMPLE_RATE_HZ, UtteranceEnded
from appliance.core.playout import Backoff, JitterBuffer

REPLAY_SILENCE_S = 0.8
"""Silence after a replayed question, so the server's turn detection closes the turn."""

STALL = Timer.STALL
METADATA = Timer.METADATA
BACKOFF = Timer.BACKOFF
END_HOLD = Timer.END_HOLD
END_DEADLINE = Timer.END_DEADLINE
DRAIN = Timer.DRAIN
JITTER = Timer.JITTER
TIMERS = (STALL, METADATA, BACKOFF, END_HOLD, END_DEADLINE, DRAIN, JITTER)


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
    """After the socket opens, `conversation_initiation_metadata` is due within this long."""
    connect_hold_s: float = 5.0
    """While connecting, `busy` holds at most this long per attempt (fast headless runs wait for
    the connection; the no-speech timer is never postponed by a connection stuck longer)."""
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
    mcp_approval: Literal["deny", "allow", "ask-never"] = "deny"
    """The answer to an MCP tool call `awaiting_approval` (ask-never: no answer)."""


class Phase(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    HANDSHAKE = "handshake"
    READY = "ready"
    CLOSING = "closing"
    BACKOFF = "backoff"
    DRAINING = "draining"
    FINISHED = "finished"


# ------------------------------------------------------------------ local events (facts)
@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class UrlObtained:
    connection: int
    url: str


@dataclass(frozen=True)
class Connected:
    connection: int


@dataclass(frozen=True)
class ConnectFailed:
    connection: int
    outcome: el.CloseOutcome


@dataclass(frozen=True)
class SocketClosed:
    """The socket of `connection` is gone (its last frame was handled before this)."""

    connection: int
    code: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class MicAudio:
    pcm: bytes = field(repr=False)
    """16 kHz mono s16le."""


@dataclass(frozen=True)
class UtteranceClosed:
    """The device's endpointer closed the user's turn."""

    utterance: UtteranceEnded


@dataclass(frozen=True)
class PlayDone:
    """One `Play` has finished (played, cut short or failed)."""


@dataclass(frozen=True)
class EndRequested:
    reason: str
    immediate: bool = False
    """True (`stop()`): silence now instead of letting the agent finish."""


@dataclass(frozen=True)
class ControlRequest:
    kind: Literal["contextual_update", "user_message", "user_activity", "feedback"]
    text: str = ""
    like: bool = False


@dataclass(frozen=True)
class ToolDone:
    connection: int
    call: ToolCall
    expects_response: bool
    result: str
    is_error: bool
    duration_s: float


LocalEvent = (
    Start
    | UrlObtained
    | Connected
    | ConnectFailed
    | SocketClosed
    | MicAudio
    | UtteranceClosed
    | PlayDone
    | EndRequested
    | ControlRequest
    | ToolDone
    | TimerFired
)
RemoteEvent = LocalEvent | el.ServerEvent


# ------------------------------------------------------------------ effects (requests)
@dataclass(frozen=True)
class FetchUrl:
    """Get the connection URL (a fresh signed URL, or the public one): `UrlObtained`/`ConnectFailed`."""

    connection: int


@dataclass(frozen=True)
class OpenSocket:
    """Open the WebSocket: `Connected` then server events and `SocketClosed`, or `ConnectFailed`."""

    connection: int
    url: str


@dataclass(frozen=True)
class CancelConnect:
    """Cancel the URL request or the socket opening in flight (nothing is reported)."""


@dataclass(frozen=True)
class Close:
    """Close the socket (graceful: close handshake, bounded; else abort): `SocketClosed` follows."""

    graceful: bool


@dataclass(frozen=True)
class Send:
    """A control frame, sent at once (never behind queued audio)."""

    text: str


@dataclass(frozen=True)
class Queued:
    """A control message kept until the conversation is ready (the caller's answer is True)."""


@dataclass(frozen=True)
class ConfigureInput:
    """A new connection's microphone encoding; pending encoded audio is dropped."""

    format: el.AudioFormat


@dataclass(frozen=True)
class SendAudio:
    """16 kHz s16le microphone audio to encode in the input format and queue as chunks."""

    pcm: bytes = field(repr=False)


@dataclass(frozen=True)
class Play:
    audio: bytes = field(repr=False)
    format: el.AudioFormat
    generation: int
    """Not played if an interruption came first (the machine's generation moved on)."""


@dataclass(frozen=True)
class StopPlayback:
    """Silence the speaker within one output block."""


@dataclass(frozen=True)
class RunTool:
    connection: int
    call: ToolCall
    expects_response: bool


@dataclass(frozen=True)
class Alert:
    """Play the error chime (the user hears that the connection is being retried)."""


@dataclass(frozen=True)
class Log:
    level: Literal["debug", "info", "warning", "error"]
    message: str
    """Server text in it is escaped already; secrets are masked by the runner."""


@dataclass(frozen=True)
class Finish:
    reason: str


Effect = (
    Emit
    | ArmTimer
    | CancelTimer
    | FetchUrl
    | OpenSocket
    | CancelConnect
    | Close
    | Send
    | Queued
    | ConfigureInput
    | SendAudio
    | Play
    | StopPlayback
    | RunTool
    | Alert
    | Log
    | Finish
)


# ------------------------------------------------------------------ outcomes of connection failures
def agent_error_outcome(code: str, retryable: bool, message: str) -> el.CloseOutcome:
    """A failure before the socket (the signed-URL request) as the session sees it."""
    if retryable:
        specific = None if code == "remote_unreachable" else code
        return el.CloseOutcome(el.CloseKind.CONNECTION_LOST, None, True, "network_error", message, specific)
    if code == "remote_auth_failed":
        return el.CloseOutcome(el.CloseKind.REJECTED, None, False, "remote_rejected", message)
    if code == "remote_tls_failed":
        return el.CloseOutcome(el.CloseKind.CONNECTION_LOST, None, False, "network_error", message, code)
    return el.CloseOutcome(el.CloseKind.REJECTED, None, False, "remote_error", message, code)


def tls_outcome(detail: str) -> el.CloseOutcome:
    """The TLS handshake failed: a certificate, the clock or a proxy, not a blip (never retried)."""
    return el.CloseOutcome(
        el.CloseKind.CONNECTION_LOST, None, False, "network_error",
        f"the TLS handshake with the server failed ({detail}); check the system clock, "
        "the CA certificates and any proxy",
        "remote_tls_failed",
    )  # fmt: skip


def http_status_outcome(status: int) -> el.CloseOutcome:
    """The WebSocket upgrade was answered with an HTTP status."""
    if status in (401, 403, 404):
        return el.CloseOutcome(
            el.CloseKind.REJECTED, None, False, "remote_rejected",
            f"the server refused the connection (HTTP {status}); check agent_id and authentication",
        )  # fmt: skip
    return el.CloseOutcome(
        el.CloseKind.CONNECTION_LOST, None, True, "network_error", f"HTTP {status} on connect"
    )


def network_outcome(what: str) -> el.CloseOutcome:
    return el.CloseOutcome(
        el.CloseKind.CONNECTION_LOST, None, True, "network_error", f"cannot connect ({what})"
    )


def internal_failure(message: str) -> el.CloseOutcome:
    """A bug (an unexpected exception while connecting): the session ends with `error`."""
    return el.CloseOutcome(el.CloseKind.SERVER_ERROR, None, False, "error", message, "agent_failed")


def protocol_error(message: str) -> el.CloseOutcome:
    return el.CloseOutcome(
        el.CloseKind.SERVER_ERROR, None, False, "remote_error", message, "remote_protocol_error"
    )


INSECURE = el.CloseOutcome(
    el.CloseKind.REJECTED, None, False, "remote_error",
    "the signed URL is ws:// (unencrypted) but appliance.remote.base_url is wss://: refused",
    "remote_insecure_url",
)  # fmt: skip

_ERROR_CODES = {
    el.CloseKind.REJECTED: "remote_rejected",
    el.CloseKind.SERVER_ERROR: "remote_error",
    el.CloseKind.CONNECTION_LOST: "remote_connection_lost",
}


def _plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Server payload fields as event fields (never overriding `type` or `t`)."""
    out = dict(fields)
    for reserved in ("type", "t"):
        if reserved in out:
            out[f"{reserved}_"] = out.pop(reserved)
    return out


# ------------------------------------------------------------------ the machine
class RemoteSessionMachine:
    def __init__(
        self,
        settings: RemoteSettings,
        initiation: el.InitiationData,
        rng: Callable[[], float],
    ) -> None:
        self.s = settings
        self._initiation = initiation
        self._rng = rng
        self.phase = Phase.IDLE
        self.proto = el.ElevenLabsProtocol()
        self._history: list[el.TranscriptEntry] = []
        self._limiter = el.WarningLimiter(settings.warn_interval_s)
        # connections
        self.connection = 0
        self._connections_ready = 0
        self._attempt = 0
        self._ready_at: float | None = None
        self._last_frame_at = 0.0
        self._failure: el.CloseOutcome | None = None
        self._closing_by_us = False
        self._ending: str | None = None
        self._final_reason = "error"
        self._connect_hold_until = float("inf")
        self._pending_control: list[str] = []
        # microphone
        self._prebuffer: deque[bytes] = deque()
        self._prebuffer_samples = 0
        self._samples_pushed = 0
        self._first_sample = 0
        """Index (in pushed samples) of the first sample the current connection received."""
        # conversation
        self.awaiting_reply = False
        self._turn_heard = False
        """This connection has heard a user turn (transcript or typed message)."""
        self._reply_sample = -1
        """`_samples_pushed` when the agent last answered (audio or agent_response)."""
        self._last_utterance: UtteranceEnded | None = None
        self._replayed: UtteranceEnded | None = None
        self._hold_until = 0.0
        # playback
        self._muted = False
        self.generation = 0
        self._outstanding = 0
        self._jitter: JitterBuffer[bytes] = JitterBuffer(settings.jitter_target_s, settings.jitter_target_s)
        self._jitter_armed = False
        self.stale_audio_chunks = 0
        self.dropped_unformatted_chunks = 0

    # ------------------------------------------------------------ queries
    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def speaking(self) -> bool:
        return self._outstanding > 0 or self._jitter.held > 0

    def busy(self, now: float) -> bool:
        if self.finished:
            return False
        connecting = not self.ready and now < self._connect_hold_until
        return connecting or self.speaking or now < self._hold_until

    def transcript(self) -> list[el.TranscriptEntry]:
        """Everything said so far, across reconnections."""
        return [*self._history, *self.proto.transcript()]

    # ------------------------------------------------------------ events
    def frame(self, data: str | bytes, now: float) -> list[Effect]:
        """One server frame, parsed by this connection's protocol state."""
        return self.handle(self.proto.receive(data), now)

    def handle(self, event: RemoteEvent, now: float) -> list[Effect]:
        match event:
            case Start():
                if self.phase is not Phase.IDLE:
                    return []
                return self._conclude(self._ending, now) if self._ending else self._connect(now)
            case UrlObtained(connection=n, url=url):
                if n != self.connection or self.phase is not Phase.CONNECTING:
                    return []
                if el.downgrades(self.s.base_url, url):
                    return self._after(INSECURE, now)
                return [OpenSocket(n, url)]
            case Connected(connection=n):
                if n != self.connection or self.phase is not Phase.CONNECTING:
                    return []
                self.phase = Phase.HANDSHAKE
                self._last_frame_at = now
                return [
                    Send(self.proto.initiation_message(self._initiation)),
                    ArmTimer(STALL, now + self.s.stall_timeout_s),
                    ArmTimer(METADATA, now + self.s.metadata_timeout_s),
                ]
            case ConnectFailed(connection=n, outcome=outcome):
                if n != self.connection or self.phase is not Phase.CONNECTING:
                    return []
                return self._after(outcome, now)
            case SocketClosed(connection=n, code=code, reason=reason):
                return self._on_closed(n, code, reason, now)
            case MicAudio(pcm=pcm):
                return self._on_mic(pcm)
            case UtteranceClosed(utterance=utterance):
                return self._on_utterance(utterance, now)
            case PlayDone():
                self._outstanding -= 1
                if self._outstanding == 0:
                    self._jitter.underrun()
                return self._progress(now)
            case EndRequested(reason=reason, immediate=immediate):
                return self._on_end(reason, immediate, now)
            case ControlRequest():
                return self._on_control(event, now)
            case ToolDone():
                return self._on_tool_done(event)
            case TimerFired(name=name):
                return self._on_timer(name, now)
            case _:
                return self._on_server(event, now)

    # ------------------------------------------------------------ connection lifecycle
    def _connect(self, now: float) -> list[Effect]:
        self._history += self.proto.transcript()
        self.proto = el.ElevenLabsProtocol()
        self._ready_at = None
        self._turn_heard = False
        self._failure = None
        self._closing_by_us = False
        self.connection += 1
        self._connect_hold_until = now + self.s.connect_hold_s
        self.phase = Phase.CONNECTING
        return [FetchUrl(self.connection)]

    def _fail(self, outcome: el.CloseOutcome) -> list[Effect]:
        """Give up the current socket ourselves (stall, protocol error): `SocketClosed` follows."""
        if self._failure is None:
            self._failure = outcome
        self.phase = Phase.CLOSING
        return [Close(graceful=False)]

    def _on_closed(self, n: int, code: int | None, reason: str, now: float) -> list[Effect]:
        if n != self.connection or self.phase not in (Phase.HANDSHAKE, Phase.READY, Phase.CLOSING):
            return []
        effects: list[Effect] = [CancelTimer(STALL), CancelTimer(METADATA), CancelTimer(END_HOLD)]
        effects.append(CancelTimer(END_DEADLINE))
        if self._failure is not None:
            outcome: el.CloseOutcome | None = self._failure
        elif self._closing_by_us:
            outcome = None
        else:
            outcome = el.close_outcome(code, reason, self.proto.last_error)
        self.phase = Phase.CLOSING  # not ready any more
        return effects + self._after(outcome, now)

    def _after(self, outcome: el.CloseOutcome | None, now: float) -> list[Effect]:
        """A connection (attempt) is over: end the session, or reconnect within the budget."""
        if outcome is None:
            return self._conclude(self._ending or "ended", now)
        if outcome.kind is el.CloseKind.ENDED:
            return self._conclude(self._ending or outcome.session_reason, now)
        effects = self._report(outcome)
        if not outcome.reconnect:
            return effects + self._conclude(outcome.session_reason, now)
        if self._ending is not None:
            return effects + self._conclude(self._ending, now)
        if self._ready_at is not None and now - self._ready_at >= self.s.healthy_after_s:
            self._attempt = 0  # that connection worked for a while: a new outage gets the whole budget
        self._attempt += 1
        budget = self.s.reconnect_attempts
        if self._attempt > budget:
            message = (
                f"the remote agent is unreachable after {budget} reconnect attempt(s): {outcome.message}"
            )
            effects += [
                Log("error", f"{el.printable(message)}; the session ends"),
                Emit(Event.ERROR, {"code": "network_error", "message": message, "stage": "remote"}),
            ]
            return effects + self._conclude("network_error", now)
        delay = self.s.backoff.delay(self._attempt, self._rng)
        self._connect_hold_until = now + delay + self.s.connect_hold_s
        self.phase = Phase.BACKOFF
        effects += [
            Emit("reconnecting", {"attempt": self._attempt, "attempts": budget, "delay_s": round(delay, 3)}),
            Log(
                "warning",
                f"remote agent: {el.printable(outcome.message)}; reconnecting in {delay:.2f} s "
                f"(attempt {self._attempt} of {budget})",
            ),
            ArmTimer(BACKOFF, now + delay),
        ]
        if self._attempt == 1:
            effects.append(Alert())
        return effects

    def _report(self, outcome: el.CloseOutcome) -> list[Effect]:
        fields: dict[str, Any] = {
            "code": outcome.error_code or _ERROR_CODES.get(outcome.kind, "remote_error"),
            "message": outcome.message,
            "stage": "remote",
        }
        if outcome.code is not None:
            fields["close_code"] = outcome.code
        effects: list[Effect] = [Emit(Event.ERROR, fields)]
        if not outcome.reconnect:
            effects.insert(
                0, Log("error", f"remote agent: {el.printable(outcome.message)}; the session ends")
            )
        return effects

    def _conclude(self, reason: str, now: float) -> list[Effect]:
        """No more connections: what was received is still heard (up to `end_timeout_s`), then finish."""
        self._final_reason = reason
        if self.speaking:
            self.phase = Phase.DRAINING
            return [ArmTimer(DRAIN, now + self.s.end_timeout_s)]
        return self._finish()

    def _finish(self) -> list[Effect]:
        self.phase = Phase.FINISHED
        self.awaiting_reply = False
        effects: list[Effect] = [CancelTimer(name) for name in TIMERS]
        for kind, count in self._limiter.pending():
            effects.append(Log("warning", f"{count} more {kind} warning(s) suppressed"))
        return [*effects, Finish(self._final_reason)]

    def _progress(self, now: float) -> list[Effect]:
        """Playback moved on: an ending or draining session may be done waiting."""
        if self.phase is Phase.DRAINING and not self.speaking:
            return self._finish()
        return self._maybe_close(now)

    # ------------------------------------------------------------ ending
    def _on_end(self, reason: str, immediate: bool, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if immediate:
            self._muted = True
            effects += self._interrupt()
            self._hold_until = 0.0
            self.awaiting_reply = False
        first = self._ending is None
        if first:
            self._ending = reason
        match self.phase:
            case Phase.IDLE | Phase.CLOSING | Phase.FINISHED:
                pass
            case Phase.DRAINING:
                effects += self._progress(now)
            case Phase.CONNECTING:
                effects += [CancelConnect(), *self._conclude(self._ending or reason, now)]
            case Phase.BACKOFF:
                effects += [CancelTimer(BACKOFF), *self._conclude(self._ending or reason, now)]
            case Phase.HANDSHAKE:  # nothing to hear yet, and the server may be hung: at once
                self._closing_by_us = True
                self.phase = Phase.CLOSING
                effects.append(Close(graceful=False))
            case Phase.READY:
                if first:
                    effects.append(ArmTimer(END_DEADLINE, now + self.s.end_timeout_s))
                effects += self._maybe_close(now)
            case _:
                assert_never(self.phase)
        return effects

    def _maybe_close(self, now: float, *, deadline: bool = False) -> list[Effect]:
        """Ending while ready: close once the agent has finished speaking and no hold is pending."""
        if self.phase is not Phase.READY or self._ending is None:
            return []
        if not deadline and (self.speaking or now < self._hold_until):
            return [] if self.speaking else [ArmTimer(END_HOLD, self._hold_until)]
        self._closing_by_us = True
        self.phase = Phase.CLOSING
        return [CancelTimer(END_HOLD), CancelTimer(END_DEADLINE), Close(graceful=True)]

    # ------------------------------------------------------------ timers
    def _on_timer(self, name: str, now: float) -> list[Effect]:
        if name == STALL and self.phase in (Phase.HANDSHAKE, Phase.READY):
            limit = self.s.stall_timeout_s
            if now - self._last_frame_at < limit:
                return [ArmTimer(STALL, self._last_frame_at + limit)]  # frames came: look again later
            return self._fail(
                el.CloseOutcome(
                    el.CloseKind.CONNECTION_LOST,
                    None,
                    True,
                    "network_error",
                    f"no frame from the server for {limit:g} s (stalled)",
                )
            )
        if name == METADATA and self.phase is Phase.HANDSHAKE:
            wait = self.s.metadata_timeout_s
            return self._fail(
                protocol_error(f"the server sent no conversation_initiation_metadata within {wait:g} s")
            )
        if name == BACKOFF and self.phase is Phase.BACKOFF:
            return self._connect(now)
        if name == END_HOLD:
            return self._maybe_close(now)
        if name == END_DEADLINE:
            return self._maybe_close(now, deadline=True)
        if name == DRAIN and self.phase is Phase.DRAINING:
            return self._finish()
        if name == JITTER:
            self._jitter_armed = False
            effects: list[Effect] = [self._play(audio) for audio in self._jitter.due(now)]
            return effects + self._arm_jitter()
        return []

    # ------------------------------------------------------------ microphone and turns
    def _on_mic(self, pcm: bytes) -> list[Effect]:
        if self.finished:
            return []
        samples = len(pcm) // 2
        self._samples_pushed += samples
        if self.ready:
            return [SendAudio(pcm)]
        self._prebuffer.append(pcm)
        self._prebuffer_samples += samples
        while self._prebuffer and self._prebuffer_samples > self.s.prebuffer_s * SAMPLE_RATE_HZ:
            self._prebuffer_samples -= len(self._prebuffer.popleft()) // 2
        return []

    def _on_utterance(self, utterance: UtteranceEnded, now: float) -> list[Effect]:
        self._last_utterance = utterance
        declared_t = utterance.declared_t if utterance.declared_t >= 0 else utterance.end_t
        ended_at = self._samples_pushed - round((declared_t - utterance.end_t) * SAMPLE_RATE_HZ)
        if self._reply_sample > ended_at:
            return []  # the server answered before the device's endpointer closed the turn
        self.awaiting_reply = True
        self._hold(self.s.reply_wait_s, now)
        if self.ready and self._connections_ready > 1 and self._replayed is not utterance:
            started_at = self._samples_pushed - round((declared_t - utterance.start_t) * SAMPLE_RATE_HZ)
            if started_at < self._first_sample:
                return self._replay(utterance, now)  # it began on the lost connection: ask the new one whole
        return []

    def _replay(self, utterance: UtteranceEnded, now: float) -> list[Effect]:
        self._replayed = utterance
        self._hold(self.s.reply_wait_s, now)
        silence = bytes(2 * round(REPLAY_SILENCE_S * SAMPLE_RATE_HZ))
        return [
            Emit("utterance_replayed", {"duration_s": round(utterance.duration_s, 3)}),
            SendAudio(utterance.audio),
            SendAudio(silence),
        ]

    def _hold(self, seconds: float, now: float) -> None:
        self._hold_until = max(self._hold_until, now + seconds)

    def _answered(self) -> None:
        """The agent speaks: a reply if this connection heard a user turn (a new connection's
        first message answers nothing, so a question lost with the old one is still pending)."""
        if self._turn_heard:
            self.awaiting_reply = False
            self._reply_sample = self._samples_pushed

    # ------------------------------------------------------------ client messages and tools
    def _on_control(self, request: ControlRequest, now: float) -> list[Effect]:
        if self.finished:
            return []
        effects: list[Effect] = []
        queue = True
        match request.kind:
            case "contextual_update":
                effects.append(Emit(Event.CONTEXTUAL_UPDATE, {"text": request.text}))
                message: str | None = self.proto.contextual_update_message(request.text)
            case "user_message":
                effects.append(Emit(Event.USER_MESSAGE, {"text": request.text}))
                self.awaiting_reply = True
                self._turn_heard = True
                self._hold(self.s.reply_wait_s, now)
                message = self.proto.user_message(request.text)
            case "user_activity":
                queue = False
                message = self.proto.user_activity_message()
            case "feedback":
                queue = False
                message = self.proto.feedback_message(request.like)
                if message is not None:
                    effects.append(Emit("feedback", {"score": "like" if request.like else "dislike"}))
            case _:
                assert_never(request.kind)
        if message is None:
            return effects
        if self.ready:
            return [*effects, Send(message)]
        if queue:
            self._pending_control.append(message)
            return [*effects, Queued()]
        return effects

    def _on_tool_done(self, done: ToolDone) -> list[Effect]:
        sent = done.expects_response and done.connection == self.connection and self.ready
        effects: list[Effect] = []
        if sent:
            effects.append(
                Send(self.proto.client_tool_result_message(done.call.id, done.result, done.is_error))
            )
        effects.append(
            Emit(
                "client_tool_result",
                {
                    "tool_name": done.call.name,
                    "tool_call_id": done.call.id,
                    "is_error": done.is_error,
                    "sent": sent,
                    "duration_s": round(done.duration_s, 3),
                },
            )
        )
        return effects

    # ------------------------------------------------------------ playback
    def _play(self, audio: bytes) -> Play:
        self._outstanding += 1
        return Play(audio, self.proto.output_format, self.generation)

    def _arm_jitter(self) -> list[Effect]:
        deadline = self._jitter.deadline
        if deadline is None or self._jitter_armed:
            return []
        self._jitter_armed = True
        return [ArmTimer(JITTER, deadline)]

    def _interrupt(self) -> list[Effect]:
        self.generation += 1
        dropped = self._jitter.clear()
        effects: list[Effect] = []
        if self._jitter_armed:
            self._jitter_armed = False
            effects.append(CancelTimer(JITTER))
        if self._outstanding or dropped:
            effects.append(StopPlayback())
        return effects

    def _on_audio(self, event: el.Audio, now: float) -> list[Effect]:
        """The hot path: the chunk goes to the speaker first, the bookkeeping after."""
        if self._muted:
            return []
        if self.proto.conversation_id is None:  # no metadata on this socket: the format is never guessed
            self.dropped_unformatted_chunks += 1
            return self._warn(
                "audio_before_metadata", "agent audio before conversation_initiation_metadata dropped", now
            )
        fmt = self.proto.output_format
        audio = event.audio
        duration = (len(audio) // fmt.bytes_per_sample) / fmt.sample_rate_hz
        jitter = self._jitter
        if jitter.flowing:
            effects: list[Effect] = [self._play(audio)]
        else:
            effects = [self._play(held) for held in jitter.push(audio, duration, now)]
            effects += self._arm_jitter()
        self._answered()
        self._hold_until = now + self.s.audio_gap_s  # the reply is here: no more waiting for it
        effects.append(
            Emit(
                "audio",
                {
                    "event_id": event.event_id,
                    "duration_s": round(duration, 3),
                    "sample_rate_hz": fmt.sample_rate_hz,
                },
            )
        )
        return effects

    # ------------------------------------------------------------ server events
    def _warn(self, kind: str, message: str, now: float) -> list[Effect]:
        """A warning about the server, at most one line per kind per `warn_interval_s`."""
        suppressed = self._limiter.admit(kind, now)
        if suppressed is None:
            return []
        return [Log("warning", message + (f" ({suppressed} more like it suppressed)" if suppressed else ""))]

    def _on_ready(self, meta: el.ConversationInitiationMetadata, now: float) -> list[Effect]:
        reconnected = self._connections_ready > 0
        self._connections_ready += 1
        self.phase = Phase.READY
        self._ready_at = now
        self._hold(self.s.first_message_wait_s, now)
        effects: list[Effect] = [
            CancelTimer(METADATA),
            ConfigureInput(self.proto.input_format),
            Emit(
                "conversation_initiation_metadata",
                {
                    "conversation_id": meta.conversation_id,
                    "agent_output_audio_format": meta.agent_output_audio_format,
                    "user_input_audio_format": meta.user_input_audio_format,
                    "mode": "remote",
                },
            ),
        ]
        if reconnected:
            effects.append(Emit("reconnected", {"conversation_id": meta.conversation_id}))
            if self._history:
                said = " ".join(f"{e.role}: {e.text}" for e in self._history)
                self._pending_control.insert(
                    0,
                    self.proto.contextual_update_message(
                        f"The connection dropped and this is the same conversation, continued. So far: {said}"
                    ),
                )
        effects += [Send(message) for message in self._pending_control]
        self._pending_control.clear()
        frames, self._prebuffer = list(self._prebuffer), deque()
        self._first_sample = self._samples_pushed - self._prebuffer_samples
        self._prebuffer_samples = 0
        last = self._last_utterance
        if reconnected and self.awaiting_reply and last is not None and last is not self._replayed:
            effects += self._replay(last, now)  # the lost connection never answered it: ask again
        effects += [SendAudio(frame) for frame in frames]
        if self._ending is not None:
            effects += self._maybe_close(now)
        return effects

    def _on_server(self, event: el.ServerEvent, now: float) -> list[Effect]:
        if self.phase not in (Phase.HANDSHAKE, Phase.READY, Phase.CLOSING):
            return []
        self._last_frame_at = now
        match event:
            case el.Audio():
                return self._on_audio(event, now)
            case el.Ping(event_id=event_id, ping_ms=ping_ms):
                return [
                    Send(self.proto.pong_message(event_id)),
                    Emit("ping", {"event_id": event_id, "ping_ms": ping_ms}),
                ]
            case el.ConversationInitiationMetadata():
                return self._on_ready(event, now) if self.phase is Phase.HANDSHAKE else []
            case el.RepeatedMetadata(conversation_id=cid):
                return self._warn(
                    "repeated_metadata",
                    "the server sent conversation_initiation_metadata again on the same connection "
                    f"({el.printable(cid, 80)}); ignored",
                    now,
                )
            case el.StaleAudio(event_id=event_id, n_bytes=n_bytes):
                self.stale_audio_chunks += 1
                duration = self.proto.output_format.duration_s(n_bytes)
                return [
                    Emit(
                        "audio",
                        {"event_id": event_id, "duration_s": round(duration, 3), "dropped": "interrupted"},
                    )
                ]
            case el.Interruption(event_id=event_id, reason=reason):
                return [
                    *self._interrupt(),
                    Emit(Event.INTERRUPTION, {"event_id": event_id, "reason": reason}),
                ]
            case el.UserTranscript(text=text, event_id=event_id):
                self.awaiting_reply = True
                self._turn_heard = True
                self._hold(self.s.reply_wait_s, now)
                return [Emit(Event.USER_TRANSCRIPT, {"user_transcript": text, "event_id": event_id})]
            case el.TentativeUserTranscript(text=text, event_id=event_id):
                return [Emit("tentative_user_transcript", {"user_transcript": text, "event_id": event_id})]
            case el.AgentResponse(text=text, event_id=event_id):
                self._answered()
                self._hold(self.s.audio_gap_s, now)
                return [Emit(Event.AGENT_RESPONSE, {"agent_response": text, "event_id": event_id})]
            case el.AgentResponseCorrection(original=original, corrected=corrected, event_id=event_id):
                fields: dict[str, Any] = {
                    "original_agent_response": original,
                    "corrected_agent_response": corrected,
                    "event_id": event_id,
                }
                return [Emit("agent_response_correction", fields)]
            case el.ClientToolCall():
                arguments = dict(event.parameters)
                call = ToolCall(event.tool_call_id, event.tool_name, arguments, json.dumps(arguments))
                fields = {
                    "tool_name": event.tool_name,
                    "tool_call_id": event.tool_call_id,
                    "parameters": arguments,
                    "expects_response": event.expects_response,
                }
                return [
                    Emit("client_tool_call", fields),
                    RunTool(self.connection, call, event.expects_response),
                ]
            case el.InvalidToolCall():
                effects = self._warn(
                    "invalid_tool_call",
                    f"invalid client_tool_call {el.printable(event.tool_call_id, 80)}: {event.reason}",
                    now,
                )
                fields = {
                    "tool_name": event.tool_name,
                    "tool_call_id": event.tool_call_id,
                    "parameters": {},
                    "expects_response": event.expects_response,
                    "error": event.reason,
                }
                effects.append(Emit("client_tool_call", fields))
                done = ToolDone(
                    self.connection,
                    ToolCall(event.tool_call_id, event.tool_name, {}),
                    event.expects_response,
                    f"error: invalid tool call: {event.reason}",
                    True,
                    0.0,
                )
                return effects + self._on_tool_done(done)
            case el.AgentToolResponse():
                fields = {
                    "tool_name": event.tool_name,
                    "tool_call_id": event.tool_call_id,
                    "tool_type": event.tool_type,
                    "is_error": event.is_error,
                }
                effects = [Emit(Event.AGENT_TOOL_RESPONSE, fields)]
                if event.tool_name == "end_call" and not event.is_error:
                    effects += self._on_end("end_call", False, now)
                return effects
            case el.VadScore(score=score):
                return [Emit("vad_score", {"vad_score": score})]
            case el.InternalTentativeAgentResponse(text=text):
                return [Emit("internal_tentative_agent_response", {"tentative_agent_response": text})]
            case el.InternalTurnProbability(probability=p):
                return [Emit("internal_turn_probability", {"turn_probability": p})]
            case el.AgentChatResponsePart(text=text, part_type=part_type):
                return [Emit("agent_chat_response_part", {"text": text, "part_type": part_type})]
            case el.AsrInitiationMetadata(fields=payload):
                return [Emit("asr_initiation_metadata", _plain(payload))]
            case el.McpToolCall(fields=payload) | el.McpConnectionStatus(fields=payload):
                kind = "mcp_tool_call" if isinstance(event, el.McpToolCall) else "mcp_connection_status"
                text = el.printable(json.dumps(payload, default=str))
                effects = [Log("info", f"{kind}: {text}"), Emit(kind, _plain(payload))]
                call_id = payload.get("tool_call_id")
                awaiting = kind == "mcp_tool_call" and payload.get("state") == "awaiting_approval"
                if awaiting and isinstance(call_id, str) and self.s.mcp_approval != "ask-never":
                    approved = self.s.mcp_approval == "allow"
                    effects += [
                        Send(self.proto.mcp_tool_approval_result_message(call_id, approved)),
                        Emit(
                            "mcp_tool_approval",
                            {
                                "tool_call_id": call_id,
                                "tool_name": payload.get("tool_name"),
                                "approved": approved,
                            },
                        ),
                    ]
                return effects
            case el.ServerError():
                effects = self._warn(
                    "server_error", f"remote agent error {event.code}: {el.printable(event.message)}", now
                )
                fields = {
                    "code": f"remote_{event.error_type or event.code or 'error'}",
                    "message": event.message,
                    "stage": "remote",
                    "close_code": event.code,
                    "error_type": event.error_type,
                }
                return [*effects, Emit(Event.ERROR, fields)]
            case el.Ignored(type=kind):
                return [Log("debug", f"ignoring server message of unknown type {el.printable(kind, 80)}")]
            case el.MalformedFrame(reason=why, excerpt=excerpt, frame_type=frame_type):
                effects = self._warn(
                    "malformed_frame",
                    f"malformed frame from the server ({el.printable(why)}): {el.printable(excerpt)}",
                    now,
                )
                effects.append(Emit("malformed_frame", {"reason": why}))
                if frame_type == "conversation_initiation_metadata" and self.phase is Phase.HANDSHAKE:
                    effects += self._fail(protocol_error(f"unusable conversation_initiation_metadata: {why}"))
                return effects
            case _:
                assert_never(event)
