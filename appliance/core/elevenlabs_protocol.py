"""The ElevenLabs Agents WebSocket protocol as a sans-I/O object (seed digest §1).

No sockets, no clock: `ElevenLabsProtocol.receive_text(text)` turns one server frame into typed
events, and the `*_message` methods build the client frames as JSON text. The adapter
(`appliance.adapters.elevenlabs.session`) moves the bytes.

Decisions where the seeds disagree (digest §1.7):
- `interruption_event` is `{event_id}` in the SDKs and `{reason}` in the seeds' TypeScript: both
  are accepted. With an `event_id`, later `audio` whose `event_id` is not above it is stale
  (`StaleAudio`); with only a reason, the newest audio id seen so far is the cut-off.
- The signed URL is opaque and used verbatim (`conversation_signature=` vs `token=`).
- `pong` answers at once with the ping's `event_id` (never delayed by `ping_ms`).
- Unknown `type`s become `Ignored`; a frame that is not JSON, has no `type`, or lacks a field
  its type requires becomes `MalformedFrame` (with the frame's `type` when it had one).
  `receive_text` never raises.
- A second `conversation_initiation_metadata` on one connection is `RepeatedMetadata`: the
  first one's formats hold (a server cannot switch formats mid-stream).
- A `client_tool_call` that names its id but cannot be run (`parameters` not an object, no
  tool name) is `InvalidToolCall`, so the client can still answer it with an error.
- An audio format outside `AUDIO_FORMATS` (`mp3_44100`, `pcm_99999`) makes the metadata a
  `MalformedFrame` naming it and the supported ones: audio is never played in a guessed format.

Also here, because server text is untrusted: `printable` (one log line, control characters
escaped) and `WarningLimiter` (one warning line per kind per interval, with a count).
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

CONVERSATION_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"
AGENTS_PATH = "/v1/convai/agents"
AUDIO_FORMATS = ("pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000", "ulaw_8000")
DEFAULT_AUDIO_FORMAT = "pcm_16000"


# ---------------------------------------------------------------------- audio formats
@dataclass(frozen=True)
class AudioFormat:
    name: str
    encoding: Literal["pcm", "ulaw"]
    sample_rate_hz: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm" else 1

    def duration_s(self, n_bytes: int) -> float:
        return n_bytes / (self.bytes_per_sample * self.sample_rate_hz)

    def chunk_bytes(self, chunk_ms: int) -> int:
        return max(1, self.sample_rate_hz * chunk_ms // 1000) * self.bytes_per_sample


def parse_audio_format(name: str) -> AudioFormat:
    """`pcm_16000` → AudioFormat("pcm_16000", "pcm", 16000); ValueError for anything else."""
    if name not in AUDIO_FORMATS:
        raise ValueError(f"unknown audio format {name!r} (known: {', '.join(AUDIO_FORMATS)})")
    encoding, _, rate = name.partition("_")
    return AudioFormat(name, "ulaw" if encoding == "ulaw" else "pcm", int(rate))


# ---------------------------------------------------------------------- URLs
def conversation_url(base_url: str, agent_id: str) -> str:
    """The public agent's WebSocket URL: `{base}/v1/convai/conversation?agent_id=…`."""
    return f"{base_url.rstrip('/')}{CONVERSATION_PATH}?{urlencode({'agent_id': agent_id})}"


def http_base_url(base_url: str) -> str:
    """The REST base for a WebSocket base URL (`wss` → `https`, `ws` → `http`), its path kept."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def signed_url_endpoint(base_url: str, agent_id: str) -> str:
    """The HTTP(S) endpoint that hands out signed URLs."""
    return f"{http_base_url(base_url)}{SIGNED_URL_PATH}?{urlencode({'agent_id': agent_id})}"


def agent_endpoint(base_url: str, agent_id: str) -> str:
    """The REST resource of an agent (`GET` it to check the id and the key)."""
    return f"{http_base_url(base_url)}{AGENTS_PATH}/{quote(agent_id, safe='')}"


class SignedUrlAnswerError(ValueError):
    """A get-signed-url answer that cannot be used; `cause` is `not_json` or `no_signed_url`."""

    def __init__(self, message: str, cause: Literal["not_json", "no_signed_url"]) -> None:
        super().__init__(message)
        self.cause = cause


def parse_signed_url_response(body: str | bytes) -> str:
    """The `signed_url` of a get-signed-url answer; `SignedUrlAnswerError` if there is none."""
    try:
        data = json.loads(body)
    except ValueError as err:
        raise SignedUrlAnswerError("the signed URL answer is not JSON", "not_json") from err
    return signed_url_of(data)


def signed_url_of(data: object) -> str:
    """The `signed_url` of a parsed get-signed-url answer; `SignedUrlAnswerError` if there is none."""
    url = data.get("signed_url") if isinstance(data, dict) else None
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("ws", "wss"):
        raise SignedUrlAnswerError("the signed URL answer has no ws:// or wss:// signed_url", "no_signed_url")
    return url


def downgrades(base_url: str, url: str) -> bool:
    """True when `base_url` is `wss://` and `url` is not: the conversation would run unencrypted."""
    return urlsplit(base_url).scheme.lower() == "wss" and urlsplit(url).scheme.lower() != "wss"


def url_secrets(url: str) -> list[str]:
    """Query values of a signed URL that work as credentials (never to be logged)."""
    out: list[str] = []
    for pair in urlsplit(url).query.split("&"):
        key, _, value = pair.partition("=")
        if value and key not in ("agent_id", "source", "version"):
            out.append(value)
    return out


# ---------------------------------------------------------------------- initiation
@dataclass(frozen=True)
class InitiationData:
    """What `conversation_initiation_client_data` carries (digest §1.4)."""

    conversation_config_override: Mapping[str, Any] = field(default_factory=dict)
    custom_llm_extra_body: Mapping[str, Any] = field(default_factory=dict)
    dynamic_variables: Mapping[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    source: str = "unknown"
    version: str | None = None


def permitted_overrides(
    candidate: Mapping[str, Any], permissions: Mapping[str, Any], path: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """The parts of `candidate` whose permission flag is true, and the dotted paths dropped.

    The platform rejects a session (close 1008) when an override is sent for a field without
    permission, and asks to omit fields rather than send empty values: None and "" are left
    out silently.
    """
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in candidate.items():
        where = f"{path}.{key}" if path else key
        allowed = permissions.get(key)
        if value is None or value == "" or value == {}:
            continue
        if isinstance(value, Mapping):
            sub, more = permitted_overrides(value, allowed if isinstance(allowed, Mapping) else {}, where)
            dropped += more
            if sub:
                kept[key] = sub
        elif allowed is True:
            kept[key] = value
        else:
            dropped.append(where)
    return kept, dropped


# ---------------------------------------------------------------------- server events
@dataclass(frozen=True)
class ConversationInitiationMetadata:
    conversation_id: str
    agent_output_audio_format: str
    user_input_audio_format: str


@dataclass(frozen=True)
class RepeatedMetadata:
    """`conversation_initiation_metadata` again on the same connection: ignored (not a reconnect)."""

    conversation_id: str


@dataclass(frozen=True)
class Ping:
    event_id: int
    ping_ms: int | None = None


@dataclass(frozen=True)
class Audio:
    event_id: int
    audio: bytes = field(repr=False)
    """Decoded from base64, in `agent_output_audio_format`."""
    alignment: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StaleAudio:
    """Audio of an interrupted response that arrived after the interruption: not to be played."""

    event_id: int
    n_bytes: int


@dataclass(frozen=True)
class UserTranscript:
    text: str
    event_id: int | None = None


@dataclass(frozen=True)
class TentativeUserTranscript:
    text: str
    event_id: int | None = None


@dataclass(frozen=True)
class AgentResponse:
    text: str
    event_id: int | None = None


@dataclass(frozen=True)
class AgentResponseCorrection:
    original: str
    corrected: str
    event_id: int | None = None


@dataclass(frozen=True)
class Interruption:
    event_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ClientToolCall:
    tool_name: str
    tool_call_id: str
    parameters: Mapping[str, Any]
    expects_response: bool = True
    event_id: int | None = None


@dataclass(frozen=True)
class InvalidToolCall:
    """A `client_tool_call` with an id that cannot be run: it gets an `is_error` result."""

    tool_name: str
    tool_call_id: str
    reason: str
    expects_response: bool = True


@dataclass(frozen=True)
class AgentToolResponse:
    tool_name: str
    tool_call_id: str
    tool_type: str
    is_error: bool
    event_id: int | None = None


@dataclass(frozen=True)
class VadScore:
    score: float


@dataclass(frozen=True)
class InternalTentativeAgentResponse:
    text: str


@dataclass(frozen=True)
class InternalTurnProbability:
    probability: float


@dataclass(frozen=True)
class AgentChatResponsePart:
    text: str
    part_type: str


@dataclass(frozen=True)
class AsrInitiationMetadata:
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class McpToolCall:
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class McpConnectionStatus:
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class ServerError:
    """`error` event: the server is about to close (digest §1.6)."""

    code: int | None
    message: str
    error_type: str | None = None
    reason: str | None = None
    debug_message: str | None = None


@dataclass(frozen=True)
class Ignored:
    """A message type this client does not know (ignored, as the official SDK does)."""

    type: str


@dataclass(frozen=True)
class MalformedFrame:
    reason: str
    excerpt: str
    frame_type: str | None = None
    """The frame's `type` when it had a known one (e.g. a malformed metadata frame)."""


ServerEvent = (
    ConversationInitiationMetadata
    | RepeatedMetadata
    | Ping
    | Audio
    | StaleAudio
    | UserTranscript
    | TentativeUserTranscript
    | AgentResponse
    | AgentResponseCorrection
    | Interruption
    | ClientToolCall
    | InvalidToolCall
    | AgentToolResponse
    | VadScore
    | InternalTentativeAgentResponse
    | InternalTurnProbability
    | AgentChatResponsePart
    | AsrInitiationMetadata
    | McpToolCall
    | McpConnectionStatus
    | ServerError
    | Ignored
    | MalformedFrame
)


class _Missing(Exception):
    """A required field is absent or has the wrong type (becomes a MalformedFrame)."""


def _str(payload: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise _Missing(f"'{key}' must be a string")
    return value


def _int(payload: Mapping[str, Any], key: str, *, required: bool = True) -> int | None:
    value = payload.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Missing(f"'{key}' must be an integer")
    try:
        return int(value)
    except ValueError as err:
        raise _Missing(f"'{key}' must be an integer") from err


def _num(payload: Mapping[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Missing(f"'{key}' must be a number")
    return float(value)


def _metadata(p: Mapping[str, Any]) -> ConversationInitiationMetadata:
    out_fmt = _str(p, "agent_output_audio_format", DEFAULT_AUDIO_FORMAT)
    in_fmt = _str(p, "user_input_audio_format", DEFAULT_AUDIO_FORMAT)
    for key, name in (("agent_output_audio_format", out_fmt), ("user_input_audio_format", in_fmt)):
        if name not in AUDIO_FORMATS:
            raise _Missing(
                f"{key}: unknown audio format {name[:40]!r} (supported: {', '.join(AUDIO_FORMATS)})"
            )
    return ConversationInitiationMetadata(_str(p, "conversation_id"), out_fmt, in_fmt)


def _audio(p: Mapping[str, Any]) -> Audio:
    try:  # strict: no stray characters, correct padding (validated in C, on the hot path)
        data = binascii.a2b_base64(_str(p, "audio_base_64"), strict_mode=True)
    except (binascii.Error, ValueError) as err:
        raise _Missing("'audio_base_64' is not valid base64") from err
    alignment = p.get("alignment")
    event_id = _int(p, "event_id")
    assert event_id is not None
    return Audio(event_id, data, alignment if isinstance(alignment, Mapping) else None)


def _tool_call(p: Mapping[str, Any]) -> ClientToolCall | InvalidToolCall:
    call_id = _str(p, "tool_call_id")  # without an id there is nothing to answer: malformed
    name = p.get("tool_name")
    params = p.get("parameters", {})
    expects = p.get("expects_response", True) is not False
    if not isinstance(name, str) or not name:
        return InvalidToolCall("", call_id, "'tool_name' must be a non-empty string", expects)
    if not isinstance(params, Mapping):
        return InvalidToolCall(name, call_id, "'parameters' must be an object", expects)
    return ClientToolCall(name, call_id, dict(params), expects, _int(p, "event_id", required=False))


def _tool_response(p: Mapping[str, Any]) -> AgentToolResponse:
    return AgentToolResponse(
        _str(p, "tool_name"),
        _str(p, "tool_call_id", ""),
        _str(p, "tool_type", "system"),
        p.get("is_error") is True,
        _int(p, "event_id", required=False),
    )


def _interruption(p: Mapping[str, Any]) -> Interruption:
    reason = p.get("reason")
    return Interruption(_int(p, "event_id", required=False), reason if isinstance(reason, str) else None)


def _error(p: Mapping[str, Any]) -> ServerError:
    def opt(key: str) -> str | None:
        value = p.get(key)
        return value if isinstance(value, str) else None

    message = opt("message") or opt("reason") or opt("error_type") or "server error"
    return ServerError(_int(p, "code", required=False), message, opt("error_type"), opt("reason"),
                       opt("debug_message"))  # fmt: skip


_PARSERS: dict[str, tuple[str, Callable[[Mapping[str, Any]], ServerEvent]]] = {
    "conversation_initiation_metadata": ("conversation_initiation_metadata_event", _metadata),
    "ping": ("ping_event", lambda p: Ping(_int(p, "event_id") or 0, _int(p, "ping_ms", required=False))),
    "audio": ("audio_event", _audio),
    "user_transcript": (
        "user_transcription_event",
        lambda p: UserTranscript(_str(p, "user_transcript"), _int(p, "event_id", required=False)),
    ),
    "tentative_user_transcript": (
        "tentative_user_transcription_event",
        lambda p: TentativeUserTranscript(_str(p, "user_transcript"), _int(p, "event_id", required=False)),
    ),
    "agent_response": (
        "agent_response_event",
        lambda p: AgentResponse(_str(p, "agent_response"), _int(p, "event_id", required=False)),
    ),
    "agent_response_correction": (
        "agent_response_correction_event",
        lambda p: AgentResponseCorrection(
            _str(p, "original_agent_response"),
            _str(p, "corrected_agent_response"),
            _int(p, "event_id", required=False),
        ),
    ),
    "interruption": ("interruption_event", _interruption),
    "client_tool_call": ("client_tool_call", _tool_call),
    "agent_tool_response": ("agent_tool_response", _tool_response),
    "vad_score": ("vad_score_event", lambda p: VadScore(_num(p, "vad_score"))),
    "internal_tentative_agent_response": (
        "tentative_agent_response_internal_event",
        lambda p: InternalTentativeAgentResponse(_str(p, "tentative_agent_response")),
    ),
    "internal_turn_probability": (
        "turn_probability_internal_event",
        lambda p: InternalTurnProbability(_num(p, "turn_probability")),
    ),
    "agent_chat_response_part": (
        "text_response_part",
        lambda p: AgentChatResponsePart(_str(p, "text", ""), _str(p, "type", "delta")),
    ),
    "asr_initiation_metadata": ("asr_initiation_metadata_event", lambda p: AsrInitiationMetadata(dict(p))),
    "mcp_tool_call": ("mcp_tool_call", lambda p: McpToolCall(dict(p))),
    "mcp_connection_status": ("mcp_connection_status", lambda p: McpConnectionStatus(dict(p))),
    "error": ("error_event", _error),
}
_OPTIONAL_PAYLOAD = frozenset({"interruption", "error", "asr_initiation_metadata"})


def _excerpt(frame: str | bytes) -> str:
    text = frame if isinstance(frame, str) else frame[:480].decode("utf-8", "replace")
    return text[:120]


# ---------------------------------------------------------------------- close codes
class CloseKind(StrEnum):
    ENDED = "ended"
    """1000: the agent ended the conversation (end_call, max duration...)."""
    REJECTED = "rejected"
    """1008: invalid message, auth, override or missing dynamic variable: retrying cannot help."""
    SERVER_ERROR = "server_error"
    """1002 and unknown codes: an operational failure the server decided (LLM timeout, policy)."""
    CONNECTION_LOST = "connection_lost"
    """1011, 1006 (no close frame), going away/restart/try later: reconnecting may help."""


@dataclass(frozen=True)
class CloseOutcome:
    kind: CloseKind
    code: int | None
    reconnect: bool
    session_reason: str
    message: str
    error_code: str | None = None
    """The `error` event's code when the kind's own (`remote_rejected`...) is too vague."""


_RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


def close_outcome(code: int | None, reason: str = "", error: ServerError | None = None) -> CloseOutcome:
    """What a WebSocket close means for the session (digest §1.6); `code` None = no close frame."""
    detail = (error.message if error is not None else "") or reason
    error_type = (error.error_type if error is not None else None) or ""
    if code == 1000:
        why = "max_duration" if "max_duration" in (error_type or reason) else "agent_ended"
        return CloseOutcome(CloseKind.ENDED, code, False, why, detail or "the agent ended the conversation")
    if code == 1008:
        return CloseOutcome(
            CloseKind.REJECTED, code, False, "remote_rejected",
            f"the agent rejected the session: {detail or 'invalid request (1008)'}",
        )  # fmt: skip
    if code is None or code in _RETRY_CODES:
        what = "connection lost" if code in (None, 1006) else f"server closed with {code}"
        return CloseOutcome(
            CloseKind.CONNECTION_LOST, code, True, "network_error", f"{what}{': ' + detail if detail else ''}"
        )
    return CloseOutcome(
        CloseKind.SERVER_ERROR, code, False, "remote_error",
        f"the agent failed{f' ({error_type})' if error_type else ''}: {detail or f'close code {code}'}",
    )  # fmt: skip


def tls_failure(err: BaseException) -> ssl.SSLError | None:
    """The `ssl.SSLError` behind `err` (httpx wraps it in a ConnectError), if any: a TLS failure
    (certificate, clock, intercepting proxy) is not a network blip and is never retried."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def tls_detail(err: ssl.SSLError) -> str:
    """What went wrong in a TLS handshake, in a few words (`certificate has expired`...)."""
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return str(err.verify_message)
    return str(err.reason or type(err).__name__)


# ---------------------------------------------------------------------- the protocol object
@dataclass(frozen=True)
class TranscriptEntry:
    role: Literal["user", "agent"]
    text: str


class ElevenLabsProtocol:
    """One conversation's protocol state: formats, interruption cut-off, transcript, feedback."""

    def __init__(self) -> None:
        self.conversation_id: str | None = None
        self.output_format = parse_audio_format(DEFAULT_AUDIO_FORMAT)
        self.input_format = parse_audio_format(DEFAULT_AUDIO_FORMAT)
        self.last_interrupt_id = 0
        self.last_audio_id = 0
        self.last_error: ServerError | None = None
        self._response_event_id: int | None = None
        self._feedback_sent: set[int] = set()
        self._transcript: list[TranscriptEntry] = []

    # ------------------------------------------------------------ server → client
    def receive_text(self, text: str) -> list[ServerEvent]:
        """One server frame → its events (always one today; a list so frames may carry more)."""
        return [self.receive(text)]

    def receive(self, frame: str | bytes) -> ServerEvent:
        """One server frame (JSON text, as str or UTF-8 bytes) → its event. Never raises."""
        try:
            message = json.loads(frame)
        except ValueError:
            return MalformedFrame("not JSON", _excerpt(frame))
        if type(message) is dict and message.get("type") == "audio":
            fast = self._audio_fast(message.get("audio_event"))
            if fast is not None:  # the hot path: most frames are audio
                return fast
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return MalformedFrame("no 'type'", _excerpt(frame))
        kind = message["type"]
        spec = _PARSERS.get(kind)
        if spec is None:
            return Ignored(kind)
        key, parse = spec
        payload = message.get(key)
        if payload is None and kind in _OPTIONAL_PAYLOAD:
            payload = {}
        if not isinstance(payload, dict):
            return MalformedFrame(f"{kind}: no '{key}' object", _excerpt(frame), kind)
        try:
            event = parse(payload)
        except _Missing as err:
            return MalformedFrame(f"{kind}: {err}", _excerpt(frame), kind)
        return self._track(event)

    def _audio_fast(self, payload: object) -> Audio | StaleAudio | None:
        """A well-formed audio event, parsed and tracked with the least work; None: anything odd
        (the general path then says what is wrong)."""
        if type(payload) is not dict:
            return None
        b64 = payload.get("audio_base_64")
        event_id = payload.get("event_id")
        if type(b64) is not str or type(event_id) is not int:
            return None
        try:
            audio = binascii.a2b_base64(b64, strict_mode=True)
        except (binascii.Error, ValueError):
            return None
        if event_id <= self.last_interrupt_id:
            return StaleAudio(event_id, len(audio))
        if event_id > self.last_audio_id:
            self.last_audio_id = event_id
        if self._response_event_id is None or event_id > self._response_event_id:
            self._response_event_id = event_id
        alignment = payload.get("alignment")
        return Audio(event_id, audio, alignment if isinstance(alignment, Mapping) else None)

    def _track(self, event: ServerEvent) -> ServerEvent:
        match event:
            case ConversationInitiationMetadata():
                if self.conversation_id is not None:
                    return RepeatedMetadata(event.conversation_id)
                self.conversation_id = event.conversation_id
                self.output_format = parse_audio_format(event.agent_output_audio_format)
                self.input_format = parse_audio_format(event.user_input_audio_format)
            case Audio():
                if event.event_id <= self.last_interrupt_id:
                    return StaleAudio(event.event_id, len(event.audio))
                self.last_audio_id = max(self.last_audio_id, event.event_id)
                self._response_event_id = max(self._response_event_id or 0, event.event_id)
            case Interruption():
                cut = event.event_id if event.event_id is not None else self.last_audio_id
                self.last_interrupt_id = max(self.last_interrupt_id, cut)
            case UserTranscript():
                if event.text.strip():
                    self._transcript.append(TranscriptEntry("user", event.text.strip()))
            case AgentResponse():
                if event.event_id is not None:
                    self._response_event_id = max(self._response_event_id or 0, event.event_id)
                if event.text.strip():
                    self._transcript.append(TranscriptEntry("agent", event.text.strip()))
            case AgentResponseCorrection():
                self._correct(event.original.strip(), event.corrected.strip())
            case ServerError():
                self.last_error = event
            case _:
                pass
        return event

    def _correct(self, original: str, corrected: str) -> None:
        for i in range(len(self._transcript) - 1, -1, -1):
            entry = self._transcript[i]
            if entry.role == "agent" and (entry.text == original or not original):
                self._transcript[i] = TranscriptEntry("agent", corrected)
                return

    def transcript(self) -> list[TranscriptEntry]:
        """What was said so far (agent turns as heard after corrections)."""
        return list(self._transcript)

    # ------------------------------------------------------------ client → server
    @staticmethod
    def _dump(message: Mapping[str, Any]) -> str:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))

    def initiation_message(self, data: InitiationData) -> str:
        message: dict[str, Any] = {
            "type": "conversation_initiation_client_data",
            "conversation_config_override": dict(data.conversation_config_override),
            "custom_llm_extra_body": dict(data.custom_llm_extra_body),
            "dynamic_variables": dict(data.dynamic_variables),
            "source_info": {"source": data.source, "version": data.version},
        }
        if data.user_id:
            message["user_id"] = data.user_id
        return self._dump(message)

    @staticmethod
    def user_audio_chunk(encoded: bytes) -> str:
        """Audio already in `input_format`; no `type` field (the server keys on the field name)."""
        return '{"user_audio_chunk":"' + base64.b64encode(encoded).decode("ascii") + '"}'

    def pong_message(self, event_id: int) -> str:
        return self._dump({"type": "pong", "event_id": event_id})

    def client_tool_result_message(self, tool_call_id: str, result: str, is_error: bool) -> str:
        return self._dump(
            {
                "type": "client_tool_result",
                "tool_call_id": tool_call_id,
                "result": result,
                "is_error": is_error,
            }
        )

    def contextual_update_message(self, text: str) -> str:
        return self._dump({"type": "contextual_update", "text": text})

    def user_message(self, text: str) -> str:
        return self._dump({"type": "user_message", "text": text})

    def mcp_tool_approval_result_message(self, tool_call_id: str, approved: bool) -> str:
        return self._dump(
            {"type": "mcp_tool_approval_result", "tool_call_id": tool_call_id, "is_approved": approved}
        )

    def user_activity_message(self) -> str:
        return self._dump({"type": "user_activity"})

    def feedback_message(self, like: bool) -> str | None:
        """Feedback on the latest agent response; None when there is none or it already has one."""
        event_id = self._response_event_id
        if event_id is None or event_id in self._feedback_sent:
            return None
        self._feedback_sent.add(event_id)
        return self._dump({"type": "feedback", "score": "like" if like else "dislike", "event_id": event_id})


# ---------------------------------------------------------------------- untrusted text in logs
def printable(text: str, limit: int = 300) -> str:
    """Server text as one safe log line: newlines, escape sequences and every other
    non-printable character escaped (`\\n`, `\\x1b`, `\\u2028`), at most `limit` characters."""
    head = text[:limit]
    if head.isprintable():
        out = head
    else:
        out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in head)
    return out + "…" if len(text) > limit else out


class WarningLimiter:
    """At most one log line per kind per `interval_s`; the lines in between are counted.

    `admit(kind, now)` is None for a line to suppress, else the number suppressed since the
    kind's last line (to mention in this one). `pending()` yields the counts never reported
    (at the end of a session) and forgets them."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, kind: str, now: float) -> int | None:
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)

    def pending(self) -> Iterator[tuple[str, int]]:
        counts, self._suppressed = self._suppressed, {}
        yield from counts.items()
