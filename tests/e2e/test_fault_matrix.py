"""The fault matrix: one table, one row per fault injected into a real headless run.

Every row runs the appliance (the real wake word, VAD, whisper and piper; a scripted
OpenAI-compatible server or the fake ElevenLabs server as the agent's other end) on the same
input: the bundled example recording ("Hey Jarvis. What is the capital of France?"), a pause,
then the wake word again and a second question ("What is two plus two?"). The fault hits the
first question; the row then asserts what the user sees (events, error codes, in order) and
hears (the `audio` events' text, the error chime found sample-exact in out.wav), and that the
device came back: the second question is answered. Signal rows run the `appliance` command line
in a subprocess (through `appliance.testing.faults`, which installs slow or failing models) and
assert a clean exit within the stop bound in each session state.

Adding a fault is one row in `ROWS`: a fault (what to inject) and its checks (what must follow).
Nothing here depends on stochastic audio: the second question is synthesized without Piper's
noise, the first is a recording; the scripted LLM answers by what it is asked (a retry gets the
same fault), never by request order.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import contextlib
import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.testing.fake_elevenlabs import FakeElevenLabsServer, FakeOptions
from appliance.testing.fakes import refused_port, wait_until
from appliance.testing.faults import (
    SESSION_STATES,
    STATE_REACHED,
    STOP_BOUND_S,
    STOP_MARGIN_S,
    STORY,
    FailWhen,
    FaultyMicrophone,
    FaultyStt,
    FaultyTts,
    kill_if_running,
    on_calls,
    on_text,
    signal_in_state,
    stop_timed,
    with_faults,
)
from appliance.testing.openai_server import (
    RecordedRequest,
    Reply,
    ScriptedOpenAiServer,
    endless_reply,
    error_reply,
    garbage_reply,
    half_reply,
    hang_reply,
    text_reply,
)
from appliance.testing.speech import concat, piper_say_exact, read_wav, silence, write_wav

pytestmark = [pytest.mark.models, pytest.mark.slow]

RATE = 16000
ASSETS = Path(__file__).resolve().parents[2] / "appliance" / "assets"
EXAMPLE = ASSETS / "example-hey-jarvis.wav"
ERROR_CHIME = ASSETS / "chimes" / "error.wav"

ANSWER_1 = "Paris is the capital of France. It is a big city by a river."
ANSWER_2 = "Four."
LONG_STORY = STORY  # what the scripted LLM tells in the speaking state
# fmt: off
WORDS = (
    "amber", "basket", "candle", "desert", "engine", "falcon", "garden", "harbor", "island",
    "jacket", "kettle", "ladder", "meadow", "needle", "orchard", "pepper", "quarry", "ribbon",
    "saddle", "timber", "umbrella", "valley", "window", "yellow", "zebra", "anchor", "bridge",
    "copper", "dragon", "ember", "forest", "glacier", "hammer", "ivory", "jungle", "kernel",
    "lantern", "marble", "nectar", "oyster", "pillow", "quartz", "river", "silver", "thunder",
    "velvet", "walnut",
)
# fmt: on


def endless_sentences(count: int = 64) -> list[str]:
    """Distinct sentences of distinct word orders (no sentence, no long n-gram repeats): an
    endless reply that only a length ceiling can stop. Seeded: the same every run."""
    import random

    rng = random.Random(9)
    return [" ".join(rng.sample(WORDS, 6)).capitalize() + ". " for _ in range(count)]


RUN_LIMIT_S = 150.0
"""An in-process run that has not ended by then is wedged (the row fails instead of hanging)."""

Events = list[dict[str, Any]]


# ============================================================================ faults
@dataclass(frozen=True)
class LocalFault:
    """Local agent, fast headless, in process. The LLM answers question 1 with `llm` (None: a
    normal answer); `refused`: nothing listens at the LLM's URL at all."""

    llm: Reply | None = None
    refused: bool = False
    stt: FailWhen | None = None
    tts: FailWhen | None = None
    mic_fail_at_s: float | None = None
    llm_timeout_s: float = 5.0
    """The LLM adapter's wait for each piece of the answer (shortened from its 20 s default)."""


@dataclass(frozen=True)
class RemoteFault:
    """Remote agent (the fake ElevenLabs server playing `options.scenario`), fast headless."""

    options: FakeOptions
    remote: Mapping[str, Any] = field(default_factory=dict)
    private: bool = False
    """The agent is private: the device fetches a signed URL with `PRIVATE_KEY` for every connection."""


@dataclass(frozen=True)
class MicOutageFault:
    """The command line on the device microphone (a scripted PortAudio stand-in playing the
    input in real time), unplugged at `at_s` for `outage_s`; SIGTERM once question 2 is answered."""

    at_s: float
    outage_s: float = 1.0


@dataclass(frozen=True)
class SignalFault:
    """The `appliance run` command line, real time; `signal` once it is in `state`."""

    state: str
    """idle, listening, transcribing, thinking or speaking."""
    signum: int = signal.SIGTERM


@dataclass(frozen=True)
class ReloadFault:
    """The command line, real time; the config file is replaced by `broken`, then SIGHUP."""

    broken: str


Fault = LocalFault | RemoteFault | MicOutageFault | SignalFault | ReloadFault


@dataclass
class Outcome:
    events: Events
    out: Path
    reason: str | None = None
    """Why the run stopped (in process: the loop's result; CLI: `appliance_stopped.reason`)."""
    returncode: int | None = None
    stop_s: float | None = None
    """Signal rows: wall time from the signal to the process's exit."""
    chat: list[RecordedRequest] = field(default_factory=list)
    stderr: str = ""
    lines: list[str] = field(default_factory=list)


Check = Callable[[Outcome], None]


# ============================================================================ checks
def of(events: Events, kind: str) -> Events:
    return [e for e in events if e["type"] == kind]


def first_error_index(o: Outcome, codes: Sequence[str]) -> int:
    for i, e in enumerate(o.events):
        if e["type"] == "error" and e.get("code") in codes:
            return i
    raise AssertionError(
        f"no error event with a code in {list(codes)}: {[e.get('code') for e in of(o.events, 'error')]}"
    )


def error(*codes: str) -> Check:
    """An `error` event with one of these codes (the user sees what failed)."""

    def check(o: Outcome) -> None:
        first_error_index(o, codes)

    return check


SCRIPTED = {ANSWER_1, ANSWER_2, "Okay.", LONG_STORY}


def _scripted(text: str) -> bool:
    words = set(re.findall(r"[a-z]+", text.lower()))
    return any(text in s for s in SCRIPTED) or bool(words & {*WORDS, "wanderer"})


def apology(after: Sequence[str], count: int = 1) -> Check:
    """After the error, the agent says something nobody scripted: the apology (`count` times)."""

    def check(o: Outcome) -> None:
        start = first_error_index(o, after)
        said = [e["text"] for e in o.events[start:] if e["type"] == "audio" and not _scripted(e["text"])]
        assert len(said) >= count, f"expected {count} spoken apology(ies) after the error, got {said}"

    return check


def said(events: Events) -> list[str]:
    """What the agent said: each audio segment's text and each complete response."""
    return [
        str(e.get("text") if e["type"] == "audio" else e.get("agent_response"))
        for e in events
        if e["type"] in ("audio", "agent_response")
    ]


def answered(text: str = ANSWER_2, after: Sequence[str] = ()) -> Check:
    """Back to listening: the next question is answered (after the fault's error, if any)."""

    def check(o: Outcome) -> None:
        start = first_error_index(o, after) if after else 0
        heard = said(o.events[start:])
        assert text in heard, f"{text!r} never said after the fault; said: {heard}"

    return check


def heard_text(text: str) -> Check:
    def check(o: Outcome) -> None:
        assert text in said(o.events), f"{text!r} not said: {said(o.events)}"

    return check


def error_chime_or_apology(after: Sequence[str]) -> Check:
    """The user hears that something failed: the error chime or a spoken apology."""

    def check(o: Outcome) -> None:
        start = first_error_index(o, after)
        spoken = [e["text"] for e in o.events[start:] if e["type"] == "audio" and not _scripted(e["text"])]
        assert spoken or chime_played(o.out), "neither the error chime nor an apology after the error"

    return check


def chime_played(out: Path) -> bool:
    """The error chime's samples, exactly, somewhere in out.wav (fast runs append what is played;
    the chime volume is 1.0 in these configs, so the samples are the file's)."""
    chime, _ = read_wav(ERROR_CHIME)
    played, _ = read_wav(out)
    data, needle = played.tobytes(), chime.tobytes()
    pos = data.find(needle)
    while pos >= 0 and pos % 2:
        pos = data.find(needle, pos + 1)
    return pos >= 0


def truncated(reason: str, max_speech_s: float) -> Check:
    """`reply_truncated` with its reason, and the reply's speech stays within the ceiling."""

    def check(o: Outcome) -> None:
        reasons = [e.get("reason") for e in of(o.events, "reply_truncated")]
        assert reason in reasons, f"no reply_truncated({reason}): {reasons}"
        story = sum(
            e["duration_s"] for e in of(o.events, "audio") if _scripted(e["text"]) and e["text"] != ANSWER_2
        )
        assert story <= max_speech_s, f"{story:.1f} s of an endless reply was spoken"

    return check


def named_in_error(code: str, text: str) -> Check:
    def check(o: Outcome) -> None:
        messages = [e["message"] for e in of(o.events, "error") if e["code"] == code]
        assert messages and all(text in m for m in messages), messages

    return check


def ended_with(reason: str) -> Check:
    """The first session ended for `reason` (the error chime's outcome)."""

    def check(o: Outcome) -> None:
        ended = [e["reason"] for e in of(o.events, "session_ended")]
        assert ended and ended[0] == reason, ended

    return check


def nothing_played_before_answer(o: Outcome) -> None:
    """No agent audio in a guessed format: nothing is spoken before the working session's answer."""
    first_error = first_error_index(o, ["remote_protocol_error"])
    assert not of(o.events[:first_error], "audio"), "agent audio played before the format error"
    ended = next(i for i, e in enumerate(o.events) if e["type"] == "session_ended")
    assert not of(o.events[:ended], "audio"), "agent audio played in the failed session"


def retried_once(word: str) -> Check:
    """One retry when nothing was spoken yet: the question went to the LLM exactly twice."""

    def check(o: Outcome) -> None:
        asked = [r for r in o.chat if word in r.last_user_text().lower()]
        assert len(asked) == 2, f"{len(asked)} LLM request(s) for the question, expected 2 (one retry)"

    return check


def llm_connection_closed(o: Outcome) -> None:
    """The endless stream's connection was closed by the device once it stopped listening."""
    asked = [r for r in o.chat if "capital" in r.last_user_text().lower()]
    assert asked and all(r.disconnected.wait(5) for r in asked), "the device never closed the endless stream"


def stopped(reason: str) -> Check:
    def check(o: Outcome) -> None:
        assert o.reason == reason, f"stopped for {o.reason!r}, expected {reason!r}"

    return check


def clean_exit(o: Outcome) -> None:
    """A requested stop: exit 0 within the bound, events complete, out.wav valid."""
    assert o.stop_s is not None
    print(f"stop latency (signal → exit): {o.stop_s:.2f} s")  # shown with -s
    assert o.returncode == 0, f"exit code {o.returncode}: {o.stderr[-2000:]}"
    assert o.stop_s < STOP_BOUND_S + STOP_MARGIN_S, f"stopped after {o.stop_s:.2f} s"
    assert o.reason is not None and o.reason.startswith("signal_"), o.reason
    with wave.open(str(o.out), "rb") as w:  # a valid header that matches the data
        assert w.getnframes() * 2 + 44 == o.out.stat().st_size


def microphone_back(o: Outcome) -> None:
    """The microphone came back (`microphone_ready` after the `audio_device` error)."""
    lost = first_error_index(o, ["audio_device"])
    assert "microphone lost" in o.events[lost]["message"], o.events[lost]
    assert "microphone_ready" in [e["type"] for e in o.events[lost:]], "the microphone never came back"


def reload_failed_old_config_runs(o: Outcome) -> None:
    kinds = [e["type"] for e in o.events]
    failed = first_error_index(o, ["config_reload_failed"])
    assert "config_reloaded" not in kinds
    after = said(o.events[failed:])
    assert ANSWER_1 in after, f"the old configuration did not answer: {after}"
    assert o.returncode == 0 and o.reason == "input_ended", (o.returncode, o.reason, o.stderr[-2000:])


def state_was(state: str) -> Check:
    """The signal came in the intended session state (read back from the events)."""
    reached = STATE_REACHED[state]
    left = {
        "idle": "wake_word_detected",
        "listening": "speech_started",
        "transcribing": "user_transcript",
        "thinking": "audio",
        "speaking": None,
    }[state]

    def check(o: Outcome) -> None:
        kinds = [e["type"] for e in o.events]
        assert reached in kinds, f"never reached {state}: {kinds}"
        if left is not None:
            assert left not in kinds[kinds.index(reached) :], f"left {state} before the signal: {kinds}"
        if state == "speaking":  # the story was still being told
            spoken = " ".join(e["text"] for e in of(o.events, "audio"))
            assert not spoken.endswith("ask his wife."), "the whole story was spoken: the stop did not cut it"

    return check


# ============================================================================ the table
LLM_FAILED = ("llm_http_error", "llm_timeout", "llm_bad_response", "llm_unreachable", "llm_failed")
"""Any LLM failure code (the row's own check names the specific one)."""


@dataclass(frozen=True)
class Row:
    id: str
    fault: Fault
    checks: tuple[Check, ...]


ROWS = [
    # ---------------------------------------------------------------- the custom LLM
    Row(
        "llm-http-500",
        LocalFault(llm=error_reply(500)),
        (error("llm_http_error"), retried_once("capital"), apology(["llm_http_error"]), answered()),
    ),
    Row(
        "llm-hang",  # the request and its retry each wait out the adapter's deadline
        LocalFault(llm=hang_reply(), llm_timeout_s=2.0),
        (error("llm_timeout"), apology(["llm_timeout"]), answered()),
    ),
    Row(
        "llm-garbage-stream",
        LocalFault(llm=garbage_reply()),
        (error("llm_bad_response"), apology(["llm_bad_response"]), answered()),
    ),
    Row(
        "llm-half-reply-then-drop",
        LocalFault(
            llm=half_reply("Paris is the capital ", "of France. ", "It is a big ", "city.", drop_after=2)
        ),
        (
            error("llm_bad_response", "llm_unreachable"),
            heard_text("Paris is the capital of France."),
            apology(["llm_bad_response", "llm_unreachable"]),
            answered(),
        ),
    ),
    Row(
        "llm-refused-connection",
        LocalFault(refused=True),
        # nothing answers the second question either: it gets its own apology
        (error("llm_unreachable"), apology(["llm_unreachable"], count=2)),
    ),
    Row(
        "llm-endless-stream",
        LocalFault(llm=endless_reply(*endless_sentences())),
        (truncated("max_reply", max_speech_s=60.0), llm_connection_closed, answered()),
    ),
    Row(
        "llm-endless-repetition",
        LocalFault(
            llm=endless_reply("He had been a wanderer ", "who had been blessed ", "again and again. ")
        ),
        (truncated("repetition", max_speech_s=60.0), llm_connection_closed, answered()),
    ),
    # ---------------------------------------------------------------- local models, microphone
    Row(
        "tts-exception",
        LocalFault(tts=on_text("capital")),
        (error("tts_failed"), heard_text("It is a big city by a river."), answered(after=["tts_failed"])),
    ),
    Row(
        "stt-exception",
        LocalFault(stt=on_calls(1)),
        (error("stt_failed"), error_chime_or_apology(["stt_failed"]), answered(after=["stt_failed"])),
    ),
    Row(
        "microphone-read-error",
        LocalFault(mic_fail_at_s=3.4),  # mid-question: the session is open, the user is speaking
        # a dead input cannot come back: the run ends cleanly (the CLI exits 4, systemd restarts it)
        (error("audio_device"), stopped("microphone_failed")),
    ),
    Row(
        "microphone-unplugged-mid-session",
        MicOutageFault(at_s=3.2),  # mid-question; the device is back a second later
        (
            error("audio_device"),
            microphone_back,
            answered(after=["audio_device"]),
            clean_exit,
        ),
    ),
    # ---------------------------------------------------------------- the remote agent
    Row(
        "remote-drop",
        RemoteFault(
            FakeOptions(scenario="drop", transcripts=["What is the capital of France?"], replies=[ANSWER_1])
        ),
        (error("remote_connection_lost"), answered(ANSWER_1, after=["remote_connection_lost"])),
    ),
    Row(
        "remote-stall",
        RemoteFault(
            FakeOptions(scenario="stall", transcripts=["What is the capital of France?"], replies=[ANSWER_1]),
            {"stall_timeout_s": 1},
        ),
        (error("remote_connection_lost"), answered(ANSWER_1, after=["remote_connection_lost"])),
    ),
    Row(
        "remote-garbage",
        RemoteFault(
            FakeOptions(
                scenario="malformed", transcripts=["What is the capital of France?"], replies=[ANSWER_1]
            )
        ),
        (answered(ANSWER_1),),
    ),
    Row(
        "remote-bad-metadata",
        RemoteFault(
            FakeOptions(
                transcripts=["What is the capital of France?"],
                replies=[ANSWER_1],
                metadata_fields={"agent_output_audio_format": "mp3_44100"},
                faulty_first=1,
            )
        ),
        (
            error("remote_protocol_error"),
            named_in_error("remote_protocol_error", "mp3_44100"),
            ended_with("remote_error"),
            nothing_played_before_answer,
            answered(ANSWER_1, after=["remote_protocol_error"]),
        ),
    ),
    Row(
        "remote-trickling-signed-url",
        RemoteFault(
            FakeOptions(
                transcripts=["What is the capital of France?"],
                replies=[ANSWER_1],
                signed_url_fault="trickle",
                trickle_interval_s=0.5,
                faulty_first=1,
            ),
            private=True,
        ),
        (
            error("remote_signed_url_timeout"),
            answered(ANSWER_1, after=["remote_signed_url_timeout"]),
        ),
    ),
    # ---------------------------------------------------------------- signals (the CLI)
    *(
        Row(f"sigterm-{state}", SignalFault(state), (clean_exit, state_was(state)))
        for state in SESSION_STATES
    ),
    Row(
        "sighup-broken-config",
        ReloadFault("conversation_config: {agent: [unclosed\n"),
        (reload_failed_old_config_runs,),
    ),
]


# ============================================================================ runs
def config(llm_url: str) -> dict[str, Any]:
    return {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You are a test agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": llm_url, "model_id": "scripted-model"},
                    "max_tokens": -1,  # the platform's default: no limit from the agent
                },
            },
        },
        "appliance": {"local": {"llm": {"backend": "openai"}}, "chimes": {"volume": 1.0}},
    }


def remote_config(server: FakeElevenLabsServer, **remote: Any) -> dict[str, Any]:
    return {
        "appliance": {
            "mode": "remote",
            "chimes": {"volume": 1.0},
            "remote": {
                "base_url": server.url,
                "agent_id": "agent_fake",
                "reconnect_backoff_s": 0.05,
                "stall_timeout_s": 5,
                **remote,
            },
        }
    }


def responder(fault: Reply | None) -> Callable[[RecordedRequest], Reply]:
    """Question 1 gets the fault (every time: a retry too), question 2 its answer."""

    def pick(request: RecordedRequest) -> Reply:
        text = request.last_user_text().lower()
        if "capital" in text or "france" in text:
            return fault or text_reply(*(w + " " for w in ANSWER_1.split()))
        if "plus" in text or "two" in text:
            return text_reply(ANSWER_2)
        return text_reply("Okay.")

    return pick


@pytest.fixture(scope="module")
def example() -> np.ndarray:
    audio, rate = read_wav(EXAMPLE)
    assert rate == RATE
    return audio


@pytest.fixture(scope="module")
def two_questions(example: np.ndarray) -> np.ndarray:
    """The example (wake word + question 1, up to 4.6 s), a pause, wake word + question 2."""
    wake = example[: int(2.3 * RATE)]  # "Hey Jarvis." and the pause before the question
    return concat(
        example[: int(4.6 * RATE)],
        silence(3.0),
        wake,
        piper_say_exact("What is two plus two?"),
        silence(4.0),
    )


@pytest.fixture(scope="module")
def preloaded(models_dir: Path) -> Any:
    """Wake word, VAD, whisper and piper, loaded once (the LLM is built per row)."""
    from appliance.config import load_config_text
    from appliance.runtime.app import Preloaded, load_listeners
    from appliance.runtime.local_agent import load_local_models

    os.environ["APPLIANCE_MODELS_DIR"] = str(models_dir)
    with refused_port() as port:
        cfg = load_config_text(yaml.safe_dump(config(f"http://127.0.0.1:{port}/v1")), "matrix.yaml")
        detector, vad = load_listeners(cfg)
        return Preloaded(detector, vad, load_local_models(cfg))


def run_bounded(work: Callable[[], Any], limit_s: float = RUN_LIMIT_S) -> Any:
    """`work()` on a thread; a run still going after `limit_s` is wedged: the row fails."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as err:  # handed to the test
            errors.append(err)

    thread = threading.Thread(target=target, name="matrix-run", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        pytest.fail(f"the run did not end within {limit_s:.0f} s: wedged")
    if errors:
        raise errors[0]
    return result[0]


def read_events(path: Path) -> tuple[Events, list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines], lines


def run_local(
    fault: LocalFault, preloaded: Any, audio: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Outcome:
    from appliance.adapters.openai_llm import OpenAiCompatibleLlm
    from appliance.config import load_config_text
    from appliance.runtime import app

    with ScriptedOpenAiServer(responder=responder(fault.llm)) as server, contextlib.ExitStack() as stack:
        url = f"http://127.0.0.1:{stack.enter_context(refused_port())}/v1" if fault.refused else server.url
        cfg = load_config_text(yaml.safe_dump(config(url)), str(tmp_path / "config.yaml"))
        # the adapter's own deadline, shortened to keep the hang row short
        llm = OpenAiCompatibleLlm(url, "scripted-model", None, timeout_s=fault.llm_timeout_s)
        local = dataclasses.replace(preloaded.local_models, llm=llm, concurrent_llm=True)
        local = with_faults(
            local,
            stt=FaultyStt(local.stt, fault.stt) if fault.stt else None,
            tts=FaultyTts(local.tts, fault.tts) if fault.tts else None,
        )
        if fault.mic_fail_at_s is not None:
            open_audio = app.open_audio
            fail_at = fault.mic_fail_at_s

            def open_faulty(config: Any, options: Any) -> Any:
                wiring = open_audio(config, options)
                wiring.microphone = FaultyMicrophone(wiring.microphone, fail_at)
                return wiring

            monkeypatch.setattr(app, "open_audio", open_faulty)
        wav = write_wav(tmp_path / "in.wav", audio)
        out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
        options = app.RunOptions(input=str(wav), output=str(out), events=str(events_path))
        models = dataclasses.replace(preloaded, local_models=local)
        result = run_bounded(lambda: asyncio.run(app.run_async(cfg, options, models)))
        chat = server.chat_requests
    events, lines = read_events(events_path)
    return Outcome(events, out, reason=result.reason, chat=chat, lines=lines)


PRIVATE_KEY = "sk_fault_matrix_0123456789"


def run_remote(
    fault: RemoteFault, preloaded: Any, audio: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Outcome:
    from appliance.adapters.elevenlabs import signed_url
    from appliance.config import load_config_text
    from appliance.runtime.app import Preloaded, RunOptions, run_async

    options = dataclasses.replace(fault.options, ping_interval_s=0.3)
    remote = dict(fault.remote)
    # the signed URL's deadline (10 s on a device), shortened to keep the trickling row short
    monkeypatch.setattr(signed_url, "TIMEOUT_S", 2.0)
    if fault.private:
        options = dataclasses.replace(options, api_key=PRIVATE_KEY)
        remote["requires_auth"] = True
        monkeypatch.setenv("ELEVENLABS_API_KEY", PRIVATE_KEY)
    with FakeElevenLabsServer(options) as server:
        cfg = load_config_text(yaml.safe_dump(remote_config(server, **remote)), "remote.yaml")
        wav = write_wav(tmp_path / "in.wav", audio)
        out, events_path = tmp_path / "out.wav", tmp_path / "events.jsonl"
        options = RunOptions(input=str(wav), output=str(out), events=str(events_path))
        models = Preloaded(preloaded.detector, preloaded.vad, None)
        result = run_bounded(lambda: asyncio.run(run_async(cfg, options, models)))
    events, lines = read_events(events_path)
    return Outcome(events, out, reason=result.reason, lines=lines)


def wait_for_event(path: Path, proc: subprocess.Popen[str], kind: str, timeout_s: float) -> Events:
    """Poll the events file until an event of `kind` appears (the process must stay alive)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = read_partial(path)
        if any(e["type"] == kind for e in events):
            return events
        if proc.poll() is not None:
            raise AssertionError(f"the appliance exited ({proc.returncode}) before a {kind} event")
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event within {timeout_s} s")


def spawn(args: Sequence[str], models_dir: Path, stderr_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.testing.faults", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr_path.open("w"),
        text=True,
        env=env,
    )


def run_signal(fault: SignalFault, tmp_path: Path, models_dir: Path) -> Outcome:
    """`appliance run --realtime` on the example; the signal once the events show the state."""
    run = signal_in_state(
        fault.state, tmp_path, config, signum=fault.signum, env={"APPLIANCE_MODELS_DIR": str(models_dir)}
    )
    last = run.events[-1] if run.events else {}
    reason = last.get("reason") if last.get("type") == "appliance_stopped" else None
    return Outcome(
        run.events, run.out, reason=reason, returncode=run.returncode, stop_s=run.stop_s,
        stderr=run.stderr, lines=run.lines,
    )  # fmt: skip


def run_mic_outage(fault: MicOutageFault, audio: np.ndarray, tmp_path: Path, models_dir: Path) -> Outcome:
    """`appliance run` on the (scripted) device microphone; SIGTERM once "Four." was said."""
    wav = write_wav(tmp_path / "in.wav", audio)
    out, events_path, stderr_path = tmp_path / "out.wav", tmp_path / "events.jsonl", tmp_path / "stderr.txt"
    with ScriptedOpenAiServer(responder=responder(None)) as server:
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config(server.url)))
        proc = spawn(
            ["--scripted-mic", str(wav), "--mic-outage-at", str(fault.at_s),
             "--mic-outage-s", str(fault.outage_s), "--", "run", "--config", str(cfg_path),
             "--output", str(out), "--events", str(events_path)],
            models_dir, stderr_path,
        )  # fmt: skip
        try:
            wait_for_event(events_path, proc, "microphone_ready", timeout_s=90)
            wait_until(
                lambda: ANSWER_2 in said(read_partial(events_path)),
                audio.size / RATE + 30,
                "the second answer",
            )
            time.sleep(0.5)
            stop_s = stop_timed(proc, signal.SIGTERM)
        finally:
            kill_if_running(proc)
    events, lines = read_events(events_path)
    reason = events[-1].get("reason") if events and events[-1]["type"] == "appliance_stopped" else None
    return Outcome(
        events, out, reason=reason, returncode=proc.returncode, stop_s=stop_s,
        stderr=stderr_path.read_text(), lines=lines,
    )  # fmt: skip


def read_partial(path: Path) -> Events:
    """The complete lines of an events file still being written."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def run_reload(fault: ReloadFault, example: np.ndarray, tmp_path: Path, models_dir: Path) -> Outcome:
    """A valid config at start; then the file is broken and SIGHUP sent; the input goes on."""
    audio = concat(silence(1.5), example, silence(1.0))  # the reload fails before the answer
    wav = write_wav(tmp_path / "in.wav", audio)
    out, events_path, stderr_path = tmp_path / "out.wav", tmp_path / "events.jsonl", tmp_path / "stderr.txt"
    with ScriptedOpenAiServer(responder=responder(None)) as server:
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config(server.url)))
        proc = spawn(
            ["--", "run", "--config", str(cfg_path), "--input", str(wav), "--output", str(out),
             "--events", str(events_path), "--realtime"],
            models_dir, stderr_path,
        )  # fmt: skip
        try:
            wait_for_event(events_path, proc, "appliance_started", timeout_s=90)
            cfg_path.write_text(fault.broken)
            proc.send_signal(signal.SIGHUP)
            wait_for_event(events_path, proc, "error", timeout_s=10)
            proc.wait(timeout=60)
        finally:
            kill_if_running(proc)
    events, lines = read_events(events_path)
    reason = events[-1].get("reason") if events and events[-1]["type"] == "appliance_stopped" else None
    return Outcome(
        events, out, reason=reason, returncode=proc.returncode, stderr=stderr_path.read_text(), lines=lines
    )


def complete_and_back_to_idle(o: Outcome) -> None:
    """Every row: every line is complete JSON, the stream ends with `appliance_stopped`, and
    every session that started ended (nothing stuck)."""
    assert o.lines and all(line.startswith("{") and line.endswith("}") for line in o.lines)
    kinds = [e["type"] for e in o.events]
    assert kinds[-1] == "appliance_stopped", kinds[-5:]
    assert kinds.count("session_started") == kinds.count("session_ended"), kinds


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_fault(
    row: Row,
    preloaded: Any,
    example: np.ndarray,
    two_questions: np.ndarray,
    models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fault = row.fault
    if isinstance(fault, LocalFault):
        outcome = run_local(fault, preloaded, two_questions, tmp_path, monkeypatch)
    elif isinstance(fault, RemoteFault):
        outcome = run_remote(fault, preloaded, two_questions, tmp_path, monkeypatch)
        assert not fault.private or PRIVATE_KEY not in "\n".join(outcome.lines)
    elif isinstance(fault, MicOutageFault):
        outcome = run_mic_outage(fault, two_questions, tmp_path, models_dir)
    elif isinstance(fault, SignalFault):
        outcome = run_signal(fault, tmp_path, models_dir)
    else:
        outcome = run_reload(fault, example, tmp_path, models_dir)
    complete_and_back_to_idle(outcome)
    for check in row.checks:
        check(outcome)


def test_the_table_has_one_row_per_fault_of_the_issue() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))
    for state in ("idle", "listening", "transcribing", "thinking", "speaking"):
        assert f"sigterm-{state}" in ids
    issue_rows = {
        *(
            "llm-http-500",
            "llm-hang",
            "llm-garbage-stream",
            "llm-half-reply-then-drop",
            "llm-refused-connection",
        ),
        *(
            "llm-endless-stream",
            "tts-exception",
            "stt-exception",
            "microphone-read-error",
            "sighup-broken-config",
        ),
        *(
            "remote-drop",
            "remote-stall",
            "remote-garbage",
            "remote-bad-metadata",
            "remote-trickling-signed-url",
        ),
    }
    assert issue_rows <= set(ids), issue_rows - set(ids)
