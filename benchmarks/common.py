"""What the agent benchmarks share: speech clips, the preloaded models, the benchmark's
configuration, and the real appliance run with a time limit.

Only the standard library and numpy are imported at module level (the memory probes'
baseline stage measures a bare Python + numpy process); the appliance is imported lazily.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.idle_loop import REPO_ROOT

Row = dict[str, Any]
Pcm16 = npt.NDArray[np.int16]

RATE_HZ = 16000
SYSTEM_PROMPT = (
    "You are Jarvis, a friendly voice assistant on a smart speaker in the user's home. "
    "Answer in one or two short sentences of plain spoken English."
)
LLM_OPTIONS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 60}
PREROLL_S = 0.60  # what the endpointer keeps before the detected start of speech (EndpointConfig)
TRAILING_S = 0.20  # what it keeps of the trailing silence
ENDPOINT_SILENCE_S = 0.75  # END_SILENCE_S[normal]: checked against the code in `local_agent.latency_table`
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
APPLIANCE_RUN_SLACK_S = 90.0  # an appliance run longer than its input + this is cut short (an error)


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
    """`text` in the piper joe voice without its sampling noise: the same samples in every run,
    so what whisper hears ("heard ok") is the same too (with noise, "What color is the sky?" was
    sometimes "What colors the sky?" and the smoke test's check flaked)."""
    from appliance.testing.speech import piper_say_exact

    return piper_say_exact(text)


def _silence(seconds: float) -> Pcm16:
    return np.zeros(round(seconds * RATE_HZ), dtype=np.int16)


def _concat(*parts: Pcm16) -> Pcm16:
    return np.concatenate(parts).astype(np.int16)


def _wake_and_ask(question: str, tail_s: float) -> Pcm16:
    return _concat(_silence(1.0), _say("Hey Jarvis!"), _silence(0.5), _say(question), _silence(tail_s))


_NUMBER_WORDS = dict(
    enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])
)


def _words(text: str) -> set[str]:
    """The words of `text`, lower case, digits spelled out ("2 plus 2" = "two plus two")."""
    tokens = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return {_NUMBER_WORDS.get(int(t), t) if t.isdigit() else t for t in tokens}


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


def run_appliance(
    config: Any,
    preloaded: Any,
    audio: Pcm16,
    *,
    realtime: bool,
    echo: float | None = None,
    echo_ir: Path | None = None,
) -> list[dict[str, Any]]:
    """The real appliance loop in this process (headless WAV in and out) with a time limit: its
    events, plus an `error` event of its own when the run failed or overran its limit."""
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
            simulate_echo_ir=None if echo_ir is None else str(echo_ir),
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


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[Row]) -> str:
    """Aligned plain text: numbers right-aligned, text left-aligned, missing cells as '—'."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(col), int | float) or row.get(col) is None for row in rows) for col in columns
    ]
    widths = [max([len(col), *(len(line[i]) for line in cells)]) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(values) for values in cells)
    return "\n".join(out)
