"""The real case of issue 9: the default SmolLM2, asked "Tell me a story." with the default
agent's prompt and `max_tokens: -1`, loops on one sentence. Greedy decoding makes the run
repeatable; the session must end the reply by itself (the device's bounds), close the
generation and go back to listening. STT and TTS are fakes (18 characters a second)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.core.conversation import Phase
from appliance.core.endpointing import UtteranceEnded
from appliance.runtime.local_agent import _model_file, conversation_settings, session_variables
from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
from appliance.runtime.timers import Timers
from appliance.testing.fakes import FixedClock, FixedStt, RecordingEvents, RecordingSpeaker, SilentTts

pytestmark = [pytest.mark.models, pytest.mark.slow]
STT = FixedStt("Tell me a story.")


def test_smollm2_telling_a_story_is_bounded(models_dir: Path) -> None:
    from appliance.adapters.llama_cpp_llm import LlamaCppLlm

    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    config = load_config(None)
    assert config.conversation_config.agent.prompt.max_tokens == -1  # the platform default
    llm = LlamaCppLlm(_model_file(config, config.appliance.local.llm.model, ".gguf"), n_ctx=2048)
    settings = conversation_settings(config, session_variables(config, "", "local_t", datetime.now(UTC)))
    events = RecordingEvents()

    async def run() -> None:
        clock = FixedClock()
        executor = ThreadPoolExecutor(1)
        deps = LocalAgentDeps(
            stt=STT, llm=llm, tts=SilentTts(18.0), speaker=RecordingSpeaker(), events=events, clock=clock,
            timers=Timers(clock), stt_executor=executor, tts_executor=executor, voice="joe",
            llm_options={"temperature": 0.0, "max_tokens": -1},
        )  # fmt: skip
        session = LocalAgentSession(settings, deps)
        try:
            await session.start()
            await session.utterance(UtteranceEnded(0.0, 1.0, "silence", b"\0\0" * 1600))
            async with asyncio.timeout(240):
                while not (events.of("agent_response") and session.machine.phase is Phase.LISTENING):
                    await asyncio.sleep(0.05)
            await session.end("test")
            await asyncio.wait_for(session.closed(), 10)
        finally:
            executor.shutdown()

    asyncio.run(run())
    [cut] = events.of("reply_truncated")
    assert cut["reason"] in ("repetition", "max_reply"), cut
    assert cut["spoken_seconds"] <= 45.0
    spoken = sum(e["duration_s"] for e in events.of("audio"))
    assert spoken <= 45.0
    [response] = events.of("agent_response")
    assert len(" ".join(response["agent_response"].split())) == cut["spoken_chars"]
