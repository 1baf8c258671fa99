"""Local-agent benchmarks: how fast the offline agent answers and what it costs in RAM (how
often it interrupts itself on its own echo: `benchmarks/echo.py`).

Everything runs the real models (faster-whisper tiny.en, SmolLM2-135M in-process through
llama-cpp-python, the piper joe voice), loaded the way the appliance loads them
(`runtime.app.preload` with the default configuration), on speech synthesized with piper. Turns
go through the real `LocalAgentSession` (`benchmarks/agent_session.py` drives it) and through the
whole appliance loop (`run_async`); the agent's memory is compared with the idle-only process
and a bare Python + numpy process.

`python -m benchmarks.local_agent --rss STAGE` is the fresh-process probe behind `memory_table`.
Only the standard library, numpy and the benchmarks' own helpers (themselves standard library +
numpy at module level) are imported at module level, so the probe's baseline stage measures a
bare Python + numpy process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.agent_session import SessionTurn, session_turn, utterance
from benchmarks.common import (
    ENDPOINT_SILENCE_S,
    QUESTIONS,
    Row,
    _appliance_config,
    _default_config,
    _errors,
    _preloaded,
    _wake_and_ask,
    _words,
    run_appliance,
)
from benchmarks.idle_loop import REPO_ROOT, _peak_mb, _rss_mb

LATENCY_TARGET_S = 1.0  # session median, end-of-speech decision → first reply audio

WARMUP_QUESTION = "Hello, how are you today?"
# open requests whose replies run long: several chunks, spoken while the LLM goes on (informational)
LONG_REQUESTS = (
    "Tell me a short story about a cat.",
    "Explain how rain forms.",
    "Describe the city of Paris.",
    "Give me some tips for sleeping better.",
)


@dataclass(frozen=True)
class Settings:
    turns: int = 2 * len(QUESTIONS)  # each question twice
    long_turns: int = 2 * len(LONG_REQUESTS)
    appliance_runs: int = 3
    warmup: bool = True  # one untimed session turn before the measured ones


FULL = Settings()
QUICK = Settings(turns=3, long_turns=1, appliance_runs=1, warmup=False)  # numbers meaningless anyway


def settings_for(quick: bool) -> Settings:
    return QUICK if quick else FULL


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _p90(values: Sequence[float]) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 90)) if values else None


# ---------------------------------------------------------------------------------------------
# 1. latency: turns through the real LocalAgentSession and the whole appliance loop


def _pipeline_s(turn: SessionTurn) -> float | None:
    """End-of-speech decision → first reply audio (the session's total less the endpointing)."""
    total = turn.end_of_speech_to_first_audio_s
    return None if total is None else total - ENDPOINT_SILENCE_S


def _llm_to_chunk_s(turn: SessionTurn) -> float | None:
    """What the split leaves: from the LLM request to the first chunk cut (its first clause)."""
    pipeline, stt, tts = _pipeline_s(turn), turn.stt_s, turn.tts_first_audio_s
    if pipeline is None or stt is None or tts is None:
        return None
    return pipeline - stt - tts


async def _session_turns(texts: Sequence[str], turns: int, warmup: bool) -> list[SessionTurn]:
    """`turns` turns over `texts` in order through `LocalAgentSession` (default: no LLM hold),
    after one untimed warm-up turn (`warmup`)."""
    questions = [texts[i % len(texts)] for i in range(turns)]
    audio = {q: utterance(q) for q in {*questions, WARMUP_QUESTION}}  # synthesized before timing
    if warmup:
        await session_turn(WARMUP_QUESTION, audio[WARMUP_QUESTION], False)
    return [await session_turn(q, audio[q], False) for q in questions]


@dataclass(frozen=True)
class ApplianceTurn:
    question: str
    transcript: str
    reply: str
    metrics: dict[str, Any]
    errors: int


def measure_appliance(settings: Settings) -> list[ApplianceTurn]:
    """Fast headless runs (turn based: the input waits while the agent thinks and speaks), one
    question each, with the real SmolLM2: the `turn_metrics` the appliance itself reports."""
    config = _appliance_config()
    out: list[ApplianceTurn] = []
    for i in range(settings.appliance_runs):
        question = QUESTIONS[i % len(QUESTIONS)]
        events = run_appliance(config, _preloaded(), _wake_and_ask(question, 3.0), realtime=False)
        metrics = [e for e in events if e["type"] == "turn_metrics"]
        transcripts = [e["user_transcript"] for e in events if e["type"] == "user_transcript"]
        replies = [e["agent_response"] for e in events if e["type"] == "agent_response"]
        out.append(
            ApplianceTurn(
                question,
                transcripts[0] if transcripts else "",
                replies[0] if replies else "",
                metrics[0] if metrics else {},
                _errors(events),
            )
        )
    return out


class OtherCpu:
    """CPU time other processes used on this machine meanwhile, in % of all its cores.

    The machine-wide busy time from /proc/stat minus this process's own CPU time: a measure of
    how much the numbers taken meanwhile were disturbed (None where there is no /proc/stat)."""

    def __init__(self) -> None:
        self.pct: float | None = None
        self._start: tuple[float | None, float, float] = (None, 0.0, 0.0)

    def __enter__(self) -> OtherCpu:
        self._start = (_machine_busy_s(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy0, own0, wall0 = self._start
        busy1 = _machine_busy_s()
        if busy0 is None or busy1 is None:
            return
        others = (busy1 - busy0) - (time.process_time() - own0)
        capacity = (time.perf_counter() - wall0) * (os.cpu_count() or 1)
        self.pct = max(0.0, 100.0 * others / capacity) if capacity > 0 else None


def _machine_busy_s() -> float | None:
    """Seconds of CPU time spent by all processes (all cores), from the `cpu` line of /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _other_cpu_row(pct: float | None) -> Row:
    """% of all cores other processes used while measuring: more than a few % inflates the times."""
    return {"measure": "CPU used by other processes meanwhile", "other CPU %": pct}


@dataclass(frozen=True)
class LatencyResult:
    turns: list[SessionTurn]
    appliance: list[ApplianceTurn]
    other_cpu_pct: float | None


_latency_cache: dict[Settings, LatencyResult] = {}


def _latency(settings: Settings) -> LatencyResult:
    if settings not in _latency_cache:
        with OtherCpu() as other:
            turns = asyncio.run(_session_turns(QUESTIONS, settings.turns, settings.warmup))
            appliance = measure_appliance(settings)
        _latency_cache[settings] = LatencyResult(turns, appliance, other.pct)
    return _latency_cache[settings]


def _values(turns: Sequence[SessionTurn], value: Callable[[SessionTurn], float | int | None]) -> list[float]:
    return [float(v) for t in turns if (v := value(t)) is not None]


def _session_errors(turns: Sequence[SessionTurn]) -> str | None:
    """An ERROR verdict when a turn had error events or reported no `turn_metrics`."""
    errors = sum(len(t.errors) for t in turns)
    measured = sum(t.end_of_speech_to_first_audio_s is not None for t in turns)
    if errors or measured < len(turns):
        return f"ERROR: {errors} error events, {measured}/{len(turns)} turns with metrics"
    return None


_long_cache: dict[Settings, tuple[list[SessionTurn], float | None]] = {}


def latency_long_table(quick: bool = False) -> list[Row]:
    """For comparison, no target: LocalAgentSession on open requests with long, multi-chunk replies."""
    settings = settings_for(quick)
    if settings not in _long_cache:
        with OtherCpu() as other:
            long_turns = asyncio.run(_session_turns(LONG_REQUESTS, settings.long_turns, settings.warmup))
        _long_cache[settings] = (long_turns, other.pct)
    turns, other_pct = _long_cache[settings]
    totals = _values(turns, _pipeline_s)
    row: Row = {
        "mode": "LocalAgentSession, pipeline only",
        "n": len(turns),
        "median s": _median(totals),
        "p90 s": _p90(totals),
        "stt median s": _median(_values(turns, lambda t: t.stt_s)),
        "llm 1st token median s": _median(_values(turns, lambda t: t.llm_first_token_s)),
        "1st chunk median s": _median(_values(turns, _llm_to_chunk_s)),
        "tts 1st chunk median s": _median(_values(turns, lambda t: t.tts_first_audio_s)),
        "chunks median": _median(_values(turns, lambda t: t.chunks)),
        "underruns": sum(t.underruns for t in turns),
    }
    if (verdict := _session_errors(turns)) is not None:
        row["verdict"] = verdict
    cpu_row = _other_cpu_row(other_pct)
    return [row, {"mode": cpu_row.pop("measure"), **cpu_row}]


def _endpoint_silence_s() -> float:
    from appliance.core.endpointing import END_SILENCE_S, TurnEagerness

    value = END_SILENCE_S[TurnEagerness.NORMAL]
    if abs(value - ENDPOINT_SILENCE_S) > 1e-9:
        raise RuntimeError(f"the normal end-of-speech silence is now {value} s: update ENDPOINT_SILENCE_S")
    return float(_default_config().end_silence_s)


def latency_table(quick: bool = False) -> list[Row]:
    """End of speech → first reply audio, LocalAgentSession and the appliance loop (target: median ≤ 1 s)."""
    result = _latency(settings_for(quick))
    pipeline = _values(result.turns, _pipeline_s)
    silence = _endpoint_silence_s()
    rows: list[Row] = [
        {
            "measure": "endpointing silence (default `normal` eagerness), before t0",
            "n": None,
            "median s": silence,
            "p90 s": silence,
        }
    ]

    def row(name: str, values: list[float], offset: float = 0.0) -> Row:
        return {
            "measure": name,
            "n": len(values),
            "median s": _median([v + offset for v in values]),
            "p90 s": _p90([v + offset for v in values]),
        }

    s_row = row("LocalAgentSession, pipeline only (t0 = end-of-speech decision)", pipeline)
    s_row["target"] = f"median ≤ {LATENCY_TARGET_S:g} s"
    s_row["÷ target"] = None if s_row["median s"] is None else s_row["median s"] / LATENCY_TARGET_S
    s_row["verdict"] = _session_errors(result.turns) or (
        "PASS" if s_row["median s"] <= LATENCY_TARGET_S else "FAIL"
    )
    rows += [s_row, row("LocalAgentSession, including endpointing silence", pipeline, silence)]
    app = [t.metrics["endpoint_to_first_audio_s"] for t in result.appliance if t.metrics]
    app_row = row("appliance loop (run_async, fast headless): endpoint_to_first_audio_s", app)
    errors = sum(t.errors for t in result.appliance)
    if errors or len(app) < len(result.appliance):
        app_row["verdict"] = (
            f"ERROR: {errors} error events, {len(app)}/{len(result.appliance)} runs with metrics"
        )
    rows.append(app_row)
    eos = [t.metrics["end_of_speech_to_first_audio_s"] for t in result.appliance if t.metrics]
    rows.append(row("appliance loop: end_of_speech_to_first_audio_s (incl. endpointing)", eos))
    rows.append(_other_cpu_row(result.other_cpu_pct))
    return rows


_STAGES: tuple[tuple[str, Callable[[SessionTurn], float | int | None]], ...] = (
    ("STT (transcribe)", lambda t: t.stt_s),
    ("LLM first token (from request)", lambda t: t.llm_first_token_s),
    ("LLM request → first chunk cut", _llm_to_chunk_s),
    ("TTS of the first chunk", lambda t: t.tts_first_audio_s),
    ("total: t0 → first reply audio", _pipeline_s),
)
_APPLIANCE_STAGES = {
    "STT (transcribe)": "stt_s",
    "LLM first token (from request)": "llm_first_token_s",
    "TTS of the first chunk": "tts_first_audio_s",
    "total: t0 → first reply audio": "endpoint_to_first_audio_s",
}


def latency_stages_table(quick: bool = False) -> list[Row]:
    """Where the time goes, per stage: LocalAgentSession's turn_metrics vs. the appliance loop's."""
    result = _latency(settings_for(quick))
    rows: list[Row] = []
    for name, value in _STAGES:
        values = _values(result.turns, value)
        key = _APPLIANCE_STAGES.get(name)
        app = [v for t in result.appliance if (v := t.metrics.get(key)) is not None] if key else []
        rows.append(
            {
                "stage": name,
                "session median s": _median(values),
                "session p90 s": _p90(values),
                "appliance median s": _median(app),
            }
        )
    chunks = _values(result.turns, lambda t: t.chunks)
    rows.append({"stage": "reply chunks spoken (median)", "session median s": _median(chunks)})
    return rows


def _clip(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def latency_turns_table(quick: bool = False) -> list[Row]:
    """Every measured turn: LocalAgentSession, then the appliance runs (seconds from t0 / LLM request)."""
    result = _latency(settings_for(quick))
    rows: list[Row] = []
    for i, t in enumerate(result.turns):
        rows.append(
            {
                "#": i + 1,
                "question": t.question,
                "heard ok": t.heard_ok,
                "reply": None,
                "stt": t.stt_s,
                "llm 1st tok": t.llm_first_token_s,
                "1st chunk": _llm_to_chunk_s(t),
                "tts 1st audio": t.tts_first_audio_s,
                "total": _pipeline_s(t),
                "chunks": t.chunks,
                "underruns": t.underruns,
                "CPU s": t.cpu_s,
                "errors": len(t.errors),
            }
        )
    for i, a in enumerate(result.appliance):
        m = a.metrics
        rows.append(
            {
                "#": f"app {i + 1}",
                "question": a.question,
                "heard ok": _words(a.question) == _words(a.transcript),
                "reply": _clip(a.reply),
                "stt": m.get("stt_s"),
                "llm 1st tok": m.get("llm_first_token_s"),
                "tts 1st audio": m.get("tts_first_audio_s"),
                "total": m.get("endpoint_to_first_audio_s"),
                "errors": a.errors,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# 2. resident memory, each stage in a fresh process

RSS_STAGES = ("numpy", "listeners", "agent", "agent-turn")


def rss_probe(stage: str, audio_path: Path | None = None) -> dict[str, Any]:
    """Run in a fresh process: load up to `stage` as the appliance does, report RSS in MiB."""
    out: dict[str, Any] = {}
    if stage == "listeners":
        from appliance.runtime.app import load_listeners

        load_listeners(_default_config())
    elif stage in ("agent", "agent-turn"):
        _preloaded()
        if stage == "agent-turn":
            out["loaded_mb"], out["loaded_peak_mb"] = _rss_mb(), _peak_mb()  # = the "agent" stage
            audio = np.load(audio_path) if audio_path else utterance(QUESTIONS[0])
            # one turn through LocalAgentSession: STT, the LLM, every chunk of the reply synthesized
            turn = asyncio.run(session_turn(QUESTIONS[0], audio, False))
            out["transcript"], out["errors"] = turn.transcript, turn.errors
    out["rss_mb"] = _rss_mb()
    out["peak_mb"] = _peak_mb()
    return out


def _probe_subprocess(stage: str, audio_path: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.local_agent", "--rss", stage]
    if audio_path is not None:
        cmd += ["--audio", str(audio_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe '{stage}' failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def memory_table(quick: bool = False) -> list[Row]:
    """Resident memory of the local agent, each stage measured in a fresh process (MiB, VmRSS)."""
    with tempfile.TemporaryDirectory() as tmp:
        audio_path = Path(tmp) / "question.npy"
        np.save(audio_path, utterance(QUESTIONS[0]))
        bare = _probe_subprocess("numpy", None)
        idle = _probe_subprocess("listeners", None)
        turn = _probe_subprocess("agent-turn", audio_path)  # measures the "agent" stage before its turn
    base, idle_rss = bare["rss_mb"], idle["rss_mb"]

    def row(name: str, rss: float, peak: float | None) -> Row:
        return {
            "process": name,
            "RSS MiB": rss,
            "peak MiB": peak,
            "Δ vs baseline MiB": rss - base,
            "Δ vs idle MiB": rss - idle_rss,
        }

    return [
        row("python + numpy (baseline)", base, bare["peak_mb"]),
        row("idle appliance: wake word + VAD loaded", idle_rss, idle["peak_mb"]),
        row(
            "all models loaded (+ whisper tiny.en, SmolLM2, piper joe)",
            turn["loaded_mb"],
            turn["loaded_peak_mb"],
        ),
        row(
            "all models loaded, after one LocalAgentSession turn (STT → LLM → TTS)",
            turn["rss_mb"],
            turn["peak_mb"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rss", choices=RSS_STAGES, required=True, help="memory probe stage")
    parser.add_argument("--audio", type=Path, help=".npy int16 question audio for the 'agent-turn' stage")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(rss_probe(args.rss, args.audio)))
    return 0


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "agent.latency": latency_table,
    "agent.latency.stages": latency_stages_table,
    "agent.latency.turns": latency_turns_table,
    "agent.latency.long": latency_long_table,
    "agent.memory": memory_table,
}


if __name__ == "__main__":
    sys.exit(main())
