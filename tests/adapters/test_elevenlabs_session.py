"""`ElevenLabsAgentSession` against the fake ElevenLabs server on 127.0.0.1 (real websockets).

A recording speaker stands in for the device (optionally playing in real time, so stop() can
cut it); microphone audio is silence and tone bursts, which the fake hears as user turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession, RemoteSettings
from appliance.adapters.elevenlabs.signed_url import SignedUrlProvider
from appliance.core.conversation import ToolCall
from appliance.core.elevenlabs_protocol import InitiationData
from appliance.core.endpointing import UtteranceEnded
from appliance.core.playout import Backoff
from appliance.logs import MASK
from appliance.runtime.clock import MonotonicClock
from appliance.testing.fake_elevenlabs import FakeElevenLabsServer, FakeOptions, tone, tone_voice
from appliance.testing.fakes import refused_port

RATE = 16000
BLOCK = 1280  # 80 ms microphone blocks


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run


@dataclass
class Play:
    t: float
    samples: int
    rate: int
    completed: bool | None = None


class RecordingSpeaker:
    """Records every play(); with `realtime`, plays take their duration and stop() cuts them."""

    def __init__(self, realtime: bool = False, block_s: float = 0.02) -> None:
        self.realtime = realtime
        self.block_s = block_s
        self.plays: list[Play] = []
        self.stops: list[float] = []
        self._generation = 0
        self._busy = asyncio.Lock() if realtime else None

    @property
    def playing(self) -> bool:
        return bool(self._busy and self._busy.locked())

    async def play(self, audio: np.ndarray, sample_rate_hz: int) -> bool:
        record = Play(time.monotonic(), int(audio.size), sample_rate_hz)
        self.plays.append(record)
        generation = self._generation
        if self._busy is None:
            record.completed = True
            return True
        async with self._busy:
            remaining = audio.size / sample_rate_hz
            while remaining > 0:
                if generation != self._generation:
                    record.completed = False
                    return False
                await asyncio.sleep(min(self.block_s, remaining))
                remaining -= self.block_s
            record.completed = generation == self._generation
            return record.completed

    def stop(self) -> None:
        self.stops.append(time.monotonic())
        self._generation += 1

    async def close(self) -> None:
        return None

    def seconds(self) -> float:
        return sum(p.samples / p.rate for p in self.plays)


@dataclass
class Events:
    items: list[dict[str, Any]] = field(default_factory=list)

    def emit(self, type: str, **fields: Any) -> None:
        self.items.append({"type": type, "at": time.monotonic(), **fields})

    def types(self) -> list[str]:
        return [e["type"] for e in self.items if e["type"] not in ("ping", "audio")]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == kind]


class FakeTools:
    def __init__(
        self, result: str = '{"level": 87}', error: bool = False, delay_s: float = 0.0, raises: bool = False
    ) -> None:
        self.calls: list[ToolCall] = []
        self.result, self.error, self.delay_s, self.raises = result, error, delay_s, raises

    async def run(self, call: ToolCall) -> tuple[str, bool]:
        self.calls.append(call)
        await asyncio.sleep(self.delay_s)
        if self.raises:
            raise RuntimeError("the lamp is unplugged")
        return self.result, self.error


FAST = RemoteSettings(
    agent_id="agent_fake",
    reconnect_attempts=2,
    backoff=Backoff(base_s=0.02, max_s=0.05),
    stall_timeout_s=5.0,
    first_message_wait_s=0.2,
    reply_wait_s=2.0,
    audio_gap_s=0.15,
    end_timeout_s=5.0,
)


def speech(seconds: float = 1.0) -> np.ndarray:
    return tone(seconds, 300.0, 0.3)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


async def feed(session: ElevenLabsAgentSession, audio: np.ndarray, *, pace: float = 0.25) -> None:
    """Push audio in 80 ms blocks, at `pace` × real time (0 = as fast as possible)."""
    for i in range(0, audio.size, BLOCK):
        session.push_audio(audio[i : i + BLOCK])
        await asyncio.sleep(BLOCK / RATE * pace)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    server: FakeElevenLabsServer,
    *,
    settings: RemoteSettings = FAST,
    speaker: RecordingSpeaker | None = None,
    tools: Any = None,
    url_provider: Any = None,
    initiation: InitiationData | None = None,
    alert: Callable[[], Any] | None = None,
) -> AsyncIterator[tuple[ElevenLabsAgentSession, Events, RecordingSpeaker]]:
    events, spk = Events(), speaker or RecordingSpeaker()
    session = ElevenLabsAgentSession(
        replace(settings, base_url=server.url),
        initiation or InitiationData(dynamic_variables={"user_name": "Thor"}),
        speaker=spk,
        events=events,
        stopwatch=MonotonicClock(),
        tools=tools,
        url_provider=url_provider,
        rng=lambda: 0.5,
        alert=alert,
    )
    await session.start()
    try:
        yield session, events, spk
    finally:
        await session.end("test_done")
        async with asyncio.timeout(10):
            await session.closed()


def fake(**kw: Any) -> FakeElevenLabsServer:
    kw.setdefault("ping_interval_s", 0.2)
    return FakeElevenLabsServer(FakeOptions(**kw))


# ---------------------------------------------------------------------- the happy path
@aio
async def test_a_conversation_streams_both_ways_and_reports_every_event() -> None:
    with fake(
        scenario="conversation", replies=["Paris is the capital."], transcripts=["Capital of France?"]
    ) as srv:
        async with running(srv) as (session, events, spk):
            await until(lambda: len(events.of("agent_response")) == 1)
            await feed(session, np.concatenate([silence(0.3), speech(1.0), silence(0.8)]))
            await until(lambda: len(events.of("agent_response")) == 2)
            await until(lambda: not session.busy)
            await asyncio.sleep(0.5)  # a few pings
        record = srv.records[0]
    assert events.types() == [
        "conversation_initiation_metadata",
        "agent_response",
        "user_transcript",
        "agent_response",
    ]
    meta = events.of("conversation_initiation_metadata")[0]
    assert meta["mode"] == "remote" and meta["agent_output_audio_format"] == "pcm_16000"
    assert [e["agent_response"] for e in events.of("agent_response")] == [
        "Hello! How can I help you today?",
        "Paris is the capital.",
    ]
    assert [e["user_transcript"] for e in events.of("user_transcript")] == ["Capital of France?"]
    audio = events.of("audio")
    assert audio and all(set(e) == {"type", "at", "event_id", "duration_s", "sample_rate_hz"} for e in audio)
    # every sample the server sent reached the speaker, at the negotiated rate
    expected = (
        tone_voice("Hello! How can I help you today?").size + tone_voice("Paris is the capital.").size
    ) / RATE
    assert spk.seconds() == pytest.approx(expected, abs=0.002)
    assert {p.rate for p in spk.plays} == {16000}
    # the server got the initiation first, 100 ms audio chunks, and a pong for every ping
    assert record.initiation is not None and record.initiation["dynamic_variables"] == {"user_name": "Thor"}
    assert record.initiation["source_info"]["source"] == "unknown"
    assert record.audio_chunks >= 18 and {b for _, b in record.audio_received_at} == {3200}
    assert record.pongs and len(record.pongs) >= len(record.pong_delays_ms) >= 2
    assert sorted(record.pong_delays_ms)[len(record.pong_delays_ms) // 2] < 50  # at once (loopback)
    assert record.close_code == 1000


@aio
async def test_audio_pushed_before_the_conversation_is_ready_is_sent_after_it() -> None:
    with fake(scenario="conversation", first_message="") as srv:
        events, spk = Events(), RecordingSpeaker()
        session = ElevenLabsAgentSession(
            replace(FAST, base_url=srv.url),
            InitiationData(),
            speaker=spk,
            events=events,
            stopwatch=MonotonicClock(),
        )
        assert session.busy  # not connected yet: fast headless runs hold their input
        for i in range(0, 8000, BLOCK):  # 0.5 s before start()
            session.push_audio(silence(0.5)[i : i + BLOCK])
        await session.start()
        await until(lambda: srv.records and srv.records[0].audio_bytes >= 16000 - 3200)
        await session.end("done")
        assert await session.closed() == "done"


@pytest.mark.parametrize(
    ("output_format", "input_format", "chunk_bytes"),
    [("pcm_44100", "ulaw_8000", 800), ("ulaw_8000", "pcm_8000", 1600), ("pcm_24000", "pcm_48000", 9600)],
)
@aio
async def test_audio_formats_are_negotiated(output_format: str, input_format: str, chunk_bytes: int) -> None:
    with fake(scenario="conversation", output_format=output_format, input_format=input_format) as srv:
        async with running(srv) as (session, events, spk):
            await until(lambda: len(events.of("agent_response")) == 1)
            await feed(session, np.concatenate([silence(0.2), speech(1.0), silence(0.8)]), pace=0.1)
            # the fake hears the turn in the negotiated input format
            await until(lambda: len(events.of("user_transcript")) == 1)
            await until(lambda: len(events.of("agent_response")) == 2 and not session.busy)
        record = srv.records[0]
    rate = int(output_format.split("_")[1])
    assert {p.rate for p in spk.plays} == {rate}
    expected = (
        tone_voice("Hello! How can I help you today?").size
        + tone_voice("I heard you. This is the fake agent answering.").size
    ) / RATE
    assert spk.seconds() == pytest.approx(expected, abs=0.01)
    assert {b for _, b in record.audio_received_at} == {chunk_bytes}
    assert record.turns and record.turns[0] == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------------- tools
@pytest.mark.parametrize(
    ("tools", "result", "is_error"),
    [
        (FakeTools(), '{"level": 87}', False),
        (FakeTools(raises=True), "error: RuntimeError: the lamp is unplugged", True),
        (FakeTools(delay_s=5.0), "error: the tool 'get_battery' did not answer in time", True),
        (None, "error: no device tool 'get_battery'", True),
    ],
    ids=["ok", "raises", "timeout", "no-runner"],
)
@aio
async def test_a_client_tool_call_is_answered(tools: FakeTools | None, result: str, is_error: bool) -> None:
    settings = replace(FAST, tool_timeout_s=0.5)
    with fake(scenario="tool", first_message="") as srv:
        async with running(srv, settings=settings, tools=tools) as (session, events, _):
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            await until(lambda: len(events.of("agent_response")) == 1)
        record = srv.records[0]
    (answer,) = record.tool_results
    assert answer["result"] == result and answer["is_error"] is is_error
    call = events.of("client_tool_call")[0]
    assert call["tool_name"] == "get_battery" and call["parameters"] == {"unit": "percent"}
    assert answer["tool_call_id"] == call["tool_call_id"]
    done = events.of("client_tool_result")[0]
    assert done["is_error"] is is_error and done["sent"] is True
    if isinstance(tools, FakeTools) and not tools.raises and not tools.delay_s:
        assert tools.calls[0].arguments == {"unit": "percent"} and tools.calls[0].id == call["tool_call_id"]
        assert "87" in events.of("agent_response")[0]["agent_response"]


# ---------------------------------------------------------------------- interruption
@aio
async def test_an_interruption_stops_playback_within_a_block_and_drops_stale_audio() -> None:
    long_reply = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    spk = RecordingSpeaker(realtime=True)
    with fake(
        scenario="interrupt", first_message="", replies=[long_reply, "Okay."], pace=1.0, ahead_s=0.3
    ) as srv:
        async with running(srv, speaker=spk) as (session, events, _):
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.6)]), pace=0.0)
            await until(lambda: len(events.of("agent_response")) == 1)
            await asyncio.sleep(1.0)  # the agent is talking, in real time
            await feed(session, speech(0.5), pace=1.0)  # the user talks over it
            await until(lambda: events.of("interruption"), 3.0)
            await feed(session, silence(0.8), pace=0.0)
            await until(lambda: len(events.of("agent_response")) == 2, 5.0)
    interruption = events.of("interruption")[0]
    assert interruption["event_id"] == events.of("agent_response")[0]["event_id"]
    correction = events.of("agent_response_correction")[0]
    assert correction["original_agent_response"] == long_reply
    assert long_reply.startswith(correction["corrected_agent_response"])
    # stop() came with the interruption (not one audio block later)...
    assert spk.stops and abs(spk.stops[0] - interruption["at"]) < 0.02
    # ...the play in progress was cut short, and the stale chunk after it never played
    stale = [e for e in events.of("audio") if e.get("dropped") == "interrupted"]
    assert len(stale) == 1 and stale[0]["event_id"] == interruption["event_id"]
    assert any(p.completed is False for p in spk.plays)
    heard_before = [p for p in spk.plays if p.t <= spk.stops[0]]
    assert all(p.t <= spk.stops[0] or p.t >= events.of("agent_response")[1]["at"] - 0.01 for p in spk.plays)
    assert sum(p.samples for p in heard_before) < tone_voice(long_reply).size


@aio
async def test_stop_silences_now_and_closes() -> None:
    spk = RecordingSpeaker(realtime=True)
    with fake(
        scenario="conversation", first_message="A long first message to be cut short", pace=1.0, ahead_s=0.5
    ) as srv:
        async with running(srv, speaker=spk) as (session, _events, _):
            await until(lambda: spk.plays, 3.0)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await session.stop("stopped")
            assert await session.closed() == "stopped"
            assert time.monotonic() - started < 2.0  # a stop completes in under 2 s
    assert spk.stops and any(p.completed is False for p in spk.plays)


# ---------------------------------------------------------------------- ending
@aio
async def test_end_call_finishes_playback_then_ends_the_session() -> None:
    with fake(scenario="end_call", first_message="", replies=["Goodbye, see you soon!"]) as srv:
        async with running(srv) as (session, events, spk):
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            async with asyncio.timeout(5):
                reason = await session.closed()
    assert reason == "end_call"
    tool = events.of("agent_tool_response")[0]
    assert (tool["tool_name"], tool["tool_type"], tool["is_error"]) == ("end_call", "system", False)
    assert spk.seconds() == pytest.approx(tone_voice("Goodbye, see you soon!").size / RATE, abs=0.002)


@pytest.mark.parametrize(
    ("code", "reason", "connections"),
    [(1008, "remote_rejected", 1), (1002, "remote_error", 1), (1011, "network_error", 3)],
)
@aio
async def test_close_codes_end_or_retry(code: int, reason: str, connections: int) -> None:
    with fake(scenario="error_close", close_code=code) as srv:
        async with running(srv) as (session, events, _):
            async with asyncio.timeout(5):
                assert await session.closed() == reason
        assert len(srv.records) == connections
    remote_errors = [e for e in events.of("error") if e.get("error_type") == "fake_error"]
    assert remote_errors and remote_errors[0]["close_code"] == code
    assert len(events.of("reconnecting")) == connections - 1


@aio
async def test_malformed_and_unknown_frames_are_reported_and_the_session_goes_on() -> None:
    with fake(scenario="malformed", first_message="Hi.") as srv:
        async with running(srv) as (session, events, _):
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            await until(lambda: len(events.of("agent_response")) == 2)
    assert len(events.of("malformed_frame")) == 6  # the unknown type is ignored, not malformed
    for kind in (
        "vad_score",
        "tentative_user_transcript",
        "internal_tentative_agent_response",
        "internal_turn_probability",
        "asr_initiation_metadata",
        "agent_chat_response_part",
        "mcp_connection_status",
        "mcp_tool_call",
    ):
        assert events.of(kind), kind
    assert "a_future_event_type" not in events.types()
    assert events.of("vad_score")[0]["vad_score"] == 0.95


# ---------------------------------------------------------------------- network failures
@aio
async def test_an_abrupt_drop_reconnects_and_the_conversation_continues() -> None:
    alerts: list[float] = []

    async def alert() -> None:
        alerts.append(time.monotonic())

    with fake(scenario="drop", transcripts=["What is the time?"], replies=["It is noon."]) as srv:
        async with running(srv, alert=alert) as (session, events, _):
            await until(lambda: len(events.of("agent_response")) == 1)
            question = speech(0.8)
            await feed(session, np.concatenate([silence(0.2), question, silence(0.8)]), pace=0.1)
            # the device's endpointer closed the turn (what the appliance loop forwards)
            await session.utterance(UtteranceEnded(0.2, 1.0, "silence", question.astype("<i2").tobytes()))
            await until(lambda: events.of("reconnected"))
            # nobody repeats the question: the session asks the new conversation again
            await until(lambda: "It is noon." in [e["agent_response"] for e in events.of("agent_response")])
        first, second = srv.records
    t = events.types()
    assert t.index("error") < t.index("reconnecting") < t.index("reconnected")
    error = events.of("error")[0]
    assert error["code"] == "remote_connection_lost" and "close_code" not in error
    assert events.of("reconnecting")[0] == {**events.of("reconnecting")[0], "attempt": 1, "attempts": 2}
    assert len(alerts) == 1  # the user hears the error chime once
    assert first.close_code == 1006  # no close frame: the TCP connection just vanished
    # the new conversation is told what was said before
    update = next(m for m in second.received if m.get("type") == "contextual_update")
    assert "What is the time?" in update["text"] and "Hello! How can I help you today?" in update["text"]
    assert second.turns == [pytest.approx(0.8, abs=0.1)]  # the replayed question
    assert events.of("utterance_replayed")[0]["duration_s"] == pytest.approx(0.8)
    said = [(e.role, e.text) for e in session.transcript()]
    assert ("user", "What is the time?") in said and ("agent", "It is noon.") in said


@aio
async def test_a_stalled_server_is_detected_and_replaced() -> None:
    settings = replace(FAST, stall_timeout_s=0.6)
    with fake(scenario="stall") as srv:
        async with running(srv, settings=settings) as (session, events, _):
            started = time.monotonic()
            await until(lambda: events.of("reconnected"), 3.0)
            assert time.monotonic() - started < 2.0
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            await until(lambda: events.of("user_transcript"))
    error = events.of("error")[0]
    assert error["code"] == "remote_connection_lost" and "stalled" in error["message"]


@aio
async def test_past_the_retry_budget_the_session_ends_with_network_error() -> None:
    events, spk = Events(), RecordingSpeaker()
    with refused_port() as port:
        settings = replace(FAST, base_url=f"ws://127.0.0.1:{port}", reconnect_attempts=2)
        clock = MonotonicClock()
        session = ElevenLabsAgentSession(
            settings, InitiationData(), speaker=spk, events=events, stopwatch=clock, rng=lambda: 0.0
        )
        started = time.monotonic()
        await session.start()
        async with asyncio.timeout(5):
            assert await session.closed() == "network_error"
    assert time.monotonic() - started < 2.0  # never stuck
    assert not session.busy
    assert [e["attempt"] for e in events.of("reconnecting")] == [1, 2]
    assert events.of("error")[-1]["code"] == "network_error"
    assert "after 2 reconnect attempt(s)" in events.of("error")[-1]["message"]


# ---------------------------------------------------------------------- private agents
@aio
async def test_a_fresh_signed_url_for_every_connection_and_the_key_never_leaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk_test_0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    with fake(scenario="drop", api_key=key, agent_id="agent_private") as srv:
        provider = SignedUrlProvider(srv.url, "agent_private", key)
        settings = replace(FAST, agent_id="agent_private")
        async with running(srv, settings=settings, url_provider=provider) as (session, events, _):
            await until(lambda: len(events.of("agent_response")) == 1)
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            await until(lambda: events.of("reconnected"))
        first, second = srv.records
        requests = srv.signed_url_requests
    assert provider.requests == len(requests) == 2
    assert all(r["xi-api-key"] == key for r in requests)
    signatures = [first.query["conversation_signature"], second.query["conversation_signature"]]
    assert signatures[0] != signatures[1]  # fresh, used verbatim
    # the appliance's own log lines (third-party DEBUG output goes through the redacting handler
    # of `setup_logging`, checked end to end in tests/e2e/test_remote_agent.py)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("appliance"))
    everything = json.dumps(events.items, default=str) + ours
    for secret in (key, *signatures):
        assert secret not in everything
    from appliance.logs import redact

    assert redact(f"x {signatures[0]} y") == f"x {MASK} y"


@aio
async def test_a_refused_api_key_ends_the_session_without_retrying() -> None:
    with fake(scenario="conversation", api_key="sk_right_key_123") as srv:
        provider = SignedUrlProvider(srv.url, "agent_fake", "sk_wrong_key_456")
        async with running(srv, url_provider=provider) as (session, events, _):
            async with asyncio.timeout(5):
                assert await session.closed() == "remote_rejected"
    assert provider.requests == 1 and not srv.records
    assert events.of("error")[0]["code"] == "remote_rejected"
    assert "API key was refused (HTTP 401)" in events.of("error")[0]["message"]


@aio
async def test_a_private_agent_without_a_signed_url_is_refused() -> None:
    with fake(scenario="conversation", api_key="sk_right_key_123") as srv:
        async with running(srv) as (session, events, _):
            async with asyncio.timeout(5):
                assert await session.closed() == "remote_rejected"
    assert "HTTP 403" in events.of("error")[0]["message"]


# ---------------------------------------------------------------------- client messages, busy
@aio
async def test_client_messages_reach_the_server() -> None:
    with fake(scenario="conversation", first_message="Hi.", replies=["You typed it."]) as srv:
        async with running(srv) as (session, events, _):
            await until(lambda: len(events.of("agent_response")) == 1)
            assert await session.send_contextual_update("The user is in the kitchen.")
            assert await session.send_user_activity()
            assert await session.send_feedback(True)
            assert not await session.send_feedback(False)  # once per response
            assert await session.send_user_message("Turn on the lights")
            assert session.busy  # waiting for the reply to the typed message
            await until(lambda: len(events.of("agent_response")) == 2)
        record = srv.records[0]
    sent = [m for m in record.received if m["type"] != "pong"][1:]
    assert sent == [
        {"type": "contextual_update", "text": "The user is in the kitchen."},
        {"type": "user_activity"},
        {"type": "feedback", "score": "like", "event_id": events.of("agent_response")[0]["event_id"]},
        {"type": "user_message", "text": "Turn on the lights"},
    ]
    assert events.of("agent_response")[1]["agent_response"] == "You typed it."


@aio
async def test_busy_holds_for_the_first_message_and_for_the_reply() -> None:
    with fake(scenario="conversation", pace=0.0) as srv:
        async with running(srv) as (session, events, _):
            assert session.busy
            await until(lambda: events.of("agent_response"))
            assert session.busy  # audio just arrived
            await until(lambda: not session.busy, 2.0)
            await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b""))
            assert session.busy and session.awaiting_reply  # waiting for the reply (fast runs pause input)
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.0)
            await until(lambda: len(events.of("agent_response")) == 2)
            assert not session.awaiting_reply
            await until(lambda: not session.busy, 2.0)


# ---------------------------------------------------------------------- shelf safety: every wait ends
def private(**kw: Any) -> FakeElevenLabsServer:
    return fake(api_key="sk_shelf_key_0123", agent_id="agent_fake", **kw)


@aio
async def test_a_trickling_signed_url_endpoint_fails_within_the_overall_deadline() -> None:
    # one byte every 0.2 s: each read succeeds, so only an overall deadline ends the request
    with private(signed_url_fault="trickle", trickle_interval_s=0.2) as srv:
        provider = SignedUrlProvider(srv.url, "agent_fake", "sk_shelf_key_0123", timeout_s=0.5)
        started = time.monotonic()
        async with running(srv, settings=replace(FAST, reconnect_attempts=0), url_provider=provider) as (
            session,
            events,
            _,
        ):
            async with asyncio.timeout(5):
                assert await session.closed() == "network_error"
    assert time.monotonic() - started < 2.0
    assert events.of("error")[0]["code"] == "remote_signed_url_timeout"
    assert "within 0.5 s" in events.of("error")[0]["message"]


@pytest.mark.parametrize("state", ["signed_url", "handshake", "metadata"])
@pytest.mark.parametrize("how", ["end", "stop"])
@aio
async def test_end_and_stop_cancel_every_connecting_state_at_once(state: str, how: str) -> None:
    key = "sk_shelf_key_0123"
    server = {
        "signed_url": lambda: private(signed_url_fault="trickle", trickle_interval_s=0.2),
        "handshake": lambda: fake(handshake_delay_s=30.0),
        "metadata": lambda: fake(scenario="no_metadata"),
    }[state]()
    settings = replace(FAST, open_timeout_s=30.0, metadata_timeout_s=30.0, reply_wait_s=30.0)
    with server as srv:
        provider = (
            SignedUrlProvider(srv.url, "agent_fake", key, timeout_s=30.0) if state == "signed_url" else None
        )
        events, spk = Events(), RecordingSpeaker()
        session = ElevenLabsAgentSession(
            replace(settings, base_url=srv.url),
            InitiationData(),
            speaker=spk,
            events=events,
            stopwatch=MonotonicClock(),
            url_provider=provider,
        )
        await session.start()
        if state == "metadata":
            await until(lambda: srv.records and srv.records[0].initiation is not None)
        else:
            await asyncio.sleep(0.4)  # the request or the upgrade is in flight
        # the user's turn ended while connecting: a reply is awaited, which must not delay the end
        await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b""))
        started = time.monotonic()
        await (session.end("stopped") if how == "end" else session.stop("stopped"))
        async with asyncio.timeout(5):
            assert await session.closed() == "stopped"
        assert time.monotonic() - started < 2.0  # a stop completes in under 2 s
        assert not session.busy
    assert not events.of("error")


@aio
async def test_no_metadata_in_time_is_a_protocol_error_and_the_session_is_not_held_busy() -> None:
    settings = replace(FAST, metadata_timeout_s=0.8, connect_hold_s=0.2)
    alerts: list[float] = []

    async def alert() -> None:
        alerts.append(time.monotonic())

    with fake(scenario="no_metadata") as srv:
        async with running(srv, settings=settings, alert=alert) as (session, events, spk):
            await until(lambda: srv.records and srv.records[0].initiation is not None)
            await asyncio.sleep(0.4)
            # still waiting for the metadata: not ready, but no longer holding the device busy
            assert not events.of("conversation_initiation_metadata") and not session.busy
            async with asyncio.timeout(5):
                assert await session.closed() == "remote_error"
    from appliance.core.device import ERROR_REASONS

    assert "remote_error" in ERROR_REASONS  # the device plays the error chime, then listens again
    (error,) = events.of("error")
    assert error["code"] == "remote_protocol_error"
    assert "no conversation_initiation_metadata within 0.8 s" in error["message"]
    assert len(srv.records) == 1 and not events.of("reconnecting") and not alerts  # not retried
    assert not spk.plays


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("agent_output_audio_format", "mp3_44100"),
        ("agent_output_audio_format", "pcm_99999"),
        ("user_input_audio_format", "mp3_44100"),
    ],
)
@aio
async def test_an_unsupported_audio_format_is_an_error_and_no_audio_is_played(
    field_name: str, value: str
) -> None:
    with fake(scenario="conversation", metadata_fields={field_name: value}) as srv:
        started = time.monotonic()
        async with running(srv) as (session, events, spk):
            async with asyncio.timeout(5):
                assert await session.closed() == "remote_error"
    assert time.monotonic() - started < 3.0  # at once, not at the metadata deadline
    error = next(e for e in events.of("error"))
    assert error["code"] == "remote_protocol_error"
    assert value in error["message"] and field_name in error["message"]
    assert "pcm_16000" in error["message"] and "ulaw_8000" in error["message"]  # the supported ones
    assert not spk.plays  # the first message's bytes were never played in a guessed format
    assert not events.of("conversation_initiation_metadata") and not events.of("reconnecting")


@aio
async def test_a_repeated_metadata_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with fake(scenario="repeat_metadata", transcripts=["What time is it?"], replies=["Noon."]) as srv:
        async with running(srv) as (session, events, _):
            await until(lambda: len(events.of("agent_response")) == 1)
            question = speech(0.8)
            await session.utterance(UtteranceEnded(0.0, 0.8, "silence", question.astype("<i2").tobytes()))
            await feed(session, np.concatenate([silence(0.2), question, silence(0.8)]), pace=0.1)
            await until(lambda: len(events.of("agent_response")) == 2)
            await asyncio.sleep(0.3)
        record = srv.records[0]
    assert len(srv.records) == 1 and srv.records[0].sent_types.count("conversation_initiation_metadata") == 2
    assert len(events.of("conversation_initiation_metadata")) == 1
    assert not events.of("reconnected") and not events.of("utterance_replayed")
    assert record.turns == [pytest.approx(0.8, abs=0.1)]  # the question was not sent again
    assert [m["type"] for m in record.received].count("contextual_update") == 0
    warnings = [r for r in caplog.records if "again on the same connection" in r.getMessage()]
    assert len(warnings) == 1


@aio
async def test_a_tool_call_whose_parameters_are_not_an_object_gets_an_error_result() -> None:
    tools = FakeTools()
    with fake(scenario="bad_tool_call", first_message="") as srv:
        async with running(srv, tools=tools) as (session, events, _):
            await feed(session, np.concatenate([silence(0.2), speech(0.8), silence(0.8)]), pace=0.1)
            await until(lambda: len(events.of("agent_response")) == 1)
        record = srv.records[0]
    (answer,) = record.tool_results
    assert answer["is_error"] is True and "'parameters' must be an object" in answer["result"]
    assert answer["tool_call_id"] == events.of("client_tool_call")[0]["tool_call_id"]
    assert not tools.calls  # never run with made-up arguments
    assert events.of("client_tool_result")[0]["is_error"] is True
    assert events.of("agent_response")[0]["agent_response"] == "The tool failed."


@aio
async def test_server_text_cannot_forge_log_lines_and_warnings_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance")
    with fake(scenario="noisy", flood=300, first_message="Hi.") as srv:
        async with running(srv) as (_session, events, _):
            await until(lambda: events.of("agent_response"))
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("appliance")]
    for line in ours:
        assert not any(c in line for c in "\n\r\x1b\u2028"), line
    assert any("forged line\\r\\x1b[2J\\u2028end" in line for line in ours)  # escaped, still readable
    assert len(events.of("malformed_frame")) == 300
    malformed = [line for line in ours if "malformed frame" in line or "more malformed_frame" in line]
    assert 1 <= len(malformed) <= 3  # one line per 10 s interval, then the count at the end

    def count(line: str) -> int:
        import re

        found = re.search(r"(\d+) more", line)
        return (int(found.group(1)) if found else 0) + (0 if line.startswith(tuple("0123456789")) else 1)

    assert sum(count(line) for line in malformed) == 300


@aio
async def test_a_ws_signed_url_for_a_wss_base_url_is_refused() -> None:
    with fake(scenario="conversation") as srv:
        calls: list[str] = []

        async def provider() -> str:
            calls.append("x")
            return f"{srv.url}/v1/convai/conversation?agent_id=agent_fake&token=downgraded123"

        events, spk = Events(), RecordingSpeaker()
        session = ElevenLabsAgentSession(
            replace(FAST, base_url="wss://api.elevenlabs.io"),
            InitiationData(),
            speaker=spk,
            events=events,
            stopwatch=MonotonicClock(),
            url_provider=provider,
        )
        await session.start()
        async with asyncio.timeout(5):
            assert await session.closed() == "remote_error"
        assert not srv.records and calls == ["x"]  # never connected, never retried
    (error,) = events.of("error")
    assert error["code"] == "remote_insecure_url" and "wss://" in error["message"]


@contextlib.asynccontextmanager
async def not_tls() -> AsyncIterator[tuple[str, list[int]]]:
    """A server that answers a TLS ClientHello with plain HTTP: every TLS handshake fails."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(Exception):
            await writer.drain()
            await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"wss://127.0.0.1:{port}", connections
    finally:
        server.close()


@pytest.mark.parametrize("where", ["websocket", "signed_url"])
@aio
async def test_a_tls_failure_is_classified_and_not_retried(where: str) -> None:
    async with not_tls() as (base_url, connections):
        provider = (
            SignedUrlProvider(base_url, "agent_fake", "sk_tls_key_0123") if where == "signed_url" else None
        )
        events, spk = Events(), RecordingSpeaker()
        session = ElevenLabsAgentSession(
            replace(FAST, base_url=base_url, reconnect_attempts=3),
            InitiationData(),
            speaker=spk,
            events=events,
            stopwatch=MonotonicClock(),
            url_provider=provider,
        )
        await session.start()
        async with asyncio.timeout(5):
            assert await session.closed() == "network_error"
    (error,) = events.of("error")
    assert error["code"] == "remote_tls_failed" and "TLS handshake" in error["message"]
    assert not events.of("reconnecting") and len(connections) == 1


@pytest.mark.parametrize(
    ("fault", "code", "reason", "requests"),
    [
        ("not_json", "remote_signed_url_not_json", "remote_error", 1),
        ("no_signed_url", "remote_signed_url_missing", "remote_error", 1),
        ("http_404", "remote_signed_url_rejected", "remote_error", 1),
        ("http_500", "remote_signed_url_server_error", "network_error", 3),
    ],
)
@aio
async def test_signed_url_failures_are_classified_by_cause(
    fault: str, code: str, reason: str, requests: int
) -> None:
    with private(signed_url_fault=fault) as srv:
        provider = SignedUrlProvider(srv.url, "agent_fake", "sk_shelf_key_0123")
        async with running(srv, url_provider=provider) as (session, events, _):
            async with asyncio.timeout(5):
                assert await session.closed() == reason
        assert not srv.records
    assert events.of("error")[0]["code"] == code
    assert provider.requests == requests
