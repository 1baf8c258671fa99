"""The session's prompt evaluated ahead: the first time a local session listens (its first
message spoken, or none), an in-process LLM evaluates the session's prompt while the user speaks,
so the first turn pays only for its question. A stop cancels it like any LLM work; an LLM
without `prefill` (a remote one) is left alone.

Deterministic: fakes only, no wall-clock assertion beyond generous deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from appliance.core.conversation import ConversationSettings, Phase
from appliance.core.endpointing import UtteranceEnded
from appliance.ports import LlmOutput, Pcm16, TextDelta
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.testing.fakes import FixedClock, FixedStt, RecordingEvents, RecordingSpeaker, until

SCHEMA = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


class Tts:
    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        return np.zeros(160, dtype=np.int16), 16000


class Llm:
    """Records every request; `prefill` waits at `hold` (a long prompt evaluation)."""

    def __init__(self, hold: bool = False) -> None:
        self.log: list[str] = []
        self.prefills: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = []
        self.hold = hold
        self.prefill_cancelled = False
        self.requests: list[list[dict[str, Any]]] = []

    async def prefill(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
        self.prefills.append((messages, tools))
        self.log.append("prefill")
        try:
            if self.hold:
                await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.prefill_cancelled = True
            raise

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        self.log.append(f"chat:{messages[-1]['content']}")
        self.requests.append(messages)
        yield TextDelta("Sure.")


class Tools:
    async def run(self, call: Any) -> tuple[str, bool]:
        return "ok", False

    def expects_response(self, name: str) -> bool:
        return True


def session_with(llm: Any, settings: ConversationSettings, events: RecordingEvents) -> LocalAgentSession:
    clock = FixedClock()
    executor = ThreadPoolExecutor(1)
    deps = LocalAgentDeps(
        stt=FixedStt("What is on the menu?"), llm=llm, tts=Tts(), speaker=RecordingSpeaker(),
        events=events, clock=clock, timers=Timers(clock), stt_executor=executor, tts_executor=executor,
        voice="joe", tools=Tools(), conversation_id="local_test",
    )  # fmt: skip
    return LocalAgentSession(settings, deps)


def test_the_prompt_is_evaluated_once_when_the_session_first_listens() -> None:
    llm, events = Llm(), RecordingEvents()
    settings = ConversationSettings(
        system_prompt="You are Chef.",
        first_message="What shall we cook?",
        max_duration_s=None,
        tools=(SCHEMA,),
    )

    async def run() -> None:
        session = session_with(llm, settings, events)
        await session.start()
        await until(lambda: session.machine.phase is Phase.LISTENING, 10.0, "listening")
        await until(lambda: bool(llm.prefills), 5.0, "the prefill")
        await session.speech_started(0.0)
        await session.utterance(UtteranceEnded(0.0, 0.3, "silence", b"\1\0" * 1600))
        await until(lambda: bool(events.of("agent_response")) and not session.busy, 10.0, "the answer")
        await session.end("test")
        assert await asyncio.wait_for(session.closed(), 5) == "test"

    asyncio.run(run())
    [(messages, tools)] = llm.prefills  # once: listening again after the turn does not repeat it
    assert messages[0] == {"role": "system", "content": "You are Chef."}
    [request] = llm.requests
    assert request[:-1] == messages  # the prefix the turn sends: only its question is new
    assert request[-1] == {"role": "user", "content": "What is on the menu?"}
    assert tools == [SCHEMA]  # the prompt the turn renders (tool instructions included)
    assert llm.log == ["prefill", "chat:What is on the menu?"]
    assert not [e for e in events.items if "prefill" in str(e)]  # nothing emitted


def test_a_stop_during_the_prefill_cancels_it() -> None:
    llm, events = Llm(hold=True), RecordingEvents()
    settings = ConversationSettings(system_prompt="You are Chef.", max_duration_s=None)

    async def run() -> None:
        session = session_with(llm, settings, events)
        await session.start()
        await until(lambda: bool(llm.prefills), 5.0, "the prefill")
        await session.stop("stopped")
        assert await asyncio.wait_for(session.closed(), 2) == "stopped"

    asyncio.run(run())
    assert llm.prefill_cancelled
    assert not events.of("error")


def test_an_llm_without_prefill_is_only_asked_for_replies() -> None:
    class Remote(Llm):
        prefill = None  # type: ignore[assignment]

    llm, events = Remote(), RecordingEvents()

    async def run() -> None:
        session = session_with(llm, ConversationSettings(system_prompt="x", max_duration_s=None), events)
        await session.start()
        await until(lambda: session.machine.phase is Phase.LISTENING, 10.0, "listening")
        await session.utterance(UtteranceEnded(0.0, 0.3, "silence", b"\1\0" * 1600))
        await until(lambda: bool(events.of("agent_response")) and not session.busy, 10.0, "the answer")
        await session.end("test")
        await asyncio.wait_for(session.closed(), 5)

    asyncio.run(run())
    assert llm.log == ["chat:What is on the menu?"]
