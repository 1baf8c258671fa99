"""The real appliance, headless: a WAV with the wake word and a command in, events out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.testing.speech import concat, read_wav, silence, write_wav

RATE = 16000

SPINE = ["wake_word_detected", "session_started", "listening_started", "speech_started", "utterance_ended"]


def run_appliance(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def read_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def spine_wav(
    tmp_path_factory: pytest.TempPathFactory, say: Callable[[str], np.ndarray]
) -> tuple[Path, dict[str, float]]:
    wake = say("Hey Jarvis!")
    command = say("What is the capital of France?")
    audio = concat(silence(1.0), wake, silence(0.6), command, silence(4.0))
    marks = {
        "wake_end": 1.0 + wake.size / RATE,
        "cmd_start": 1.0 + wake.size / RATE + 0.6,
        "cmd_end": 1.0 + wake.size / RATE + 0.6 + command.size / RATE,
        "total": audio.size / RATE,
    }
    # 44.1 kHz stereo on disk: the headless input takes any rate and channel count.
    from appliance.adapters.resample import resample

    hi = resample(audio, RATE, 44100)
    path = tmp_path_factory.mktemp("spine") / "in.wav"
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.repeat(hi[:, None], 2, axis=1).astype("<i2").tobytes())
    return path, marks


def test_headless_run_produces_the_spine_timeline(
    tmp_path: Path, models_dir: Path, spine_wav: tuple[Path, dict[str, float]]
) -> None:
    wav, marks = spine_wav
    events_path = tmp_path / "events.jsonl"
    out = tmp_path / "out.wav"
    proc = run_appliance(
        "run",
        "--input",
        str(wav),
        "--output",
        str(out),
        "--events",
        str(events_path),
        env_extra={"APPLIANCE_MODELS_DIR": str(models_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(events_path)
    types = [e["type"] for e in events]
    # the spine events appear, in order
    positions = [types.index(t) for t in SPINE]
    assert positions == sorted(positions), types
    assert types[-1] == "appliance_stopped"
    assert "session_ended" in types
    for e in events:
        assert isinstance(e["t"], float | int)
    ts = [float(e["t"]) for e in events]  # type: ignore[arg-type]
    assert ts == sorted(ts)
    by = {e["type"]: e for e in events}
    wake = by["wake_word_detected"]
    assert wake["name"] == "hey_jarvis" and float(wake["score"]) > 0.8  # type: ignore[arg-type]
    assert marks["wake_end"] - 0.4 < float(wake["audio_t"]) <= marks["wake_end"] + 0.5  # type: ignore[arg-type]
    # fast runs use the audio clock: event times are audio times
    assert abs(float(wake["t"]) - float(wake["audio_t"])) < 0.1  # type: ignore[arg-type]
    speech = by["speech_started"]
    assert abs(float(speech["audio_t"]) - marks["cmd_start"]) < 0.3  # type: ignore[arg-type]
    utt = by["utterance_ended"]
    assert abs(float(utt["duration_s"]) - (marks["cmd_end"] - marks["cmd_start"])) < 0.4  # type: ignore[arg-type]
    # what the speaker played: at least the wake chime
    played, rate = read_wav(out)
    assert played.size > 0.05 * rate


def test_realtime_run_keeps_the_input_timeline(
    tmp_path: Path, models_dir: Path, say: Callable[[str], np.ndarray]
) -> None:
    # the wake word and a short silence: the timeline, not the conversation (the fast run has that)
    audio = concat(silence(1.0), say("Hey Jarvis!"), silence(1.5))
    wav = write_wav(tmp_path / "in.wav", audio)
    marks = {"total": audio.size / RATE}
    events_path = tmp_path / "events.jsonl"
    out = tmp_path / "out.wav"
    proc = run_appliance(
        "run",
        "--input",
        str(wav),
        "--output",
        str(out),
        "--events",
        str(events_path),
        "--realtime",
        env_extra={"APPLIANCE_MODELS_DIR": str(models_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    played, rate = read_wav(out)
    # out.wav is on the input's timeline: at least as long as the input
    assert played.size / rate >= marks["total"] - 0.1
    events = read_events(events_path)
    wake = next(e for e in events if e["type"] == "wake_word_detected")
    # the wake chime starts right after the detection, at its place on the timeline
    first_sound = int(np.argmax(np.abs(played) > 500)) / rate
    assert float(wake["t"]) - 0.05 <= first_sound <= float(wake["t"]) + 0.5  # type: ignore[arg-type]


def test_stdin_pipe_input(tmp_path: Path, models_dir: Path, say: Callable[[str], np.ndarray]) -> None:
    audio = concat(silence(0.8), say("Hey Jarvis!"), silence(2.5))
    events_path = tmp_path / "events.jsonl"
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--input",
            "-",
            "--output",
            str(tmp_path / "o.wav"),
            "--events",
            str(events_path),
        ],
        input=audio.astype("<i2").tobytes(),
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    types = [e["type"] for e in read_events(events_path)]
    assert "wake_word_detected" in types and "session_ended" in types


def test_no_wake_word_means_no_session(
    tmp_path: Path, models_dir: Path, say: Callable[[str], np.ndarray]
) -> None:
    wav = write_wav(
        tmp_path / "in.wav", concat(silence(0.5), say("Turn on the lights please."), silence(1.0))
    )
    events_path = tmp_path / "events.jsonl"
    proc = run_appliance(
        "run",
        "--input",
        str(wav),
        "--output",
        str(tmp_path / "o.wav"),
        "--events",
        str(events_path),
        env_extra={"APPLIANCE_MODELS_DIR": str(models_dir)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    types = [e["type"] for e in read_events(events_path)]
    assert types == ["appliance_started", "appliance_stopped"]
