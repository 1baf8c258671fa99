"""The local session with a real HTTP LLM client against the scripted OpenAI-compatible server:
bounded replies (an endless repeated sentence, endless distinct text) and spoken LLM failures
(HTTP 500, a hang, garbage, half a reply then a dropped connection). STT and TTS are fakes:
the TTS makes 1/18 s of silence per character, the speaker plays instantly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from appliance.adapters.openai_llm import OpenAiCompatibleLlm
from appliance.core.conversation import LLM_FAILURE_MESSAGES, ConversationSettings, Phase
from appliance.core.endpointing import UtteranceEnded
from appliance.core.reply_guard import ReplyLimits
from appliance.ports import LlmOutput, TextDelta
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.testing.fakes import FixedClock, FixedStt, RecordingEvents, RecordingSpeaker, SilentTts
from appliance.testing.openai_server import (
    Reply,
    ScriptedOpenAiServer,
    endless_reply,
    error_reply,
    garbage_reply,
    half_reply,
    hang_reply,
    text_reply,
)

SORRY = LLM_FAILURE_MESSAGES["en"]
STT = FixedStt("Tell me a story.")
CHARS_PER_SECOND = 18.0
TTS = SilentTts(CHARS_PER_SECOND)
LOOP = "He had been a wanderer who had been blessed with a gift of seeing the world."
NOUNS = ["fox", "owl", "boat", "lamp", "tree", "bell", "road", "cup", "hill", "door", "kite"]
DISTINCT = [f"Step {i}: the {NOUNS[i % 11]} moves north. " for i in range(1, 400)]


class Events(RecordingEvents):
    def audio(self) -> list[str]:
        return [e["text"] for e in self.of("audio")]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def conversation(
    server: ScriptedOpenAiServer,
    turns: int = 1,
    *,
    limits: ReplyLimits | None = None,
    max_tokens: int = -1,
    llm_timeout_s: float = 5.0,
) -> tuple[Events, list[dict[str, Any]]]:
    """`turns` user turns, each answered (or apologised for) and back to listening before the
    next; then a graceful end. Returns the events and the LLM history at the end."""
    events = Events()
    history: list[dict[str, Any]] = []

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        llm = OpenAiCompatibleLlm(server.url, "scripted-model", None, timeout_s=llm_timeout_s)
        deps = LocalAgentDeps(
            stt=STT, llm=llm, tts=TTS, speaker=RecordingSpeaker(), events=events, clock=clock,
            timers=Timers(clock), stt_executor=executor, tts_executor=executor, voice="joe",
            llm_options={"temperature": 0.3, "max_tokens": max_tokens},
            reply_limits=limits or ReplyLimits(),
        )  # fmt: skip
        session = LocalAgentSession(ConversationSettings(system_prompt="x", max_duration_s=None), deps)

        def listening_after(turn: int) -> bool:
            return (
                len(events.of("user_transcript")) == turn
                and session.machine.phase is Phase.LISTENING
                and not session.busy
            )

        try:
            await session.start()
            for turn in range(1, turns + 1):
                await session.speech_started(0.0)
                await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
                await until(lambda turn=turn: listening_after(turn))  # type: ignore[misc]
            history.extend(session.machine.history.messages())
            await session.end("test")
            assert await asyncio.wait_for(session.closed(), 5) == "test"
        finally:
            await llm.aclose()
            executor.shutdown()

    asyncio.run(run())
    return events, history


def seconds(events: Events) -> float:
    return float(sum(e["duration_s"] for e in events.of("audio")))


def recoveries(events: Events) -> list[tuple[str, str]]:
    return [(e["code"], e["recovery"]) for e in events.of("error") if e.get("stage") == "llm"]


@pytest.fixture
def server() -> Any:
    with ScriptedOpenAiServer() as srv:
        yield srv


# ---------------------------------------------------------------------- bounded replies
def test_an_endless_repeated_sentence_ends_after_its_second_time(server: ScriptedOpenAiServer) -> None:
    """SmolLM2's "Tell me a story" loop: the same sentence forever, max_tokens -1."""
    server.add(endless_reply(*[w + " " for w in LOOP.split()]))
    events, history = conversation(server)
    [cut] = events.of("reply_truncated")
    assert cut["reason"] == "repetition" and cut["detail"] == LOOP
    assert cut["spoken_chars"] == len(LOOP) * 2 + 1
    assert events.audio() == [LOOP, LOOP]
    assert seconds(events) < 10
    [response] = events.of("agent_response")
    assert response["agent_response"] == f"{LOOP} {LOOP}"
    assert history[-1] == {"role": "assistant", "content": f"{LOOP} {LOOP}"}
    [request] = server.chat_requests
    assert request.disconnected.wait(5)  # the stream was closed: the server stops generating
    assert request.body["max_tokens"] == 400  # the device ceiling, since the platform says -1
    assert not events.of("error")


def test_endless_distinct_text_ends_at_the_speech_ceiling(server: ScriptedOpenAiServer) -> None:
    server.add(endless_reply(*DISTINCT))
    events, history = conversation(server, limits=ReplyLimits(max_seconds=10.0), max_tokens=120)
    [cut] = events.of("reply_truncated")
    assert cut["reason"] == "max_reply" and cut["detail"] == "10 s of speech"
    assert 8.0 < cut["spoken_seconds"] <= 10.0
    spoken = events.audio()
    assert spoken == [s.strip() for s in DISTINCT[: len(spoken)]]  # whole sentences, in order
    assert seconds(events) <= 10.0
    assert history[-1]["content"] == " ".join(spoken)
    [request] = server.chat_requests
    assert request.disconnected.wait(5)
    assert request.body["max_tokens"] == 120  # the platform's, lower than the device ceiling


def test_the_token_ceiling_ends_a_reply_too(server: ScriptedOpenAiServer) -> None:
    server.add(endless_reply(*DISTINCT))
    events, _ = conversation(server, limits=ReplyLimits(max_tokens=50))
    [cut] = events.of("reply_truncated")
    assert (cut["reason"], cut["detail"]) == ("max_reply", "50 tokens")
    assert server.chat_requests[0].body["max_tokens"] == 50


# ---------------------------------------------------------------------- spoken failures
ANSWER = "Paris is the capital of France."
DROPPED = "llm_unreachable|llm_bad_response"  # httpx sees a read error or a cut chunked body
FAILURES: list[tuple[str, list[Reply], list[str], list[tuple[str, str]]]] = [
    # (name, scripted replies, what the user hears, (error code(s), recovery) per failure)
    ("HTTP 500 then success", [error_reply(500), text_reply(ANSWER)], [ANSWER],
     [("llm_http_error", "retry")]),
    ("HTTP 500 twice", [error_reply(500), error_reply(500)], [SORRY],
     [("llm_http_error", "retry"), ("llm_http_error", "apology")]),
    ("HTTP 401: not retried", [error_reply(401)], [SORRY], [("llm_http_error", "apology")]),
    ("a hang twice", [hang_reply(), hang_reply()], [SORRY],
     [("llm_timeout", "retry"), ("llm_timeout", "apology")]),
    ("garbage then success", [garbage_reply(), text_reply(ANSWER)], [ANSWER],
     [("llm_bad_response", "retry")]),
    ("half a reply then a dropped connection",
     [half_reply("Once upon a time, ", "there was a fox. ", "The fox ", drop_after=3)],
     ["Once upon a time,", "there was a fox.", SORRY], [(DROPPED, "apology")]),
    ("dropped in the middle of the first sentence",
     [half_reply("Once upon a time, ", "there was", drop_after=2)],
     ["Once upon a time,", SORRY], [(DROPPED, "apology")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("replies", "heard", "errors"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_llm_failures_are_spoken_then_the_agent_listens(
    server: ScriptedOpenAiServer,
    replies: list[Reply],
    heard: list[str],
    errors: list[tuple[str, str]],
) -> None:
    server.add(*replies, text_reply("I am listening."))
    events, history = conversation(server, turns=2, llm_timeout_s=0.5)
    got = recoveries(events)
    assert [r for _, r in got] == [r for _, r in errors]
    for (code, _), (expected, _) in zip(got, errors, strict=True):
        assert code in expected.split("|")
    assert all(e["message"] for e in events.of("error"))
    assert events.audio() == [*heard, "I am listening."]  # the next turn is answered
    assert len(server.chat_requests) == len(replies) + 1
    spoken = " ".join(heard)
    responses = [e["agent_response"] for e in events.of("agent_response")]
    assert responses == [spoken, "I am listening."]
    assistant = [m["content"] for m in history if m["role"] == "assistant"]
    assert " ".join(assistant[:-1]) == spoken
    assert not events.of("session_ended")


# ---------------------------------------------------------------------- any backend
class LoopingLlm:
    """An in-process backend (like llama.cpp) that never stops: records its options and
    whether its stream was closed."""

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []
        self.closed = 0
        self.yielded = 0

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        self.options.append(dict(options))
        try:
            while True:
                for word in LOOP.split():
                    await asyncio.sleep(0)
                    self.yielded += 1
                    yield TextDelta(word + " ")
        finally:
            self.closed += 1


def test_an_in_process_backend_is_bounded_and_closed_the_same_way() -> None:
    llm, events = LoopingLlm(), Events()

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=STT, llm=llm, tts=TTS, speaker=RecordingSpeaker(), events=events, clock=clock,
            timers=Timers(clock), stt_executor=executor, tts_executor=executor, voice="joe",
            llm_options={"temperature": 0.0, "max_tokens": 5000},
        )  # fmt: skip
        session = LocalAgentSession(ConversationSettings(system_prompt="x", max_duration_s=None), deps)
        await session.start()
        await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
        await until(lambda: bool(events.of("agent_response")) and not session.busy)
        await session.end("test")
        await asyncio.wait_for(session.closed(), 5)
        executor.shutdown()

    asyncio.run(run())
    assert [e["reason"] for e in events.of("reply_truncated")] == ["repetition"]
    assert events.audio() == [LOOP, LOOP]
    assert llm.options == [{"temperature": 0.0, "max_tokens": 400}]
    assert llm.closed == 1 and llm.yielded == len(LOOP.split()) * 3
