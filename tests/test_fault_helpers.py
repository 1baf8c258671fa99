"""The fault-injection helpers behave as the fault matrix and the soak assume (no models)."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from appliance.errors import AudioDeviceError
from appliance.testing.faults import (
    FaultyMicrophone,
    FaultyStt,
    FaultyTts,
    InjectedFault,
    ScriptedInputBackend,
    at_rate,
    on_calls,
    on_text,
)
from appliance.testing.openai_server import (
    GARBAGE,
    RecordedRequest,
    Reply,
    ScriptedOpenAiServer,
    endless_reply,
    garbage_reply,
    text_reply,
)


def post(server: ScriptedOpenAiServer, question: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": question}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def contents(raw: bytes) -> str:
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            delta = json.loads(line[6:])["choices"][0]["delta"]
            out.append(delta.get("content") or "")
    return "".join(out)


def test_the_script_comes_first_then_the_responder_answers_by_content() -> None:
    def responder(request: RecordedRequest) -> Reply:
        return text_reply("Four.") if "plus" in request.last_user_text() else text_reply("Okay.")

    with ScriptedOpenAiServer([text_reply("First.")], responder=responder) as server:
        assert contents(post(server, "What is two plus two?").read()) == "First."
        assert contents(post(server, "What is two plus two?").read()) == "Four."
        assert contents(post(server, "Hello?").read()) == "Okay."
        assert [r.last_user_text() for r in server.chat_requests] == ["What is two plus two?"] * 2 + [
            "Hello?"
        ]


def test_garbage_is_sent_verbatim_and_an_endless_stream_stops_when_the_client_goes() -> None:
    with ScriptedOpenAiServer([garbage_reply(), endless_reply("la ", chunk_delay_s=0.001)]) as server:
        response = post(server, "x")
        assert response.status == 200 and response.read() == GARBAGE
        endless = post(server, "y")
        head = endless.read(20000)
        assert contents(head[: head.rindex(b"\n\n")]).startswith("la la la")  # complete events only
        endless.close()
        assert server.chat_requests[1].disconnected.wait(5)
        assert not server.chat_requests[1].completed.is_set()


def test_fault_triggers_are_deterministic() -> None:
    first, again = at_rate(0.3, seed=4), at_rate(0.3, seed=4)
    draws = [first(n, "") for n in range(1, 200)]
    assert draws == [again(n, "") for n in range(1, 200)]
    assert 0.2 < sum(draws) / len(draws) < 0.4
    assert [on_calls(2, 3)(n, "") for n in range(1, 5)] == [False, True, True, False]
    assert on_text("Capital")(1, "Paris is the capital.") and not on_text("capital")(1, "Four.")
    with pytest.raises(ValueError):
        at_rate(1.5, seed=0)


class Inner:
    def __init__(self) -> None:
        self.voices = {"joe": "spec"}

    def transcribe(self, audio: Any, language: str | None) -> tuple[str, str]:
        return "heard", "en"

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Any, int]:
        return np.zeros(10, dtype=np.int16), 16000


def test_faulty_models_fail_when_told_and_pass_the_rest_through() -> None:
    stt = FaultyStt(Inner(), on_calls(2))
    assert stt.transcribe(np.zeros(1, dtype=np.int16), "en") == ("heard", "en")
    with pytest.raises(InjectedFault, match="call 2"):
        stt.transcribe(np.zeros(1, dtype=np.int16), "en")
    tts = FaultyTts(Inner(), on_text("thunder"))
    assert tts.voices == {"joe": "spec"}  # the voice renderer reads the engine's voices
    assert tts.synthesize("Hello.", "joe", 1.0)[1] == 16000
    with pytest.raises(InjectedFault):
        tts.synthesize("Thunder!", "joe", 1.0)
    assert (stt.counter.calls, stt.counter.failures, tts.counter.failures) == (2, 1, 1)


class Blocks:
    sample_rate_hz = 16000
    dropped_blocks = 0

    async def frames(self) -> AsyncIterator[Any]:
        for _ in range(50):
            yield np.zeros(1280, dtype=np.int16)  # 80 ms

    async def close(self) -> None:
        return None


def test_faulty_microphone_raises_a_device_error_after_its_time() -> None:
    async def run() -> int:
        mic = FaultyMicrophone(Blocks(), fail_at_s=1.0)
        got = 0
        with pytest.raises(AudioDeviceError, match="injected microphone read error") as err:
            async for _ in mic.frames():
                got += 1
        assert err.value.code == "audio_device"
        return got

    assert asyncio.run(run()) == 13  # 13 × 80 ms ≥ 1 s, then the error


def test_the_scripted_device_microphone_is_gone_during_an_outage() -> None:
    backend = ScriptedInputBackend(np.zeros(16000, dtype=np.int16), outages=[0.0], outage_s=30.0)
    assert backend.lookup(None, "input").name == "scripted microphone"
    assert backend._outage_due(backend._now())  # the outage at 0 s starts now
    with pytest.raises(AudioDeviceError, match="unplugged"):
        backend.lookup(None, "input")
    with pytest.raises(AudioDeviceError):
        backend.lookup(None, "output")
