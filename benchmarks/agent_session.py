"""Turn latency through the real `LocalAgentSession`, on this machine and under Pi budgets.

The turn is driven exactly as the appliance drives it (`speech_started`, then the endpointer's
`UtteranceEnded`), with the real models loaded as `appliance run` loads them (default config)
and a recording speaker that plays instantly and notes when each piece of audio arrived. The
stage split is the session's own `turn_metrics` event. Each mode runs the same questions:

- `hold` (only with `--hold`): the LLM held from the first chunk until its audio is synthesized;
- `no hold`: no speculation; generation and the first chunk's synthesis share the cores;
- `spec STT`: speculative STT only (`speculate_reply` off): the session is told of the pause
  0.2 s into the silence (`appliance.vad.speculate_after_s`), and of the end 0.55 s later, as the
  endpointer does;
- `spec full`: the same pause, and the reply speculated too (LLM + the first chunk's audio, ready
  and committed at the end);
- `paused, spec` ("What is the capital of … France?", 0.5 s pause): a full speculation on the
  first part, discarded when speech resumes, then one on the whole: the waste and the worker
  time it cost (wall time; its share of the CPU is the `CPU s/turn` difference to `spec full`),
  and that no reply audio played before the end (`early audio`).

`python -m benchmarks.agent_session --turns N --json` prints one JSON list of turns; the table
runs that in a subprocess under `/work/shared/tools/pi-class pi5` and `pi4` (a CPU quota the
size of those boards, see `pi-class --show`) beside the unconstrained run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    ENDPOINT_SILENCE_S,
    QUESTIONS,
    RATE_HZ,
    TRAILING_S,
    Pcm16,
    Row,
    _concat,
    _preloaded,
    _say,
    _silence,
    _words,
)
from benchmarks.idle_loop import REPO_ROOT

PI_CLASS = Path(os.environ.get("PI_CLASS", "/work/shared/tools/pi-class"))
BUDGETS = ("pi5", "pi4")
TARGET_S = {"box": 0.9, "pi5": 2.0, "pi4": 5.0}
SUBPROCESS_LIMIT_S = 1800.0
PREROLL_S = 0.6  # EndpointConfig().preroll_s


@dataclass
class SessionTurn:
    mode: str
    question: str
    transcript: str = ""
    heard_ok: bool = False
    end_of_speech_to_first_audio_s: float | None = None
    stt_s: float | None = None
    llm_first_token_s: float | None = None
    tts_first_audio_s: float | None = None
    underruns: int = 0
    """Later chunks whose audio was ready after the previous audio would have finished playing."""
    chunks: int = 0
    cpu_s: float = 0.0
    speculations: int = 0
    speculations_wasted: int = 0
    wasted_stt_s: float = 0.0
    replies_speculated: int = 0
    replies_wasted: int = 0
    wasted_reply_s: float = 0.0
    early_audio: int = 0
    """Reply audio played before the end decision (must be 0)."""
    errors: list[str] = field(default_factory=list)


class RecordingSpeaker:
    """Plays instantly; notes when each piece of audio arrived and how long it lasts."""

    def __init__(self) -> None:
        self.played: list[tuple[float, float]] = []

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        self.played.append((time.perf_counter(), audio.size / sample_rate_hz))
        await asyncio.sleep(0)
        return True

    def stop(self) -> None:
        return None

    @property
    def playing(self) -> bool:
        return False

    async def close(self) -> None:
        return None


class Recorder:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def emit(self, type: str, **fields: Any) -> None:
        self.items.append({"type": type, "at": time.perf_counter(), **fields})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == kind]


def utterance(text: str) -> Pcm16:
    return _concat(_silence(PREROLL_S), _say(text), _silence(TRAILING_S))


async def _until(cond: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


SPECULATE_AFTER_S = 0.2
PAUSE_HEAD_S = 0.5


async def session_turn(
    question: str,
    audio: Pcm16,
    hold: bool,
    speculate: bool = False,
    head: Pcm16 | None = None,
    reply: bool = True,
    system_prompt: str | None = None,
    prefill: bool = True,
    speak: bool = False,
) -> SessionTurn:
    """One turn through a fresh session. `system_prompt`: another agent's prompt (a wake word's
    own agent); `prefill` off hides the LLM's `prefill` from the session; `speak`: the user talks
    for the utterance's length after the session listens (else the utterance comes at once)."""
    from appliance.core import conversation as cv
    from appliance.core.endpointing import UtteranceEnded
    from appliance.core.reply_guard import ReplyLimits
    from appliance.runtime.clock import MonotonicClock
    from appliance.runtime.local_agent import conversation_settings, session_variables
    from appliance.runtime.local_session import LocalAgentDeps, LocalAgentSession
    from appliance.runtime.timers import Timers
    from benchmarks.common import _default_config

    config = _default_config()
    models = _preloaded().local_models
    clock = MonotonicClock()
    speaker, events = RecordingSpeaker(), Recorder()
    prompt = config.conversation_config.agent.prompt
    variables = session_variables(config, "hey_jarvis", "local_bench", datetime.now(UTC))
    settings = conversation_settings(config, variables)
    if system_prompt is not None:
        settings = replace(settings, system_prompt=system_prompt)
    llm = models.llm if prefill else _WithoutPrefill(models.llm)
    deps = LocalAgentDeps(
        stt=models.stt, llm=llm, tts=models.tts, speaker=speaker, events=events, clock=clock,
        timers=Timers(clock), stt_executor=models.stt_executor, tts_executor=models.tts_executor,
        voice=config.voice(config.conversation_config.tts.voice_id)[0],
        llm_options={"temperature": 0.0, "max_tokens": prompt.max_tokens},
        reply_limits=ReplyLimits(), hold_llm_for_first_audio=hold, speculate_reply=reply,
    )  # fmt: skip
    session = LocalAgentSession(settings, deps)
    mode = "hold" if hold else "no hold"
    if speculate:
        mode = "paused, spec" if head is not None else ("spec full" if reply else "spec STT")
    if system_prompt is not None:
        mode = "prefill" if prefill else "no prefill"
    turn = SessionTurn(mode, question)
    await session.start()
    try:
        await _until(lambda: session.machine.phase is cv.Phase.LISTENING and not session.busy, 120)
        before = len(speaker.played)
        duration = audio.size / RATE_HZ
        cpu0 = time.process_time()
        await session.speech_started(0.0)
        end_t = duration - TRAILING_S
        if speak:
            await asyncio.sleep(end_t + ENDPOINT_SILENCE_S)
        if head is not None:  # "What is the capital of" … 0.5 s … "France?"
            session.speech_paused(head.tobytes())
            await asyncio.sleep(PAUSE_HEAD_S - SPECULATE_AFTER_S)
            session.speech_resumed()
            await asyncio.sleep((audio.size - head.size) / RATE_HZ)  # the rest of the sentence
        if speculate:
            session.speech_paused(audio.tobytes())
            await asyncio.sleep(ENDPOINT_SILENCE_S - SPECULATE_AFTER_S)
        turn.early_audio = len(speaker.played) - before
        await session.utterance(
            UtteranceEnded(
                PREROLL_S, end_t, "silence", audio.tobytes(), declared_t=end_t + ENDPOINT_SILENCE_S
            )
        )
        await _until(lambda: bool(events.of("agent_response")) and not session.busy, 300)
        turn.cpu_s = time.process_time() - cpu0
        await _wait_llm(models.llm)
    finally:
        await session.end("bench")
        await asyncio.wait_for(session.closed(), 10)
    metrics = events.of("turn_metrics")
    if metrics:
        m = metrics[0]
        turn.end_of_speech_to_first_audio_s = m["end_of_speech_to_first_audio_s"]
        turn.stt_s, turn.llm_first_token_s = m["stt_s"], m["llm_first_token_s"]
        turn.tts_first_audio_s = m["tts_first_audio_s"]
    transcripts = events.of("user_transcript")
    turn.transcript = transcripts[0]["user_transcript"] if transcripts else ""
    turn.heard_ok = _words(question) <= _words(turn.transcript)
    played = speaker.played[before:]
    turn.chunks = len(played)
    due = played[0][0] + played[0][1] if played else 0.0
    for at, length in played[1:]:
        turn.underruns += at > due + 0.02
        due = max(due, at) + length
    turn.errors = [str(e.get("code")) for e in events.of("error")]
    stats = session.speculation
    turn.speculations, turn.speculations_wasted = stats.started, stats.wasted
    turn.wasted_stt_s = round(stats.wasted_stt_s, 3)
    turn.replies_speculated, turn.replies_wasted = stats.replies, stats.replies_wasted
    turn.wasted_reply_s = round(stats.wasted_reply_s, 3)
    return turn


class _WithoutPrefill:
    """The session's LLM without `prefill`: the first turn evaluates the prompt itself."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def stream_chat(self, *args: Any) -> Any:
        return self._llm.stream_chat(*args)

    def __getattr__(self, name: str) -> Any:
        if name == "prefill":
            raise AttributeError(name)
        return getattr(self._llm, name)


CHEF_PROMPT = """# Personality
You are Chef, a cheerful cooking companion who lives on the kitchen shelf. You know recipes,
cooking times, temperatures, substitutions and food safety, and you explain them simply.

# Environment
The user is cooking and talks to you from across the kitchen, often with busy hands. Everything
you say is read aloud by a text-to-speech voice; nothing is shown on a screen.

# Tone
Answer in one to three short sentences of plain spoken language. Never use markdown, lists,
emojis or symbols. Say numbers, times and temperatures the way you would say them, for example
"twelve minutes" or "one hundred and eighty degrees". Ask one short question when the request
is unclear.

# Guardrails
If you do not know something, say so briefly instead of guessing. Treat odd or garbled words as
speech-recognition errors and ask the user to repeat. Never repeat the same point twice in one
answer. For allergies and food safety, give general advice and suggest checking the label."""
WORD_AGENT_QUESTIONS = ("How long should I boil an egg?", "What can I use instead of butter?")


async def measure_word_agent(turns: int) -> list[SessionTurn]:
    """A wake word's own agent (another prompt than the main agent's, which start-up primed):
    its first turn with the session's prefill and without. Before each turn the main agent's
    prompt is primed again, as after start-up or a conversation with the main agent."""
    from appliance.runtime.local_agent import _prime
    from benchmarks.common import _default_config

    config = _default_config()
    llm = _preloaded().local_models.llm
    audio = {q: utterance(q) for q in WORD_AGENT_QUESTIONS}
    await session_turn("Hello, how are you today?", utterance("Hello, how are you today?"), False)  # warm-up
    out: list[SessionTurn] = []
    for i in range(turns):
        question = WORD_AGENT_QUESTIONS[i % len(WORD_AGENT_QUESTIONS)]
        for prefill in (True, False) if i % 2 == 0 else (False, True):
            _prime(config, llm)
            out.append(
                await session_turn(
                    question, audio[question], False, system_prompt=CHEF_PROMPT, prefill=prefill, speak=True
                )
            )
    return out


async def _wait_llm(llm: Any) -> None:
    wait = getattr(llm, "wait_idle", None)
    if wait is not None:
        await wait()


async def measure(turns: int, hold: bool = False) -> list[SessionTurn]:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(turns)]
    audio = {q: utterance(q) for q in {*questions, "Hello, how are you today?"}}
    await session_turn("Hello, how are you today?", audio["Hello, how are you today?"], False)  # warm-up
    out: list[SessionTurn] = []
    for i, question in enumerate(questions):
        if hold:
            out.append(await session_turn(question, audio[question], True))
        modes = [(False, True), (True, False), (True, True)]  # (speculate, reply)
        for speculate, reply in modes if i % 2 == 0 else reversed(modes):
            out.append(await session_turn(question, audio[question], False, speculate, reply=reply))
    for first, rest in PAUSED[: max(1, turns // 2)]:
        head = utterance(first)
        whole = _concat(
            head[: -round(TRAILING_S * RATE_HZ)], _silence(PAUSE_HEAD_S), _say(rest), _silence(TRAILING_S)
        )
        out.append(await session_turn(f"{first} {rest}", whole, False, speculate=True, head=head))
    return out


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.median(got)) if got else None


def rows_for(budget: str, turns: list[dict[str, Any]], load: str) -> list[Row]:
    rows: list[Row] = []
    for mode in ("hold", "no hold", "spec STT", "spec full", "paused, spec"):
        mine = [t for t in turns if t["mode"] == mode]
        if not mine:
            continue
        total = _median([t["end_of_speech_to_first_audio_s"] for t in mine])
        target = TARGET_S[budget]
        rows.append(
            {
                "budget": budget,
                "mode": mode,
                "turns": len(mine),
                "end of speech → first audio s (median)": total,
                "endpointing s": ENDPOINT_SILENCE_S,
                "STT s": _median([t["stt_s"] for t in mine]),
                "LLM first token s": _median([t["llm_first_token_s"] for t in mine]),
                "LLM to 1st chunk s": _median([_llm_to_chunk(t) for t in mine]),
                "TTS first chunk s": _median([t["tts_first_audio_s"] for t in mine]),
                "CPU s/turn": _median([t["cpu_s"] for t in mine]),
                "underruns": sum(t["underruns"] for t in mine),
                "heard ok": f"{sum(t['heard_ok'] for t in mine)}/{len(mine)}",
                "spec wasted": f"{_total(mine, 'speculations_wasted')}/{_total(mine, 'speculations')}",
                "wasted STT s": round(sum(t["wasted_stt_s"] for t in mine), 3),
                "replies wasted": f"{_total(mine, 'replies_wasted')}/{_total(mine, 'replies_speculated')}",
                "wasted reply s": round(sum(t["wasted_reply_s"] for t in mine), 3),
                "early audio": _total(mine, "early_audio"),
                "errors": sum(len(t["errors"]) for t in mine),
                "target s": target,
                "verdict": None if total is None else ("ok" if total <= target else "FAIL"),
                "load": load,
            }
        )
    return rows


def _total(turns: list[dict[str, Any]], key: str) -> int:
    return sum(int(t[key]) for t in turns)


def _llm_to_chunk(t: dict[str, Any]) -> float | None:
    """What the split leaves: from the LLM request to the first chunk cut (its first clause)."""
    parts = (t["end_of_speech_to_first_audio_s"], t["stt_s"], t["tts_first_audio_s"])
    if any(p is None for p in parts):
        return None
    total, stt, tts = parts
    return round(float(total) - ENDPOINT_SILENCE_S - float(stt) - float(tts), 3)


PAUSED = (
    ("What is the capital of", "France?"),
    ("How many days are", "in a week?"),
    ("What color is", "the sky?"),
)
PAUSE_S = 0.5


def pause_rows_table(quick: bool = False) -> list[Row]:
    """Mid-sentence pauses: no reply starts before the user has finished"""
    return pause_rows()


def pause_rows() -> list[Row]:
    """Utterances with a 0.5 s pause mid-sentence through Silero and the real endpointer, with
    speculation on (`pause_report_s`): the reply can start only at `UtteranceEnded`, so it must
    come after the second part; the pause's speculation is discarded at `SpeechResumed`."""
    from appliance.core.endpointing import (
        EndpointConfig,
        Endpointer,
        SpeechPaused,
        SpeechResumed,
        UtteranceEnded,
    )
    from benchmarks.idle_loop import load_listeners

    _, vad = load_listeners()
    rows: list[Row] = []
    for head, tail in PAUSED:
        first, second = _say(head), _say(tail)
        audio = _concat(_silence(1.0), first, _silence(PAUSE_S), second, _silence(1.5))
        finished_at = (RATE_HZ + first.size + round(PAUSE_S * RATE_HZ) + second.size) / RATE_HZ
        vad.reset()
        endpointer = Endpointer(EndpointConfig(pause_report_s=SPECULATE_AFTER_S))
        ends: list[UtteranceEnded] = []
        paused = resumed = 0
        n = vad.frame_samples
        for i in range(0, audio.size - n + 1, n):
            for event in endpointer.process(
                vad.probability(audio[i : i + n]), audio[i : i + n].tobytes(), (i + n) / RATE_HZ
            ):
                if isinstance(event, UtteranceEnded):
                    ends.append(event)
                paused += isinstance(event, SpeechPaused)
                resumed += isinstance(event, SpeechResumed)
        early = sum(e.declared_t < finished_at - 0.15 for e in ends)
        rows.append(
            {
                "utterance": f"{head} … {tail}",
                "pause s": PAUSE_S,
                "turns ended": len(ends),
                "user finished at s": round(finished_at, 3),
                "turn ended at s": round(ends[0].declared_t, 3) if ends else None,
                "replies started early": early,
                "speculations (discarded)": f"{paused} ({resumed})",
                "verdict": "ok" if len(ends) == 1 and early == 0 else "FAIL",
            }
        )
    return rows


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _run_budget(budget: str, turns: int, word_agent: bool = False) -> list[dict[str, Any]]:
    if not PI_CLASS.exists() or shutil.which(sys.executable) is None:
        return []
    cmd = [
        str(PI_CLASS),
        budget,
        "--",
        sys.executable,
        "-m",
        "benchmarks.agent_session",
        "--turns",
        str(turns),
        *(["--word-agent"] if word_agent else []),
    ]
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"pi-class {budget} run failed ({done.returncode}): {done.stderr[-400:]}")
    result: list[dict[str, Any]] = json.loads(lines[-1])
    return result


def latency_table(quick: bool = False) -> list[Row]:
    """Local agent turns through LocalAgentSession: end of speech → first audio per Pi budget"""
    turns = 1 if quick else 4
    rows = rows_for("box", [asdict(t) for t in asyncio.run(measure(turns))], _load())
    for budget in () if quick else BUDGETS:  # a Pi-class run takes minutes
        load = _load()
        rows.extend(rows_for(budget, _run_budget(budget, 4), load))
    return rows


def word_agent_rows(budget: str, turns: list[dict[str, Any]], load: str) -> list[Row]:
    rows: list[Row] = []
    for mode in ("no prefill", "prefill"):
        mine = [t for t in turns if t["mode"] == mode]
        rows.append(
            {
                "budget": budget,
                "mode": mode,
                "turns": len(mine),
                "end of speech → first audio s (median)": _median(
                    [t["end_of_speech_to_first_audio_s"] for t in mine]
                ),
                "LLM first token s (median)": _median([t["llm_first_token_s"] for t in mine]),
                "heard ok": f"{sum(t['heard_ok'] for t in mine)}/{len(mine)}",
                "errors": sum(len(t["errors"]) for t in mine),
                "load": load,
            }
        )
    return rows


def word_agent_table(quick: bool = False) -> list[Row]:
    """A wake word's own agent, first turn: end of speech → first audio with and without the prefill"""
    turns = 1 if quick else 4
    rows = word_agent_rows("box", [asdict(t) for t in asyncio.run(measure_word_agent(turns))], _load())
    for budget in () if quick else BUDGETS:
        load = _load()
        rows.extend(word_agent_rows(budget, _run_budget(budget, 4, word_agent=True), load))
    return rows


BENCHMARKS = {
    "agent.latency.session": latency_table,
    "agent.latency.pause": pause_rows_table,
    "agent.latency.word_agent": word_agent_table,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--hold", action="store_true", help="also measure the LLM hold mode")
    parser.add_argument("--word-agent", action="store_true", help="a wake word's own agent's first turn")
    args = parser.parse_args(argv)
    if args.word_agent:
        turns = asyncio.run(measure_word_agent(args.turns))
    else:
        turns = asyncio.run(measure(args.turns, args.hold))
    print(json.dumps([asdict(t) for t in turns]))
    sys.stdout.flush()
    os._exit(0)  # model threads are abandoned, not joined (as the CLI does)


if __name__ == "__main__":
    sys.exit(main())
