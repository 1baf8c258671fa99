"""The idle benchmark runs end to end in a tiny configuration and produces sane tables.

Only shapes and signs are checked, never timings: performance is measured by
`python -m benchmarks.run`, not asserted in tests (see benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import idle_loop, run  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.slow]


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (row, key)


def test_idle_benchmark_quick_run_has_expected_tables(models_dir: Path) -> None:
    names = run.select(["idle"])
    assert names == [
        "idle.cpu",
        "idle.latency",
        "idle.latency.runs",
        "idle.memory",
        "idle.engines",
        "idle.engines.voices",
    ]
    results = run.run(names, quick=True, out=None)
    json.dumps(results)  # what --json writes

    # 1. CPU per 80 ms frame: 2 s of audio = 25 blocks per configuration, one pass
    cpu = {row["component"]: row for row in results["idle.cpu"]["rows"]}
    measured = [name for name, _ in idle_loop.CPU_CONFIGS]
    assert list(cpu) == [*measured, "VAD gate cost (router − gate off)"]
    for name in measured:
        row = cpu[name]
        assert row["frames"] == 25
        _positive(row, "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU ms/frame", "% of one core")
        assert row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"] <= row["max ms"]
    router = cpu[measured[0]]
    assert router["× router"] == pytest.approx(1.0)
    assert router["false wakes"] == 0
    assert router["verdict"] in {"PASS", "FAIL"}
    assert router["÷ target"] == pytest.approx(router["% of one core"] / idle_loop.CPU_TARGET_PCT)
    micro = cpu["router idle, microWakeWord: wake word + VAD gate"]
    assert micro["false wakes"] == 0 and micro["verdict"] in {"PASS", "FAIL"}
    assert micro["÷ target"] == pytest.approx(micro["% of one core"] / idle_loop.MWW_CPU_TARGET_PCT)

    # 2. latency: both synthesized phrases detected, within a plausible window of audio time
    summary = results["idle.latency"]["rows"]
    assert len(summary) == 2
    for row in summary:
        assert row["utterances"] == row["detected"] == 2
        assert row["verdict"] in {"PASS", "FAIL"}
        assert row["min ms"] <= row["median ms"] <= row["p90 ms"] <= row["max ms"]
    per_phrase = results["idle.latency.runs"]["rows"]
    assert [r["#"] for r in per_phrase] == [1, 2]
    for row in per_phrase:
        assert row["score"] >= 0.5
        assert -500.0 < row["latency ms"] < 1000.0
        _positive(row, "phrase end s", "detected s", "block ms")

    # 3. memory: fresh processes, each stage at least the bare baseline; the idle appliances
    # (openWakeWord, microWakeWord, the whole remote-mode process) carry the target
    memory = results["idle.memory"]["rows"]
    assert len(memory) == 8  # Linux: the remote-mode row reads /proc/PID/status
    for row in memory:
        _positive(row, "RSS MiB")
    assert memory[0]["Δ vs baseline MiB"] == 0
    assert all(row["Δ vs baseline MiB"] > 0 for row in memory[1:])
    assert [i for i, row in enumerate(memory) if row["verdict"] in {"PASS", "FAIL"}] == [3, 5, 7]
    assert memory[7]["process"].startswith("appliance run, remote mode")

    # 4. the engines side by side: every clip counted once per engine, recall a percentage
    engines = results["idle.engines"]["rows"]
    assert [r["engine"] for r in engines] == ["openWakeWord", "microWakeWord"]
    clips = idle_loop.engine_clips(idle_loop.QUICK)
    for row in engines:
        assert row["piper joe"].endswith("/2") and row["piper, other speeds"].endswith("/2")
        assert row["espeak-ng voices"].endswith("/1") and row["example recording"] == "1/1"
        assert 0.0 <= row["recall %"] <= 100.0 and row["false wakes"] >= 0
        assert row["non-wake audio s"] == pytest.approx(
            sum(c.audio.size for c in clips if not c.wake) / 16000
        )
        _positive(row, "CPU % of one core")
    voices = results["idle.engines.voices"]["rows"]
    assert sum(r["clips"] for r in voices) == len(clips)

    # every table prints as aligned text: a header, a rule, one line per row
    for name in names:
        rows = results[name]["rows"]
        lines = run.format_table(rows).splitlines()
        assert len(lines) == len(rows) + 2
        assert lines[0].split()[0] == next(iter(rows[0]))


def test_agent_benchmark_quick_run_has_expected_tables(models_dir: Path) -> None:
    from benchmarks import agent_session, echo, local_agent

    # `--only agent` runs these and the echo tables (benchmarks/echo.py, their own test below)
    assert run.select(["agent"]) == [*local_agent.BENCHMARKS, *agent_session.BENCHMARKS, *echo.BENCHMARKS]
    # agent.latency.word_agent: its rows and its LLM wrapper have their own test below (a run
    # waits out the user's speech, too slow for this one)
    names = [*local_agent.BENCHMARKS, *agent_session.BENCHMARKS]
    assert names[-1] == "agent.latency.word_agent"
    names = names[:-1]
    assert names == [
        "agent.latency",
        "agent.latency.stages",
        "agent.latency.turns",
        "agent.latency.long",
        "agent.memory",
        "agent.latency.session",
        "agent.latency.pause",
    ]
    results = run.run(names, quick=True, out=None)
    json.dumps(results)  # what --json writes

    # 1. latency summary: endpointing row, LocalAgentSession rows, the appliance's own number
    latency = results["agent.latency"]["rows"]
    silence, session_row, session_eos, appliance, appliance_eos, other_cpu = latency
    assert silence["median s"] == pytest.approx(local_agent.ENDPOINT_SILENCE_S)
    for row in (session_row, session_eos):
        assert row["n"] == 3
        _positive(row, "median s", "p90 s")
        assert row["median s"] <= row["p90 s"]
    assert session_eos["median s"] == pytest.approx(session_row["median s"] + local_agent.ENDPOINT_SILENCE_S)
    assert session_row["verdict"] in {"PASS", "FAIL"}  # not ERROR: no error events, every turn measured
    assert session_row["÷ target"] == pytest.approx(session_row["median s"] / local_agent.LATENCY_TARGET_S)
    assert appliance["n"] == appliance_eos["n"] == 1  # one fast headless run reported its turn_metrics
    assert "verdict" not in appliance  # no error events
    _positive(appliance, "median s")
    assert appliance_eos["median s"] > appliance["median s"]  # the endpointing silence comes on top
    assert other_cpu["other CPU %"] is None or 0.0 <= other_cpu["other CPU %"] <= 100.0

    # per turn: 3 session turns and the appliance run
    turns = results["agent.latency.turns"]["rows"]
    assert [r["#"] for r in turns] == [1, 2, 3, "app 1"]
    for row in turns[:3]:
        _positive(row, "stt", "llm 1st tok", "tts 1st audio", "total", "chunks")
        assert row["total"] > row["stt"] + row["tts 1st audio"]  # the parts happen one after the other
        assert row["heard ok"] and row["errors"] == 0
    assert turns[3]["errors"] == 0 and turns[3]["reply"]
    _positive(turns[3], "stt", "total")

    stages = results["agent.latency.stages"]["rows"]
    total = next(r for r in stages if r["stage"].startswith("total: t0"))
    assert total["session median s"] == pytest.approx(session_row["median s"])
    assert total["appliance median s"] == pytest.approx(appliance["median s"])

    # the open requests: one session turn in quick mode, its reply spoken in one or more chunks
    long_row, long_other_cpu = results["agent.latency.long"]["rows"]
    assert long_row["n"] == 1 and "verdict" not in long_row
    _positive(long_row, "median s", "stt median s", "llm 1st token median s", "tts 1st chunk median s")
    assert long_row["chunks median"] >= 1
    assert long_other_cpu["other CPU %"] is None or 0.0 <= long_other_cpu["other CPU %"] <= 100.0

    # 2. memory: fresh processes; every model adds to the idle appliance, which adds to the baseline
    memory = results["agent.memory"]["rows"]
    assert len(memory) == 4
    for row in memory:
        _positive(row, "RSS MiB", "peak MiB")
    assert memory[0]["Δ vs baseline MiB"] == 0
    assert memory[1]["Δ vs idle MiB"] == 0
    assert 0 < memory[1]["Δ vs baseline MiB"] < memory[2]["Δ vs baseline MiB"]

    # 3. through the real LocalAgentSession (quick: this machine only, one turn per mode)
    session = results["agent.latency.session"]["rows"]
    assert [(r["budget"], r["mode"], r["turns"]) for r in session] == [
        ("box", "no hold", 1),
        ("box", "spec STT", 1),
        ("box", "spec full", 1),
        ("box", "paused, spec", 1),
    ]
    assert session[3]["spec wasted"] == "1/2"  # the first part's speculation, discarded
    # a reply speculated on the first part (if its transcript came before speech resumed) was
    # wasted; the one on the whole was committed
    assert session[3]["replies wasted"] in {"0/0", "0/1", "1/1", "1/2"}
    assert session[2]["replies wasted"] in {"0/0", "0/1"}
    for row in session:
        assert row["errors"] == 0 and row["heard ok"] == "1/1" and row["early audio"] == 0
        assert row["end of speech → first audio s (median)"] > row["endpointing s"] > 0
        assert row["verdict"] in {"ok", "FAIL"}
    pauses = results["agent.latency.pause"]["rows"]
    assert len(pauses) == 3 and all(r["replies started early"] == 0 for r in pauses)
    assert all(int(r["speculations (discarded)"].split("(")[1].rstrip(")")) >= 1 for r in pauses)

    for name in names:
        rows = results[name]["rows"]
        lines = run.format_table(rows).splitlines()
        assert len(lines) == len(rows) + 2
        assert lines[0].startswith(next(iter(rows[0])))


def test_word_agent_rows_and_the_llm_without_prefill() -> None:
    from benchmarks import agent_session

    turn = {"end_of_speech_to_first_audio_s": 1.0, "llm_first_token_s": 0.5, "heard_ok": True, "errors": []}
    turns = [{**turn, "mode": "prefill"}, {**turn, "mode": "no prefill", "llm_first_token_s": 2.5}]
    rows = agent_session.word_agent_rows("pi4", turns, "0.5")
    assert [(r["mode"], r["turns"], r["LLM first token s (median)"]) for r in rows] == [
        ("no prefill", 1, 2.5),
        ("prefill", 1, 0.5),
    ]

    class Llm:
        async def prefill(self, messages: Any, tools: Any) -> None: ...

        def stream_chat(self, *args: Any) -> str:
            return "stream"

        def wait_idle(self) -> str:
            return "idle"

    wrapped = agent_session._WithoutPrefill(Llm())
    assert getattr(wrapped, "prefill", None) is None  # the session then skips the prefill
    assert wrapped.stream_chat([], None, {}) == "stream" and wrapped.wait_idle() == "idle"


def test_soak_quick_run_has_no_stuck_sessions(models_dir: Path) -> None:
    """`--only soak --quick`: 5 minutes of a day (wake words, questions, chatter, a barge-in, seeded
    LLM, STT and TTS faults) through the real appliance; every session comes back to idle."""
    from benchmarks import soak

    assert run.select(["soak"]) == ["soak"]  # the 30-minute real-time soak only when named
    assert "soak.realtime" not in run.select(None)
    results = run.run(["soak"], quick=True, out=None)
    json.dumps(results)  # what --json writes
    rows = {row["metric"]: row for row in results["soak"]["rows"]}
    assert rows["stuck sessions"]["value"] == 0 and rows["stuck sessions"]["verdict"] == "PASS"
    assert "wedged at audio (s)" not in rows
    assert rows["audio played (h)"]["value"] >= soak.FAST_QUICK_AUDIO_S / 3600
    assert rows["sessions"]["value"] >= 5
    assert rows["turns (user transcripts)"]["value"] >= rows["sessions"]["value"] - 2
    assert rows["events: malformed lines"]["value"] == 0
    assert rows["stopped (reason, exit code)"]["verdict"] == "PASS"
    assert rows["open fds start / after warm-up / end"]["verdict"] in {"PASS", "FAIL"}
    [slope] = [row for metric, row in rows.items() if metric.startswith("RSS slope after warm-up")]
    assert slope["value"] is None and slope["verdict"] is None  # too short a run for a slope
    lines = run.format_table(results["soak"]["rows"]).splitlines()
    assert len(lines) == len(results["soak"]["rows"]) + 2


def test_echo_benchmark_quick_run_has_expected_tables(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import echo

    names = run.select(["agent.echo"])
    assert names == list(echo.BENCHMARKS) == ["agent.echo", "agent.echo.appliance", "agent.echo.cpu"]
    # the whole appliance's rows on the file clock: the table's code, in 4 s instead of 29 s of
    # real time (tests/e2e/test_local_agent.py runs the canceller and barge-in in real time)
    monkeypatch.setattr(echo, "QUICK", dataclasses.replace(echo.QUICK, realtime=False))
    results = run.run(names, quick=True, out=None)
    json.dumps(results)

    # the session path: the no-echo floor, then the small room at gain 1.0, gating and canceller
    floor, *rows = results["agent.echo"]["rows"]
    assert floor["mode"] == "off" and floor["barge-in detected"] == "2/2"  # no echo: the VAD hears them
    assert [(r["gain"], r["mode"]) for r in rows] == [(1.0, "gate"), (1.0, "webrtc")]
    for row in rows:
        assert row["room"].startswith("small (RT60 0.2 s, 4 cm)") and row["target"] == "yes"
        assert row["verdict"] in {"PASS", "FAIL"}
        _positive(row, "ERLE dB", "CPU %")
    gate, canceller = rows
    assert canceller["turns self-interrupted"] == "0/2"  # deterministic input, a seeded room
    assert canceller["ERLE dB"] > gate["ERLE dB"] + 10.0

    # the whole appliance in real time: one room, the default mode (quick)
    live = results["agent.echo.appliance"]["rows"]
    assert [r["mode"] for r in live] == ["webrtc"]
    for row in live:
        assert row["errors"] == 0 and row["verdict"] in {"PASS", "FAIL"}
        assert row["quiet: agent turns"] >= 1
        assert isinstance(row["barge-in detected"], bool)

    cpu = results["agent.echo.cpu"]["rows"]
    assert [r["mode"] for r in cpu] == ["gate", "webrtc", echo.WITH_BANDS]
    for row in cpu:
        _positive(row, "audio s", "CPU % of one core", "ms per 80 ms block", "wall × real time")

    for name in names:
        rows_ = results[name]["rows"]
        lines = run.format_table(rows_).splitlines()
        assert len(lines) == len(rows_) + 2


def test_wakeword_benchmark_quick_run_has_expected_tables(models_dir: Path) -> None:
    names = run.select(["wakeword"])
    assert names == ["wakeword.heldout", "wakeword.idle_cost"]
    results = run.run(names, quick=True, out=None)
    json.dumps(results)
    [row] = results["wakeword.heldout"]["rows"]
    assert row["phrase"] == "hello lamp" and row["held-out takes"] == 3
    assert 0.01 < row["negative h"] < 0.02
    _positive(row, "train s", "trained threshold", "suggested threshold")
    assert 0 <= row["recall % @suggested"] <= 100 and row["FA/h @suggested"] >= 0
    assert row["verdict"] in {"PASS", "FAIL"}
    assert isinstance(row["near misses ≥ threshold"], str)
    flite = row["held-out Flite speaker recall % @trained"]
    assert flite is None if shutil.which("flite") is None else flite in {100 * k / 5 for k in range(6)}
    idle = results["wakeword.idle_cost"]["rows"]
    assert [r["detector"] for r in idle] == ["hey_jarvis", "hey_jarvis + 1 trained", "hey_jarvis + 2 trained"]
    for r in idle:
        _positive(r, "% of one core")
    assert idle[0]["added per word %"] is None and idle[1]["verdict"] in {"PASS", "FAIL"}


def test_kb_retrieval_benchmark_quick_run() -> None:
    from benchmarks import knowledge

    assert {"kb.retrieval", "kb.accuracy", "kb.misses", "kb.latency"} <= set(run.BENCHMARKS)
    rows = knowledge.retrieval_table(quick=True)
    assert [r["knowledge base"] for r in rows] == ["kiosk (5 files, FAQ)", "20 pages + FAQ"]
    for row in rows:
        _positive(row, "chunks", "index s (cold)", "retrieval p50 ms", "max ms", "CPU max ms")
        assert row["retrieval p50 ms"] <= row["p95 ms"] <= row["max ms"]
    assert rows[1]["chunks"] > rows[0]["chunks"] and rows[1]["index s (cached)"] > 0
    assert knowledge.right("It costs Fourteen euros.", ["14", "fourteen"])
    assert not knowledge.right("It costs 40 euros.", ["14", "fourteen"])
