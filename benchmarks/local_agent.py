"""Local-agent benchmarks: how fast the offline agent answers and what it costs in RAM (how
often it interrupts itself on its own echo: `benchmarks/echo.py`).

Everything runs the real models (faster-whisper tiny.en, SmolLM2-135M in-process through
llama-cpp-python, the piper joe voice), loaded the way the appliance loads them
(`runtime.app.preload` with the default configuration), on speech synthesized with piper.
Comparisons are made in the same run: streaming vs. a sequential baseline turn by turn, the
agent's memory vs. the idle-only process and a bare Python + numpy process.

`python -m benchmarks.local_agent --rss STAGE` is the fresh-process probe behind `memory_table`.
Only the standard library, numpy and `benchmarks.idle_loop` (itself standard library + numpy)
are imported at module level, so the probe's baseline stage measures a bare Python + numpy
process.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
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
import numpy.typing as npt

from benchmarks.idle_loop import REPO_ROOT, _peak_mb, _rss_mb

Row = dict[str, Any]
Pcm16 = npt.NDArray[np.int16]

RATE_HZ = 16000
LANGUAGE = "en"
VOICE = "joe"  # the default config's voice
SYSTEM_PROMPT = (
    "You are Jarvis, a friendly voice assistant on a smart speaker in the user's home. "
    "Answer in one or two short sentences of plain spoken English."
)
LLM_OPTIONS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 60}
PRIME_USER_TEXT = "Hello"  # primes the prompt cache with the system prompt, as the appliance does

APPLIANCE_RUN_SLACK_S = 90.0  # an appliance run longer than its input + this is cut short (an error)
PREROLL_S = 0.60  # what the endpointer keeps before the detected start of speech (EndpointConfig)
TRAILING_S = 0.20  # what it keeps of the trailing silence
ENDPOINT_SILENCE_S = 0.75  # END_SILENCE_S[normal]: checked against the code in `latency_table`

LATENCY_TARGET_S = 1.0  # streaming median, end-of-speech decision → first reply audio
RATIO_TARGET = 3.0  # sequential baseline median ÷ streaming median

QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky?",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "How many minutes are in an hour?",
    "What is the boiling point of water?",
    "What language do people speak in Spain?",
    "What is the opposite of hot?",
    "How many continents are there?",
)
WARMUP_QUESTION = "Hello, how are you today?"
# open requests whose replies run to max_tokens: where streaming can pay off (informational table)
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


FULL = Settings()
QUICK = Settings(turns=3, long_turns=1, appliance_runs=1)


def settings_for(quick: bool) -> Settings:
    return QUICK if quick else FULL


# ---------------------------------------------------------------------------------------------
# models and audio


def _default_config() -> Any:
    from appliance.config import load_config

    return load_config(None, log_warnings=False)


@functools.cache
def _preloaded() -> Any:
    """Wake word, VAD, whisper, SmolLM2 and piper, loaded once as `appliance run` loads them."""
    from appliance.runtime.app import preload

    preloaded = preload(_default_config())
    atexit.register(_close, preloaded)
    return preloaded


def _close(preloaded: Any) -> None:
    """Free the LLM before the interpreter tears down llama-cpp's module (noisy otherwise)."""
    close = getattr(preloaded.local_models.llm, "close", None)
    if close is not None:
        close()


@functools.cache
def _say(text: str) -> Pcm16:
    from appliance.testing.speech import piper_say

    return piper_say(text)


def _silence(seconds: float) -> Pcm16:
    return np.zeros(round(seconds * RATE_HZ), dtype=np.int16)


def _concat(*parts: Pcm16) -> Pcm16:
    return np.concatenate(parts).astype(np.int16)


def utterance_audio(text: str) -> Pcm16:
    """What the endpointer hands the agent: preroll, the speech, a little trailing silence."""
    return _concat(_silence(PREROLL_S), _say(text), _silence(TRAILING_S))


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _p90(values: Sequence[float]) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), 90)) if values else None


_NUMBER_WORDS = dict(
    enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])
)


def _words(text: str) -> set[str]:
    """The words of `text`, lower case, digits spelled out ("2 plus 2" = "two plus two")."""
    tokens = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return {_NUMBER_WORDS.get(int(t), t) if t.isdigit() else t for t in tokens}


# ---------------------------------------------------------------------------------------------
# 1. latency: streaming vs. sequential, on the real components


@dataclass
class Turn:
    """One measured turn; times in seconds, `t0` is the end-of-speech decision."""

    mode: str  # "streaming" or "sequential"
    question: str
    transcript: str = ""
    reply: str = ""
    first_chunk: str = ""
    stt_s: float = 0.0
    llm_first_token_s: float | None = None  # from the LLM request
    first_chunk_s: float | None = None  # from the LLM request
    llm_full_s: float = 0.0  # from the LLM request to the end of the completion
    tts_s: float = 0.0  # streaming: first chunk → its audio; sequential: full reply → its audio
    tts_alone_s: float | None = None  # streaming: the first chunk again, once the LLM is idle
    total_s: float = 0.0  # t0 → first reply audio ready


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run `fn` (in a worker thread) and note when it finished, there and then."""
    result = fn(*args)
    return result, time.perf_counter()


async def _prime(llm: Any) -> None:
    """Leave the LLM's prompt cache holding the system prompt, not the last question.

    The appliance primes the system prompt once at start; between two measured generations of
    the same question, llama.cpp would otherwise reuse the whole previous prompt."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PRIME_USER_TEXT}]
    async for _ in llm.stream_chat(messages, None, {**LLM_OPTIONS, "max_tokens": 1}):
        pass
    await _wait_idle(llm)


async def _wait_idle(llm: Any) -> None:
    wait = getattr(llm, "wait_idle", None)
    if wait is not None:
        await wait()


def _messages(transcript: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": transcript}]


async def streaming_turn(models: Any, question: str, audio: Pcm16) -> Turn:
    """What `LocalAgentSession` does: STT, LLM streamed into the chunker, the first chunk
    synthesized in the TTS worker as soon as it is cut, while the LLM goes on generating."""
    from appliance.core.chunker import SpeechChunker
    from appliance.ports import TextDelta

    loop = asyncio.get_running_loop()
    turn = Turn("streaming", question)
    t0 = time.perf_counter()
    turn.transcript, _ = await loop.run_in_executor(
        models.stt_executor, models.stt.transcribe, audio, LANGUAGE
    )
    t_llm = time.perf_counter()
    turn.stt_s = t_llm - t0
    chunker = SpeechChunker()
    synth: asyncio.Future[Any] | None = None
    parts: list[str] = []

    def start_synthesis(chunk: str) -> asyncio.Future[Any]:
        turn.first_chunk = chunk
        turn.first_chunk_s = time.perf_counter() - t_llm
        return loop.run_in_executor(models.tts_executor, _timed, models.tts.synthesize, chunk, VOICE, 1.0)

    async for item in models.llm.stream_chat(_messages(turn.transcript), None, LLM_OPTIONS):
        if not isinstance(item, TextDelta) or not item.text:
            continue
        if turn.llm_first_token_s is None:
            turn.llm_first_token_s = time.perf_counter() - t_llm
        parts.append(item.text)
        for chunk in chunker.push(item.text):
            if synth is None:
                synth = start_synthesis(chunk)
    turn.llm_full_s = time.perf_counter() - t_llm
    for chunk in chunker.flush():
        if synth is None:
            synth = start_synthesis(chunk)
    turn.reply = "".join(parts).strip()
    if synth is None:
        raise RuntimeError(f"the LLM said nothing to {question!r}")
    (_audio, _rate), t_audio = await synth
    assert turn.first_chunk_s is not None
    turn.tts_s = t_audio - (t_llm + turn.first_chunk_s)
    turn.total_s = t_audio - t0
    await _wait_idle(models.llm)
    # for comparison only, not in the total: the same chunk synthesized with the LLM idle
    t_alone = time.perf_counter()
    (_audio, _rate), t_done = await loop.run_in_executor(
        models.tts_executor, _timed, models.tts.synthesize, turn.first_chunk, VOICE, 1.0
    )
    turn.tts_alone_s = t_done - t_alone
    return turn


async def sequential_turn(models: Any, question: str, audio: Pcm16) -> Turn:
    """The baseline: the whole transcript, then the whole reply, then the whole reply's audio."""
    from appliance.ports import TextDelta

    loop = asyncio.get_running_loop()
    turn = Turn("sequential", question)
    t0 = time.perf_counter()
    turn.transcript, _ = await loop.run_in_executor(
        models.stt_executor, models.stt.transcribe, audio, LANGUAGE
    )
    t_llm = time.perf_counter()
    turn.stt_s = t_llm - t0
    parts: list[str] = []
    async for item in models.llm.stream_chat(_messages(turn.transcript), None, LLM_OPTIONS):
        if isinstance(item, TextDelta) and item.text:
            if turn.llm_first_token_s is None:
                turn.llm_first_token_s = time.perf_counter() - t_llm
            parts.append(item.text)
    await _wait_idle(models.llm)
    t_text = time.perf_counter()
    turn.llm_full_s = t_text - t_llm
    turn.reply = "".join(parts).strip()
    if not turn.reply:
        raise RuntimeError(f"the LLM said nothing to {question!r}")
    (_audio, _rate), t_audio = await loop.run_in_executor(
        models.tts_executor, _timed, models.tts.synthesize, turn.reply, VOICE, 1.0
    )
    turn.tts_s = t_audio - t_text
    turn.total_s = t_audio - t0
    return turn


MODES = {"streaming": streaming_turn, "sequential": sequential_turn}


async def _measure_turns(models: Any, texts: Sequence[str], turns: int) -> list[tuple[Turn, Turn]]:
    """`turns` (streaming, sequential) pairs over `texts` in order, alternating which goes first."""
    questions = [texts[i % len(texts)] for i in range(turns)]
    audio = {q: utterance_audio(q) for q in {*questions, WARMUP_QUESTION}}  # synthesized before timing
    for mode in MODES.values():  # warm every model and thread pool, untimed
        await _prime(models.llm)
        await mode(models, WARMUP_QUESTION, audio[WARMUP_QUESTION])
    pairs: list[tuple[Turn, Turn]] = []
    for i, question in enumerate(questions):
        order = ("streaming", "sequential") if i % 2 == 0 else ("sequential", "streaming")
        done: dict[str, Turn] = {}
        for mode in order:
            await _prime(models.llm)
            done[mode] = await MODES[mode](models, question, audio[question])
        pairs.append((done["streaming"], done["sequential"]))
    return pairs


@dataclass(frozen=True)
class ApplianceTurn:
    question: str
    transcript: str
    reply: str
    metrics: dict[str, Any]
    errors: int


def _appliance_config(overrides: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """The default configuration with the benchmark's prompt and LLM options, no soft timeout."""
    import yaml

    from appliance.config import load_config_text

    raw = yaml.safe_load((REPO_ROOT / "appliance" / "assets" / "default-config.yaml").read_text())
    agent = raw["conversation_config"]["agent"]
    agent["prompt"].update(prompt=SYSTEM_PROMPT, **LLM_OPTIONS)
    raw["conversation_config"]["turn"]["soft_timeout_config"]["timeout_seconds"] = -1
    if overrides is not None:
        overrides(raw)
    return load_config_text(yaml.safe_dump(raw, allow_unicode=True), "benchmark.yaml")


def _run_appliance(
    config: Any, preloaded: Any, audio: Pcm16, *, realtime: bool, echo: float | None = None
) -> list[dict[str, Any]]:
    """The real appliance loop in this process (headless WAV in and out); its events."""
    from appliance.runtime.app import RunOptions, run_async
    from appliance.testing.speech import write_wav

    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp:
        wav = write_wav(Path(tmp) / "in.wav", audio)
        events_path = Path(tmp) / "events.jsonl"
        options = RunOptions(
            input=str(wav),
            output=str(Path(tmp) / "out.wav"),
            events=str(events_path),
            realtime=realtime,
            simulate_echo=echo,
        )
        limit_s = (audio.size / RATE_HZ if realtime else 0.0) + APPLIANCE_RUN_SLACK_S
        failure: dict[str, Any] | None = None
        try:
            asyncio.run(asyncio.wait_for(run_async(config, options, preloaded), limit_s))
        except TimeoutError:
            failure = {"type": "error", "code": "benchmark_timeout", "message": f"run took > {limit_s:.0f} s"}
        except Exception as err:  # the table says the run failed; the other runs go on
            failure = {"type": "error", "code": "run_failed", "message": f"{type(err).__name__}: {err}"}
        text = events_path.read_text() if events_path.exists() else ""
        events = [json.loads(line) for line in text.splitlines()]
    return [*events, failure] if failure else events


def _errors(events: list[dict[str, Any]]) -> int:
    return sum(e["type"] == "error" for e in events)


def _wake_and_ask(question: str, tail_s: float) -> Pcm16:
    return _concat(_silence(1.0), _say("Hey Jarvis!"), _silence(0.5), _say(question), _silence(tail_s))


def measure_appliance(settings: Settings) -> list[ApplianceTurn]:
    """Fast headless runs (turn based: the input waits while the agent thinks and speaks), one
    question each, with the real SmolLM2: the `turn_metrics` the appliance itself reports."""
    config = _appliance_config()
    out: list[ApplianceTurn] = []
    for i in range(settings.appliance_runs):
        question = QUESTIONS[i % len(QUESTIONS)]
        events = _run_appliance(config, _preloaded(), _wake_and_ask(question, 3.0), realtime=False)
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
    pairs: list[tuple[Turn, Turn]]
    appliance: list[ApplianceTurn]
    other_cpu_pct: float | None


_latency_cache: dict[Settings, LatencyResult] = {}


def _latency(settings: Settings) -> LatencyResult:
    if settings not in _latency_cache:
        models = _preloaded().local_models
        with OtherCpu() as other:
            pairs = asyncio.run(_measure_turns(models, QUESTIONS, settings.turns))
            appliance = measure_appliance(settings)
        _latency_cache[settings] = LatencyResult(pairs, appliance, other.pct)
    return _latency_cache[settings]


_long_cache: dict[Settings, tuple[list[tuple[Turn, Turn]], float | None]] = {}


def latency_long_table(quick: bool = False) -> list[Row]:
    """For comparison, no target: the same two modes on open requests with replies of max_tokens."""
    settings = settings_for(quick)
    if settings not in _long_cache:
        models = _preloaded().local_models
        with OtherCpu() as other:
            long_pairs = asyncio.run(_measure_turns(models, LONG_REQUESTS, settings.long_turns))
        _long_cache[settings] = (long_pairs, other.pct)
    pairs, other_pct = _long_cache[settings]
    rows: list[Row] = []
    for mode, turns in (("streaming", [s for s, _ in pairs]), ("sequential", [b for _, b in pairs])):
        totals = [t.total_s for t in turns]
        rows.append(
            {
                "mode": f"{mode}, pipeline only",
                "n": len(turns),
                "median s": _median(totals),
                "p90 s": _p90(totals),
                "stt median s": _median([t.stt_s for t in turns]),
                "1st chunk median s": _median([t.first_chunk_s for t in turns if t.first_chunk_s is not None])
                if mode == "streaming"
                else None,
                "llm full median s": _median([t.llm_full_s for t in turns]),
                "tts median s": _median([t.tts_s for t in turns]),
                "tts alone median s": _median([t.tts_alone_s for t in turns if t.tts_alone_s is not None])
                if mode == "streaming"
                else None,
                "reply words median": _median([len(t.reply.split()) for t in turns]),
            }
        )
    rows.append(
        {
            "mode": "ratio sequential ÷ streaming (medians)",
            "n": len(pairs),
            "ratio ×": rows[1]["median s"] / rows[0]["median s"],
        }
    )
    row = _other_cpu_row(other_pct)
    rows.append({"mode": row.pop("measure"), **row})
    return rows


def _endpoint_silence_s() -> float:
    from appliance.core.endpointing import END_SILENCE_S, TurnEagerness

    value = END_SILENCE_S[TurnEagerness.NORMAL]
    if abs(value - ENDPOINT_SILENCE_S) > 1e-9:
        raise RuntimeError(f"the normal end-of-speech silence is now {value} s: update ENDPOINT_SILENCE_S")
    return float(_default_config().end_silence_s)


def latency_table(quick: bool = False) -> list[Row]:
    """End of speech → first reply audio, streaming vs. sequential (target: pipeline-only median ≤ 1 s)."""
    result = _latency(settings_for(quick))
    streaming = [s.total_s for s, _ in result.pairs]
    sequential = [b.total_s for _, b in result.pairs]
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

    s_row = row("streaming, pipeline only (t0 = end-of-speech decision)", streaming)
    s_row["target"] = f"median ≤ {LATENCY_TARGET_S:g} s"
    s_row["÷ target"] = s_row["median s"] / LATENCY_TARGET_S
    s_row["verdict"] = "PASS" if s_row["median s"] <= LATENCY_TARGET_S else "FAIL"
    rows += [
        s_row,
        row("streaming, including endpointing silence", streaming, silence),
        row("sequential baseline, pipeline only", sequential),
        row("sequential baseline, including endpointing silence", sequential, silence),
    ]
    ratio = rows[3]["median s"] / s_row["median s"]
    rows.append(
        {
            "measure": "ratio sequential ÷ streaming (pipeline-only medians)",
            "n": len(result.pairs),
            "ratio ×": ratio,
            "target": f"≥ {RATIO_TARGET:g}×",
            "÷ target": ratio / RATIO_TARGET,
            "verdict": "PASS" if ratio >= RATIO_TARGET else "FAIL",
        }
    )
    after_stt_s = [s.total_s - s.stt_s for s, _ in result.pairs]
    after_stt_b = [b.total_s - b.stt_s for _, b in result.pairs]
    rows.append(
        {
            "measure": "ratio after STT: (LLM + TTS) sequential ÷ streaming, medians",
            "n": len(result.pairs),
            "ratio ×": _median(after_stt_b) / _median(after_stt_s),  # type: ignore[operator]
        }
    )
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


_STAGES = (
    ("stt_s", "STT (transcribe)"),
    ("llm_first_token_s", "LLM first token (from request)"),
    ("first_chunk_s", "first TTS chunk cut (from request)"),
    ("llm_full_s", "LLM whole reply (from request)"),
    ("tts_s", "TTS: streaming first chunk / sequential whole reply"),
    ("tts_alone_s", "  the same first chunk, synthesized with the LLM idle"),
    ("total_s", "total: t0 → first reply audio"),
)
_APPLIANCE_STAGES = (
    ("stt_s", "STT (transcribe)"),
    ("llm_first_token_s", "LLM first token (from request)"),
    ("tts_first_audio_s", "TTS: streaming first chunk / sequential whole reply"),
    ("endpoint_to_first_audio_s", "total: t0 → first reply audio"),
)


def latency_stages_table(quick: bool = False) -> list[Row]:
    """Where the time goes, per stage: streaming vs. sequential vs. the appliance's own turn_metrics."""
    result = _latency(settings_for(quick))
    rows: list[Row] = []
    for key, name in _STAGES:
        s = [v for t, _ in result.pairs if (v := getattr(t, key)) is not None]
        b = [v for _, t in result.pairs if (v := getattr(t, key)) is not None]
        rows.append(
            {
                "stage": name,
                "streaming median s": _median(s),
                "streaming p90 s": _p90(s),
                "sequential median s": _median(b),
                "sequential p90 s": _p90(b),
                "appliance median s": None,
            }
        )
    by_name = {row["stage"]: row for row in rows}
    for key, name in _APPLIANCE_STAGES:
        values = [v for t in result.appliance if (v := t.metrics.get(key)) is not None]
        if name in by_name:
            by_name[name]["appliance median s"] = _median(values)
        else:
            rows.append({"stage": f"{name} (appliance metric)", "appliance median s": _median(values)})
    words = [len(s.reply.split()) for s, _ in result.pairs]
    rows.append({"stage": "reply length, words (median)", "streaming median s": _median(words)})
    return rows


def _clip(text: str, width: int = 38) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def latency_turns_table(quick: bool = False) -> list[Row]:
    """Every measured turn (streaming S and sequential B alternate first), seconds from t0 / LLM request."""
    result = _latency(settings_for(quick))
    rows: list[Row] = []
    for i, (s, b) in enumerate(result.pairs):
        rows.append(
            {
                "#": i + 1,
                "first": "S" if i % 2 == 0 else "B",
                "question": s.question,
                "heard ok": _words(s.question) == _words(s.transcript),
                "reply": _clip(s.reply),
                "S stt": s.stt_s,
                "S llm 1st tok": s.llm_first_token_s,
                "S 1st chunk": s.first_chunk_s,
                "S tts 1st audio": s.tts_s,
                "S total": s.total_s,
                "B stt": b.stt_s,
                "B llm full": b.llm_full_s,
                "B tts full": b.tts_s,
                "B total": b.total_s,
                "B÷S": b.total_s / s.total_s,
                "same reply": s.reply == b.reply,
                "errors": 0,
            }
        )
    for i, t in enumerate(result.appliance):
        m = t.metrics
        rows.append(
            {
                "#": f"app {i + 1}",
                "first": "—",
                "question": t.question,
                "heard ok": _words(t.question) == _words(t.transcript),
                "reply": _clip(t.reply),
                "S stt": m.get("stt_s"),
                "S llm 1st tok": m.get("llm_first_token_s"),
                "S tts 1st audio": m.get("tts_first_audio_s"),
                "S total": m.get("endpoint_to_first_audio_s"),
                "errors": t.errors,
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
        from appliance.runtime.app import preload

        preloaded = preload(_default_config())
        if stage == "agent-turn":
            out["loaded_mb"] = _rss_mb()
            audio = np.load(audio_path) if audio_path else utterance_audio(QUESTIONS[0])
            models = preloaded.local_models
            turn = asyncio.run(streaming_turn(models, "(probe)", audio))
            models.tts.synthesize(turn.reply, VOICE, 1.0)  # the rest of the reply, as it would be spoken
            out["reply"] = turn.reply
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
        np.save(audio_path, utterance_audio(QUESTIONS[0]))
        bare = _probe_subprocess("numpy", None)
        idle = _probe_subprocess("listeners", None)
        agent = _probe_subprocess("agent", None)
        turn = _probe_subprocess("agent-turn", audio_path)
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
        row("all models loaded (+ whisper tiny.en, SmolLM2, piper joe)", agent["rss_mb"], agent["peak_mb"]),
        row("all models loaded, after one turn (STT → LLM → TTS)", turn["rss_mb"], turn["peak_mb"]),
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
