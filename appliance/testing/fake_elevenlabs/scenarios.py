"""Scripted scenarios of the fake ElevenLabs server, following the documented event flow (§1.2).

Each scenario is `async def (conv: FakeConversation) -> None`, run once per client connection
after the client's `conversation_initiation_client_data` (pings run alongside). `conv.index`
tells the first connection from reconnections, so a scenario can fail once and then recover.

| name | what the server does |
|---|---|
| conversation | first message; each user turn → user_transcript, agent_response + audio |
| interrupt | replies in real time; user speech during a reply → interruption, correction, one stale chunk |
| tool | each user turn → client_tool_call, waits for client_tool_result, answers with it |
| end_call | first user turn → farewell, agent_tool_response end_call, close 1000 |
| drop | 1st connection: first message, transcript of the first turn, then the TCP connection vanishes |
| stall | 1st connection: first message, then silence forever (no frames, no pings) |
| malformed | malformed and unknown frames and every other documented event type, then `conversation` |
| error_close | an `error` event, then close with `close_code` |
| no_metadata | never sends `conversation_initiation_metadata` (pings only) |
| repeat_metadata | `conversation`, with the metadata sent again after the first user transcript |
| bad_tool_call | each user turn → a `client_tool_call` whose `parameters` is not an object |
| noisy | `flood` malformed frames and server text with newlines and escape sequences, then `conversation` |
| stream | continuous agent audio for `stream_s` seconds (benchmarks) |
| interrupt_stream | agent audio ahead of real time, interrupted after `interrupt_after_s` (benchmarks) |
"""

from __future__ import annotations

import asyncio
import random

from appliance.testing.fake_elevenlabs.conversation import FakeConversation, Scenario
from appliance.testing.fake_elevenlabs.hearing import UserTurn
from appliance.testing.fake_elevenlabs.voices import tone


def _pick(options: tuple[str, ...] | list[str], n: int, default: str) -> str:
    return options[n % len(options)] if options else default


def _heard(conv: FakeConversation, turn: UserTurn, n: int) -> str:
    if turn.text is not None:
        return turn.text
    return _pick(list(conv.opts.transcripts), n, f"I spoke for about {turn.speech_s:.1f} seconds.")


def _reply(conv: FakeConversation, n: int) -> str:
    return _pick(list(conv.opts.replies), n, "I heard you. This is the fake agent answering.")


async def _first_message(conv: FakeConversation, *, metadata: bool = True) -> None:
    if metadata:
        await conv.metadata()
    if conv.opts.first_message:
        await conv.say(conv.opts.first_message)


async def conversation(conv: FakeConversation, *, interruptible: bool = False, metadata: bool = True) -> None:
    await _first_message(conv, metadata=metadata)
    n = 0
    while (turn := await conv.next_turn()) is not None:
        event_id = conv.next_event_id()
        await conv.transcript(_heard(conv, turn, n), event_id)
        await conv.say(_reply(conv, n), event_id=event_id, interruptible=interruptible)
        n += 1


async def interrupt(conv: FakeConversation) -> None:
    await conversation(conv, interruptible=True)


async def tool(conv: FakeConversation) -> None:
    await _first_message(conv)
    n = 0
    while (turn := await conv.next_turn()) is not None:
        event_id = conv.next_event_id()
        await conv.transcript(_heard(conv, turn, n), event_id)
        result = await conv.tool_call(conv.opts.tool_name, dict(conv.opts.tool_parameters))
        text = "The tool did not answer." if result is None else f"The tool answered: {result.get('result')}"
        if result is not None and result.get("is_error"):
            text = "The tool failed."
        await conv.say(_pick(list(conv.opts.replies), n, text), event_id=event_id)
        n += 1


async def end_call(conv: FakeConversation) -> None:
    await _first_message(conv)
    turn = await conv.next_turn()
    if turn is None:
        return
    event_id = conv.next_event_id()
    await conv.transcript(_heard(conv, turn, 0), event_id)
    await conv.agent_tool_response("end_call")
    await conv.say(_reply(conv, 0) if conv.opts.replies else "Goodbye!", event_id=event_id)
    await asyncio.sleep(0.05)
    await conv.close(1000, "end_call")


async def drop(conv: FakeConversation) -> None:
    if conv.index > 0:
        await conversation(conv)
        return
    await _first_message(conv)
    turn = await conv.next_turn()
    if turn is None:
        return
    await conv.transcript(_heard(conv, turn, 0), conv.next_event_id())
    conv.drop()


async def stall(conv: FakeConversation) -> None:
    if conv.index > 0:
        await conversation(conv)
        return
    await _first_message(conv)
    conv.silent = True  # keeps reading, never writes again (no pings either)
    await conv.gone.wait()


async def malformed(conv: FakeConversation) -> None:
    await conv.metadata()
    for raw in (
        "this is not json",
        '{"no_type": true}',
        '["a", "list"]',
        '{"type": "audio", "audio_event": {"audio_base_64": "%%%not base64%%%", "event_id": 1}}',
        '{"type": "agent_response", "agent_response_event": {}}',
        '{"type": "ping"}',
        '{"type": "a_future_event_type", "future_event": {"x": 1}}',
    ):
        await conv.send_raw(raw)
    eid = conv.next_event_id()
    for message in (
        {"type": "vad_score", "vad_score_event": {"vad_score": 0.95}},
        {
            "type": "tentative_user_transcript",
            "tentative_user_transcription_event": {"user_transcript": "hel", "event_id": eid},
        },
        {
            "type": "internal_tentative_agent_response",
            "tentative_agent_response_internal_event": {"tentative_agent_response": "Hi th"},
        },
        {"type": "internal_turn_probability", "turn_probability_internal_event": {"turn_probability": 0.4}},
        {"type": "asr_initiation_metadata", "asr_initiation_metadata_event": {"model": "fake"}},
        {"type": "agent_chat_response_part", "text_response_part": {"text": "Hi", "type": "delta"}},
        {"type": "mcp_connection_status", "mcp_connection_status": {"integrations": []}},
        {
            "type": "mcp_tool_call",
            "mcp_tool_call": {
                "service_id": "s",
                "tool_call_id": "m1",
                "tool_name": "search",
                "parameters": {},
                "timestamp": "2025-10-01T00:00:00Z",
                "state": "loading",
            },
        },
    ):
        await conv.send(message)
    if conv.opts.first_message:
        await conv.say(conv.opts.first_message)
    n = 0
    while (turn := await conv.next_turn()) is not None:
        event_id = conv.next_event_id()
        await conv.transcript(_heard(conv, turn, n), event_id)
        await conv.say(_reply(conv, n), event_id=event_id)
        n += 1


async def error_close(conv: FakeConversation) -> None:
    await conv.metadata()
    code = conv.opts.close_code
    await conv.send(
        {
            "type": "error",
            "error_event": {"code": code, "error_type": "fake_error", "message": f"scripted close {code}"},
        }
    )
    await conv.close(code, "fake_error")


async def no_metadata(conv: FakeConversation) -> None:
    await conv.gone.wait()  # pings keep coming: the connection is alive, the handshake never ends


async def repeat_metadata(conv: FakeConversation) -> None:
    await _first_message(conv)
    n = 0
    while (turn := await conv.next_turn()) is not None:
        event_id = conv.next_event_id()
        await conv.transcript(_heard(conv, turn, n), event_id)
        if n == 0:
            await conv.metadata()  # the same connection, the same conversation: not a reconnect
        await conv.say(_reply(conv, n), event_id=event_id)
        n += 1


async def bad_tool_call(conv: FakeConversation) -> None:
    await _first_message(conv)
    n = 0
    while (turn := await conv.next_turn()) is not None:
        event_id = conv.next_event_id()
        await conv.transcript(_heard(conv, turn, n), event_id)
        result = await conv.tool_call(conv.opts.tool_name, "unit=percent")  # not an object
        text = "The tool failed." if result is not None and result.get("is_error") else "No answer."
        await conv.say(text, event_id=event_id)
        n += 1


FORGED = "boom\nERROR appliance.runtime forged line\r\x1b[2J\u2028end"


async def noisy(conv: FakeConversation) -> None:
    await conv.metadata()
    for i in range(conv.opts.flood):
        await conv.send_raw(f"not json {i}\n{FORGED}")
    await conv.send({"type": "error", "error_event": {"code": 1011, "message": FORGED}})
    await conv.send({"type": "mcp_connection_status", "mcp_connection_status": {"note": FORGED}})
    await conversation(conv, metadata=False)


async def stream(conv: FakeConversation) -> None:
    await conv.metadata()
    await asyncio.sleep(0.3)
    await conv.say("stream", audio=tone(conv.opts.stream_s), response=True)
    await asyncio.sleep(0.5)
    await conv.close(1000, "stream_done")


async def interrupt_stream(conv: FakeConversation) -> None:
    await conv.metadata()
    await asyncio.sleep(0.3)
    # a random phase within one chunk: users do not interrupt on chunk boundaries
    after = conv.opts.interrupt_after_s + random.random() * conv.opts.chunk_ms / 1000
    await conv.say("stream", audio=tone(conv.opts.stream_s), interrupt_after_s=after)
    await asyncio.sleep(1.0)
    await conv.close(1000, "stream_done")


SCENARIOS: dict[str, Scenario] = {
    "conversation": conversation,
    "interrupt": interrupt,
    "tool": tool,
    "end_call": end_call,
    "drop": drop,
    "stall": stall,
    "malformed": malformed,
    "error_close": error_close,
    "no_metadata": no_metadata,
    "repeat_metadata": repeat_metadata,
    "bad_tool_call": bad_tool_call,
    "noisy": noisy,
    "stream": stream,
    "interrupt_stream": interrupt_stream,
}


def scenario(name: str) -> Scenario:
    """The scenario called `name` (a clear error listing the known ones)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return SCENARIOS[name]
