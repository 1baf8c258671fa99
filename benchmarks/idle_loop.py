"""Idle-loop benchmarks: what listening for the wake word costs, how fast it fires, how much RAM.

Everything runs the real models (openWakeWord + Silero VAD on onnxruntime, one thread each, as
the adapters set them; microWakeWord on pymicro-wakeword's TensorFlow Lite runtime) through the
real `AudioRouter`, on synthesized audio, on this machine.
Numbers are compared side by side in the same run (router vs. its components, RSS vs. a bare
Python + numpy process); the only absolute numbers are the targets from the design card.

`python -m benchmarks.idle_loop --rss STAGE` is the fresh-process probe behind `memory_table`.
Only the standard library and numpy are imported at module level, so the probe's baseline
stage measures a bare Python + numpy process.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Row = dict[str, Any]
Pcm16 = npt.NDArray[np.int16]

RATE_HZ = 16000
BLOCK_SAMPLES = 1280  # the microphone block and the openWakeWord frame: 80 ms
BLOCK_S = BLOCK_SAMPLES / RATE_HZ
VAD_FRAME_SAMPLES = 512
WAKE_WORDS = ("hey_jarvis",)  # what the default config listens for

CPU_TARGET_PCT = 2.0  # idle loop with openWakeWord (the default engine), % of one core
MWW_CPU_TARGET_PCT = 0.5  # idle loop with microWakeWord, % of one core
RSS_TARGET_MB = 150.0  # the idle appliance, local listening loop and remote mode alike
ENGINES = ("openwakeword", "microwakeword")
LATENCY_TARGET_MS = 200.0  # median, phrase end → detection
PHRASE_END_REL_THRESHOLD = 0.01  # the phrase ends at its last sample above 1 % of its peak (−40 dB)

REPO_ROOT = Path(__file__).resolve().parent.parent

IDLE_SPEECH = (
    "The weather today is sunny with a light breeze.",
    "Did you remember to buy milk on the way home?",
    "I think the meeting moved to Thursday afternoon, right after lunch.",
)
IDLE_SPEECH_AT = (0.15, 0.5, 0.8)  # where the unrelated speech starts, as a fraction of the clip


@dataclass(frozen=True)
class WakeVariant:
    text: str
    length_scale: float
    lead: str  # "silence" (digital silence around the phrase) or "noise" (room noise under everything)
    lead_s: float


WAKE_VARIANTS = (
    WakeVariant("Hey Jarvis!", 1.0, "silence", 1.0),
    WakeVariant("Hey Jarvis.", 1.0, "noise", 1.5),
    WakeVariant("hey jarvis", 1.0, "silence", 2.0),
    WakeVariant("Hey Jarvis!", 0.9, "noise", 1.2),
    WakeVariant("Hey Jarvis.", 0.9, "silence", 1.7),
    WakeVariant("hey jarvis", 0.9, "noise", 2.3),
    WakeVariant("Hey Jarvis!", 1.1, "noise", 1.0),
    WakeVariant("Hey Jarvis.", 1.1, "silence", 1.4),
    WakeVariant("hey jarvis", 1.1, "noise", 1.9),
    WakeVariant("Hey, Jarvis!", 1.0, "noise", 1.6),
    WakeVariant("HEY JARVIS", 0.95, "silence", 1.3),
    WakeVariant("Hey Jarvis", 1.05, "noise", 2.1),
)


@dataclass(frozen=True)
class Settings:
    audio_s: float = 60.0  # idle audio per measured configuration
    repeats: int = 3  # passes over it per configuration, interleaved
    utterances: int = len(WAKE_VARIANTS)
    rss_audio_s: float = 10.0  # idle audio the memory probe processes
    remote_idle_s: float = 10.0  # how long the remote-mode appliance listens before its RSS is read
    pitched: int = 6  # piper phrases replayed at each PITCH_FACTORS
    espeak_voices: int = 9  # of ESPEAK_VOICES, each saying every ESPEAK_TEXTS
    espeak_texts: int = 3
    near_misses: int = 8  # of NEAR_MISSES, said by piper and by espeak-ng en-us
    noise_s: float = 30.0  # loud broadband noise in the false-wake material


FULL = Settings()
QUICK = Settings(
    audio_s=2.0,
    repeats=1,
    utterances=2,
    rss_audio_s=2.0,
    remote_idle_s=3.0,
    pitched=1,
    espeak_voices=1,
    espeak_texts=1,
    near_misses=1,
    noise_s=2.0,
)


def settings_for(quick: bool) -> Settings:
    return QUICK if quick else FULL


# ---------------------------------------------------------------------------------------------
# models and audio


def models_dir() -> Path:
    from appliance.models.manifest import default_models_dir

    return default_models_dir(os.environ)


def load_listeners(models: Path | None = None, engine: str = "openwakeword") -> tuple[Any, Any]:
    """The wake-word detector (on `engine`) and the VAD, built as `runtime.app.load_listeners`
    builds them for `{name: hey_jarvis, engine: ENGINE}`."""
    from appliance.adapters.silero_vad import SileroVad
    from appliance.models.manifest import load_manifest
    from appliance.models.store import ModelStore
    from appliance.runtime.wake_words import build_detector, resolve_wake_word

    store = ModelStore(models or models_dir(), load_manifest())
    bundled = {name: str(store.manifest.get(name).kind) for name in store.manifest.names}
    words = [
        resolve_wake_word(i, name, engine, None, {}, None, bundled)  # type: ignore[arg-type]
        for i, name in enumerate(WAKE_WORDS)
    ]
    detector = build_detector(words, store.path)
    vad = SileroVad(store.path("silero-vad") / "silero_vad.onnx")
    return detector, vad


@functools.cache
def _listeners(engine: str = "openwakeword") -> tuple[Any, Any]:
    """Loaded once per process (per engine) and warmed up."""
    return _warm(*load_listeners(engine=engine))


def _warm(detector: Any, vad: Any) -> tuple[Any, Any]:
    """onnxruntime's first runs are slow: run 1 s of noise through both, then reset them."""
    warm = _background(1.0, level=200.0, seed=99)
    for i in range(0, warm.size - BLOCK_SAMPLES + 1, BLOCK_SAMPLES):
        detector.scores(warm[i : i + BLOCK_SAMPLES])
    for i in range(0, warm.size - VAD_FRAME_SAMPLES + 1, VAD_FRAME_SAMPLES):
        vad.probability(warm[i : i + VAD_FRAME_SAMPLES])
    detector.reset()
    vad.reset()
    return detector, vad


@functools.cache
def _say(text: str, length_scale: float = 1.0) -> Pcm16:
    """`text` in the piper joe voice without its sampling noise: the same samples every run, so
    the detections, scores and latencies measured on it do not vary with Piper's random draw."""
    from appliance.testing.speech import piper_say_exact

    return piper_say_exact(text, length_scale=length_scale)


def _background(seconds: float, level: float, seed: int) -> Pcm16:
    """Room noise: white noise with a slowly wandering level and a little mains hum."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    envelope = 1.0 + 0.3 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 2 * np.pi))
    x = rng.normal(0.0, level, n) * envelope + 0.3 * level * np.sin(2 * np.pi * 50.0 * t)
    return np.clip(x, -32768, 32767).astype(np.int16)


def _mix(base: Pcm16, part: Pcm16, at: int, gain: float = 1.0) -> Pcm16:
    out = base.astype(np.float64)
    end = min(base.size, at + part.size)
    if end > at:
        out[at:end] += gain * part[: end - at].astype(np.float64)
    return np.clip(out, -32768, 32767).astype(np.int16)


@functools.cache
def idle_audio(seconds: float) -> Pcm16:
    """Low room noise with a few seconds of unrelated speech (no wake word) at talking distance."""
    audio = _background(seconds, level=80.0, seed=1)
    for text, frac in zip(IDLE_SPEECH, IDLE_SPEECH_AT, strict=True):
        audio = _mix(audio, _say(text), int(frac * seconds * RATE_HZ), gain=0.5)
    return audio


def _blocks(audio: Pcm16) -> list[Pcm16]:
    return [audio[i : i + BLOCK_SAMPLES] for i in range(0, audio.size - BLOCK_SAMPLES + 1, BLOCK_SAMPLES)]


def _router(detector: Any, vad: Any, *, vad_gate: bool, post: Callable[[Any], None]) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    from appliance.core.endpointing import EndpointConfig, Endpointer
    from appliance.core.wakeword import WakeWordGate, WakeWordRule
    from appliance.runtime.router import AudioRouter

    detector.reset()
    vad.reset()
    return AudioRouter(
        detector=detector,
        gate=WakeWordGate({n: WakeWordRule(n) for n in detector.names}),
        vad=vad,
        endpointer=Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(max_workers=1),  # never used: blocks go to _process_sync
        post=post,
        wake_vad_gate=0.5 if vad_gate else None,
    )


def _pct(values: npt.ArrayLike, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# ---------------------------------------------------------------------------------------------
# 1. CPU per 80 ms frame


class _VadOnly:
    """Silero alone: 512-sample frames cut from 80 ms blocks (2.5 per block), as the router does."""

    def __init__(self, vad: Any) -> None:
        self._vad = vad
        self._buf = np.zeros(0, dtype=np.int16)
        vad.reset()

    def __call__(self, block: Pcm16) -> None:
        buf = np.concatenate([self._buf, block])
        n = buf.size // VAD_FRAME_SAMPLES
        for i in range(n):
            self._vad.probability(buf[i * VAD_FRAME_SAMPLES : (i + 1) * VAD_FRAME_SAMPLES])
        self._buf = buf[n * VAD_FRAME_SAMPLES :]


@dataclass
class _Timing:
    wall_s: list[float]
    cpu_s: float = 0.0
    audio_s: float = 0.0
    wakes: int = 0


def _time_blocks(step: Callable[[Pcm16], object], blocks: list[Pcm16], into: _Timing) -> None:
    wall, cpu = time.perf_counter, time.process_time
    for block in blocks:
        c0 = cpu()
        t0 = wall()
        step(block)
        t1 = wall()
        into.cpu_s += cpu() - c0
        into.wall_s.append(t1 - t0)
    into.audio_s += len(blocks) * BLOCK_S


CPU_CONFIGS = (
    ("router idle: wake word + VAD gate", "router"),
    ("router idle, VAD gate off", "router-nogate"),
    ("openWakeWord alone (1 frame/block)", "oww"),
    ("Silero VAD alone (2.5 frames/block)", "vad"),
    ("router idle, microWakeWord: wake word + VAD gate", "router-mww"),
    ("microWakeWord alone (8 feature steps/block)", "mww"),
)


def _collecting(process: Callable[[Pcm16], list[Any]], into: list[Any]) -> Callable[[Pcm16], None]:
    def step(block: Pcm16) -> None:
        into.extend(process(block))

    return step


SEGMENT_BLOCKS = 50  # 4 s: the configurations take turns at this granularity


def measure_cpu(settings: Settings) -> dict[str, _Timing]:
    """Time every configuration on the same audio, taking turns every 4 s of audio.

    Each configuration has its own model instances and keeps its state across turns, as one
    continuous stream would; taking turns (in a rotating order) spreads whatever else the machine
    is doing evenly over all of them, so their ratios hold even when absolute numbers drift.
    """
    blocks = _blocks(idle_audio(settings.audio_s))
    segments = [blocks[i : i + SEGMENT_BLOCKS] for i in range(0, len(blocks), SEGMENT_BLOCKS)]
    keys = [key for _, key in CPU_CONFIGS]
    timings = {key: _Timing([]) for key in keys}
    events = {key: list[Any]() for key in keys}
    steps: dict[str, Callable[[Pcm16], object]] = {}
    for key in keys:
        engine = "microwakeword" if "mww" in key else "openwakeword"
        detector, vad = _warm(*load_listeners(engine=engine))
        if key.startswith("router"):
            # the router posts nothing itself: _process_sync returns the events
            gate = key in ("router", "router-mww")
            router = _router(detector, vad, vad_gate=gate, post=events[key].append)
            steps[key] = _collecting(router._process_sync, events[key])
        elif key in ("oww", "mww"):
            steps[key] = detector.scores
        else:
            steps[key] = _VadOnly(vad)
    turn = 0
    for _ in range(settings.repeats):
        for segment in segments:
            for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                _time_blocks(steps[key], segment, timings[key])
            turn += 1
    for key in keys:
        timings[key].wakes = sum(type(e).__name__ == "WakeWordDetected" for e in events[key])
    return timings


def _cpu_row(name: str, t: _Timing, router_cpu_s: float) -> Row:
    ms = np.asarray(t.wall_s) * 1000.0
    core_pct = t.cpu_s / t.audio_s * 100.0
    return {
        "component": name,
        "frames": len(t.wall_s),
        "mean ms": float(ms.mean()),
        "p50 ms": _pct(ms, 50),
        "p95 ms": _pct(ms, 95),
        "p99 ms": _pct(ms, 99),
        "max ms": float(ms.max()),
        "CPU ms/frame": t.cpu_s * 1000.0 / len(t.wall_s),
        "% of one core": core_pct,
        "× router": t.cpu_s / router_cpu_s if router_cpu_s > 0 else None,
    }


def cpu_table(quick: bool = False) -> list[Row]:
    """Idle loop cost per 80 ms frame (real AudioRouter._process_sync on the model thread)."""
    settings = settings_for(quick)
    timings = measure_cpu(settings)
    router_cpu = timings["router"].cpu_s
    rows = [_cpu_row(name, timings[key], router_cpu) for name, key in CPU_CONFIGS]
    full, nogate = rows[0], rows[1]
    for row, (_, key) in zip(rows, CPU_CONFIGS, strict=True):
        if key.startswith("router"):
            row["false wakes"] = timings[key].wakes
    rows.append(
        {
            "component": "VAD gate cost (router − gate off)",
            "mean ms": full["mean ms"] - nogate["mean ms"],
            "CPU ms/frame": full["CPU ms/frame"] - nogate["CPU ms/frame"],
            "% of one core": full["% of one core"] - nogate["% of one core"],
            "× router": (timings["router"].cpu_s - timings["router-nogate"].cpu_s) / router_cpu,
        }
    )
    for row, target in ((full, CPU_TARGET_PCT), (rows[4], MWW_CPU_TARGET_PCT)):
        row["target"] = f"≤ {target:g} %"
        row["÷ target"] = row["% of one core"] / target
        row["verdict"] = "PASS" if row["% of one core"] <= target else "FAIL"
    return rows


# ---------------------------------------------------------------------------------------------
# 2. wake-detection latency


@dataclass(frozen=True)
class WakeRun:
    variant: WakeVariant
    phrase_end_s: float
    detected_s: float | None
    score: float | None
    block_ms: float | None  # processing time of the block that fired

    @property
    def latency_ms(self) -> float | None:
        return None if self.detected_s is None else (self.detected_s - self.phrase_end_s) * 1000.0

    @property
    def wall_ms(self) -> float | None:
        lat = self.latency_ms
        return None if lat is None or self.block_ms is None else lat + self.block_ms


def phrase_end(phrase: Pcm16) -> int:
    """Samples up to and including the last one above 1 % of the phrase's peak."""
    mag = np.abs(phrase.astype(np.int32))
    above = np.nonzero(mag > PHRASE_END_REL_THRESHOLD * mag.max())[0]
    return int(above[-1]) + 1 if above.size else phrase.size


def wake_clip(variant: WakeVariant, seed: int, phrase: Pcm16 | None = None) -> tuple[Pcm16, float]:
    """The clip (lead-in, phrase, 1.5 s tail) and the phrase end in seconds of audio; `phrase`
    replaces the variant's piper phrase (same lead-in and tail)."""
    if phrase is None:
        phrase = _say(variant.text, variant.length_scale)
    lead = round(variant.lead_s * RATE_HZ)
    total_s = variant.lead_s + phrase.size / RATE_HZ + 1.5
    if variant.lead == "noise":
        base = _background(total_s, level=250.0, seed=seed)
    else:
        base = np.zeros(round(total_s * RATE_HZ), dtype=np.int16)
    return _mix(base, phrase, lead), (lead + phrase_end(phrase)) / RATE_HZ


def measure_latency(settings: Settings) -> list[WakeRun]:
    detector, vad = _listeners()
    runs: list[WakeRun] = []
    variants = [WAKE_VARIANTS[i % len(WAKE_VARIANTS)] for i in range(settings.utterances)]
    clips = [wake_clip(v, seed=10 + i) for i, v in enumerate(variants)]  # synthesize before timing
    for variant, (audio, end_s) in zip(variants, clips, strict=True):
        events: list[Any] = []
        router = _router(detector, vad, vad_gate=True, post=events.append)
        hit: tuple[float, float, float] | None = None
        for block in _blocks(audio):
            t0 = time.perf_counter()
            out = router._process_sync(block)
            dt = time.perf_counter() - t0
            wakes = [e for e in out if type(e).__name__ == "WakeWordDetected"]
            if wakes:
                hit = (wakes[0].audio_t, wakes[0].score, dt * 1000.0)
                break
        runs.append(
            WakeRun(
                variant,
                end_s,
                hit[0] if hit else None,
                hit[1] if hit else None,
                hit[2] if hit else None,
            )
        )
    detector.reset()
    vad.reset()
    return runs


_latency_cache: dict[Settings, list[WakeRun]] = {}


def _latency_runs(settings: Settings) -> list[WakeRun]:
    if settings not in _latency_cache:
        _latency_cache[settings] = measure_latency(settings)
    return _latency_cache[settings]


def latency_table(quick: bool = False) -> list[Row]:
    """Wake-word detection latency after the phrase ends ("Hey Jarvis", piper joe voice)."""
    runs = _latency_runs(settings_for(quick))
    rows: list[Row] = []
    for name, values in (
        ("audio: detection audio_t − phrase end", [r.latency_ms for r in runs]),
        ("wall-clock estimate: + block processing", [r.wall_ms for r in runs]),
    ):
        found = [v for v in values if v is not None]
        row: Row = {
            "latency": name,
            "utterances": len(runs),
            "detected": len(found),
            "rate %": 100.0 * len(found) / len(runs) if runs else 0.0,
            "min ms": min(found) if found else None,
            "median ms": _pct(found, 50) if found else None,
            "p90 ms": _pct(found, 90) if found else None,
            "max ms": max(found) if found else None,
        }
        median = row["median ms"]
        row["target"] = f"median ≤ {LATENCY_TARGET_MS:g} ms"
        row["÷ target"] = None if median is None else median / LATENCY_TARGET_MS
        ok = median is not None and median <= LATENCY_TARGET_MS and len(found) == len(runs)
        row["verdict"] = "PASS" if ok else "FAIL"
        rows.append(row)
    return rows


def latency_runs_table(quick: bool = False) -> list[Row]:
    """Each synthesized wake phrase: where it ends, when the router fired, and how long that took."""
    return [
        {
            "#": i + 1,
            "text": r.variant.text,
            "length_scale": r.variant.length_scale,
            "lead-in": f"{r.variant.lead} {r.variant.lead_s:.1f} s",
            "phrase end s": r.phrase_end_s,
            "detected s": r.detected_s,
            "score": r.score,
            "latency ms": r.latency_ms,
            "block ms": r.block_ms,
            "wall ms": r.wall_ms,
        }
        for i, r in enumerate(_latency_runs(settings_for(quick)))
    ]


# ---------------------------------------------------------------------------------------------
# 3. the two wake-word engines side by side: recall, false wakes, cost

ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en+m3",
    "en+f3",
    "en-us+f4",
    "en+m7",
    "en-gb-scotland",
    "en+klatt",
    "en-029",
)
ESPEAK_TEXTS = ("hey jarvis", "Hey Jarvis!", "Hey, Jarvis.")
PITCH_FACTORS = (0.88, 1.12)  # piper joe replayed slower/lower and faster/higher
NEAR_MISSES = (
    "Hey, Travis!",
    "Hey Marvin, come here.",
    "A jar of jam, please.",
    "Harvest is over.",
    "Hey, just a minute.",
    "Jars of honey are in the pantry.",
    "Hey Siri, what time is it?",
    "Alexa, play some music.",
)
ENGINE_LABELS = {"openwakeword": "openWakeWord", "microwakeword": "microWakeWord"}


@dataclass(frozen=True)
class EngineClip:
    group: str  # a voice ("piper joe", "espeak-ng en+m3", ...) or non-wake material
    audio: Pcm16
    wake: bool  # holds the wake word
    phrase_end_s: float | None = None


def _espeak(text: str, voice: str) -> Pcm16:
    from appliance.testing.speech import espeak_say

    return espeak_say(text, voice=voice)


def _pitched(phrase: Pcm16, factor: float) -> Pcm16:
    """The phrase played `factor` times faster: higher (> 1) or lower (< 1) voice and tempo."""
    from appliance.adapters.resample import resample

    return resample(phrase, round(RATE_HZ * factor), RATE_HZ)


@functools.cache
def engine_clips(settings: Settings) -> tuple[EngineClip, ...]:
    """Wake phrases in several voices, and audio that holds no wake word."""
    clips: list[EngineClip] = []
    variants = [WAKE_VARIANTS[i % len(WAKE_VARIANTS)] for i in range(settings.utterances)]
    for i, v in enumerate(variants):
        audio, end = wake_clip(v, seed=10 + i)
        clips.append(EngineClip("piper joe", audio, True, end))
    for factor in PITCH_FACTORS:
        for i, v in enumerate(variants[: settings.pitched]):
            phrase = _pitched(_say(v.text, v.length_scale), factor)
            audio, end = wake_clip(v, seed=30 + i, phrase=phrase)
            clips.append(EngineClip(f"piper joe ×{factor:g} speed", audio, True, end))
    for j, voice in enumerate(ESPEAK_VOICES[: settings.espeak_voices]):
        for k, text in enumerate(ESPEAK_TEXTS[: settings.espeak_texts]):
            v = WAKE_VARIANTS[(j * len(ESPEAK_TEXTS) + k) % len(WAKE_VARIANTS)]  # its lead-in
            audio, end = wake_clip(v, seed=50 + j * 7 + k, phrase=_espeak(text, voice))
            clips.append(EngineClip(f"espeak-ng {voice}", audio, True, end))
    from appliance.testing.speech import read_wav

    example, rate = read_wav(REPO_ROOT / "appliance" / "assets" / "example-hey-jarvis.wav")
    if rate == RATE_HZ:
        clips.append(EngineClip("example recording", example, True))
    quiet = np.zeros(RATE_HZ // 2, dtype=np.int16)
    for text in NEAR_MISSES[: settings.near_misses]:
        for speech in (_say(text), _espeak(text, "en-us")):
            clips.append(
                EngineClip("near misses (piper + espeak-ng)", np.concatenate([quiet, speech, quiet]), False)
            )
    clips.append(EngineClip("idle room: noise + unrelated speech", idle_audio(settings.audio_s), False))
    clips.append(
        EngineClip("loud broadband noise", _background(settings.noise_s, level=2000.0, seed=5), False)
    )
    return tuple(clips)


@dataclass
class EngineResult:
    hits: dict[str, list[int]]  # group -> [detected clips, clips] (wake) or [false wakes, clips]
    latencies_ms: list[float]
    cpu_s: float
    audio_s: float


def measure_engines(settings: Settings) -> dict[str, EngineResult]:
    """Every clip through a fresh router (VAD gate on, as the appliance runs) per engine."""
    clips = engine_clips(settings)
    results: dict[str, EngineResult] = {}
    for engine in ENGINES:
        detector, vad = _listeners(engine)
        result = EngineResult({}, [], 0.0, 0.0)
        for clip in clips:
            router = _router(detector, vad, vad_gate=True, post=lambda e: None)
            found: list[Any] = []
            c0 = time.process_time()
            for block in _blocks(clip.audio):
                found += [e for e in router._process_sync(block) if type(e).__name__ == "WakeWordDetected"]
            result.cpu_s += time.process_time() - c0
            result.audio_s += len(_blocks(clip.audio)) * BLOCK_S
            counts = result.hits.setdefault(clip.group, [0, 0])
            counts[0] += (1 if found else 0) if clip.wake else len(found)
            counts[1] += 1
            if clip.wake and found and clip.phrase_end_s is not None:
                result.latencies_ms.append((found[0].audio_t - clip.phrase_end_s) * 1000.0)
        results[engine] = result
    return results


_engine_cache: dict[Settings, dict[str, EngineResult]] = {}


def _engine_results(settings: Settings) -> dict[str, EngineResult]:
    if settings not in _engine_cache:
        _engine_cache[settings] = measure_engines(settings)
    return _engine_cache[settings]


def _recall(result: EngineResult, prefix: str) -> tuple[int, int]:
    pairs = [v for g, v in result.hits.items() if g.startswith(prefix)]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def engines_table(quick: bool = False) -> list[Row]:
    """Wake-word engines side by side ("hey jarvis"): recall by voice, false wakes, idle CPU."""
    settings = settings_for(quick)
    results = _engine_results(settings)
    clips = engine_clips(settings)
    non_wake_s = sum(c.audio.size for c in clips if not c.wake) / RATE_HZ
    rows: list[Row] = []
    for engine, r in results.items():
        groups = {
            "piper joe": _recall(r, "piper joe"),
            "espeak-ng": _recall(r, "espeak-ng"),
            "example": _recall(r, "example"),
        }
        hit = sum(h for h, _ in groups.values())
        total = sum(n for _, n in groups.values())
        plain = r.hits.get("piper joe", [0, 0])
        false_wakes = sum(r.hits[g][0] for g in {c.group for c in clips if not c.wake})
        rows.append(
            {
                "engine": ENGINE_LABELS[engine],
                "piper joe": f"{plain[0]}/{plain[1]}",
                "piper, other speeds": "{}/{}".format(*_recall(r, "piper joe ×")),
                "espeak-ng voices": "{}/{}".format(*groups["espeak-ng"]),
                "example recording": "{}/{}".format(*groups["example"]),
                "recall %": 100.0 * hit / total if total else None,
                "false wakes": false_wakes,
                "non-wake audio s": non_wake_s,
                "median latency ms": _pct(r.latencies_ms, 50) if r.latencies_ms else None,
                "CPU % of one core": r.cpu_s / r.audio_s * 100.0 if r.audio_s else None,
                "default": "yes" if engine == "openwakeword" else "",
            }
        )
    return rows


def engine_voices_table(quick: bool = False) -> list[Row]:
    """Per voice or material: wake phrases detected (or false wakes) per engine."""
    settings = settings_for(quick)
    results = _engine_results(settings)
    clips = engine_clips(settings)
    groups = list(dict.fromkeys(c.group for c in clips))
    rows: list[Row] = []
    for group in groups:
        wake = any(c.wake for c in clips if c.group == group)
        row: Row = {"material": group, "clips": results[ENGINES[0]].hits[group][1]}
        for engine, r in results.items():
            hit, _ = r.hits[group]
            row[ENGINE_LABELS[engine]] = f"{hit} detected" if wake else f"{hit} false wakes"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# 4. resident memory, each stage in a fresh process

RSS_STAGES = ("numpy", "onnxruntime", "listeners", "listeners-mww", "openwakeword-lib")
REMOTE_CONFIG = """appliance:
  mode: remote
  remote:
    base_url: ws://127.0.0.1:9
    agent_id: benchmark-idle
"""


def _proc_status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    kb = _proc_status_kb("VmRSS")
    if kb is None:  # not Linux: the peak is the best we have
        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024.0


def _peak_mb() -> float:
    kb = _proc_status_kb("VmHWM")
    return (kb if kb is not None else float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)) / 1024.0


def rss_probe(stage: str, audio_path: Path | None = None) -> dict[str, float]:
    """Run in a fresh process: import / load / process up to `stage`, report RSS in MiB."""
    out: dict[str, float] = {}
    if stage != "numpy":
        import onnxruntime  # noqa: F401

        import appliance.adapters.openwakeword_detector
        import appliance.adapters.silero_vad
        import appliance.runtime.router  # noqa: F401
    if stage == "openwakeword-lib":
        import openwakeword.model  # noqa: F401  (imports scipy and scikit-learn)
    if stage.startswith("listeners"):
        detector, vad = load_listeners(engine="microwakeword" if stage == "listeners-mww" else "openwakeword")
        out["loaded_mb"] = _rss_mb()
        audio = np.load(audio_path) if audio_path else _background(5.0, level=80.0, seed=1)
        router = _router(detector, vad, vad_gate=True, post=lambda e: None)
        for block in _blocks(audio):
            router._process_sync(block)
        out["audio_s"] = audio.size / RATE_HZ
    out["rss_mb"] = _rss_mb()
    out["peak_mb"] = _peak_mb()
    return out


def _probe_subprocess(stage: str, audio_path: Path | None) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.idle_loop", "--rss", stage]
    if audio_path is not None:
        cmd += ["--audio", str(audio_path)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe '{stage}' failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _proc_kb(pid: int, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def remote_idle_rss(seconds: float) -> dict[str, float] | None:
    """`appliance run` in remote mode (no local models), listening to real-time silence on
    stdin for `seconds`: the whole idle process's RSS and peak in MiB (None without /proc)."""
    import threading

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "remote.yaml"
        config.write_text(REMOTE_CONFIG, encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--config",
            str(config),
            "--input",
            "-",
            "--realtime",
        ]
        cmd += ["--output", str(Path(tmp) / "out.wav"), "--log-level", "WARNING"]
        # its own socket and state folder (XDG_CACHE_HOME), the usual models
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "XDG_CACHE_HOME": tmp,
            "APPLIANCE_MODELS_DIR": str(models_dir()),
        }
        proc = subprocess.Popen(
            cmd, cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        assert proc.stdin is not None
        stdin = proc.stdin
        stop = threading.Event()
        block = np.zeros(BLOCK_SAMPLES, dtype="<i2").tobytes()

        def feed() -> None:
            try:
                while not stop.wait(BLOCK_S):
                    stdin.write(block)
                    stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            time.sleep(seconds)
            rss, peak = _proc_kb(proc.pid, "VmRSS"), _proc_kb(proc.pid, "VmHWM")
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"remote-mode appliance exited early ({proc.returncode}):\n{err[-2000:]}")
        finally:
            stop.set()
            feeder.join(timeout=2.0)
            with contextlib.suppress(OSError):
                stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    if rss is None or peak is None:
        return None
    return {"rss_mb": rss / 1024.0, "peak_mb": peak / 1024.0}


def memory_table(quick: bool = False) -> list[Row]:
    """Resident memory at idle, each stage measured in a fresh process (MiB, VmRSS)."""
    settings = settings_for(quick)
    with tempfile.TemporaryDirectory() as tmp:
        audio_path = Path(tmp) / "idle.npy"
        np.save(audio_path, idle_audio(settings.rss_audio_s))
        bare = _probe_subprocess("numpy", None)
        ort = _probe_subprocess("onnxruntime", None)
        oww = _probe_subprocess("listeners", audio_path)
        mww = _probe_subprocess("listeners-mww", audio_path)
        lib = _probe_subprocess("openwakeword-lib", None)
    remote = remote_idle_rss(settings.remote_idle_s)
    base = bare["rss_mb"]

    def row(name: str, rss: float, peak: float | None, target: bool = False) -> Row:
        out: Row = {"process": name, "RSS MiB": rss, "peak MiB": peak, "Δ vs baseline MiB": rss - base}
        out["target"] = f"≤ {RSS_TARGET_MB:g} MiB" if target else None
        out["verdict"] = ("PASS" if rss <= RSS_TARGET_MB else "FAIL") if target else None
        return out

    audio = f"{oww['audio_s']:g} s idle audio through the router"
    rows = [
        row("python + numpy (baseline)", base, bare["peak_mb"]),
        row("+ onnxruntime and the appliance router/adapters imported", ort["rss_mb"], ort["peak_mb"]),
        row("+ wake word (openWakeWord) + VAD models loaded", oww["loaded_mb"], None),
        row(f"+ {audio} (the idle appliance)", oww["rss_mb"], oww["peak_mb"], target=True),
        row("microWakeWord instead: wake word + VAD models loaded", mww["loaded_mb"], None),
        row(f"microWakeWord instead: + {audio}", mww["rss_mb"], mww["peak_mb"], target=True),
        row(
            "for comparison: + openwakeword.model imported (scipy, scikit-learn)",
            lib["rss_mb"],
            lib["peak_mb"],
        ),
    ]
    if remote is not None:
        label = f"appliance run, remote mode, {settings.remote_idle_s:g} s idle (whole process)"
        rows.append(row(label, remote["rss_mb"], remote["peak_mb"], target=True))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rss", choices=RSS_STAGES, required=True, help="memory probe stage")
    parser.add_argument("--audio", type=Path, help=".npy int16 audio for the 'listeners' stage")
    args = parser.parse_args(argv)
    print(json.dumps(rss_probe(args.rss, args.audio)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
