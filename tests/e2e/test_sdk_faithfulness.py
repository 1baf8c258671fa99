"""The fake ElevenLabs server is faithful: the official `elevenlabs` Python SDK's `Conversation`
(`ElevenLabs(base_url="http://127.0.0.1:PORT")`) talks to it and sees exactly the events the fake
sent, as the appliance's own session does for the same scenario."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from elevenlabs.client import ElevenLabs  # the official SDK (dev extra)
from elevenlabs.conversational_ai.conversation import (
    AudioInterface,
    ClientTools,
    Conversation,
    ConversationInitiationData,
)

from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession, RemoteSettings
from appliance.core.elevenlabs_protocol import InitiationData
from appliance.runtime.clock import MonotonicClock
from appliance.testing.fake_elevenlabs import (
    ConnectionRecord,
    FakeElevenLabsServer,
    FakeOptions,
    tone,
    tone_voice,
)
from appliance.testing.fakes import wait_until

RATE = 16000
KEY = "sk_sdk_test_0123456789"
MIC = np.concatenate([np.zeros(4000, np.int16), tone(1.0, 300.0), np.zeros(20000, np.int16)])
"""0.25 s silence, a 1 s 'question', 1.25 s silence: 10 chunks of 250 ms (the SDK's size)."""


class QueueAudioInterface(AudioInterface):
    """The SDK's audio contract: 250 ms 16 kHz chunks in, whatever it outputs recorded."""

    def __init__(self, mic: np.ndarray, pace: float = 0.25) -> None:
        self.mic, self.pace = mic, pace
        self.output_chunks: list[bytes] = []
        self.interrupts = 0
        self._stop = threading.Event()

    def start(self, input_callback: Any) -> None:
        def run() -> None:
            for i in range(0, self.mic.size, 4000):
                if self._stop.is_set():
                    return
                input_callback(self.mic[i : i + 4000].astype("<i2").tobytes())
                time.sleep(0.25 * self.pace)

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def output(self, audio: bytes) -> None:
        self.output_chunks.append(audio)

    def interrupt(self) -> None:
        self.interrupts += 1


@dataclass
class SdkRun:
    responses: list[str] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    corrections: list[tuple[str, str]] = field(default_factory=list)
    latencies: list[int] = field(default_factory=list)
    audio: QueueAudioInterface = field(default_factory=lambda: QueueAudioInterface(MIC))
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: str | None = None


def run_sdk(server: FakeElevenLabsServer, *, wait_for: Any, end: bool = True) -> SdkRun:
    run = SdkRun()
    client = ElevenLabs(api_key=KEY, base_url=server.http_url)
    tools = ClientTools()

    def get_battery(parameters: dict[str, Any]) -> str:
        run.tool_calls.append(parameters)
        return '{"level": 87}'

    tools.register("get_battery", get_battery)
    conversation = Conversation(
        client,
        "agent_sdk",
        requires_auth=server.options.api_key is not None,
        audio_interface=run.audio,
        client_tools=tools,
        config=ConversationInitiationData(dynamic_variables={"user_name": "Thor"}),
        callback_agent_response=run.responses.append,
        callback_user_transcript=run.transcripts.append,
        callback_agent_response_correction=lambda a, b: run.corrections.append((a, b)),
        callback_latency_measurement=run.latencies.append,
    )
    conversation.start_session()
    if end:
        wait_until(lambda: wait_for(run), 10.0, "the SDK conversation")
        conversation.end_session()
    run.conversation_id = conversation.wait_for_session_end()
    return run


def all_audio_out(server: FakeElevenLabsServer, index: int, chunks: list[bytes]) -> bool:
    """Every audio byte the fake sent on connection `index` has reached the client's output."""
    if len(server.records) <= index:
        return False
    return sum(map(len, chunks)) == sum(n for _, n in server.records[index].audio_sent)


@dataclass
class OurRun:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    interrupts: int = 0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for t, f in self.events if t == kind]


class _Speaker:
    def __init__(self, run: OurRun) -> None:
        self.run = run
        self.playing = False

    async def play(self, audio: np.ndarray, sample_rate_hz: int) -> bool:
        self.run.audio.append(audio.astype("<i2").tobytes())
        return True

    def stop(self) -> None:
        self.run.interrupts += 1

    async def close(self) -> None:
        return None


class _Tools:
    async def run(self, call: Any) -> tuple[str, bool]:
        return '{"level": 87}', False


def run_ours(server: FakeElevenLabsServer, *, wait_for: Any) -> OurRun:
    from appliance.adapters.elevenlabs.signed_url import SignedUrlProvider

    run = OurRun()

    class Sink:
        def emit(self, type: str, **fields: Any) -> None:
            run.events.append((type, fields))

    async def main() -> None:
        settings = RemoteSettings(agent_id="agent_sdk", base_url=server.url, chunk_ms=250)
        provider = SignedUrlProvider(server.url, "agent_sdk", KEY) if server.options.api_key else None
        session = ElevenLabsAgentSession(
            settings,
            InitiationData(dynamic_variables={"user_name": "Thor"}),
            speaker=_Speaker(run),
            events=Sink(),
            stopwatch=MonotonicClock(),
            tools=_Tools(),
            url_provider=provider,
        )
        await session.start()
        for i in range(0, MIC.size, 4000):
            session.push_audio(MIC[i : i + 4000])
            await asyncio.sleep(0.25 * 0.25)
        async with asyncio.timeout(10):
            while not wait_for(run):
                await asyncio.sleep(0.02)
        await session.end("done")
        await session.closed()

    asyncio.run(main())
    return run


def sent(record: ConnectionRecord, kind: str) -> list[dict[str, Any]]:
    return [m for m in record.sent if m["type"] == kind]


def test_the_sdk_and_the_appliance_see_what_the_fake_sends_tools_and_signed_urls() -> None:
    options = FakeOptions(
        scenario="tool",
        api_key=KEY,
        agent_id="agent_sdk",
        transcripts=["How is the battery?"],
        ping_interval_s=0.2,
    )
    with FakeElevenLabsServer(options) as server:
        sdk = run_sdk(
            server,
            wait_for=lambda r: (
                len(r.responses) >= 2
                and len(r.latencies) >= 2
                and all_audio_out(server, 0, r.audio.output_chunks)
            ),
        )
        ours = run_ours(
            server, wait_for=lambda r: len(r.of("agent_response")) >= 2 and all_audio_out(server, 1, r.audio)
        )
        sdk_record, our_record = server.records
    for record in (sdk_record, our_record):
        assert record.query["conversation_signature"]  # both came through a signed URL
        assert record.initiation is not None and record.initiation["dynamic_variables"] == {
            "user_name": "Thor"
        }
        (result,) = record.tool_results
        assert result["result"] == '{"level": 87}' and result["is_error"] is False
        assert record.turns == [pytest.approx(1.0, abs=0.05)]  # both streamed the question
    assert sdk_record.query["source"] == "python_sdk"
    expected_responses = [
        m["agent_response_event"]["agent_response"] for m in sent(sdk_record, "agent_response")
    ]
    assert (
        sdk.responses
        == expected_responses
        == ["Hello! How can I help you today?", 'The tool answered: {"level": 87}']
    )
    assert sdk.transcripts == ["How is the battery?"]
    assert sdk.tool_calls[0] == {
        "tool_call_id": sent(sdk_record, "client_tool_call")[0]["client_tool_call"]["tool_call_id"],
        "unit": "percent",
    }
    assert sdk.latencies and set(sdk.latencies) == {50}  # ping_ms
    assert sdk.conversation_id == sdk_record.conversation_id  # wait_for_session_end
    assert b"".join(sdk.audio.output_chunks) != b""
    assert len(b"".join(sdk.audio.output_chunks)) == sum(n for _, n in sdk_record.audio_sent)
    # the appliance's session saw the same, event for event
    assert [e["agent_response"] for e in ours.of("agent_response")] == expected_responses
    assert [e["user_transcript"] for e in ours.of("user_transcript")] == sdk.transcripts
    assert b"".join(ours.audio) == b"".join(sdk.audio.output_chunks)  # the same samples


def stale_chunks(record: ConnectionRecord) -> list[int]:
    """Bytes of each audio chunk the fake sent after its interruption for the interrupted reply
    (event_id <= the cut): a client drops them."""
    if "agent_response_correction" not in record.sent_types:
        return []
    cut = sent(record, "interruption")[0]["interruption_event"]["event_id"]
    audio_before = record.sent_types[: record.sent_types.index("agent_response_correction")].count("audio")
    return [n for eid, n in record.audio_sent[audio_before:] if eid <= cut]


def test_the_sdk_sees_interruptions_and_drops_the_stale_audio_as_the_appliance_does() -> None:
    story = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    options = FakeOptions(
        scenario="interrupt", first_message="", replies=[story, "Okay."], pace=1.0, ahead_s=0.2
    )
    mic = np.concatenate([MIC, np.zeros(12000, np.int16), tone(0.75, 300.0), np.zeros(20000, np.int16)])
    with FakeElevenLabsServer(options) as server:
        run = SdkRun(audio=QueueAudioInterface(mic, pace=1.0))
        client = ElevenLabs(base_url=server.http_url)
        conversation = Conversation(
            client,
            "agent_sdk",
            requires_auth=False,
            audio_interface=run.audio,
            callback_agent_response=run.responses.append,
            callback_agent_response_correction=lambda a, b: run.corrections.append((a, b)),
        )
        conversation.start_session()
        okay_bytes = 2 * len(tone_voice("Okay."))  # the fake's default voice, 16-bit PCM

        def okay_played() -> bool:
            # the second reply's audio all sent and played: ended while it still streams, the SDK
            # stops reading and the comparison below misses its last chunks
            if len(run.responses) < 2 or not server.records or not server.records[0].audio_sent:
                return False
            record = server.records[0]
            last = record.audio_sent[-1][0]
            if sum(n for eid, n in record.audio_sent if eid == last) < okay_bytes:
                return False
            played = len(b"".join(run.audio.output_chunks))
            return played >= sum(n for _, n in record.audio_sent) - sum(stale_chunks(record))

        wait_until(okay_played, 15.0, "two agent responses through the SDK, the second one's audio played")
        conversation.end_session()
        conversation.wait_for_session_end()
        (record,) = server.records
    assert len(sent(record, "interruption")) == 1
    (correction,) = sent(record, "agent_response_correction")
    event = correction["agent_response_correction_event"]
    assert run.corrections == [(event["original_agent_response"], event["corrected_agent_response"])]
    assert run.audio.interrupts == 1
    assert run.responses == [story, "Okay."]
    # the SDK dropped the chunk the fake sent after the interruption (event_id <= the cut)
    stale = stale_chunks(record)
    assert len(stale) == 1
    assert len(b"".join(run.audio.output_chunks)) == sum(n for _, n in record.audio_sent) - stale[0]
    # ... and so does the appliance's session (same rule): see test_elevenlabs_session.py


def test_the_sdk_session_ends_when_the_agent_calls_end_call() -> None:
    options = FakeOptions(scenario="end_call", first_message="", replies=["Goodbye!"])
    with FakeElevenLabsServer(options) as server:
        started = time.monotonic()
        run = run_sdk(server, wait_for=lambda r: True, end=False)  # no end_session(): the server ends it
        (record,) = server.records
    assert time.monotonic() - started < 12
    assert run.responses == ["Goodbye!"] and run.conversation_id == record.conversation_id
    assert sent(record, "agent_tool_response")[0]["agent_tool_response"]["tool_name"] == "end_call"
    assert len(b"".join(run.audio.output_chunks)) == sum(n for _, n in record.audio_sent)


def test_both_clients_send_the_documented_client_messages() -> None:
    with FakeElevenLabsServer(replace(FakeOptions(scenario="conversation"), ping_interval_s=0.2)) as server:
        # both replies whole before the end: an SDK ended while audio still streams stops reading,
        # its websocket's receive buffer fills and its close waits out the 10 s close timeout
        run_sdk(
            server,
            wait_for=lambda r: len(r.responses) >= 2 and all_audio_out(server, 0, r.audio.output_chunks),
        )
        run_ours(
            server, wait_for=lambda r: len(r.of("agent_response")) >= 2 and all_audio_out(server, 1, r.audio)
        )
        sdk_record, our_record = server.records
    for record in (sdk_record, our_record):
        kinds = record.types()
        assert kinds[0] == "conversation_initiation_client_data"
        assert "pong" in kinds and record.pongs
        assert {b for _, b in record.audio_received_at} == {8000}  # 250 ms at 16 kHz (chunk_ms=250)
        init = record.initiation or {}
        assert {
            "conversation_config_override",
            "custom_llm_extra_body",
            "dynamic_variables",
            "source_info",
        } <= set(init)
