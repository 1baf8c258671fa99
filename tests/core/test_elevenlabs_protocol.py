"""The ElevenLabs protocol as a sans-I/O object: every server event of the seed digest §1.3 (the
seeds' verbatim JSON examples where they exist), client frames, formats, close codes."""

from __future__ import annotations

import base64
import json
import struct
import warnings
from typing import Any

import pytest

from appliance.core import elevenlabs_protocol as el
from appliance.core.ulaw import pcm16_to_ulaw, ulaw_to_pcm16

AUDIO = base64.b64encode(b"\x01\x00\x02\x00").decode()

# ---------------------------------------------------------------------- every server event
SERVER_EVENTS: list[tuple[str, el.ServerEvent]] = [
    # the seeds' examples, verbatim (digest §1.3)
    (
        '{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":'
        '"conv_123","agent_output_audio_format":"pcm_44100","user_input_audio_format":"pcm_16000"}}',
        el.ConversationInitiationMetadata("conv_123", "pcm_44100", "pcm_16000"),
    ),
    ('{"ping_event":{"event_id":123456,"ping_ms":50},"type":"ping"}', el.Ping(123456, 50)),
    (
        '{"type":"user_transcript","user_transcription_event":{"user_transcript":"Hello, how can you help me today?"}}',  # noqa: E501 (verbatim)
        el.UserTranscript("Hello, how can you help me today?"),
    ),
    (
        '{"type":"agent_response","agent_response_event":{"agent_response":"Hello, how can I assist you today?"}}',  # noqa: E501 (verbatim)
        el.AgentResponse("Hello, how can I assist you today?"),
    ),
    (
        '{"type":"agent_response_correction","agent_response_correction_event":{"original_agent_response":'
        '"Let me tell you about the complete history...","corrected_agent_response":"Let me tell you about..."}}',  # noqa: E501 (verbatim)
        el.AgentResponseCorrection(
            "Let me tell you about the complete history...", "Let me tell you about..."
        ),
    ),
    ('{"type":"vad_score","vad_score_event":{"vad_score":0.95}}', el.VadScore(0.95)),
    (
        '{"type":"client_tool_call","client_tool_call":{"tool_name":"search_database","tool_call_id":"call_123456",'
        '"parameters":{"query":"user information","filters":{"date":"2024-01-01"}}}}',
        el.ClientToolCall(
            "search_database", "call_123456", {"query": "user information", "filters": {"date": "2024-01-01"}}
        ),
    ),
    (
        '{"type":"agent_tool_response","agent_tool_response":{"tool_name":"skip_turn","tool_call_id":'
        '"skip_turn_c82ca55355c840bab193effb9a7e8101","tool_type":"system","is_error":false}}',
        el.AgentToolResponse("skip_turn", "skip_turn_c82ca55355c840bab193effb9a7e8101", "system", False),
    ),
    # shapes from the SDKs / AsyncAPI (digest [X])
    ('{"type":"interruption","interruption_event":{"event_id":7}}', el.Interruption(7)),
    (
        '{"type":"interruption","interruption_event":{"reason":"user_speech"}}',
        el.Interruption(None, "user_speech"),
    ),
    (
        '{"type":"tentative_user_transcript","tentative_user_transcription_event":{"user_transcript":"hel","event_id":3}}',
        el.TentativeUserTranscript("hel", 3),
    ),
    (
        '{"type":"internal_tentative_agent_response","tentative_agent_response_internal_event":'
        '{"tentative_agent_response":"Hi th"}}',
        el.InternalTentativeAgentResponse("Hi th"),
    ),
    (
        '{"type":"internal_turn_probability","turn_probability_internal_event":{"turn_probability":0.4}}',
        el.InternalTurnProbability(0.4),
    ),
    (
        '{"type":"agent_chat_response_part","text_response_part":{"text":"Hi","type":"delta"}}',
        el.AgentChatResponsePart("Hi", "delta"),
    ),
    (
        '{"type":"asr_initiation_metadata","asr_initiation_metadata_event":{"model":"x"}}',
        el.AsrInitiationMetadata({"model": "x"}),
    ),
    (
        '{"type":"mcp_connection_status","mcp_connection_status":{"integrations":[]}}',
        el.McpConnectionStatus({"integrations": []}),
    ),
    (
        '{"type":"mcp_tool_call","mcp_tool_call":{"tool_name":"search","state":"loading"}}',
        el.McpToolCall({"tool_name": "search", "state": "loading"}),
    ),
    (
        '{"type":"error","error_event":{"code":1002,"error_type":"llm_timeout","message":"LLM response took over 20 seconds"}}',  # noqa: E501 (verbatim)
        el.ServerError(1002, "LLM response took over 20 seconds", "llm_timeout"),
    ),
    ('{"type":"a_future_event","a_future_event_event":{}}', el.Ignored("a_future_event")),
]


@pytest.mark.parametrize(
    ("frame", "expected"), SERVER_EVENTS, ids=[type(e).__name__ for _, e in SERVER_EVENTS]
)
def test_every_server_event_parses(frame: str, expected: el.ServerEvent) -> None:
    assert el.ElevenLabsProtocol().receive_text(frame) == [expected]


def test_audio_is_decoded_from_base64() -> None:
    frame = json.dumps({"type": "audio", "audio_event": {"audio_base_64": AUDIO, "event_id": 12345}})
    (event,) = el.ElevenLabsProtocol().receive_text(frame)
    assert event == el.Audio(12345, b"\x01\x00\x02\x00")


MALFORMED = [
    ("this is not json", "not JSON"),
    ('["a"]', "no 'type'"),
    ('{"no_type": 1}', "no 'type'"),
    ('{"type": "ping"}', "ping: no 'ping_event' object"),
    ('{"type": "ping", "ping_event": {"event_id": "x"}}', "ping: 'event_id' must be an integer"),
    (
        '{"type": "agent_response", "agent_response_event": {}}',
        "agent_response: 'agent_response' must be a string",
    ),
    ('{"type": "audio", "audio_event": {"audio_base_64": "%%%", "event_id": 1}}', "not valid base64"),
    ('{"type": "audio", "audio_event": {"audio_base_64": "AAAA"}}', "'event_id' must be an integer"),
    ('{"type": "vad_score", "vad_score_event": {"vad_score": true}}', "'vad_score' must be a number"),
    (
        '{"type": "client_tool_call", "client_tool_call": {"tool_name": "x"}}',
        "'tool_call_id' must be a string",
    ),
    (
        '{"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": '
        '{"conversation_id": "c", "agent_output_audio_format": "mp3_44100"}}',
        "unknown audio format 'mp3_44100'",
    ),
]


@pytest.mark.parametrize(("frame", "reason"), MALFORMED)
def test_malformed_frames_become_events_not_exceptions(frame: str, reason: str) -> None:
    proto = el.ElevenLabsProtocol()
    (event,) = proto.receive_text(frame)
    assert isinstance(event, el.MalformedFrame)
    assert reason in event.reason
    # the session goes on: the next good frame parses
    assert proto.receive_text('{"ping_event":{"event_id":1,"ping_ms":null},"type":"ping"}') == [
        el.Ping(1, None)
    ]


def test_metadata_sets_the_negotiated_formats() -> None:
    proto = el.ElevenLabsProtocol()
    proto.receive_text(SERVER_EVENTS[0][0])
    assert proto.conversation_id == "conv_123"
    assert proto.output_format == el.AudioFormat("pcm_44100", "pcm", 44100)
    assert proto.input_format == el.AudioFormat("pcm_16000", "pcm", 16000)


# ---------------------------------------------------------------------- interruptions
def _audio(event_id: int) -> str:
    return json.dumps({"type": "audio", "audio_event": {"audio_base_64": AUDIO, "event_id": event_id}})


def test_audio_at_or_below_the_interruption_id_is_stale() -> None:
    proto = el.ElevenLabsProtocol()
    assert isinstance(proto.receive_text(_audio(4))[0], el.Audio)
    proto.receive_text('{"type":"interruption","interruption_event":{"event_id":5}}')
    assert proto.receive_text(_audio(5)) == [el.StaleAudio(5, 4)]
    assert proto.receive_text(_audio(3)) == [el.StaleAudio(3, 4)]
    assert isinstance(proto.receive_text(_audio(6))[0], el.Audio)


def test_an_interruption_with_only_a_reason_cuts_at_the_newest_audio_seen() -> None:
    proto = el.ElevenLabsProtocol()
    proto.receive_text(_audio(8))
    proto.receive_text('{"type":"interruption","interruption_event":{"reason":"user_speech"}}')
    assert proto.last_interrupt_id == 8
    assert isinstance(proto.receive_text(_audio(8))[0], el.StaleAudio)
    assert isinstance(proto.receive_text(_audio(9))[0], el.Audio)
    # an interruption never moves the cut-off back
    proto.receive_text('{"type":"interruption","interruption_event":{"event_id":2}}')
    assert proto.last_interrupt_id == 8


def test_the_transcript_keeps_what_was_heard_after_corrections() -> None:
    proto = el.ElevenLabsProtocol()
    for frame in (SERVER_EVENTS[2][0], SERVER_EVENTS[3][0], SERVER_EVENTS[4][0]):
        proto.receive_text(frame)
    proto.receive_text(
        '{"type":"agent_response","agent_response_event":{"agent_response":"Let me tell you about the complete history..."}}'  # noqa: E501 (verbatim)
    )
    proto.receive_text(SERVER_EVENTS[4][0])
    assert proto.transcript() == [
        el.TranscriptEntry("user", "Hello, how can you help me today?"),
        el.TranscriptEntry("agent", "Hello, how can I assist you today?"),
        el.TranscriptEntry("agent", "Let me tell you about..."),
    ]


# ---------------------------------------------------------------------- client messages
def test_client_messages_have_the_documented_shapes() -> None:
    proto = el.ElevenLabsProtocol()
    assert json.loads(proto.user_audio_chunk(b"\x01\x02")) == {"user_audio_chunk": "AQI="}  # no "type"
    assert json.loads(proto.pong_message(123456)) == {"type": "pong", "event_id": 123456}
    assert json.loads(proto.client_tool_result_message("call_123456", "ok", False)) == {
        "type": "client_tool_result",
        "tool_call_id": "call_123456",
        "result": "ok",
        "is_error": False,
    }
    assert json.loads(proto.contextual_update_message("User appears to be looking at pricing page")) == {
        "type": "contextual_update",
        "text": "User appears to be looking at pricing page",
    }
    assert json.loads(proto.user_message("I would like to upgrade my account")) == {
        "type": "user_message",
        "text": "I would like to upgrade my account",
    }
    assert json.loads(proto.user_activity_message()) == {"type": "user_activity"}


def test_feedback_goes_to_the_latest_response_once() -> None:
    proto = el.ElevenLabsProtocol()
    assert proto.feedback_message(True) is None  # nothing to rate yet
    proto.receive_text(
        '{"type":"agent_response","agent_response_event":{"agent_response":"Hi","event_id":4}}'
    )
    assert json.loads(proto.feedback_message(True) or "") == {
        "type": "feedback",
        "score": "like",
        "event_id": 4,
    }
    assert proto.feedback_message(False) is None  # once per response
    proto.receive_text(_audio(9))
    assert json.loads(proto.feedback_message(False) or "") == {
        "type": "feedback",
        "score": "dislike",
        "event_id": 9,
    }


def test_initiation_message_carries_everything_the_seed_example_has() -> None:
    data = el.InitiationData(
        conversation_config_override={
            "agent": {
                "prompt": {"prompt": "overriding system prompt"},
                "first_message": "overriding first message",
                "language": "en",
            },
            "tts": {"voice_id": "voice-id-here"},
        },
        custom_llm_extra_body={"temperature": 0.7, "max_tokens": 100},
        dynamic_variables={
            "string_var": "text value",
            "number_var": 1.2,
            "integer_var": 123,
            "boolean_var": True,
        },
        user_id="your_custom_user_id",
        version="appliance/0.1.0",
    )
    message = json.loads(el.ElevenLabsProtocol().initiation_message(data))
    assert message == {
        "type": "conversation_initiation_client_data",
        "conversation_config_override": data.conversation_config_override,
        "custom_llm_extra_body": {"temperature": 0.7, "max_tokens": 100},
        "dynamic_variables": data.dynamic_variables,
        "user_id": "your_custom_user_id",
        "source_info": {"source": "unknown", "version": "appliance/0.1.0"},
    }
    assert "user_id" not in json.loads(el.ElevenLabsProtocol().initiation_message(el.InitiationData()))


def test_only_permitted_overrides_are_sent_and_empty_values_are_left_out() -> None:
    candidate = {
        "agent": {"prompt": {"prompt": "P"}, "first_message": "", "language": "de"},
        "tts": {"voice_id": "v", "speed": 1.1},
        "conversation": {"text_only": False},
    }
    permissions: dict[str, Any] = {
        "agent": {"first_message": True, "language": True, "prompt": {"prompt": False}},
        "tts": {"voice_id": True, "speed": False},
        "conversation": {"text_only": True},
    }
    kept, dropped = el.permitted_overrides(candidate, permissions)
    assert kept == {
        "agent": {"language": "de"},
        "tts": {"voice_id": "v"},
        "conversation": {"text_only": False},
    }
    assert dropped == ["agent.prompt.prompt", "tts.speed"]


# ---------------------------------------------------------------------- URLs
def test_urls() -> None:
    assert el.conversation_url("wss://api.elevenlabs.io/", "agent 1") == (
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent+1"
    )
    assert el.signed_url_endpoint("wss://api.eu.residency.elevenlabs.io", "a") == (
        "https://api.eu.residency.elevenlabs.io/v1/convai/conversation/get-signed-url?agent_id=a"
    )
    assert el.signed_url_endpoint("ws://127.0.0.1:9000", "a").startswith("http://127.0.0.1:9000/v1/")
    signed = "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=your-agent-id&conversation_signature=your-token"
    assert el.parse_signed_url_response(json.dumps({"signed_url": signed})) == signed  # verbatim
    assert el.url_secrets(signed) == ["your-token"]
    assert el.url_secrets("wss://x/v1/convai/conversation?agent_id=a&token=t0k3n") == ["t0k3n"]
    for bad in ("{}", "nope", '{"signed_url": "https://x"}'):
        with pytest.raises(ValueError):
            el.parse_signed_url_response(bad)


# ---------------------------------------------------------------------- audio formats
@pytest.mark.parametrize(
    ("name", "encoding", "rate", "chunk_100ms"),
    [
        ("pcm_8000", "pcm", 8000, 1600),
        ("pcm_16000", "pcm", 16000, 3200),
        ("pcm_22050", "pcm", 22050, 4410),
        ("pcm_24000", "pcm", 24000, 4800),
        ("pcm_44100", "pcm", 44100, 8820),
        ("pcm_48000", "pcm", 48000, 9600),
        ("ulaw_8000", "ulaw", 8000, 800),
    ],
)
def test_audio_formats(name: str, encoding: str, rate: int, chunk_100ms: int) -> None:
    fmt = el.parse_audio_format(name)
    assert (fmt.encoding, fmt.sample_rate_hz, fmt.chunk_bytes(100)) == (encoding, rate, chunk_100ms)
    assert fmt.duration_s(chunk_100ms) == pytest.approx(0.1)


def test_unknown_audio_format() -> None:
    with pytest.raises(ValueError, match="mp3_44100"):
        el.parse_audio_format("mp3_44100")


def test_ulaw_matches_the_g711_reference() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # the stdlib G.711 reference, still in Python 3.11

    every_sample = struct.pack("<65536h", *range(-32768, 32768))
    assert pcm16_to_ulaw(every_sample) == audioop.lin2ulaw(every_sample, 2)
    codes = bytes(range(256))
    assert ulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)
    # known values: silence, full scale
    assert pcm16_to_ulaw(b"\x00\x00") == b"\xff"
    assert ulaw_to_pcm16(b"\x80") == (32124).to_bytes(2, "little", signed=True)
    assert ulaw_to_pcm16(b"\x00") == (-32124).to_bytes(2, "little", signed=True)
    with pytest.raises(ValueError):
        pcm16_to_ulaw(b"\x00")


# ---------------------------------------------------------------------- close codes
@pytest.mark.parametrize(
    ("code", "error", "kind", "reconnect", "reason"),
    [
        (1000, None, el.CloseKind.ENDED, False, "agent_ended"),
        (
            1000,
            el.ServerError(1000, "max", "max_duration_exceeded"),
            el.CloseKind.ENDED,
            False,
            "max_duration",
        ),
        (
            1002,
            el.ServerError(1002, "LLM response took over 20 seconds", "llm_timeout"),
            el.CloseKind.SERVER_ERROR,
            False,
            "remote_error",
        ),
        (
            1008,
            el.ServerError(1008, "missing", "missing_dynamic_variable"),
            el.CloseKind.REJECTED,
            False,
            "remote_rejected",
        ),
        (1011, None, el.CloseKind.CONNECTION_LOST, True, "network_error"),
        (1006, None, el.CloseKind.CONNECTION_LOST, True, "network_error"),
        (None, None, el.CloseKind.CONNECTION_LOST, True, "network_error"),
        (1001, None, el.CloseKind.CONNECTION_LOST, True, "network_error"),
        (4000, None, el.CloseKind.SERVER_ERROR, False, "remote_error"),
    ],
)
def test_close_codes_map_to_clear_outcomes(
    code: int | None, error: el.ServerError | None, kind: el.CloseKind, reconnect: bool, reason: str
) -> None:
    outcome = el.close_outcome(code, "", error)
    assert (outcome.kind, outcome.reconnect, outcome.session_reason, outcome.code) == (
        kind,
        reconnect,
        reason,
        code,
    )
    if error is not None:
        assert error.message in outcome.message


# ---------------------------------------------------------------------- shelf safety
META = (
    '{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":'
    '{"conversation_id":"%s","agent_output_audio_format":"%s","user_input_audio_format":"pcm_16000"}}'
)


def test_a_second_metadata_on_one_connection_is_repeated_and_changes_nothing() -> None:
    proto = el.ElevenLabsProtocol()
    assert proto.receive_text(META % ("c1", "pcm_44100")) == [
        el.ConversationInitiationMetadata("c1", "pcm_44100", "pcm_16000")
    ]
    assert proto.receive_text(META % ("c2", "ulaw_8000")) == [el.RepeatedMetadata("c2")]
    assert proto.conversation_id == "c1" and proto.output_format.name == "pcm_44100"


@pytest.mark.parametrize("name", ["mp3_44100", "pcm_99999", "opus_48000"])
def test_an_unsupported_format_names_itself_and_the_supported_ones(name: str) -> None:
    (event,) = el.ElevenLabsProtocol().receive_text(META % ("c", name))
    assert isinstance(event, el.MalformedFrame)
    assert event.frame_type == "conversation_initiation_metadata"
    assert f"agent_output_audio_format: unknown audio format '{name}'" in event.reason
    assert all(known in event.reason for known in el.AUDIO_FORMATS)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"tool_name": "t", "tool_call_id": "c1", "parameters": "x=1"},
            el.InvalidToolCall("t", "c1", "'parameters' must be an object"),
        ),
        (
            {"tool_name": "t", "tool_call_id": "c1", "parameters": [1], "expects_response": False},
            el.InvalidToolCall("t", "c1", "'parameters' must be an object", False),
        ),
        ({"tool_call_id": "c1"}, el.InvalidToolCall("", "c1", "'tool_name' must be a non-empty string")),
        ({"tool_name": "t", "tool_call_id": "c1"}, el.ClientToolCall("t", "c1", {})),
    ],
)
def test_a_tool_call_with_an_id_is_always_answerable(
    payload: dict[str, Any], expected: el.ServerEvent
) -> None:
    frame = json.dumps({"type": "client_tool_call", "client_tool_call": payload})
    assert el.ElevenLabsProtocol().receive_text(frame) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        ("line\u2028sep\x85", "line\\u2028sep\\x85"),
        ("tab\there", "tab\\there"),
        ("é ü 中", "é ü 中"),
        ("x" * 400, "x" * 300 + "…"),
    ],
)
def test_server_text_becomes_one_log_line(text: str, expected: str) -> None:
    assert el.printable(text) == expected


def test_warnings_are_limited_to_one_line_per_kind_per_interval() -> None:
    limiter = el.WarningLimiter(interval_s=10.0)
    table = [  # (kind, now, admitted with this many suppressed before it, or None)
        ("malformed", 0.0, 0),
        ("malformed", 0.1, None),
        ("malformed", 9.9, None),
        ("server_error", 5.0, 0),  # another kind has its own interval
        ("malformed", 10.0, 2),
        ("malformed", 12.0, None),
        ("malformed", 30.0, 1),
        ("malformed", 31.0, None),
    ]
    for kind, now, expected in table:
        assert limiter.admit(kind, now) == expected, (kind, now)
    assert list(limiter.pending()) == [("malformed", 1)]
    assert list(limiter.pending()) == []


@pytest.mark.parametrize(
    ("base", "url", "downgrade"),
    [
        ("wss://api.elevenlabs.io", "ws://api.elevenlabs.io/v1/convai/conversation?token=t", True),
        ("WSS://api.elevenlabs.io", "WS://evil/x", True),
        ("wss://api.elevenlabs.io", "wss://api.elevenlabs.io/v1/convai/conversation?token=t", False),
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/convai/conversation", False),
        ("ws://127.0.0.1:8765", "wss://127.0.0.1:8765/v1/convai/conversation", False),
    ],
)
def test_a_signed_url_may_not_downgrade_wss(base: str, url: str, downgrade: bool) -> None:
    assert el.downgrades(base, url) is downgrade


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("<html>log in</html>", "not_json"),
        ("{}", "no_signed_url"),
        ('{"signed_url": "https://x"}', "no_signed_url"),
    ],
)
def test_unusable_signed_url_answers_say_why(body: str, cause: str) -> None:
    with pytest.raises(el.SignedUrlAnswerError) as caught:
        el.parse_signed_url_response(body)
    assert caught.value.cause == cause


def test_signed_url_helpers_keep_a_base_path() -> None:
    assert el.signed_url_endpoint("wss://proxy.example/eleven/", "a") == (
        "https://proxy.example/eleven/v1/convai/conversation/get-signed-url?agent_id=a"
    )
    assert el.signed_url_of({"signed_url": "wss://x/y?token=t"}) == "wss://x/y?token=t"


def test_a_tls_failure_is_found_behind_a_wrapping_error() -> None:
    import ssl

    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "certificate has expired"
    try:
        try:
            raise cause
        except ssl.SSLError as inner:
            raise ConnectionError("connect failed") from inner
    except ConnectionError as outer:
        found = el.tls_failure(outer)
    assert found is cause and el.tls_detail(cause) == "certificate has expired"
    assert el.tls_failure(ConnectionError("refused")) is None
