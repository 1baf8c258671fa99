"""Soak: hours of a realistic day through the real appliance, with faults, watching for leaks and
for sessions that never come back to idle.

`soak` runs `appliance run --input -` (through `appliance.testing.faults`, which makes the
STT and TTS fail at a seeded rate) in fast headless mode on the audio clock: 8 hours of audio in
minutes of wall time. `soak.realtime` runs 30 minutes in real time (`--realtime`), where
fillers, barge-in and turn timeouts happen as they do on a device. Both use the default local
stack (openWakeWord, Silero VAD, faster-whisper, piper) and a scripted OpenAI-compatible server
as the custom LLM, which answers by what it is asked and, at a seeded rate, fails the way the
fault matrix does (HTTP 500, garbage, half a reply then a dropped connection, an endless or
repeating stream, a hang, a slow first byte).

The input is a seeded schedule of episodes (wake word + question, follow-up questions,
barge-ins, a wake word and then nothing, chatter without a wake word, long quiet stretches),
built from speech synthesized once without Piper's noise and cached on disk, and streamed to
the appliance's stdin episode by episode (8 hours never sit in memory). The child process is
sampled every few seconds (`/proc/PID`: RSS, threads, open descriptors); its events file is read
as it grows. Every number is on the appliance's clock (fast: the audio clock), so a session's
length in the table is what the device lived through, not how long the machine took.

A session is **stuck** when it has not ended by the start of the next episode (each episode
ends with a gap longer than any healthy session needs to end by itself: the turn timeout twice
re-prompted, the no-speech timeout) or by `SESSION_BOUND_S`, or never ends; a run whose input
stops moving for `WEDGE_S` of wall time is wedged (stopped, its open session counted stuck).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

Row = dict[str, Any]
Pcm16 = npt.NDArray[np.int16]

REPO_ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 16000
BYTES_PER_S = 2 * RATE_HZ

FAST_AUDIO_S = 8 * 3600.0
FAST_QUICK_AUDIO_S = 300.0
FAST_QUICK_SEED = 16
"""The quick run's schedule: 8 episodes in 5 minutes (questions, a follow-up, a barge-in, a wake
word alone, chatter), more kinds than the default seed gives in 10."""
REALTIME_AUDIO_S = 30 * 60.0
REALTIME_QUICK_AUDIO_S = 90.0

SESSION_BOUND_S = 150.0
"""No healthy session lasts this long on the appliance clock with this schedule."""
GAP_S = (35.0, 60.0)
"""Quiet after each episode's last speech: the turn timeout (7 s) twice re-prompted and the
no-speech timeout (8 s) end a healthy session well within it."""
WEDGE_S = 180.0
"""Wall seconds without the appliance taking any input: wedged (a hang + retry needs ~45 s)."""
SAMPLE_EVERY_S = 2.0
WARMUP_FRACTION = 0.1
WARMUP_MIN_S = 600.0
"""RSS slope: samples after this share of the audio, and at least 10 minutes (models touched,
allocator arenas and caches filled: the appliance grows by ~100 MiB in its first minutes)."""
RSS_SLOPE_TARGET_MIB_H = 1.0
MIN_SLOPE_SPAN_H = 0.25
"""The slope needs this much appliance time after the warm-up (no slope for short runs)."""
VERDICT_SPAN_H = 2.0
"""A slope against the 1 MiB/h target needs hours: over less, allocator noise (tens of MiB)
dominates, so the slope is printed without a verdict."""
FLAT_SLACK = 2
"""Descriptors and threads: at most this many more at the end than after warm-up (a pooled
LLM connection, a worker thread between jobs)."""

CACHE_VERSION = "soak-clips-v1"

WAKE_PHRASES: tuple[tuple[str, float], ...] = (
    ("Hey Jarvis!", 1.0),
    ("Hey Jarvis.", 0.95),
    ("Hey, Jarvis!", 1.05),
)
QUESTIONS: dict[str, str] = {
    "What is the capital of France?": "Paris is the capital of France.",
    "How many days are in a week?": "There are seven days in a week.",
    "What time is it?": "It is twenty past three.",
    "What is two plus two?": "Four.",
    "What is the weather like today?": "It is sunny and warm today.",
    "Set a timer for five minutes.": "Okay, a timer for five minutes.",
    "Who wrote Romeo and Juliet?": "William Shakespeare wrote it.",
}
STORY_REQUEST = "Tell me a story."
STOP = "Stop, stop please."
STORY = (
    "Once upon a time, an old fisherman lived in a quiet village by the sea. Every morning he rowed "
    "past the lighthouse and cast his nets. One day he caught a golden fish that could speak. The "
    "fish promised him three wishes if he would let it go. He thought for a long time about what "
    "to wish for, and then he went home to ask his wife."
)
CHATTER = (
    "The kettle is boiling, can you get the cups?",
    "Did you remember to buy milk on the way home?",
    "I think the meeting moved to Thursday afternoon.",
    "Where did I put my keys this time?",
)
KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("capital", "france", "paris"), QUESTIONS["What is the capital of France?"]),
    (("days", "week"), QUESTIONS["How many days are in a week?"]),
    (("timer", "minutes"), QUESTIONS["Set a timer for five minutes."]),
    (("time",), QUESTIONS["What time is it?"]),
    (("plus", "two", "2"), QUESTIONS["What is two plus two?"]),
    (("weather", "today"), QUESTIONS["What is the weather like today?"]),
    (("romeo", "juliet", "wrote"), QUESTIONS["Who wrote Romeo and Juliet?"]),
    (("story",), STORY),
    (("stop",), "Okay, I stopped."),
)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SoakSettings:
    audio_s: float
    realtime: bool = False
    seed: int = 9
    llm_fault_rate: float = 0.08
    """Share of LLM requests answered with a fault (kinds in `LLM_FAULTS`)."""
    stt_fault_rate: float = 0.02
    tts_fault_rate: float = 0.01
    slow_llm_rate: float = 0.0
    """Share of LLM requests whose first byte comes after `SLOW_FIRST_BYTE_S` (fillers)."""
    wedge_s: float = WEDGE_S
    sample_every_s: float = SAMPLE_EVERY_S
    mix: tuple[tuple[str, float], ...] = ()
    """Episode kinds and weights (empty: `EPISODE_MIX`)."""

    @property
    def label(self) -> str:
        return "real time" if self.realtime else "fast (audio clock)"


SLOW_FIRST_BYTE_S = 3.5
LLM_FAULTS: tuple[tuple[str, float], ...] = (
    ("http_500", 0.25),
    ("garbage", 0.2),
    ("half_then_drop", 0.2),
    ("endless", 0.1),
    ("repetition", 0.1),
    ("slow", 0.12),
    ("hang", 0.03),
)


def fast_settings(quick: bool) -> SoakSettings:
    if quick:
        return SoakSettings(audio_s=FAST_QUICK_AUDIO_S, seed=FAST_QUICK_SEED)
    return SoakSettings(audio_s=FAST_AUDIO_S)


def realtime_settings(quick: bool) -> SoakSettings:
    return SoakSettings(
        audio_s=REALTIME_QUICK_AUDIO_S if quick else REALTIME_AUDIO_S,
        realtime=True,
        llm_fault_rate=0.05,
        slow_llm_rate=0.25,
        mix=REALTIME_MIX,
    )


# --------------------------------------------------------------------------- clips
def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "appliance-benchmarks"


def _clip_key(text: str, length_scale: float) -> str:
    return hashlib.sha1(f"{CACHE_VERSION}|{text}|{length_scale}".encode()).hexdigest()[:16]


def load_clips() -> dict[tuple[str, float], Pcm16]:
    """Every phrase of the schedule, synthesized once without Piper's noise (the same samples
    every time) and cached in `~/.cache/appliance-benchmarks/soak-clips-v1.npz`."""
    wanted = [*WAKE_PHRASES, *((q, 1.0) for q in QUESTIONS), (STORY_REQUEST, 1.0), (STOP, 1.0)]
    wanted += [(c, 1.0) for c in CHATTER]
    path = cache_dir() / f"{CACHE_VERSION}.npz"
    stored: dict[str, Pcm16] = {}
    if path.is_file():
        with np.load(path) as data:
            stored = {k: np.asarray(data[k], dtype=np.int16) for k in data.files}
    missing = [(t, s) for t, s in wanted if _clip_key(t, s) not in stored]
    if missing:
        from appliance.testing.speech import piper_say_exact

        for text, scale in missing:
            stored[_clip_key(text, scale)] = piper_say_exact(text, length_scale=scale)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays: dict[str, Any] = dict(stored)
        np.savez(tmp, **arrays)
        tmp.replace(path)
    clips = {(t, s): stored[_clip_key(t, s)] for t, s in wanted}
    example = REPO_ROOT / "appliance" / "assets" / "example-hey-jarvis.wav"
    from appliance.testing.speech import read_wav

    audio, rate = read_wav(example)
    assert rate == RATE_HZ
    clips[("<example wake word>", 1.0)] = audio[int(0.9 * RATE_HZ) : int(2.2 * RATE_HZ)]  # "Hey Jarvis."
    return clips


# --------------------------------------------------------------------------- schedule
@dataclass
class Episode:
    kind: str
    start_s: float = 0.0
    parts: list[tuple[str, Any]] = field(default_factory=list)
    """("say", clip key) or ("quiet", seconds)."""
    noise: float = 0.0
    """Room noise level (RMS, int16 units; 0: digital silence)."""
    wake: bool = False

    def length_s(self, clips: dict[tuple[str, float], Pcm16]) -> float:
        total = 0.0
        for what, arg in self.parts:
            total += clips[arg].size / RATE_HZ if what == "say" else float(arg)
        return total


EPISODE_MIX: tuple[tuple[str, float], ...] = (
    ("question", 0.38),
    ("follow_up", 0.17),
    ("barge_in", 0.12),
    ("wake_only", 0.06),
    ("chatter", 0.15),
    ("quiet", 0.12),
)


REALTIME_MIX: tuple[tuple[str, float], ...] = (
    ("question", 0.35),
    ("follow_up", 0.15),
    ("barge_in", 0.25),
    ("wake_only", 0.1),
    ("chatter", 0.1),
    ("quiet", 0.05),
)
"""Real time is for the timing paths: more barge-ins and turn timeouts, less quiet."""


def schedule(settings: SoakSettings, clips: dict[tuple[str, float], Pcm16]) -> list[Episode]:
    """A seeded list of episodes covering `settings.audio_s`."""
    rng = random.Random(settings.seed)
    kinds, weights = zip(*(settings.mix or EPISODE_MIX), strict=True)
    wakes = [*WAKE_PHRASES, ("<example wake word>", 1.0)]
    questions = list(QUESTIONS)
    episodes: list[Episode] = []
    t = 0.0
    while t < settings.audio_s:
        kind = rng.choices(kinds, weights)[0]
        ep = Episode(kind, start_s=t, noise=rng.choice([0.0, 0.0, 40.0, 120.0]))
        lead = ("quiet", round(rng.uniform(0.5, 2.0), 2))
        wake = ("say", rng.choice(wakes))
        pause = ("quiet", round(rng.uniform(0.3, 0.7), 2))
        gap = ("quiet", round(rng.uniform(*GAP_S), 1))
        if kind == "question":
            ep.parts = [lead, wake, pause, ("say", (rng.choice(questions), 1.0)), gap]
        elif kind == "follow_up":
            first, second = rng.sample(questions, 2)
            between = ("quiet", round(rng.uniform(2.5, 4.5), 2))
            ep.parts = [lead, wake, pause, ("say", (first, 1.0)), between, ("say", (second, 1.0)), gap]
        elif kind == "barge_in":
            talk_over = ("quiet", round(rng.uniform(2.0, 4.0), 2))
            ep.parts = [
                lead,
                wake,
                pause,
                ("say", (STORY_REQUEST, 1.0)),
                talk_over,
                ("say", (STOP, 1.0)),
                gap,
            ]
        elif kind == "wake_only":
            ep.parts = [lead, wake, gap]
        elif kind == "chatter":
            ep.parts = [
                lead,
                ("say", (rng.choice(CHATTER), 1.0)),
                ("quiet", round(rng.uniform(10.0, 25.0), 1)),
            ]
        else:
            ep.parts = [("quiet", round(rng.uniform(60.0, 300.0), 1))]
        ep.wake = kind not in ("chatter", "quiet")
        episodes.append(ep)
        t += ep.length_s(clips)
    return episodes


def render(ep: Episode, clips: dict[tuple[str, float], Pcm16], seed: int) -> Iterator[Pcm16]:
    """The episode's audio, piece by piece (at most a few seconds each), with its room noise."""
    rng = np.random.default_rng(seed)
    for what, arg in ep.parts:
        if what == "say":
            speech = clips[arg].astype(np.float32)
            yield _with_noise(speech, ep.noise, rng)
        else:
            remaining = round(float(arg) * RATE_HZ)
            while remaining > 0:
                n = min(remaining, 10 * RATE_HZ)
                yield _with_noise(np.zeros(n, dtype=np.float32), ep.noise, rng)
                remaining -= n


def _with_noise(x: npt.NDArray[np.float32], level: float, rng: np.random.Generator) -> Pcm16:
    if level > 0:
        x = x + rng.normal(0.0, level, x.size).astype(np.float32)
    return np.clip(x, -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- the scripted LLM
class SoakLlm:
    """Answers by keyword; a seeded share of requests gets a fault instead."""

    def __init__(self, settings: SoakSettings) -> None:
        self._rng = random.Random(settings.seed + 17)
        self._lock = threading.Lock()
        self.settings = settings
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0

    def __call__(self, request: Any) -> Any:
        from appliance.testing import openai_server as oa

        text = request.last_user_text().lower()
        answer = next((a for words, a in KEYWORDS if any(w in text for w in words)), "Okay.")
        with self._lock:
            self.requests += 1
            draw = self._rng.random()
            kind: str | None = None
            if draw < self.settings.llm_fault_rate:
                names, weights = zip(*LLM_FAULTS, strict=True)
                kind = self._rng.choices(names, weights)[0]
            elif draw < self.settings.llm_fault_rate + self.settings.slow_llm_rate:
                kind = "slow"
            if kind is not None:
                self.injected[kind] += 1
        words = [w + " " for w in answer.split()]
        if kind is None:
            return oa.text_reply(*words)
        if kind == "http_500":
            return oa.error_reply(500)
        if kind == "garbage":
            return oa.garbage_reply()
        if kind == "half_then_drop":
            return oa.half_reply(*words, "and", "then", drop_after=max(1, len(words) // 2))
        if kind == "endless":
            return oa.endless_reply(*(w + " " for w in STORY.split()), "Chapter", "after", "chapter. ")
        if kind == "repetition":
            return oa.endless_reply("He had been a wanderer ", "who had been blessed ", "again and again. ")
        if kind == "hang":
            return oa.hang_reply()
        return oa.text_reply(*words, first_byte_delay_s=SLOW_FIRST_BYTE_S)


def soak_config(llm_url: str, realtime: bool) -> dict[str, Any]:
    turn: dict[str, Any] = {"turn_timeout": 7}
    if realtime:  # fillers while a slow LLM thinks (fast runs freeze the clock meanwhile)
        turn["soft_timeout_config"] = {"timeout_seconds": 2.0, "message": "Hmm, let me think."}
    return {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You are Jarvis, a voice assistant on a smart speaker.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": llm_url, "model_id": "scripted-model"},
                    "max_tokens": -1,
                },
            },
            "turn": turn,
        },
        "appliance": {"local": {"llm": {"backend": "openai"}}, "status": {"enabled": False}},
    }


# --------------------------------------------------------------------------- the run
@dataclass
class Sample:
    wall_s: float
    audio_s: float
    rss_mib: float
    threads: int
    fds: int


@dataclass
class EventStats:
    sessions: list[list[float | None]] = field(default_factory=list)
    """[start, end] on the appliance clock (end None: still open)."""
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    truncated: collections.Counter[str] = field(default_factory=collections.Counter)
    origins: collections.Counter[str] = field(default_factory=collections.Counter)
    """Spoken segments by origin (reply, soft_timeout_filler, reprompt, llm_failure_apology...)."""
    last_t: float = 0.0
    stopped_reason: str | None = None
    bad_lines: int = 0

    def add(self, e: dict[str, Any]) -> None:
        kind = e.get("type", "?")
        t = float(e.get("t", 0.0))
        self.last_t = max(self.last_t, t)
        self.counts[kind] += 1
        if kind == "session_started":
            self.sessions.append([t, None])
        elif kind == "session_ended" and self.sessions and self.sessions[-1][1] is None:
            self.sessions[-1][1] = t
        elif kind == "error":
            self.errors[str(e.get("code"))] += 1
        elif kind == "reply_truncated":
            self.truncated[str(e.get("reason"))] += 1
        elif kind == "audio":
            self.origins[str(e.get("origin"))] += 1
        elif kind == "appliance_stopped":
            self.stopped_reason = str(e.get("reason"))


class _Tail:
    """Reads complete lines appended to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self._partial = b""

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self._pos)
            data = f.read()
        self._pos += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line]


def _proc_sample(pid: int) -> tuple[float, int, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = float(fields["VmRSS"].split()[0]) if "VmRSS" in fields else 0.0
    return rss_kb / 1024.0, int(fields.get("Threads", "0").strip() or 0), fds


@dataclass
class SoakResult:
    settings: SoakSettings
    episodes: list[Episode]
    stats: EventStats
    samples: list[Sample]
    wall_s: float
    fed_s: float
    returncode: int | None
    wedged_at_s: float | None
    llm: SoakLlm
    stderr_tail: str


def run_soak(settings: SoakSettings, *, log: Callable[[str], None] | None = None) -> SoakResult:
    """Run the appliance on the schedule in a child process; sample it; collect its events."""
    from appliance.testing.openai_server import ScriptedOpenAiServer

    clips = load_clips()
    episodes = schedule(settings, clips)
    llm = SoakLlm(settings)
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp_name,
        ScriptedOpenAiServer(responder=llm) as server,
    ):
        tmp = Path(tmp_name)
        cfg_path = tmp / "config.yaml"
        import yaml

        cfg_path.write_text(yaml.safe_dump(soak_config(server.url, settings.realtime)))
        events_path, out_path, stderr_path = tmp / "events.jsonl", tmp / "out.wav", tmp / "stderr.txt"
        cmd = [
            sys.executable, "-m", "appliance.testing.faults", "--seed", str(settings.seed),
            "--stt-fail-rate", str(settings.stt_fault_rate), "--tts-fail-rate", str(settings.tts_fault_rate),
            "--", "run", "--config", str(cfg_path), "--input", "-", "--output", str(out_path),
            "--events", str(events_path), "--log-level", "WARNING",
            *(["--realtime"] if settings.realtime else []),
        ]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stderr=stderr, stdout=subprocess.DEVNULL, cwd=REPO_ROOT, env=env
            )
        assert proc.stdin is not None
        fed = [0]  # bytes written to the appliance's stdin (the pipe holds at most ~2 s more)
        feeder = threading.Thread(
            target=_feed,
            args=(proc.stdin, episodes, clips, settings.seed, fed),
            name="soak-feeder",
            daemon=True,
        )
        feeder.start()  # blocks on the pipe until the appliance reads: event times = input times
        start = time.monotonic()
        stats, samples = EventStats(), []
        tail = _Tail(events_path)
        wedged_at: float | None = None
        last_fed, last_move = -1, start
        next_log = start + 60.0
        started = False
        try:
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=settings.sample_every_s)  # a sample period, less if it ends
                for line in tail.lines():
                    try:
                        event = json.loads(line)
                    except ValueError:
                        stats.bad_lines += 1
                        continue
                    stats.add(event)
                    if not started and event.get("type") == "appliance_started":
                        started = True  # models loaded: the input moves from now on
                        last_move = time.monotonic()
                if not started:
                    continue
                now = time.monotonic()
                sample = _proc_sample(proc.pid) if feeder.is_alive() else None  # not while it exits
                if sample is not None and sample[0] > 0:
                    samples.append(Sample(now - start, fed[0] / BYTES_PER_S, *sample))
                if fed[0] != last_fed:
                    last_fed, last_move = fed[0], now
                elif feeder.is_alive() and now - last_move > settings.wedge_s:
                    wedged_at = fed[0] / BYTES_PER_S
                    _stop(proc)
                    break
                if log is not None and now >= next_log:
                    next_log = now + 60.0
                    log(
                        f"soak: {fed[0] / BYTES_PER_S / 3600:.2f} h of audio in {now - start:.0f} s, "
                        f"{len(stats.sessions)} sessions, RSS {samples[-1].rss_mib if samples else 0:.0f} MiB"
                    )
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _stop(proc)
        finally:
            if proc.poll() is None:
                _stop(proc)
        for line in tail.lines():
            try:
                stats.add(json.loads(line))
            except ValueError:
                stats.bad_lines += 1
        wall = time.monotonic() - start
        stderr_tail = stderr_path.read_text(errors="replace")[-3000:]
    return SoakResult(
        settings,
        episodes,
        stats,
        samples,
        wall,
        fed[0] / BYTES_PER_S,
        proc.returncode,
        wedged_at,
        llm,
        stderr_tail,
    )


def _feed(
    stdin: IO[bytes],
    episodes: Sequence[Episode],
    clips: dict[tuple[str, float], Pcm16],
    seed: int,
    fed: list[int],
) -> None:
    """Write the schedule to the appliance's stdin (the pipe paces it), then close it."""
    try:
        for n, ep in enumerate(episodes):
            for piece in render(ep, clips, seed * 100_003 + n):
                data = piece.astype("<i2").tobytes()
                for i in range(0, len(data), 16000):  # 0.5 s at a time
                    stdin.write(data[i : i + 16000])
                    fed[0] += len(data[i : i + 16000])
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- analysis
@dataclass
class SessionAudit:
    stuck: int
    longest_s: float
    missed_wakes: int
    false_wakes: int
    wake_episodes: int


def audit_sessions(result: SoakResult) -> SessionAudit:
    """Match sessions to the episodes whose wake word started them (on the appliance clock)."""
    eps = result.episodes
    starts = [ep.start_s for ep in eps]
    played_until = result.fed_s
    stuck = 0
    longest = 0.0
    woken: set[int] = set()
    false_wakes = 0
    for begin, end in result.stats.sessions:
        assert begin is not None
        index = max(0, _bisect(starts, begin) - 1)
        if eps[index].wake:
            woken.add(index)
        else:
            false_wakes += 1
        if end is None:  # never ended, not even when the input did
            stuck += 1
            continue
        longest = max(longest, end - begin)
        # Fast runs: the input waits while the agent speaks, so a healthy session has ended by
        # the next episode (its gap outlasts every timeout). Real time: the agent's own speech
        # (up to the reply ceiling) runs on the same clock, so only the absolute bound applies.
        next_start = starts[index + 1] if index + 1 < len(starts) else float("inf")
        late = not result.settings.realtime and end > next_start + 0.5 and next_start < played_until
        if end - begin > SESSION_BOUND_S or late:
            stuck += 1
    wake_episodes = [i for i, ep in enumerate(eps) if ep.wake and ep.start_s < played_until - 5.0]
    missed = len([i for i in wake_episodes if i not in woken])
    return SessionAudit(stuck, longest, missed, false_wakes, len(wake_episodes))


def _bisect(values: Sequence[float], x: float) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def rss_slope(samples: Sequence[Sample], warmup_s: float) -> float | None:
    """Least-squares RSS slope in MiB per hour of appliance time, after the warm-up."""
    points = [(s.audio_s / 3600.0, s.rss_mib) for s in samples if s.audio_s >= warmup_s]
    if len(points) < 10 or points[-1][0] - points[0][0] < MIN_SLOPE_SPAN_H:
        return None  # a short run's slope would extrapolate noise
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def table(result: SoakResult) -> list[Row]:
    s = result.settings
    audit = audit_sessions(result)
    stats = result.stats
    samples = result.samples
    warmup_s = max(WARMUP_FRACTION * s.audio_s, WARMUP_MIN_S)
    after = [x for x in samples if x.audio_s >= warmup_s] or samples
    first, warm, last = (samples[0], after[0], samples[-1]) if samples else (None, None, None)
    slope = rss_slope(samples, warmup_s)
    rows: list[Row] = []

    def row(metric: str, value: Any, target: str | None = None, ok: bool | None = None) -> None:
        rows.append(
            {
                "metric": metric,
                "value": value,
                "target": target,
                "verdict": None if ok is None else ("PASS" if ok else "FAIL"),
            }
        )

    row("mode", s.label)
    row(
        "audio played (h)",
        round(result.fed_s / 3600.0, 3),
        f"≥ {s.audio_s / 3600:.2f}",
        result.fed_s >= s.audio_s - 1,
    )
    row("wall time (s)", round(result.wall_s, 1))
    row("audio ÷ wall", round(result.fed_s / result.wall_s, 1) if result.wall_s else None)
    row("episodes (with a wake word)", f"{len(result.episodes)} ({audit.wake_episodes})")
    row("sessions", len(stats.sessions))
    row("wake words missed / false wakes", f"{audit.missed_wakes} / {audit.false_wakes}")
    row("turns (user transcripts)", stats.counts["user_transcript"])
    row("replies (agent_response)", stats.counts["agent_response"])
    row("stuck sessions", audit.stuck, "0", audit.stuck == 0 and result.wedged_at_s is None)
    if result.wedged_at_s is not None:
        row("wedged at audio (s)", round(result.wedged_at_s, 1), "never", False)
    row(
        "longest session (appliance s)",
        round(audit.longest_s, 1),
        f"≤ {SESSION_BOUND_S:g}",
        audit.longest_s <= SESSION_BOUND_S,
    )
    row("barge-ins (interruption)", stats.counts["interruption"])
    row("fillers (soft timeout)", stats.origins["soft_timeout_filler"])
    row("turn timeouts", stats.counts["turn_timeout"])
    row("apologies spoken (LLM failed)", stats.origins["llm_failure_apology"])
    row("replies truncated", ", ".join(f"{k} {v}" for k, v in sorted(stats.truncated.items())) or "0")
    row("LLM requests", result.llm.requests)
    row("LLM faults injected", ", ".join(f"{k} {v}" for k, v in sorted(result.llm.injected.items())) or "0")
    for code, n in sorted(stats.errors.items()):
        row(f"errors: {code}", n)
    if first is not None and warm is not None and last is not None:
        row(
            "RSS start / after warm-up / end (MiB)",
            f"{first.rss_mib:.1f} / {warm.rss_mib:.1f} / {last.rss_mib:.1f}",
        )
        row("RSS peak (MiB)", round(max(x.rss_mib for x in samples), 1))
        span_h = (last.audio_s - warm.audio_s) / 3600.0
        judged = slope is not None and span_h >= VERDICT_SPAN_H
        row(
            f"RSS slope after warm-up (MiB per appliance hour, over {span_h:.2f} h)",
            None if slope is None else round(slope, 2),
            f"≤ {RSS_SLOPE_TARGET_MIB_H:g}" + ("" if judged else f" (judged over ≥ {VERDICT_SPAN_H:g} h)"),
            (slope is not None and slope <= RSS_SLOPE_TARGET_MIB_H) if judged else None,
        )
        if slope is not None:  # a leak climbs all along; a high-water mark levels off
            late = rss_slope(samples, (warm.audio_s + last.audio_s) / 2)
            row("RSS slope, second half (MiB per appliance hour)", None if late is None else round(late, 2))
        row(
            "open fds start / after warm-up / end",
            f"{first.fds} / {warm.fds} / {last.fds}",
            "flat",
            last.fds <= warm.fds + FLAT_SLACK,
        )
        row(
            "threads start / after warm-up / end",
            f"{first.threads} / {warm.threads} / {last.threads}",
            "flat",
            last.threads <= warm.threads + FLAT_SLACK,
        )
    row("events: malformed lines", stats.bad_lines, "0", stats.bad_lines == 0)
    row(
        "stopped (reason, exit code)",
        f"{stats.stopped_reason}, {result.returncode}",
        "input_ended, 0",
        stats.stopped_reason == "input_ended" and result.returncode == 0,
    )
    return rows


def soak_table(quick: bool) -> list[Row]:
    """Soak, fast headless on the audio clock: 8 h of a day with faults (quick: 5 min)"""
    return table(run_soak(fast_settings(quick), log=_log))


def realtime_table(quick: bool) -> list[Row]:
    """Soak in real time: 30 min of fillers, barge-ins, turn timeouts and faults (quick: 90 s)"""
    return table(run_soak(realtime_settings(quick), log=_log))


STOP_TARGET_S = 2.0
STOP_RUNS = 3


def stop_table(quick: bool) -> list[Row]:
    """Stop latency per session state: SIGTERM → the process has exited (target ≤ 2 s)"""
    from appliance.testing.faults import SESSION_STATES, signal_in_state

    runs = 1 if quick else STOP_RUNS
    rows: list[Row] = []
    worst_all = 0.0
    with tempfile.TemporaryDirectory(prefix="stop-") as tmp:
        for state in SESSION_STATES:
            times: list[float] = []
            clean = 0
            for n in range(runs):
                run = signal_in_state(
                    state, Path(tmp) / f"{state}-{n}", lambda url: soak_config(url, realtime=True)
                )
                times.append(run.stop_s)
                last = run.events[-1] if run.events else {}
                complete = all(line.startswith("{") and line.endswith("}") for line in run.lines)
                if run.returncode == 0 and last.get("type") == "appliance_stopped" and complete:
                    clean += 1
            worst = max(times)
            worst_all = max(worst_all, worst)
            rows.append(
                {
                    "state": state,
                    "runs": runs,
                    "median s": round(float(np.median(times)), 3),
                    "worst s": round(worst, 3),
                    "clean exits": f"{clean}/{runs}",
                    "target s": STOP_TARGET_S,
                    "verdict": "PASS" if worst <= STOP_TARGET_S and clean == runs else "FAIL",
                }
            )
    rows.append(
        {
            "state": "worst of all",
            "runs": runs * len(SESSION_STATES),
            "worst s": round(worst_all, 3),
            "target s": STOP_TARGET_S,
            "verdict": "PASS" if all(r["verdict"] == "PASS" for r in rows) else "FAIL",
        }
    )
    return rows


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "soak": soak_table,
    "soak.realtime": realtime_table,
    "stop": stop_table,
}
OPT_IN = frozenset({"soak.realtime"})
"""Run only when named exactly (30 minutes of wall time)."""


def main(argv: Sequence[str] | None = None) -> int:
    """A soak of any length: `python -m benchmarks.soak --hours 0.5 [--realtime] [--seed N]`."""
    from benchmarks.common import format_table

    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=main.__doc__)
    p.add_argument("--hours", type=float, default=FAST_AUDIO_S / 3600)
    p.add_argument("--realtime", action="store_true")
    p.add_argument("--seed", type=int, default=9)
    args = p.parse_args(argv)
    base = realtime_settings(False) if args.realtime else fast_settings(False)
    settings = dataclasses.replace(base, audio_s=args.hours * 3600.0, seed=args.seed)
    print(format_table(table(run_soak(settings, log=_log))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
