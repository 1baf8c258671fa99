"""The remote conversation's rules, as tables with explicit times (`core/remote_session.py`).

Each row drives the pure machine with local events and server frames at given times and checks
the effects it asks for: no sockets, no clock, no sleeping.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from appliance.core import elevenlabs_protocol as el
from appliance.core import remote_session as rs
from appliance.core.common import ArmTimer, CancelTimer, Emit, TimerFired
from appliance.core.conversation import ToolCall
from appliance.core.endpointing import UtteranceEnded
from appliance.core.playout import Backoff

SETTINGS = rs.RemoteSettings(
    agent_id="agent_1",
    base_url="wss://api.elevenlabs.io",
    reconnect_attempts=2,
    backoff=Backoff(base_s=1.0, factor=2.0, max_s=8.0, jitter=0.5),
    stall_timeout_s=5.0,
    metadata_timeout_s=10.0,
    connect_hold_s=5.0,
    first_message_wait_s=1.0,
    reply_wait_s=8.0,
    audio_gap_s=0.5,
    end_timeout_s=15.0,
    healthy_after_s=10.0,
    jitter_target_s=0.06,
)
SIGNED = "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent_1&token=t0k3n"


def machine(**changes: Any) -> rs.RemoteSessionMachine:
    # rng 0.5: each delay is raw × (1 − 0.5 + 0.25) = 0.75 × raw
    return rs.RemoteSessionMachine(replace(SETTINGS, **changes), el.InitiationData(), rng=lambda: 0.5)


# ---------------------------------------------------------------------- frames
def meta(cid: str = "conv_1", out: str = "pcm_16000", inp: str = "pcm_16000") -> str:
    payload = {"conversation_id": cid, "agent_output_audio_format": out, "user_input_audio_format": inp}
    return json.dumps(
        {"type": "conversation_initiation_metadata", "conversation_initiation_metadata_event": payload}
    )


def audio(event_id: int, seconds: float = 0.1, rate: int = 16000) -> str:
    data = base64.b64encode(bytes(2 * round(seconds * rate))).decode()
    return json.dumps({"type": "audio", "audio_event": {"audio_base_64": data, "event_id": event_id}})


def message(kind: str, key: str, **payload: Any) -> str:
    return json.dumps({"type": kind, key: payload})


def transcript(text: str, event_id: int = 1) -> str:
    return message("user_transcript", "user_transcription_event", user_transcript=text, event_id=event_id)


def response(text: str, event_id: int = 1) -> str:
    return message("agent_response", "agent_response_event", agent_response=text, event_id=event_id)


def ping(event_id: int) -> str:
    return message("ping", "ping_event", event_id=event_id, ping_ms=20)


def mic(seconds: float) -> rs.MicAudio:
    return rs.MicAudio(bytes(2 * round(seconds * 16000)))


def utterance(start_t: float, end_t: float, declared_t: float = -1.0) -> UtteranceEnded:
    return UtteranceEnded(
        start_t, end_t, "silence", b"\x01\x00" * round((end_t - start_t) * 16000), declared_t
    )


# ---------------------------------------------------------------------- driving
Step = tuple[float, "rs.RemoteEvent | str"]


def drive(m: rs.RemoteSessionMachine, steps: list[Step]) -> list[rs.Effect]:
    """Feed each step (an event, or a server frame as JSON) at its time; all effects, in order."""
    out: list[rs.Effect] = []
    for now, step in steps:
        out += m.frame(step, now) if isinstance(step, str) else m.handle(step, now)
    return out


def connect(m: rs.RemoteSessionMachine, t: float, *, cid: str = "conv_1") -> list[rs.Effect]:
    """Start (or reconnect) and complete the handshake at time `t`."""
    effects = [] if m.phase is rs.Phase.CONNECTING else drive(m, [(t, rs.Start())])
    n = m.connection
    return effects + drive(m, [(t, rs.UrlObtained(n, SIGNED)), (t, rs.Connected(n)), (t, meta(cid))])


def names(effects: list[rs.Effect]) -> list[str]:
    """Effects in a compact, readable form (audio and pings left out)."""
    out: list[str] = []
    for e in effects:
        match e:
            case Emit(type=kind) if kind in ("audio", "ping"):
                continue
            case Emit(type="error", fields=fields):
                out.append(f"error:{fields['code']}")
            case Emit(type=kind):
                out.append(kind)
            case ArmTimer(name=name, deadline=deadline):
                out.append(f"arm:{name}@{deadline:g}")
            case CancelTimer(name=name):
                out.append(f"cancel:{name}")
            case rs.Close(graceful=graceful):
                out.append("close" if graceful else "abort")
            case rs.Finish(reason=reason):
                out.append(f"finish:{reason}")
            case rs.Send(text=text):
                out.append(f"send:{json.loads(text).get('type')}")
            case rs.Log(level=level):
                out.append(f"log:{level}")
            case _:
                out.append(type(e).__name__)
    return out


def in_order(expected: list[str], effects: list[rs.Effect]) -> bool:
    """`expected` appear in `effects` in this order (others may come between)."""
    shown = iter(names(effects))
    return all(any(n == want for n in shown) for want in expected)


def only(effects: list[rs.Effect], prefixes: tuple[str, ...]) -> list[str]:
    return [n for n in names(effects) if n.startswith(prefixes)]


def emitted(effects: list[rs.Effect], kind: str) -> list[dict[str, Any]]:
    return [e.fields for e in effects if isinstance(e, Emit) and e.type == kind]


# ---------------------------------------------------------------------- connecting
def test_a_session_connects_through_url_socket_and_metadata() -> None:
    m = machine()
    assert names(drive(m, [(0.0, rs.Start())])) == ["FetchUrl"]
    assert m.phase is rs.Phase.CONNECTING
    assert drive(m, [(0.2, rs.UrlObtained(1, SIGNED))]) == [rs.OpenSocket(1, SIGNED)]
    assert names(drive(m, [(0.3, rs.Connected(1))])) == [
        "send:conversation_initiation_client_data",
        "arm:stall@5.3",
        "arm:metadata@10.3",
    ]
    effects = drive(m, [(0.4, meta(out="pcm_44100", inp="ulaw_8000"))])
    assert names(effects) == ["cancel:metadata", "ConfigureInput", "conversation_initiation_metadata"]
    assert effects[1] == rs.ConfigureInput(el.parse_audio_format("ulaw_8000"))
    assert m.ready and m.proto.output_format.sample_rate_hz == 44100


@pytest.mark.parametrize(
    ("outcome_step", "expected"),
    [
        (  # a wss:// base URL never talks over a ws:// signed URL
            rs.UrlObtained(1, "ws://api.elevenlabs.io/v1/convai/conversation?token=x"),
            ["log:error", "error:remote_insecure_url", "finish:remote_error"],
        ),
        (
            rs.ConnectFailed(1, rs.tls_outcome("certificate has expired")),
            ["log:error", "error:remote_tls_failed", "finish:network_error"],
        ),
        (
            rs.ConnectFailed(1, rs.agent_error_outcome("remote_auth_failed", False, "key refused")),
            ["log:error", "error:remote_rejected", "finish:remote_rejected"],
        ),
        (
            rs.ConnectFailed(1, rs.agent_error_outcome("remote_signed_url_not_json", False, "not JSON")),
            ["log:error", "error:remote_signed_url_not_json", "finish:remote_error"],
        ),
        (
            rs.ConnectFailed(1, rs.http_status_outcome(403)),
            ["log:error", "error:remote_rejected", "finish:remote_rejected"],
        ),
        (  # retried: the first retry plays the alert
            rs.ConnectFailed(1, rs.agent_error_outcome("remote_signed_url_timeout", True, "slow")),
            ["error:remote_signed_url_timeout", "reconnecting", "log:warning", "arm:backoff@2.75", "Alert"],
        ),
        (
            rs.ConnectFailed(1, rs.network_outcome("ConnectionRefusedError")),
            ["error:remote_connection_lost", "reconnecting", "log:warning", "arm:backoff@2.75", "Alert"],
        ),
    ],
    ids=["insecure", "tls", "auth", "not-json", "http-403", "url-timeout", "refused"],
)
def test_connection_failures_end_or_retry_by_cause(outcome_step: rs.RemoteEvent, expected: list[str]) -> None:
    m = machine()
    drive(m, [(0.0, rs.Start())])
    effects = drive(m, [(2.0, outcome_step)])
    assert [n for n in names(effects) if not n.startswith("cancel:")] == expected


# ---------------------------------------------------------------------- reconnect budget and backoff
def lose(m: rs.RemoteSessionMachine, t: float, code: int | None = None) -> list[rs.Effect]:
    return drive(m, [(t, rs.SocketClosed(m.connection, code, ""))])


SHOWN = (
    "error",
    "reconnecting",
    "log",
    "arm:backoff",
    "Alert",
    "FetchUrl",
    "finish",
    "conversation_init",
    "reconnected",
)


def test_the_reconnect_budget_backoff_and_alert() -> None:
    m = machine()
    connect(m, 0.0)
    table: list[tuple[float, str, list[str]]] = [
        # (time, what happens, expected effects besides timer cancels)
        (
            3.0,
            "lost",
            ["error:remote_connection_lost", "reconnecting", "log:warning", "arm:backoff@3.75", "Alert"],
        ),
        (3.75, "backoff fires", ["FetchUrl"]),
        (4.0, "connected again", ["conversation_initiation_metadata", "reconnected"]),
        (
            6.0,
            "lost again, soon",
            ["error:remote_connection_lost", "reconnecting", "log:warning", "arm:backoff@7.5"],
        ),
        (7.5, "backoff fires", ["FetchUrl"]),
        (
            7.6,
            "refused",
            ["error:remote_connection_lost", "log:error", "error:network_error", "finish:network_error"],
        ),
    ]
    for now, what, expected in table:
        if what.startswith("lost"):
            effects = lose(m, now)
        elif what == "backoff fires":
            effects = drive(m, [(now, TimerFired(rs.BACKOFF))])
        elif what == "connected again":
            effects = connect(m, now, cid="conv_2")
        else:
            effects = drive(m, [(now, rs.ConnectFailed(m.connection, rs.network_outcome("refused")))])
        assert [n for n in names(effects) if n.startswith(SHOWN)] == expected, (now, what, names(effects))
    assert m.finished and not m.busy(8.0)


@pytest.mark.parametrize(
    ("up_for_s", "attempt"),
    [(9.9, 2), (10.0, 1)],
    ids=["flapping-keeps-counting", "healthy-resets-the-budget"],
)
def test_a_connection_that_stayed_up_resets_the_budget(up_for_s: float, attempt: int) -> None:
    m = machine()
    connect(m, 0.0)
    lose(m, 1.0)
    drive(m, [(2.0, TimerFired(rs.BACKOFF))])
    connect(m, 2.0, cid="conv_2")
    effects = lose(m, 2.0 + up_for_s)
    assert [e["attempt"] for e in emitted(effects, "reconnecting")] == [attempt]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1000, ["finish:agent_ended"]),
        (1008, ["log:error", "error:remote_rejected", "finish:remote_rejected"]),
        (1002, ["log:error", "error:remote_error", "finish:remote_error"]),
        (1011, ["error:remote_connection_lost", "reconnecting", "log:warning", "arm:backoff@5.75", "Alert"]),
        (None, ["error:remote_connection_lost", "reconnecting", "log:warning", "arm:backoff@5.75", "Alert"]),
    ],
)
def test_close_codes_end_or_reconnect(code: int | None, expected: list[str]) -> None:
    m = machine()
    connect(m, 0.0)
    assert [n for n in names(lose(m, 5.0, code)) if not n.startswith("cancel:")] == expected


def test_a_lost_connection_while_ending_ends_instead_of_reconnecting() -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(1.0, rs.MicAudio(b"")), (1.0, rs.UtteranceClosed(utterance(0.0, 1.0)))])  # hold: 9.0
    drive(m, [(2.0, rs.EndRequested("input_ended"))])  # waits for the hold
    effects = lose(m, 3.0)
    assert only(effects, ("error", "reconnecting", "finish")) == [
        "error:remote_connection_lost",
        "finish:input_ended",
    ]


# ---------------------------------------------------------------------- stall and metadata deadlines
def test_a_stalled_connection_is_detected_from_the_last_frame() -> None:
    m = machine()
    drive(m, [(0.0, rs.Start()), (0.0, rs.UrlObtained(1, SIGNED)), (0.0, rs.Connected(1)), (0.5, meta())])
    table: list[tuple[float, rs.RemoteEvent | str, list[str]]] = [
        (1.0, ping(1), ["send:pong"]),
        (3.0, ping(2), ["send:pong"]),
        (5.0, TimerFired(rs.STALL), ["arm:stall@8"]),  # frames came: look again at last frame + 5 s
        (7.9, ping(3), ["send:pong"]),
        (8.0, TimerFired(rs.STALL), ["arm:stall@12.9"]),
        (12.9, TimerFired(rs.STALL), ["abort"]),  # 5 s without a frame
    ]
    for now, step, expected in table:
        assert names(drive(m, [(now, step)])) == expected, now
    effects = lose(m, 12.9)
    (error,) = emitted(effects, "error")
    assert (
        error["code"] == "remote_connection_lost"
        and "no frame from the server for 5 s (stalled)" in error["message"]
    )
    assert emitted(effects, "reconnecting")


@pytest.mark.parametrize(
    ("metadata_at", "expected"),
    [
        (9.9, ["cancel:metadata", "ConfigureInput", "conversation_initiation_metadata"]),
        (None, ["abort"]),
    ],
    ids=["in-time", "missing"],
)
def test_the_metadata_is_due_within_its_deadline(metadata_at: float | None, expected: list[str]) -> None:
    m = machine()
    drive(m, [(0.0, rs.Start()), (0.0, rs.UrlObtained(1, SIGNED)), (0.0, rs.Connected(1))])
    steps: list[Step] = [(metadata_at, meta())] if metadata_at is not None else []
    steps.append((10.0, TimerFired(rs.METADATA)))
    assert names(drive(m, steps)) == expected
    if metadata_at is None:
        effects = lose(m, 10.0)
        (error,) = emitted(effects, "error")
        assert error["code"] == "remote_protocol_error"
        assert error["message"] == "the server sent no conversation_initiation_metadata within 10 s"
        assert names(effects)[-1] == "finish:remote_error" and not emitted(effects, "reconnecting")


@pytest.mark.parametrize("fmt", ["mp3_44100", "pcm_99999"])
def test_an_unsupported_format_is_a_protocol_error_and_audio_is_never_guessed(fmt: str) -> None:
    m = machine()
    drive(m, [(0.0, rs.Start()), (0.0, rs.UrlObtained(1, SIGNED)), (0.0, rs.Connected(1))])
    assert names(drive(m, [(0.1, audio(1))])) == ["log:warning"]  # before any metadata: dropped
    effects = drive(m, [(0.2, meta(out=fmt)), (0.3, audio(2))])
    assert names(effects) == ["log:warning", "malformed_frame", "abort"]
    assert not any(isinstance(e, rs.Play) for e in effects)
    (error,) = emitted(lose(m, 0.3), "error")
    assert (
        error["code"] == "remote_protocol_error"
        and fmt in error["message"]
        and "ulaw_8000" in error["message"]
    )
    assert m.dropped_unformatted_chunks == 2


def test_a_repeated_metadata_is_one_warning_and_not_a_reconnect() -> None:
    m = machine()
    connect(m, 0.0)
    effects = drive(m, [(1.0, meta("conv_1")), (2.0, meta("conv_x")), (3.0, audio(1))])
    assert [n for n in names(effects) if n != "Play"] == ["log:warning"]
    assert m.proto.conversation_id == "conv_1" and not emitted(effects, "reconnected")


def test_warnings_are_rate_limited_and_counted_at_the_end() -> None:
    m = machine(warn_interval_s=10.0)
    connect(m, 0.0)
    logs = [e for e in drive(m, [(t / 10, "not json\nforged") for t in range(30)]) if isinstance(e, rs.Log)]
    assert len(logs) == 1 and "\n" not in logs[0].message and "not json\\nforged" in logs[0].message
    logs = [e for e in drive(m, [(10.0, "again")]) if isinstance(e, rs.Log)]
    assert logs[0].message.endswith("(29 more like it suppressed)")
    drive(m, [(10.5, "and again")])
    final = drive(m, [(11.0, rs.EndRequested("done")), (11.0, rs.SocketClosed(1, 1000, ""))])
    assert rs.Log("warning", "1 more malformed_frame warning(s) suppressed") in final


# ---------------------------------------------------------------------- replay after a reconnect
def test_a_question_the_lost_connection_never_answered_is_asked_again() -> None:
    m = machine()
    connect(m, 0.0)
    question = utterance(1.0, 2.0, declared_t=2.5)
    drive(
        m,
        [
            (0.5, response("Hello!")),
            (2.5, mic(2.5)),
            (2.6, transcript("What time is it?")),
            (2.6, rs.UtteranceClosed(question)),
        ],
    )
    assert m.awaiting_reply
    lose(m, 3.0)
    drive(m, [(3.2, mic(0.5)), (3.75, TimerFired(rs.BACKOFF))])  # audio while reconnecting: kept
    effects = connect(m, 4.0, cid="conv_2")
    assert only(effects, ("send:contextual", "utterance_replayed", "SendAudio", "reconnected")) == [
        "reconnected",
        "send:contextual_update",  # the transcript so far
        "utterance_replayed",
        "SendAudio",  # the question
        "SendAudio",  # then 0.8 s of silence so the server's turn detection closes it
        "SendAudio",  # then what was pushed while reconnecting
    ]
    update = next(e for e in effects if isinstance(e, rs.Send) and "contextual_update" in e.text)
    assert "user: What time is it?" in update.text and "agent: Hello!" in update.text
    sent = [e.pcm for e in effects if isinstance(e, rs.SendAudio)]
    assert sent == [question.audio, bytes(2 * 12800), bytes(2 * 8000)]
    # the new conversation's first message answers nothing: the question is still open
    drive(m, [(4.1, audio(1))])
    assert m.awaiting_reply
    drive(m, [(5.0, transcript("What time is it?")), (5.5, audio(2))])
    assert not m.awaiting_reply


@pytest.mark.parametrize(
    ("answered_before_loss", "replayed"), [(True, False), (False, True)], ids=["answered", "unanswered"]
)
def test_only_an_unanswered_question_is_replayed(answered_before_loss: bool, replayed: bool) -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(2.0, mic(2.0)), (2.0, transcript("Hi?")), (2.0, rs.UtteranceClosed(utterance(1.0, 1.5)))])
    if answered_before_loss:
        drive(m, [(2.5, audio(2))])
    lose(m, 3.0)
    drive(m, [(3.75, TimerFired(rs.BACKOFF))])
    assert bool(emitted(connect(m, 4.0, cid="conv_2"), "utterance_replayed")) is replayed


def test_a_turn_that_began_on_the_lost_connection_is_replayed_when_it_closes() -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(1.0, mic(1.0))])  # the user starts speaking at 0.8 s
    lose(m, 1.0)
    drive(m, [(1.75, TimerFired(rs.BACKOFF))])
    connect(m, 2.0, cid="conv_2")
    drive(m, [(2.5, mic(1.5))])
    question = utterance(0.8, 2.0, declared_t=2.5)
    effects = drive(m, [(2.5, rs.UtteranceClosed(question))])
    assert only(effects, ("utterance_replayed", "SendAudio")) == [
        "utterance_replayed",
        "SendAudio",
        "SendAudio",
    ]
    # ... but once: the same utterance is never replayed twice
    assert not emitted(drive(m, [(2.6, rs.UtteranceClosed(question))]), "utterance_replayed")


def test_a_reply_before_the_endpointer_closed_the_turn_is_not_waited_for() -> None:
    m = machine()
    connect(m, 0.0)
    drive(
        m, [(2.0, mic(2.0)), (2.0, transcript("Hi?")), (2.1, audio(1)), (2.2, rs.PlayDone()), (2.3, mic(0.3))]
    )
    drive(
        m, [(2.3, rs.UtteranceClosed(utterance(1.0, 1.8, declared_t=2.3)))]
    )  # ended at 1.8, answered at 2.0
    assert not m.awaiting_reply and not m.busy(3.0)


# ---------------------------------------------------------------------- the busy hold
def test_busy_holds_for_connecting_the_first_message_and_the_reply() -> None:
    m = machine()
    assert m.busy(0.0)  # not started: fast headless runs hold their input
    drive(m, [(0.0, rs.Start())])
    table: list[tuple[float, bool]] = [(4.9, True), (5.0, False)]  # connecting: at most connect_hold_s
    for now, busy in table:
        assert m.busy(now) is busy, now
    drive(m, [(6.0, rs.UrlObtained(1, SIGNED)), (6.0, rs.Connected(1)), (6.2, meta())])
    steps: list[tuple[float, Step | None, bool]] = [
        (6.2, None, True),  # waiting for a first message (first_message_wait_s)
        (7.2, None, False),
        (8.0, (8.0, rs.UtteranceClosed(utterance(7.0, 8.0))), True),  # waiting for the reply
        (15.9, None, True),
        (16.0, None, False),  # reply_wait_s over: the user may talk again
        (17.0, (17.0, rs.UtteranceClosed(utterance(16.0, 17.0))), True),
        (17.5, (17.5, audio(1)), True),  # speaking: one play outstanding
        (19.0, None, True),
        (19.0, (19.0, rs.PlayDone()), False),  # played, and the 0.5 s gap after the chunk is over
    ]
    for now, step, busy in steps:
        if step is not None:
            drive(m, [step])
        assert m.busy(now) is busy, now
    drive(m, [(20.0, rs.EndRequested("done")), (20.0, rs.SocketClosed(1, 1000, ""))])
    assert m.finished and not m.busy(20.0)


def test_a_connection_stuck_before_the_metadata_does_not_hold_the_device() -> None:
    m = machine(connect_hold_s=2.0)
    drive(m, [(0.0, rs.Start()), (0.1, rs.UrlObtained(1, SIGNED)), (0.2, rs.Connected(1))])
    assert m.busy(1.9) and not m.busy(2.0)  # stuck in the handshake: not busy, the timer runs


def test_a_reconnect_holds_for_the_backoff_and_the_connection() -> None:
    m = machine()
    connect(m, 0.0)
    lose(m, 2.0)  # backoff 0.75 s
    assert m.busy(7.7) and not m.busy(7.75)


# ---------------------------------------------------------------------- ending
@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("connecting", ["CancelConnect", "finish:bye"]),
        ("handshake", ["abort"]),  # the server may be hung: no close handshake
        ("ready", ["arm:end_deadline@20", "cancel:end_hold", "cancel:end_deadline", "close"]),
        ("backoff", ["cancel:backoff", "finish:bye"]),
    ],
)
def test_end_in_each_phase(phase: str, expected: list[str]) -> None:
    m = machine(first_message_wait_s=0.0)
    steps: dict[str, list[Step]] = {
        "connecting": [(0.0, rs.Start())],
        "handshake": [(0.0, rs.Start()), (0.0, rs.UrlObtained(1, SIGNED)), (0.0, rs.Connected(1))],
        "ready": [(0.0, rs.Start()), (0.0, rs.UrlObtained(1, SIGNED)), (0.0, rs.Connected(1)), (0.0, meta())],
        "backoff": [
            (0.0, rs.Start()),
            (0.0, rs.ConnectFailed(1, rs.network_outcome("refused"))),
        ],
    }
    drive(m, steps[phase])
    effects = drive(m, [(5.0, rs.EndRequested("bye"))])
    assert in_order(expected, effects), names(effects)
    assert not any(isinstance(e, rs.Finish) for e in effects) or phase in ("connecting", "backoff")
    if phase == "handshake":
        assert names(lose(m, 5.0))[-1] == "finish:bye"


def test_end_lets_the_agent_finish_speaking_and_the_hold_pass() -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(2.0, audio(1))])  # playing; hold until 2.5
    table: list[tuple[float, Step, list[str]]] = [
        (2.1, (2.1, rs.EndRequested("bye")), ["arm:end_deadline@17.1"]),
        (2.2, (2.2, rs.PlayDone()), ["arm:end_hold@2.5"]),  # played; the gap after it still runs
        (2.5, (2.5, TimerFired(rs.END_HOLD)), ["cancel:end_hold", "cancel:end_deadline", "close"]),
    ]
    for now, step, expected in table:
        assert names(drive(m, [step])) == expected, now
    assert names(lose(m, 2.6, 1000))[-1] == "finish:bye"


def test_end_closes_at_its_deadline_even_while_the_agent_talks() -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(1.0, audio(1)), (1.5, rs.EndRequested("bye"))])
    for t in range(2, 16):
        drive(m, [(float(t), audio(t))])  # it never stops
    assert names(drive(m, [(16.5, TimerFired(rs.END_DEADLINE))]))[-1] == "close"


def test_stop_silences_at_once_and_closes_when_the_play_returns() -> None:
    m = machine()
    connect(m, 0.0)
    drive(m, [(1.0, rs.UtteranceClosed(utterance(0.0, 1.0))), (1.2, audio(1))])
    effects = drive(m, [(1.3, rs.EndRequested("stopped", immediate=True))])
    assert names(effects) == ["StopPlayback", "arm:end_deadline@16.3"]
    assert not m.awaiting_reply
    assert names(drive(m, [(1.3, audio(2))])) == []  # muted: later audio is dropped
    assert names(drive(m, [(1.31, rs.PlayDone())]))[-1] == "close"


def test_end_call_from_the_agent_ends_like_end() -> None:
    m = machine(first_message_wait_s=0.0)
    connect(m, 0.0)
    tool = message("agent_tool_response", "agent_tool_response", tool_name="end_call", tool_call_id="e1")
    effects = drive(m, [(1.0, tool)])
    assert names(effects) == [
        "agent_tool_response",
        "arm:end_deadline@16",
        "cancel:end_hold",
        "cancel:end_deadline",
        "close",
    ]
    assert names(lose(m, 1.1, 1000))[-1] == "finish:end_call"


def test_what_was_received_is_still_heard_after_the_last_connection() -> None:
    m = machine(reconnect_attempts=0)
    connect(m, 0.0)
    drive(m, [(1.0, audio(1))])
    effects = lose(m, 1.05)
    assert names(effects)[-1] == "arm:drain@16.05" and m.phase is rs.Phase.DRAINING and m.busy(1.05)
    assert names(drive(m, [(1.1, rs.PlayDone())]))[-1] == "finish:network_error"


def test_draining_ends_at_its_deadline() -> None:
    m = machine(reconnect_attempts=0)
    connect(m, 0.0)
    drive(m, [(1.0, audio(1))])
    lose(m, 1.05)
    assert names(drive(m, [(16.05, TimerFired(rs.DRAIN))]))[-1] == "finish:network_error"


def test_end_before_start_finishes_at_start() -> None:
    m = machine()
    drive(m, [(0.0, rs.EndRequested("early"))])
    assert names(drive(m, [(0.0, rs.Start())]))[-1] == "finish:early"


# ---------------------------------------------------------------------- playback
def test_a_short_first_chunk_waits_for_the_jitter_target_then_audio_flows() -> None:
    m = machine()
    connect(m, 0.0)
    assert names(drive(m, [(1.0, audio(1, seconds=0.02))])) == ["arm:jitter@1.06"]
    assert names(drive(m, [(1.06, TimerFired(rs.JITTER))])) == ["Play"]
    assert names(drive(m, [(1.07, audio(2, seconds=0.02))])) == ["Play"]  # flowing: at once


def test_an_interruption_stops_playback_and_drops_stale_audio() -> None:
    m = machine()
    connect(m, 0.0)
    plays = drive(m, [(1.0, audio(1)), (1.1, audio(1))])
    assert {e.generation for e in plays if isinstance(e, rs.Play)} == {0}
    effects = drive(m, [(1.2, message("interruption", "interruption_event", event_id=1))])
    assert names(effects) == ["StopPlayback", "interruption"] and m.generation == 1
    stale = drive(m, [(1.3, audio(1))])
    assert emitted(stale, "audio")[0]["dropped"] == "interrupted" and m.stale_audio_chunks == 1


# ---------------------------------------------------------------------- control messages and tools
def test_control_messages_wait_for_the_conversation_and_go_before_queued_audio() -> None:
    m = machine()
    drive(m, [(0.0, rs.Start()), (0.1, mic(0.2))])
    assert names(drive(m, [(0.1, rs.ControlRequest("contextual_update", "In the kitchen."))])) == [
        "contextual_update",
        "Queued",
    ]
    assert drive(m, [(0.1, rs.ControlRequest("user_activity"))]) == []  # not kept: the caller hears False
    effects = connect(m, 0.5)
    assert only(effects, ("send:contextual", "SendAudio")) == ["send:contextual_update", "SendAudio"]
    assert names(drive(m, [(1.0, rs.ControlRequest("feedback", like=True))])) == []  # nothing to rate yet
    drive(m, [(1.5, response("Hi", event_id=4))])
    assert names(drive(m, [(2.0, rs.ControlRequest("feedback", like=True))])) == ["feedback", "send:feedback"]


@pytest.mark.parametrize(
    ("connection_offset", "expects_response", "sent"),
    [(0, True, True), (0, False, False), (-1, True, False)],
    ids=["answered", "no-response-expected", "old-connection"],
)
def test_a_tool_result_goes_only_to_the_connection_that_asked(
    connection_offset: int, expects_response: bool, sent: bool
) -> None:
    m = machine()
    connect(m, 0.0)
    if connection_offset:
        lose(m, 1.0)
        drive(m, [(1.75, TimerFired(rs.BACKOFF))])
        connect(m, 2.0, cid="conv_2")
    call = ToolCall("c1", "get_battery", {})
    done = rs.ToolDone(m.connection + connection_offset, call, expects_response, '{"level": 87}', False, 0.25)
    effects = drive(m, [(3.0, done)])
    assert any(isinstance(e, rs.Send) for e in effects) is sent
    assert emitted(effects, "client_tool_result") == [
        {
            "tool_name": "get_battery",
            "tool_call_id": "c1",
            "is_error": False,
            "sent": sent,
            "duration_s": 0.25,
        }
    ]


@pytest.mark.parametrize("expects", [True, False])
def test_a_client_tool_call_is_answered_only_when_the_server_expects_a_response(expects: bool) -> None:
    """The call's `expects_response` travels with the tool run and decides whether its result is sent."""
    m = machine()
    connect(m, 0.0)
    frame = message(
        "client_tool_call",
        "client_tool_call",
        tool_name="get_battery",
        tool_call_id="c2",
        parameters={"unit": "percent"},
        expects_response=expects,
    )
    runs = [e for e in drive(m, [(1.0, frame)]) if isinstance(e, rs.RunTool)]
    assert [(r.call.id, r.call.name, r.expects_response) for r in runs] == [("c2", "get_battery", expects)]
    run = runs[0]
    done = rs.ToolDone(run.connection, run.call, run.expects_response, '{"level": 87}', False, 0.5)
    sent = [json.loads(e.text) for e in drive(m, [(1.5, done)]) if isinstance(e, rs.Send)]
    answer = {
        "type": "client_tool_result",
        "tool_call_id": "c2",
        "result": '{"level": 87}',
        "is_error": False,
    }
    assert sent == ([answer] if expects else [])


@pytest.mark.parametrize(("expects", "sent"), [(True, True), (False, False)])
def test_an_invalid_tool_call_is_answered_with_an_error(expects: bool, sent: bool) -> None:
    m = machine()
    connect(m, 0.0)
    frame = message(
        "client_tool_call",
        "client_tool_call",
        tool_name="t",
        tool_call_id="c9",
        parameters="x",
        expects_response=expects,
    )
    effects = drive(m, [(1.0, frame)])
    assert not any(isinstance(e, rs.RunTool) for e in effects)
    results = [json.loads(e.text) for e in effects if isinstance(e, rs.Send)]
    answer = {
        "type": "client_tool_result",
        "tool_call_id": "c9",
        "result": "error: invalid tool call: 'parameters' must be an object",
        "is_error": True,
    }
    assert results == ([answer] if sent else [])
    assert emitted(effects, "client_tool_result")[0]["sent"] is sent


def test_the_machine_handles_every_event_type() -> None:
    """Every local event and every parsed server event has a branch (mypy checks `assert_never`;
    this checks at run time that none raises in the phase where it can arrive)."""
    m = machine()
    connect(m, 0.0)
    server: list[el.ServerEvent] = [
        el.RepeatedMetadata("c"),
        el.Ping(1),
        el.StaleAudio(1, 10),
        el.UserTranscript("hi"),
        el.TentativeUserTranscript("h"),
        el.AgentResponse("yo"),
        el.AgentResponseCorrection("a", "b"),
        el.Interruption(1),
        el.ClientToolCall("t", "c", {}),
        el.InvalidToolCall("t", "c", "bad"),
        el.AgentToolResponse("skip_turn", "s", "system", False),
        el.VadScore(0.5),
        el.InternalTentativeAgentResponse("x"),
        el.InternalTurnProbability(0.5),
        el.AgentChatResponsePart("x", "delta"),
        el.AsrInitiationMetadata({"type": "x"}),
        el.McpToolCall({}),
        el.McpConnectionStatus({}),
        el.ServerError(1011, "boom"),
        el.Ignored("future"),
        el.MalformedFrame("bad", "x"),
        el.Audio(5, b"\x00\x00"),
    ]
    for event in server:
        m.handle(event, 1.0)
    assert emitted(
        m.handle(el.AsrInitiationMetadata({"type": "x", "t": 1}), 1.0), "asr_initiation_metadata"
    ) == [{"type_": "x", "t_": 1}]


def test_a_question_is_replayed_once_even_if_the_next_connection_drops_too() -> None:
    m = machine(reconnect_attempts=3)
    connect(m, 0.0)
    drive(m, [(2.0, mic(2.0)), (2.0, transcript("Hi?")), (2.0, rs.UtteranceClosed(utterance(1.0, 1.5)))])
    replays = []
    for n, t in enumerate((3.0, 6.0)):
        lose(m, t)
        drive(m, [(t + 2.0, TimerFired(rs.BACKOFF))])
        replays.append(len(emitted(connect(m, t + 2.0, cid=f"conv_{n + 2}"), "utterance_replayed")))
    assert replays == [1, 0]


# ---------------------------------------------------------------------- MCP approval policy
def mcp_call(state: str) -> str:
    payload = {
        "service_id": "svc_1",
        "tool_call_id": "mcp_7",
        "tool_name": "delete_files",
        "parameters": {},
        "timestamp": "2026-01-01T10:00:00Z",
        "state": state,
    }
    return message("mcp_tool_call", "mcp_tool_call", **payload)


@pytest.mark.parametrize(
    ("policy", "state", "answer"),
    [
        ("deny", "awaiting_approval", False),
        ("allow", "awaiting_approval", True),
        ("ask-never", "awaiting_approval", None),  # no answer: the platform's approval timeout decides
        ("allow", "loading", None),  # only a call awaiting approval is answered
        ("deny", "success", None),
    ],
)
def test_mcp_tool_calls_awaiting_approval_are_answered_by_the_policy(
    policy: str, state: str, answer: bool | None
) -> None:
    m = machine(mcp_approval=policy)
    connect(m, 0.0)
    effects = m.frame(mcp_call(state), 1.0)
    sent = [json.loads(e.text) for e in effects if isinstance(e, rs.Send)]
    if answer is None:
        assert sent == [] and emitted(effects, "mcp_tool_approval") == []
    else:
        assert sent == [{"type": "mcp_tool_approval_result", "tool_call_id": "mcp_7", "is_approved": answer}]
        assert emitted(effects, "mcp_tool_approval") == [
            {"tool_call_id": "mcp_7", "tool_name": "delete_files", "approved": answer}
        ]
    assert len(emitted(effects, "mcp_tool_call")) == 1
