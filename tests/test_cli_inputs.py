"""Every bad input to `appliance run` / `check-config` / `doctor` / a reload gets a specific error
and exit code before anything slow starts, and nothing the user gave is ever overwritten."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
import sys
import wave
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance import cli
from appliance.config import load_config
from appliance.preflight import MIN_REPLY_TOKENS, MIN_TURN_TOKENS, check_config, estimate_counter, preflight
from appliance.runtime.app import Preloaded, Wiring
from appliance.runtime.clock import StreamClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.service import Service
from appliance.runtime.timers import Timers

REPO = Path(__file__).resolve().parents[1]


class ModelsLoaded(BaseException):
    """Raised instead of loading models: the check should have refused the input before."""


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`run` gets as far as `run_appliance` only when every check passed; it records the call."""
    calls: list[Any] = []

    def fake_run(config: Any, options: Any, **_: Any) -> Any:
        calls.append((config, options, os.lseek(0, 0, os.SEEK_CUR) if _stdin_is_file() else None))
        raise ModelsLoaded

    monkeypatch.setattr("appliance.runtime.app.run_appliance", fake_run)
    return calls


def _stdin_is_file() -> bool:
    try:
        return os.path.isfile(f"/proc/self/fd/{sys.stdin.fileno()}")
    except (OSError, ValueError):
        return False


def wav(path: Path, seconds: float = 0.5, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.sin(np.arange(int(rate * seconds)) / 10) * 8000).astype("<i2").tobytes())
    return path


def raw_wav(path: Path, tag: int, bits: int, payload: bytes = bytes(800), rate: int = 8000) -> Path:
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * bits // 8, bits // 8, bits)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str, command: str = "run") -> tuple[int | str, str]:
    """`appliance <command> args...` in process: (exit code or "models loaded", stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        code: int | str = cli.main([command, *args])
    except ModelsLoaded:
        code = "models loaded"
    finally:  # main() sets up logging on this test's captured stderr: undo it
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    return code, capsys.readouterr().err


# --- outputs never destroy an input ---------------------------------------------------------------


def test_output_equal_to_the_input_is_refused_and_the_recording_survives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    rec = wav(tmp_path / "rec.wav")
    before = rec.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.wav").symlink_to(rec)
    os.link(rec, tmp_path / "hard.wav")
    for same in (str(rec), str(tmp_path / "sub" / ".." / "rec.wav"), str(tmp_path / "link.wav"),
                 str(tmp_path / "hard.wav")):  # fmt: skip
        code, err = run(capsys, "--input", str(rec), "--output", same)
        assert code == 2, err
        assert err.startswith(f"--output and --input name the same file ({rec}): writing --output would ")
        code, err = run(capsys, "--input", same, "--events", str(rec))
        assert code == 2 and err.startswith("--events and --input name the same file (")
    assert rec.read_bytes() == before and no_models == []


def test_events_equal_to_the_output_or_the_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    rec = wav(tmp_path / "rec.wav")
    out = tmp_path / "out.wav"  # not created yet: two writers of one new file
    code, err = run(capsys, "--input", str(rec), "--output", str(out), "--events", str(out))
    assert code == 2 and err.startswith(f"--events and --output name the same file ({out}):")
    config = tmp_path / "c.yaml"
    config.write_text("appliance: {}\n")
    code, err = run(capsys, "--config", str(config), "--input", str(rec), "--events", str(config))
    assert code == 2 and err.startswith(f"--events and --config name the same file ({config}):")
    assert config.read_text() == "appliance: {}\n" and not out.exists() and no_models == []
    # /dev/null twice is not a collision: nothing is destroyed
    assert run(capsys, "--input", str(rec), "--output", "/dev/null", "--events", "/dev/null")[0] == (
        "models loaded"
    )


def test_an_output_naming_the_file_on_stdin_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_models: list[Any]
) -> None:
    rec = wav(tmp_path / "rec.wav")
    before = rec.read_bytes()
    with rec.open("rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, err = run(capsys, "--input", "-", "--output", str(rec))
        assert code == 2 and err.startswith(f"--output ({rec}) is the file on stdin (--input -)")
        # a WAV file on stdin is checked, and left unread for the microphone
        code, err = run(capsys, "--input", "-", "--output", str(tmp_path / "out.wav"))
        assert code == "models loaded", err
    assert rec.read_bytes() == before
    assert [(options.input, offset) for _, options, offset in no_models] == [("-", 0)]


@pytest.mark.parametrize(
    ("flag", "target", "expected"),
    [
        ("--output", "missing/out.wav", "--output: cannot create {p}: the folder {d}/missing does not exist"),
        ("--events", "", "--events: {d} is a directory; give a file name"),
        ("--events", "rec.wav/events.jsonl", "--events: cannot create {p}: {d}/rec.wav is not a folder"),
    ],
)
def test_unwritable_outputs_are_named_before_any_model_loads(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_models: list[Any],
    flag: str,
    target: str,
    expected: str,
) -> None:
    rec = wav(tmp_path / "rec.wav")
    path = tmp_path / target
    code, err = run(capsys, "--input", str(rec), flag, str(path))
    assert code == 2 and err.strip() == expected.format(p=path, d=tmp_path)
    assert no_models == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_outputs_without_permission_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    rec = wav(tmp_path / "rec.wav")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run(capsys, "--input", str(rec), "--events", str(locked / "e.jsonl"))
    assert (
        code == 2
        and err.strip() == f"--events: cannot create {locked / 'e.jsonl'}: no write permission in {locked}"
    )
    readonly = tmp_path / "ro.wav"
    readonly.write_bytes(b"")
    readonly.chmod(0o400)
    code, err = run(capsys, "--input", str(rec), "--output", str(readonly))
    assert code == 2 and err.strip() == f"--output: cannot write {readonly} (permission denied)"


# --- inputs are checked before any model loads ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("song.mp3", lambda p: p.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(500)),
         "not a RIFF/WAVE file: it is an MP3 file; supported: WAV (RIFF/WAVE) with PCM"),
        ("ulaw.wav", lambda p: raw_wav(p, 7, 8), "µ-law (G.711) samples are not supported; supported:"),
        ("cut.wav", lambda p: p.write_bytes(wav(p).read_bytes()[:30]),
         "truncated header: the file ends inside the fmt chunk"),
        ("adpcm.wav", lambda p: raw_wav(p, 2, 4), "Microsoft ADPCM samples are not supported"),
        ("notes.txt", lambda p: p.write_text("hello, this is not audio\n"),
         "not a RIFF/WAVE file: it looks like text"),
    ],
)  # fmt: skip
def test_an_input_that_is_not_a_supported_wav_is_named_with_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_models: list[Any],
    name: str,
    make: Any,
    expected: str,
) -> None:
    path = tmp_path / name
    make(path)
    code, err = run(capsys, "--input", str(path), "--output", str(tmp_path / "out.wav"))
    assert code == 2 and err.startswith(f"--input: cannot read WAV file {path}: {expected}"), err
    assert no_models == [] and not (tmp_path / "out.wav").exists()


def test_inputs_the_reader_supports_still_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    ok = [
        wav(tmp_path / "a.wav", rate=44100),
        raw_wav(tmp_path / "b.wav", 1, 8),
        raw_wav(tmp_path / "c.wav", 3, 32),
    ]
    for path in ok:
        assert run(capsys, "--input", str(path))[0] == "models loaded"
    assert [options.input for _, options, _ in no_models] == [str(p) for p in ok]


def test_missing_or_directory_inputs_and_a_bad_echo_gain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    assert run(capsys, "--input", str(tmp_path / "nope.wav")) == (
        2,
        f"--input: {tmp_path / 'nope.wav'} does not exist\n",
    )
    assert run(capsys, "--input", str(tmp_path)) == (
        2,
        f"--input: {tmp_path} is a directory, not a WAV file\n",
    )
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    assert run(capsys, "--input", str(fifo)) == (
        2,
        f"--input: {fifo} is not a regular file (for a pipe, use --input - < {fifo})\n",
    )
    rec = wav(tmp_path / "rec.wav")
    assert run(capsys, "--input", str(rec), "--simulate-echo", "5") == (
        2,
        "--simulate-echo: 5.0 is outside 0–4\n",
    )


def test_stdin_that_is_a_file_in_another_format_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_models: list[Any]
) -> None:
    ulaw = raw_wav(tmp_path / "u.wav", 7, 8)
    with ulaw.open("rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, err = run(capsys, "--input", "-")
    assert code == 2 and err.startswith("--input -: cannot read WAV file <stdin>: µ-law (G.711) samples")
    flac = tmp_path / "x.flac"
    flac.write_bytes(b"fLaC" + bytes(100))
    with flac.open("rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, err = run(capsys, "--input", "-")
    assert code == 2 and err.strip() == "--input -: stdin is not raw audio or a WAV: it is a FLAC file"
    assert no_models == []


def test_the_real_command_refuses_without_a_traceback_or_loading_models(tmp_path: Path) -> None:
    rec = wav(tmp_path / "rec.wav")
    before = rec.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(before[:20])
    for args in (["--input", str(rec), "--output", str(rec)], ["--input", str(cut)],
                 ["--input", str(rec), "--events", str(tmp_path / "no" / "e.jsonl")]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "appliance", "run", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "loading" not in proc.stderr.lower()
    assert rec.read_bytes() == before


# --- variables and the prompt's size: check-config, doctor, run and reload agree ---------------


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def agent(prompt: str = "You help.", first: str = "Hello.", **placeholders: Any) -> dict[str, Any]:
    return {
        "agent": {
            "prompt": {"prompt": prompt},
            "first_message": first,
            "dynamic_variables": {"dynamic_variable_placeholders": placeholders},
        }
    }


def words(*entries: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"wake_words": {"words": [{"name": n, "dynamic_variables": v} for n, v in entries]}}


PLACEHOLDERS = "conversation_config.agent.dynamic_variables.dynamic_variable_placeholders"


def test_check_config_finds_variables_a_session_could_not_render(tmp_path: Path) -> None:
    doc = {
        "conversation_config": agent(
            "You help {{user}} in the {{room}} at {{system__time}}; caller {{system__caller_id}}.",
            "Hi {{ user }}! Token {{secret__token}}.",
            user="guest",
        ),
        "appliance": words(
            ("hey_jarvis", {"room": "kitchen"}), ("alexa", {}), ("hey_mycroft", {"room": "hall"})
        ),
    }
    cfg, lines = check_config(write(tmp_path / "c.yaml", doc))
    assert cfg is None
    assert lines == [
        "conversation_config.agent.prompt.prompt: {{room}} is defined only by wake word(s) 'hey_jarvis', "
        "'hey_mycroft'; wake word(s) 'alexa' lack it (add it to the dynamic_variables of "
        f"appliance.wake_words.words[1], or a default to {PLACEHOLDERS})",
        "conversation_config.agent.prompt.prompt: {{system__caller_id}} is not a system variable the "
        "device sets (system__agent_id, system__call_duration_secs, system__conversation_id, "
        "system__current_agent_id, system__time, system__time_utc, system__timezone)",
        "conversation_config.agent.first_message: {{secret__token}} is a secret variable: secret__ variables "
        "may only be used in tool headers, never in the first message (it would reach the LLM and the logs)",
    ]
    doc["conversation_config"] = agent("You help {{name}}.", "Hi.")
    assert check_config(write(tmp_path / "c.yaml", doc))[1] == [
        "conversation_config.agent.prompt.prompt: {{name}} is not defined; give it a value in "
        f"{PLACEHOLDERS} or in the dynamic_variables of every wake word"
    ]
    # defined for every wake word (or by a placeholder): fine; remote mode renders nothing here
    doc["appliance"] = words(("hey_jarvis", {"name": "Ada"}), ("alexa", {"name": "Bo"}))
    assert check_config(write(tmp_path / "c.yaml", doc))[0] is not None
    remote = {
        "conversation_config": agent("{{nope}}"),
        "appliance": {"mode": "remote", "remote": {"agent_id": "a"}},
    }
    assert check_config(write(tmp_path / "r.yaml", remote))[0] is not None


def test_run_doctor_and_check_config_refuse_the_same_variables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_models: list[Any]
) -> None:
    config = write(tmp_path / "c.yaml", {"conversation_config": agent("Hi {{who}}")})
    expected = (
        "conversation_config.agent.prompt.prompt: {{who}} is not defined; give it a value in "
        f"{PLACEHOLDERS} or in the dynamic_variables of every wake word"
    )
    code, err = run(capsys, str(config), command="check-config")
    assert code == 2 and expected in err
    code, err = run(capsys, "--config", str(config), "--input", str(wav(tmp_path / "rec.wav")))
    assert code == 2 and err == f"invalid configuration in {config}:\n  {expected}\n"
    code, err = run(capsys, "--config", str(config), "--no-audio", "--no-network", command="doctor")
    assert code == 2 and err == f"invalid configuration in {config}:\n  {expected}\n"
    assert no_models == []


def long_prompt(chars: int) -> str:
    sentence = "When the user asks about the kitchen timer, answer briefly and politely in plain words. "
    return (sentence * (chars // len(sentence) + 1))[:chars]


def test_a_prompt_over_the_context_is_found_with_its_sizes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    models_dir: Path,
    no_models: list[Any],
) -> None:
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(models_dir))
    config = write(tmp_path / "c.yaml", {"conversation_config": agent(long_prompt(13_000))})
    cfg, lines = check_config(config)
    assert cfg is None and len(lines) == 1
    (line,) = lines
    assert line.startswith("conversation_config.agent.prompt.prompt: the system prompt the device sends is ")
    assert (
        "tokens (counted with the tokenizer of smollm2-135m-instruct) but appliance.local.llm.n_ctx is "
        in line
    )
    assert line.endswith(
        f"2,048 and {MIN_TURN_TOKENS + MIN_REPLY_TOKENS} are kept for the user's turn ({MIN_TURN_TOKENS}) "
        f"and the reply ({MIN_REPLY_TOKENS}): at most 1,856 prompt tokens fit; shorten the prompt or raise "
        "appliance.local.llm.n_ctx"
    )
    tokens = int(line.split(" sends is ")[1].split(" tokens")[0].replace(",", ""))
    assert 2200 < tokens < 3300  # English: 4-6 characters per token
    # run refuses it at start, before the models load (it used to die in llama.cpp)
    code, err = run(capsys, "--config", str(config), "--input", str(wav(tmp_path / "rec.wav")))
    assert code == 2 and err == f"invalid configuration in {config}:\n  {line}\n"
    # with a larger context it fits; a custom LLM's context is not the device's business
    bigger = {
        "conversation_config": agent(long_prompt(13_000)),
        "appliance": {"local": {"llm": {"n_ctx": 8192}}},
    }
    assert check_config(write(tmp_path / "big.yaml", bigger))[0] is not None
    custom = {
        "conversation_config": {
            "agent": {"prompt": {"prompt": long_prompt(13_000), "llm": "custom-llm",
                                 "custom_llm": {"url": "http://127.0.0.1:9/v1"}}}
        }
    }  # fmt: skip
    assert check_config(write(tmp_path / "custom.yaml", custom))[0] is not None
    assert no_models == []


def test_a_prompt_that_leaves_no_room_for_history_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path
) -> None:
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(models_dir))
    doc = {"conversation_config": agent(long_prompt(5_000))}  # ~1000 tokens; history_tokens 1024
    cfg, warnings = check_config(write(tmp_path / "c.yaml", doc))
    assert cfg is not None
    assert [w for w in warnings if w.startswith("appliance.local.llm.history_tokens: 1,024 tokens hold the")]


def test_without_the_tokenizer_an_estimate_warns_instead_of_refusing(tmp_path: Path) -> None:
    doc = {
        "conversation_config": agent(long_prompt(13_000)),
        "appliance": {"models_dir": str(tmp_path / "none")},
    }
    cfg, warnings = check_config(write(tmp_path / "c.yaml", doc))
    assert cfg is not None
    (line,) = [w for w in warnings if "appliance.local.llm.n_ctx" in w]
    assert (
        "the system prompt the device sends is 4,339 tokens (estimated at 3 characters per token; the "
        "model's tokenizer is not available: model 'smollm2-135m-instruct' is not installed" in line
    )
    problems, _ = preflight(load_config(tmp_path / "c.yaml"), estimate_counter())
    assert problems == []


# --- reload: a broken file keeps the running configuration -------------------------------------


class _Mic:
    sample_rate_hz = 16000
    dropped_blocks = 0

    async def frames(self) -> AsyncIterator[Any]:
        return
        yield

    async def close(self) -> None:
        return None


class _Speaker:
    playing = False

    async def play(self, audio: Any, sample_rate_hz: int) -> bool:
        return True

    def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, Path, list[str]]]:
    path = write(
        tmp_path / "c.yaml", {"conversation_config": agent(), "appliance": {"status": {"enabled": False}}}
    )
    clock = StreamClock()
    events = EventLog(clock)
    events.keep_history = True
    wiring = Wiring(microphone=_Mic(), speaker=_Speaker(), clock=clock, events=events, timers=Timers(clock))
    calls: list[str] = []

    def record(name: str, result: Any) -> Any:
        calls.append(name)
        return result

    executor = ThreadPoolExecutor(1)
    svc = Service(
        load_config(path),
        wiring,
        Preloaded(None, None, None),
        executor=executor,
        make_loop=lambda *_: record("loop", object()),
        load_models=lambda *_: record("models", Preloaded(None, None, None)),
        env={"STATE_DIRECTORY": str(tmp_path / "state")},
    )
    yield svc, path, calls
    asyncio.run(svc.close())
    executor.shutdown()


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "appliance:\n  custom_llm_extra_body:\n" + "".join(f"    {line}\n" for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_alias_bomb(6), "line 8, column 9: more than 100,000 values once aliases are expanded"),
        (
            "appliance:\n  custom_llm_extra_body:\n    x: " + "[" * 600 + "]" * 600,
            "nested more than 100 levels",
        ),
        (yaml.safe_dump({"conversation_config": agent("Hi {{who}}")}), "{{who}} is not defined"),
    ],
)
def test_a_reload_of_a_broken_file_keeps_the_running_configuration(
    service: tuple[Service, Path, list[str]], text: str, expected: str
) -> None:
    svc, path, calls = service
    running = svc.config
    path.write_text(text)
    asyncio.run(svc._reload())
    assert svc.config is running and calls == []
    (event,) = [e for e in svc.events.history if e["type"] == "error"]
    assert event["code"] == "config_reload_failed" and expected in event["message"]
    # and a good file is still taken
    write(
        path,
        {"conversation_config": agent(first="Hello again."), "appliance": {"status": {"enabled": False}}},
    )
    asyncio.run(svc._reload())
    assert calls == ["models", "loop"]
