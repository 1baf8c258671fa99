"""Voice benchmarks: what switching voices mid-reply costs, and what each loaded voice weighs.

A multi-voice reply (`<Narrator>...</Narrator> <Joe>...</Joe>`) is synthesized segment by
segment on the TTS worker thread. The second segment's synthesis is what a switch can slow
down: on first use its Piper model must be loaded (an ONNX session: seconds on a Pi), later it
comes from `PiperTts`'s LRU cache. Only one Piper voice exists in a registry package (joe), so
the "other voice" is a copy of joe's `.onnx` under another name: a distinct model file, loaded
and cached as a second voice would be. A label on the *same* model with other settings (a
speed variant, as `VoiceRenderer` registers them) is measured too: it never loads anything.

`python -m benchmarks.voices --rss` is the fresh-process probe behind `memory_table`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.idle_loop import REPO_ROOT, _rss_mb

Row = dict[str, Any]

FIRST = "Once upon a time, a fox lived by the river."
SECOND = "Hello, I am the fox!"
THREADS = 2  # PiperTts's default intra-op threads

NO_SWITCH = "no switch: joe → joe"
VARIANT = "label variant, same model: joe → joe@0.9"
CACHED = "switch, cached: joe → other"
COLD = "switch, first use: joe → other (cold load)"
SCENARIOS = (NO_SWITCH, VARIANT, CACHED, COLD)


def _joe_files() -> tuple[Path, Path]:
    from appliance.testing.speech import joe_voice_paths

    return joe_voice_paths()


def _copy_voice(model: Path, config: Path, folder: Path, name: str) -> Path:
    """A distinct model file with joe's weights (and its config beside it)."""
    target = folder / f"{name}.onnx"
    shutil.copyfile(model, target)
    shutil.copyfile(config, Path(f"{target}.json"))
    return target


def _tts(joe: Path, joe_config: Path, other: Path) -> Any:
    from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec

    return PiperTts(
        {
            "joe": PiperVoiceSpec("joe", joe, joe_config),
            "joe@0.9": PiperVoiceSpec("joe@0.9", joe, joe_config, speed=0.9),
            "other": PiperVoiceSpec("other", other),
        },
        "joe",
        cache_size=3,
        threads=THREADS,
    )


def _reply(tts: Any, second_voice: str) -> tuple[float, float]:
    """(seconds to synthesize the second segment, seconds of audio in the first one)."""
    audio, rate = tts.synthesize(FIRST, "joe", 1.0)
    start = time.perf_counter()
    tts.synthesize(SECOND, second_voice, 1.0)
    return time.perf_counter() - start, audio.size / rate


def switch_table(quick: bool = False) -> list[Row]:
    """Latency added by a voice switch mid-reply: synthesis of the second segment (ms)"""
    runs, cold_runs = (2, 1) if quick else (9, 4)
    voice_of = {NO_SWITCH: "joe", VARIANT: "joe@0.9", CACHED: "other", COLD: "other"}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in SCENARIOS}
    with tempfile.TemporaryDirectory() as tmp:
        joe, joe_config = _joe_files()
        other = _copy_voice(joe, joe_config, Path(tmp), "other")
        warm = _tts(joe, joe_config, other)
        warm.preload(["joe", "other"])
        for voice in ("joe", "joe@0.9", "other"):  # first inference of each session, off the clock
            warm.synthesize("Warm up.", voice, 1.0)
        for rep in range(runs):
            for i in range(len(SCENARIOS)):  # rotating order: background load hits all alike
                name = SCENARIOS[(rep + i) % len(SCENARIOS)]
                if name == COLD:
                    if rep >= cold_runs:
                        continue
                    fresh = _tts(joe, joe_config, other)
                    fresh.preload(["joe"])
                    fresh.synthesize("Warm up.", "joe", 1.0)
                    samples[name].append(_reply(fresh, "other"))
                else:
                    samples[name].append(_reply(warm, voice_of[name]))
    base = statistics.median(s for s, _ in samples[NO_SWITCH])
    rows: list[Row] = []
    for name in SCENARIOS:
        synth = [s for s, _ in samples[name]]
        gaps = [max(0.0, s - first_audio) for s, first_audio in samples[name]]
        median = statistics.median(synth)
        rows.append(
            {
                "second segment": name,
                "runs": len(synth),
                "median ms": median * 1000,
                "min ms": min(synth) * 1000,
                "max ms": max(synth) * 1000,
                "× no switch": median / base,
                "added ms": (median - base) * 1000,
                "audible gap ms": statistics.median(gaps) * 1000,
            }
        )
    return rows


# -------------------------------------------------------------------------------------- memory
RSS_STAGES = (
    "piper + onnxruntime imported",
    "joe loaded + spoken",
    "joe@0.9 variant spoken (same model)",
    "2nd voice file loaded + spoken",
    "3rd voice file loaded + spoken",
)


def rss_probe(quick: bool = False) -> list[dict[str, float | str]]:
    """In a fresh process: RSS after each stage (MiB)."""
    import onnxruntime  # noqa: F401
    import piper  # noqa: F401

    from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec

    out: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        joe, joe_config = _joe_files()
        second = _copy_voice(joe, joe_config, Path(tmp), "second")
        third = _copy_voice(joe, joe_config, Path(tmp), "third")
        tts = PiperTts(
            {
                "joe": PiperVoiceSpec("joe", joe, joe_config),
                "joe@0.9": PiperVoiceSpec("joe@0.9", joe, joe_config, speed=0.9),
                "second": PiperVoiceSpec("second", second),
                "third": PiperVoiceSpec("third", third),
            },
            "joe",
            cache_size=3,
            threads=THREADS,
        )
        out.append({"stage": RSS_STAGES[0], "rss_mb": _rss_mb()})
        voices = ["joe", "joe@0.9", "second"] if quick else ["joe", "joe@0.9", "second", "third"]
        for stage, voice in zip(RSS_STAGES[1:], voices, strict=False):
            tts.synthesize(FIRST, voice, 1.0)
            out.append({"stage": stage, "rss_mb": _rss_mb(), "models": float(len(tts.loaded_models))})
    return out


def memory_table(quick: bool = False) -> list[Row]:
    """Resident memory per loaded voice, in a fresh process (MiB, VmRSS)"""
    cmd = [sys.executable, "-m", "benchmarks.voices", "--rss", *(["--quick"] if quick else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"voice memory probe failed ({done.returncode}):\n{done.stderr[-2000:]}")
    stages: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    model_mb = _joe_files()[0].stat().st_size / 2**20
    rows: list[Row] = []
    previous: float | None = None
    for stage in stages:
        rss = float(stage["rss_mb"])
        rows.append(
            {
                "stage": stage["stage"],
                "models loaded": int(stage.get("models", 0)),
                "RSS MiB": rss,
                "Δ MiB": None if previous is None else rss - previous,
                "Δ ÷ model file": None if previous is None else (rss - previous) / model_mb,
            }
        )
        previous = rss
    return rows


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "voices.switch": switch_table,
    "voices.memory": memory_table,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rss", action="store_true", help="run the memory probe and print JSON")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if not args.rss:
        parser.error("only --rss is runnable directly; use python -m benchmarks.run --only voices")
    print(json.dumps(rss_probe(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
