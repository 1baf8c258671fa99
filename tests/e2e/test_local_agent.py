"""The offline agent end to end: real wake word, VAD, whisper, piper; an LLM that is either the
real SmolLM2 or a scripted OpenAI-compatible server (to make timing and tool calls exact)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml

import appliance.adapters.wav_audio
import appliance.runtime.app
from appliance.config import load_config, load_config_text
from appliance.core.conversation import OutputKind
from appliance.runtime.app import Preloaded, RunOptions, preload, run_async
from appliance.runtime.speech_output import SpeechOutput
from appliance.testing.openai_server import Reply, ScriptedOpenAiServer, text_reply, tool_call_reply
from appliance.testing.speech import concat, read_wav, silence, write_wav

RATE = 16000
Events = list[dict[str, Any]]


def words(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", " ", text.lower())


def hear(whisper: Any, path: Path) -> str:
    from appliance.adapters.resample import resample

    audio, rate = read_wav(path)
    text, _ = whisper.transcribe(resample(audio, rate, RATE), "en")
    return str(text)


@pytest.fixture(scope="module")
def preloaded(models_dir: Path) -> Preloaded:
    """Wake word, VAD, whisper, piper and SmolLM2 loaded once for the module."""
    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    return preload(load_config(None))


def scripted_config(url: str, **turn: Any) -> dict[str, Any]:
    return {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You are a test agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": url, "model_id": "scripted-model"},
                    "temperature": 0.3,
                    "max_tokens": 120,
                    "built_in_tools": {"end_call": {}, "skip_turn": {}},
                },
            },
            "turn": {"turn_timeout": 7, **turn},
        },
        "platform_settings": {"overrides": {"custom_llm_extra_body": True}},
        "appliance": {"local": {"llm": {"backend": "openai"}}, "custom_llm_extra_body": {"room": "kitchen"}},
    }


@pytest.fixture
def scripted() -> Iterator[ScriptedOpenAiServer]:
    with ScriptedOpenAiServer() as server:
        yield server


@dataclasses.dataclass
class Cue:
    """The rest of a real-time input, placed on the agent's speech instead of at a fixed offset:
    after the input's first part, silence until the agent has been heard for `heard_s` seconds
    (the speech it started playing, by its `audio` events; 0: its first audio), then `then`. On
    a loaded machine the agent starts speaking later (transcription, LLM and TTS take longer),
    which moved a fixed offset against its words. If the agent is not heard that long within
    `give_up_s`, `then` follows anyway (the test's checks then say what happened)."""

    heard_s: float
    then: np.ndarray
    give_up_s: float = 30.0
    at: float | None = None
    """The appliance clock's time when `then` began (for the test's checks and messages)."""


class CuedMicrophone:
    """The input as a real-time microphone (80 ms blocks paced by the wall clock, as
    `WavFileMicrophone(realtime=True)`): `first`, then the cue's silence and `then`."""

    sample_rate_hz = RATE
    duration_s = None  # not known in advance: the run's output is not padded to it

    def __init__(self, first: np.ndarray, cue: Cue) -> None:
        self.dropped_blocks = 0
        self.clock: Any = None  # the run's clock (set once `open_audio` made it)
        self.spoken: list[tuple[float, float]] = []  # (start, duration) of the agent's audio
        self._first = first
        self._cue = cue
        self._closed = False

    def heard(self) -> float:
        """Seconds of the agent's speech played so far (not the chimes: no `audio` events)."""
        now = self.clock.now()
        return sum(min(max(now - start, 0.0), duration) for start, duration in self.spoken)

    async def frames(self) -> AsyncIterator[np.ndarray]:
        block = RATE * 80 // 1000
        loop = asyncio.get_running_loop()
        start: float | None = None
        sent = 0

        async def paced(piece: np.ndarray) -> np.ndarray:
            nonlocal start, sent
            start = loop.time() if start is None else start
            sent += piece.size
            delay = start + sent / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            return piece

        for i in range(0, self._first.size, block):
            if self._closed:
                return
            yield await paced(self._first[i : i + block])
        give_up = loop.time() + self._cue.give_up_s
        while not self._closed and loop.time() < give_up:
            if self.spoken and self.heard() >= self._cue.heard_s:
                break
            yield await paced(np.zeros(block, dtype=np.int16))
        self._cue.at = self.clock.now()
        for i in range(0, self._cue.then.size, block):
            if self._closed:
                return
            yield await paced(self._cue.then[i : i + block])

    async def close(self) -> None:
        self._closed = True


def run_inprocess(
    preloaded: Preloaded,
    tmp_path: Path,
    config: dict[str, Any],
    audio: np.ndarray,
    *,
    realtime: bool,
    echo: float | None = None,
    echo_ir: Path | None = None,
    cue: Cue | None = None,
) -> tuple[Events, Path]:
    """The real appliance loop in this process, with the shared models (LLM per config). With
    `cue` (real time only), `audio` is the input's first part and the cue places the rest."""
    from appliance.adapters.openai_llm import OpenAiCompatibleLlm

    cfg = load_config_text(yaml.safe_dump(config, allow_unicode=True), "test.yaml")
    models = preloaded
    custom = cfg.conversation_config.agent.prompt.custom_llm
    if cfg.llm_backend == "openai" and custom is not None:
        llm = OpenAiCompatibleLlm(custom.url, custom.model_id, None)
        models = dataclasses.replace(
            preloaded, local_models=dataclasses.replace(preloaded.local_models, llm=llm, concurrent_llm=True)
        )
    wav = write_wav(tmp_path / "in.wav", audio)
    out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
    options = RunOptions(
        input=str(wav),
        output=str(out),
        events=str(events_path),
        realtime=realtime,
        simulate_echo=echo,
        simulate_echo_ir=str(echo_ir) if echo_ir else None,
    )
    if cue is None:
        asyncio.run(run_async(cfg, options, models))
    else:
        assert realtime, "a cue places input on the agent's speech in real time"
        mic = CuedMicrophone(audio, cue)
        open_audio = appliance.runtime.app.open_audio

        def open_cued(config: Any, options: RunOptions) -> Any:
            with mock.patch.object(appliance.adapters.wav_audio, "WavFileMicrophone", lambda *_, **__: mic):
                wiring = open_audio(config, options)
            mic.clock, emit = wiring.clock, wiring.events.emit

            def noting(type: str, **fields: Any) -> None:
                if type == "audio":  # emitted as the segment starts playing
                    mic.spoken.append((wiring.clock.now(), fields["duration_s"]))
                emit(type, **fields)

            wiring.events.emit = noting  # type: ignore[method-assign]
            return wiring

        with mock.patch.object(appliance.runtime.app, "open_audio", open_cued):
            asyncio.run(run_async(cfg, options, models))
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    if cue is not None:
        print(f"the cued input began at {cue.at} s")
    return events, out


def types(events: Events) -> list[str]:
    return [e["type"] for e in events]


def timeline(events: Events, last: int = 30) -> str:
    """The run's last events in one line each (time, type, their words): what a failed real-time
    check prints, so that a rare failure in CI says what the appliance heard and did."""
    lines = []
    for e in events[-last:]:
        said = next((v for k, v in e.items() if k not in ("type", "t") and isinstance(v, str)), "")
        lines.append(f"{e.get('t', 0.0):8.2f} {e['type']} {said[:60]}")
    return "\n".join(lines)


def audio_texts(events: Events) -> list[str]:
    return [e["text"] for e in events if e["type"] == "audio"]


# ---------------------------------------------------------------------- the real conversation
def test_cli_realtime_conversation_with_smollm2_is_heard_back(
    tmp_path: Path, models_dir: Path, whisper: Any, say: Callable[[str], np.ndarray]
) -> None:
    """README's promise: wake word + question in, a spoken answer out (real SmolLM2)."""
    config = yaml.safe_load(Path("appliance/assets/default-config.yaml").read_text())
    config["conversation_config"]["agent"]["prompt"]["temperature"] = 0.0
    config["conversation_config"]["turn"]["soft_timeout_config"]["timeout_seconds"] = -1
    # without Piper's sampling noise: what whisper hears of the answer cannot vary between runs
    config["appliance"]["local"]["voices"]["joe"].update(noise_scale=0.0, noise_w_scale=0.0)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    wav = write_wav(
        tmp_path / "in.wav",
        concat(
            silence(1.0),
            say("Hey Jarvis!"),
            silence(0.5),
            say("What is the capital of France?"),
            silence(4.0),  # the answer may run past the end of the input: the appliance finishes it
        ),
    )
    out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(cfg_path), "--input", str(wav),
         "--output", str(out), "--events", str(events_path), "--realtime"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    t = types(events)
    for name in ("user_transcript", "agent_response", "audio", "turn_metrics"):
        assert name in t, t
    transcript = next(e for e in events if e["type"] == "user_transcript")["user_transcript"]
    assert "capital" in words(transcript)
    response = next(e for e in events if e["type"] == "agent_response")["agent_response"]
    assert "paris" in words(response), response
    metrics = next(e for e in events if e["type"] == "turn_metrics")
    for key in ("stt_s", "llm_first_token_s", "tts_first_audio_s", "end_of_speech_to_first_audio_s"):
        assert metrics[key] is not None and metrics[key] >= 0
    # out.wav is on the input's timeline (at least as long; longer if the answer ran past the
    # end of the input: the appliance finishes what it is saying) and the answer is heard in it
    played, rate = read_wav(out)
    assert played.size / rate >= (wav.stat().st_size - 44) / 2 / RATE - 0.1
    assert "paris" in words(hear(whisper, out))


# ---------------------------------------------------------------------- soft timeout
def soft_timeout_run(
    preloaded: Preloaded,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
    reply: Reply,
) -> Events:
    scripted.add(reply)
    config = scripted_config(
        scripted.url, soft_timeout_config={"timeout_seconds": 2.5, "message": "Hmm, let me see."}
    )
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("What is the meaning of life?"), silence(3.5)
    )
    events, _ = run_inprocess(preloaded, tmp_path, config, audio, realtime=True)
    return events


def test_soft_timeout_filler_when_the_llm_is_slow(
    preloaded: Preloaded,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # When the filler is decided: the soft timeout fired and the session queued the filler for
    # speech (on the appliance clock, as the events' "t"). Its audio event comes only once Piper
    # has synthesized it, as long after as a loaded machine makes synthesis take.
    queued: list[tuple[str, float]] = []
    enqueue = SpeechOutput.enqueue

    def recording(
        self: SpeechOutput, turn: int, text: str, origin: str = "reply", voice_label: str | None = None
    ) -> None:
        queued.append((origin, self._clock.now()))
        enqueue(self, turn, text, origin, voice_label)

    monkeypatch.setattr(SpeechOutput, "enqueue", recording)
    events = soft_timeout_run(
        preloaded, tmp_path, scripted, say, text_reply("The answer is forty two.", first_byte_delay_s=5.0)
    )
    assert audio_texts(events) == ["Hmm, let me see.", "The answer is forty two."]
    filler, answer = [e for e in events if e["type"] == "audio"]
    assert filler["origin"] == OutputKind.FILLER.value
    # the filler is decided 2.5 s after the end of the turn (the timer fires from the loop's 20 ms
    # ticker: 0.5 s for a late tick on a busy machine), heard after that, and the reply never
    # overlaps it
    turn_end = next(e for e in events if e["type"] == "utterance_ended")["t"]
    (decided,) = [t for origin, t in queued if origin == OutputKind.FILLER.value]
    heard = filler["t"] - turn_end
    print(f"filler decided {decided - turn_end:.3f} s after the end of the turn, heard at {heard:.3f} s")
    assert 2.4 <= decided - turn_end <= 3.0, (decided - turn_end, timeline(events))
    assert filler["t"] >= round(decided, 3)
    assert answer["t"] >= filler["t"] + filler["duration_s"] - 0.05
    responses = [e["agent_response"] for e in events if e["type"] == "agent_response"]
    assert responses == ["The answer is forty two."]


def test_no_filler_when_the_llm_is_fast(
    preloaded: Preloaded, tmp_path: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    events = soft_timeout_run(preloaded, tmp_path, scripted, say, text_reply("The answer is forty two."))
    assert audio_texts(events) == ["The answer is forty two."]


# ---------------------------------------------------------------------- barge-in
LONG = (
    "Once upon a time, in a quiet village by the sea, there lived an old fisherman. "
    "Every morning he rowed his small boat past the lighthouse and cast his nets. "
    "One day he caught a golden fish that could speak. "
    "The fish promised him three wishes if he would let it go. "
    "The fisherman thought for a long time about what to wish for."
)
# the self-interruption runs: two sentences (about 9 s of speech) cover the canceller's
# convergence and a reply's worth of echo; the input's silence lasts until the story ends
STORY = LONG[: LONG.index(" One day")]


@pytest.mark.parametrize("echo", [None, 0.5], ids=["no-echo", "echo-0.5"])
def test_barge_in_interrupts_and_truncates_history(
    preloaded: Preloaded,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
    echo: float | None,
) -> None:
    """The user talks over the agent (with the agent's voice also coming back into the
    microphone in the echo case): playback stops, the history keeps what was heard."""
    scripted.add(text_reply(*[w + " " for w in LONG.split()]), text_reply("Okay, I stopped."))
    config = scripted_config(scripted.url)
    question = concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Tell me a story."))
    # the user talks over the agent once it has spoken for 3.3 s (into its third piece of speech,
    # which begins ~3.0 s in and lasts ~1.6 s), wherever that falls: at a fixed 4 s after the
    # question the agent had ~3.5 s to start speaking (transcription, LLM, TTS), less under load
    cue = Cue(3.3, concat(say("Stop, stop please."), silence(4.0)))
    events, _ = run_inprocess(preloaded, tmp_path, config, question, realtime=True, echo=echo, cue=cue)
    t = types(events)
    assert "interruption" in t and "agent_response_correction" in t, timeline(events)
    # it is the talk-over that interrupts (not the agent's echo before it)
    assert cue.at is not None and next(e for e in events if e["type"] == "interruption")["t"] >= cue.at, (
        cue.at,
        timeline(events),
    )
    correction = next(e for e in events if e["type"] == "agent_response_correction")
    assert correction["original_agent_response"] == LONG
    spoken = correction["corrected_agent_response"]
    assert spoken and LONG.startswith(spoken) and len(spoken) < len(LONG)
    # playback stopped: no audio segment of the story started after the interruption
    t_int = next(e for e in events if e["type"] == "interruption")["t"]
    story = [e for e in events if e["type"] == "audio" and e["text"] in LONG]
    assert all(e["t"] <= t_int for e in story)
    # the next LLM request holds only what was spoken
    second = scripted.chat_requests[1].body["messages"]
    assistant = [m["content"] for m in second if m["role"] == "assistant"]
    assert assistant == [spoken]
    # the user's words follow as the next user turn; with echo, the canceller may suppress the
    # first ~150 ms of talk-over (issue 15), so whisper can hear "Please." without "Stop": only
    # the clean case checks the word itself
    assert second[-1]["role"] == "user" and words(second[-1]["content"]).strip()
    if echo is None:
        assert "stop" in words(second[-1]["content"])


def test_without_a_canceller_the_agent_interrupts_itself_on_its_own_echo(
    preloaded: Preloaded,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
) -> None:
    """The control case of the canceller's tests below: the speaker comes back into the
    microphone at gain 0.5, nobody talks over the agent, and without playback gating (no
    canceller) the agent takes its own voice for the user's within its first seconds (its input
    stops 3.5 s after the agent is first heard, however long it took to start speaking). The
    same echo with the default canceller, through simulated rooms and at up to 4 times this
    gain, interrupts nothing (the next test)."""
    scripted.add(text_reply(*[w + " " for w in STORY.split()]), text_reply("Yes?"))
    config = scripted_config(scripted.url)
    config["appliance"]["vad"] = {"playback_gating": False}
    question = concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Tell me a story."))
    cue = Cue(0.0, silence(3.5))
    events, _ = run_inprocess(preloaded, tmp_path, config, question, realtime=True, echo=0.5, cue=cue)
    assert "interruption" in types(events), timeline(events)


@pytest.mark.parametrize(("room", "gain"), [("small", 2.0), ("hall", 1.0)])
def test_the_canceller_keeps_the_agent_from_interrupting_itself_on_a_room_echo(
    preloaded: Preloaded,
    tmp_path: Path,
    scripted: ScriptedOpenAiServer,
    say: Callable[[str], np.ndarray],
    room: str,
    gain: float,
) -> None:
    """The agent's voice comes back through a simulated room (`--simulate-echo-ir`: the smallest
    room at gain 2.0; RT60 0.8 s at 50 cm at gain 1.0); nobody talks over it. The default
    canceller keeps it from taking its own voice for the user's through the whole story: the
    input lasts until the speaker has played 8 s of it (about 9 s long), then 2 s more (its
    end and the room's echo tail), however late a loaded machine makes it start."""
    from appliance.testing.rooms import ROOMS, impulse_response, write_ir_wav

    ir = write_ir_wav(tmp_path / "room.wav", impulse_response(next(r for r in ROOMS if r.name == room)))
    scripted.add(text_reply(*[w + " " for w in STORY.split()]), text_reply("Yes?"))
    config = scripted_config(scripted.url)
    question = concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Tell me a story."))
    cue = Cue(8.0, silence(2.0))
    events, _ = run_inprocess(
        preloaded, tmp_path, config, question, realtime=True, echo=gain, echo_ir=ir, cue=cue
    )
    assert "interruption" not in types(events), timeline(events)
    assert [e["agent_response"] for e in events if e["type"] == "agent_response"][:1] == [STORY]
    assert "speech_started" not in types(events)[types(events).index("agent_response") :], timeline(events)


# ---------------------------------------------------------------------- turn timeout, tools
def test_turn_timeout_reprompts_then_ends(
    preloaded: Preloaded, tmp_path: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    scripted.add(text_reply("Paris."), text_reply("Are you still there?"), text_reply("I will be here."))
    config = scripted_config(scripted.url, turn_timeout=2)
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("What is the capital of France?"), silence(12.0)
    )
    events, _ = run_inprocess(preloaded, tmp_path, config, audio, realtime=False)
    assert types(events).count("turn_timeout") == 2
    assert audio_texts(events) == ["Paris.", "Are you still there?", "I will be here."]
    assert next(e for e in events if e["type"] == "session_ended")["reason"] == "silence"
    # the re-prompt request carries the platform-style note about the silence
    note = scripted.chat_requests[1].body["messages"][-1]
    assert note["role"] == "system" and "2 seconds" in note["content"]


def test_end_call_says_goodbye_and_ends(
    preloaded: Preloaded, tmp_path: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    scripted.add(tool_call_reply("end_call", {"reason": "the user said goodbye", "message": "Goodbye!"}))
    config = scripted_config(scripted.url)
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Thanks, that is all. Goodbye."), silence(4.0)
    )
    events, _out = run_inprocess(preloaded, tmp_path, config, audio, realtime=False)
    tool = next(e for e in events if e["type"] == "agent_tool_response")
    assert tool["tool_name"] == "end_call" and tool["tool_type"] == "system" and tool["is_error"] is False
    assert audio_texts(events) == ["Goodbye!"]
    assert next(e for e in events if e["type"] == "session_ended")["reason"] == "end_call"
    offered = {t["function"]["name"] for t in scripted.chat_requests[0].body["tools"]}
    assert offered == {"end_call", "skip_turn"}
    assert scripted.chat_requests[0].body["temperature"] == 0.3
    assert scripted.chat_requests[0].body["max_tokens"] == 120
    assert scripted.chat_requests[0].body["elevenlabs_extra_body"] == {"room": "kitchen"}


def test_skip_turn_stays_silent_until_the_user_speaks(
    preloaded: Preloaded, tmp_path: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    scripted.add(
        tool_call_reply("skip_turn", {"reason": "the user needs a moment"}), text_reply("It is four.")
    )
    config = scripted_config(scripted.url, turn_timeout=2)
    audio = concat(
        silence(1.0), say("Hey Jarvis!"), silence(0.5), say("Give me a second to think."), silence(4.0),
        say("Okay, what is two plus two?"), silence(1.5),
    )  # fmt: skip
    events, _ = run_inprocess(preloaded, tmp_path, config, audio, realtime=False)
    t = types(events)
    assert next(e for e in events if e["type"] == "agent_tool_response")["tool_name"] == "skip_turn"
    assert "turn_timeout" not in t  # 4 s of silence > 2 s turn timeout, but the agent skipped its turn
    assert audio_texts(events) == ["It is four."]
    assert t.count("user_transcript") == 2


def test_device_tool_result_goes_back_to_the_llm(
    preloaded: Preloaded, tmp_path: Path, scripted: ScriptedOpenAiServer, say: Callable[[str], np.ndarray]
) -> None:
    scripted.add(
        tool_call_reply("get_battery", {"unit": "percent"}), text_reply("The battery is at 87 percent.")
    )
    config = scripted_config(scripted.url)
    config["appliance"]["tools"] = [
        {
            "type": "client",
            "name": "get_battery",
            "description": "Battery level of the device",
            "handler": "appliance.testing.example_tools:get_battery",
            "parameters": {"type": "object", "properties": {"unit": {"type": "string"}}},
            "expects_response": True,  # the platform's default (false) does not wait for the result
        }
    ]
    audio = concat(silence(1.0), say("Hey Jarvis!"), silence(0.5), say("How is the battery?"), silence(3.0))
    events, _ = run_inprocess(preloaded, tmp_path, config, audio, realtime=False)
    tool = next(e for e in events if e["type"] == "agent_tool_response")
    assert (tool["tool_name"], tool["tool_type"], tool["is_error"]) == ("get_battery", "client", False)
    assert audio_texts(events) == ["The battery is at 87 percent."]
    second = scripted.chat_requests[1].body["messages"]
    tool_msg = next(m for m in second if m["role"] == "tool")
    assert json.loads(tool_msg["content"])["level"] == 87
    assert any(t["function"]["name"] == "get_battery" for t in scripted.chat_requests[0].body["tools"])
