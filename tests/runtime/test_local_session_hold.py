"""The local session holds the LLM from a reply's first chunk until that chunk is synthesized
(on 2 cores TTS sharing them with the LLM is about 2.5x slower), then releases it; with
`hold_llm_for_first_audio` off it never holds. Fakes record the order of what happened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from appliance.core.conversation import ConversationSettings, Phase
from appliance.core.endpointing import UtteranceEnded
from appliance.ports import LlmOutput, Pcm16, TextDelta
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.testing.fakes import FixedClock as Clock
from appliance.testing.fakes import FixedStt, RecordingEvents, RecordingSpeaker, until

REPLY = ["The capital ", "of France ", "is Paris, ", "a city on the Seine. ", "It is ", "lovely in spring."]


class Events(RecordingEvents):
    def audio(self) -> list[str]:
        return [e["text"] for e in self.of("audio")]


class Log:
    def __init__(self) -> None:
        self.items: list[str] = []


class HoldableLlm:
    """Like `LlamaCppLlm`: while held, the next token waits."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.go = asyncio.Event()
        self.go.set()

    def hold_generation(self, max_s: float = 4.0) -> None:
        self.log.items.append("hold")
        self.go.clear()

    def release_generation(self) -> None:
        self.log.items.append("release")
        self.go.set()

    async def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> AsyncIterator[LlmOutput]:
        for part in REPLY:
            self.log.items.append(f"token:{part.strip()}")
            yield TextDelta(part)
            await asyncio.wait_for(self.go.wait(), 5.0)


class Tts:
    def __init__(self, log: Log) -> None:
        self.log = log

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        self.log.items.append(f"synth:{text}")
        return np.zeros(1600, dtype=np.int16), 16000


def one_turn(hold: bool) -> list[str]:
    log = Log()
    events = Events()

    async def run() -> None:
        clock = Clock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=FixedStt("Tell me a story."),
            llm=HoldableLlm(log),
            tts=Tts(log),
            speaker=RecordingSpeaker(),
            events=events,
            clock=clock,
            timers=Timers(clock),
            stt_executor=executor,
            tts_executor=executor,
            voice="joe",
            hold_llm_for_first_audio=hold,
        )
        session = LocalAgentSession(ConversationSettings(system_prompt="x", max_duration_s=None), deps)
        try:
            await session.start()
            await session.speech_started(0.0)
            await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
            await until(
                lambda: (
                    bool(events.of("agent_response"))
                    and session.machine.phase is Phase.LISTENING
                    and not session.busy
                ),
                10.0,
                "the answer",
            )
            await session.end("test")
            assert await asyncio.wait_for(session.closed(), 5) == "test"
        finally:
            executor.shutdown()

    asyncio.run(run())
    return log.items


def test_the_llm_is_held_from_the_first_chunk_until_its_audio_is_synthesized() -> None:
    log = one_turn(hold=True)
    first_synth = next(i for i, item in enumerate(log) if item.startswith("synth:"))
    assert log.count("hold") == 1, log
    hold = log.index("hold")
    # held right after the token that completed the first chunk (cut at the comma)
    assert log[hold - 1] == "token:is Paris,", log
    release = log.index("release")
    assert hold < first_synth < release, log
    assert log[release + 1] == "token:a city on the Seine.", log  # the rest only after that
    assert log[first_synth] == "synth:The capital of France is Paris,", log


@pytest.mark.parametrize("hold", [False])
def test_no_hold_when_switched_off(hold: bool) -> None:
    log = one_turn(hold=hold)
    assert "hold" not in log and "release" not in log, log


class CountingStt:
    """Transcribes by audio length: 1600 samples "What is the capital", more "... of France?"."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        text = "What is the capital" if audio.size <= 1600 else "What is the capital of France?"
        self.log.items.append(f"stt:{text}")
        return text, "en"


def speculative_turn(resume: bool) -> tuple[list[str], Events, list[dict[str, Any]], Any]:
    """A pause at 0.1 s of audio; then either more speech (resumed, a longer utterance) or the
    end with exactly the paused audio."""
    log = Log()
    events = Events()
    history: list[dict[str, Any]] = []
    stats: list[Any] = []
    head = b"\1\0" * 1600
    whole = head + b"\2\0" * 3200

    async def run() -> None:
        clock = Clock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=CountingStt(log),
            llm=HoldableLlm(log),
            tts=Tts(log),
            speaker=RecordingSpeaker(),
            events=events,
            clock=clock,
            timers=Timers(clock),
            stt_executor=executor,
            tts_executor=executor,
            voice="joe",
        )
        session = LocalAgentSession(ConversationSettings(system_prompt="x", max_duration_s=None), deps)
        try:
            await session.start()
            await until(
                lambda: session.machine.phase is Phase.LISTENING and not session.busy, 10.0, "listening"
            )
            await session.speech_started(0.0)
            session.speech_paused(head)
            await until(
                lambda: "stt:What is the capital" in log.items, 10.0, "the speculation"
            )  # the speculation ran
            if resume:
                session.speech_resumed()
                await session.utterance(UtteranceEnded(0.0, 0.3, "silence", whole))
            else:
                await session.utterance(UtteranceEnded(0.0, 0.1, "silence", head))
            await until(lambda: bool(events.of("agent_response")) and not session.busy, 10.0, "the answer")
            history.extend(session.machine.history.messages())
            stats.append(session.speculation)
            await session.end("test")
            assert await asyncio.wait_for(session.closed(), 5) == "test"
        finally:
            executor.shutdown()

    asyncio.run(run())
    return log.items, events, history, stats[0]


def test_a_resumed_utterance_leaves_no_trace() -> None:
    log, events, history, stats = speculative_turn(resume=True)
    assert [e["user_transcript"] for e in events.of("user_transcript")] == ["What is the capital of France?"]
    users = [m["content"] for m in history if m["role"] == "user"]
    assert users == ["What is the capital of France?"]
    assert all("What is the capital" not in text or "France" in text for text in events.audio())
    assert log.count("stt:What is the capital") == 1 and log.count("stt:What is the capital of France?") == 1
    assert (stats.started, stats.used, stats.wasted) == (1, 0, 1)


def test_a_confirmed_pause_reuses_the_speculative_transcript() -> None:
    log, events, _history, stats = speculative_turn(resume=False)
    assert [e["user_transcript"] for e in events.of("user_transcript")] == ["What is the capital"]
    assert [item for item in log if item.startswith("stt:")] == ["stt:What is the capital"]  # STT ran once
    assert (stats.started, stats.used, stats.wasted) == (1, 1, 0)
