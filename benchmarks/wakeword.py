"""Custom wake words trained from text (issue 14): held-out recall, false accepts, idle cost.

`wakeword.heldout` trains each phrase from text alone (default data set, seed 0), then scores
takes in voices training never used (held-out espeak-ng accents and variants, held-out Piper
length scales) and at least 2 hours of generated negative audio (held-out voices reading
sentences and other phrases, and noise; generated once and cached as features under the state
folder). `wakeword.idle_cost` measures what one more classifier of the trained shape adds to
the idle loop's openWakeWord detector.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.core import wakeword_training as core
from appliance.paths import state_dir
from appliance.wakeword_training import evaluate as ev
from appliance.wakeword_training import synth
from appliance.wakeword_training.train import MICRO, features_for, train_word

Row = dict[str, Any]
PHRASES = ("hey computer", "okay kiosk", "hello lamp")
NEGATIVE_HOURS = 2.0
HELDOUT_TAKES = 60
RECALL_TARGET = 0.90
FA_TARGET = 0.5
IDLE_TARGET_PCT = 0.3
TRAIN_TARGET_S = 600.0
QUICK = MICRO


def _models_dir() -> Path:
    from appliance.models.manifest import default_models_dir

    return default_models_dir(os.environ)


def heldout_table(quick: bool = False) -> list[Row]:
    """Trained from text: recall on held-out voices, false accepts per hour, what it confuses."""
    phrases = PHRASES[-1:] if quick else PHRASES
    hours = 1 / 60 if quick else NEGATIVE_HOURS
    takes_n = 3 if quick else HELDOUT_TAKES
    models = _models_dir()
    extractor = features_for(models)
    cache = None if quick else state_dir() / "wakeword-eval"  # a quick run writes nothing
    negatives = ev.negative_embeddings(extractor, hours, 0, cache)
    seconds = sum(e.shape[0] for e in negatives) * core.FRAME_S
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for phrase in phrases:
            name = core.phrase_name(phrase)
            started = time.monotonic()
            cpu0 = time.process_time()
            result = train_word(
                phrase, name, Path(tmp), models, seed=0, size=QUICK if quick else None, show_progress=False
            )
            train_s = time.monotonic() - started
            train_cpu = time.process_time() - cpu0
            takes = ev.heldout_takes(phrase, takes_n, 1000)
            evaluation = ev.evaluate(
                name, result.model_path, extractor, takes, negatives, seconds, FA_TARGET, (result.threshold,)
            )
            trained = next(p for p in evaluation.curve if p.threshold == result.threshold)
            s = evaluation.suggested
            confusions = _confusions(phrase, result.model_path, extractor, s.threshold, quick)
            rows.append(
                {
                    "phrase": phrase,
                    "train s": train_s,
                    "train CPU s": train_cpu,
                    "held-out takes": evaluation.positives,
                    "negative h": evaluation.negative_hours,
                    "trained threshold": result.threshold,
                    "recall % @trained": 100 * trained.recall,
                    "FA/h @trained": trained.false_accepts_per_hour,
                    "suggested threshold": s.threshold,
                    "recall % @suggested": 100 * s.recall,
                    "FA/h @suggested": s.false_accepts_per_hour,
                    "verdict": "PASS"
                    if s.recall >= RECALL_TARGET
                    and s.false_accepts_per_hour <= FA_TARGET
                    and train_s <= TRAIN_TARGET_S
                    else "FAIL",
                    "near misses ≥ threshold": confusions,
                }
            )
    return rows


def _confusions(phrase: str, model: Path, extractor: Any, threshold: float, quick: bool) -> str:
    """Near misses that fire the word in held-out voices: 'text (fired/said)', worst first."""
    near = core.near_misses(phrase, 4 if quick else 16)
    voices = synth.voices(True, 2 if quick else 6, 77)
    rng = np.random.default_rng(5)
    fired: list[tuple[int, str]] = []
    for text in near:
        takes = [synth.say(text, v) for v in voices]
        peaks = ev.peak_scores(model, extractor, [t for t in takes if t.size], int(rng.integers(1000)))
        hits = sum(1 for p in peaks if p >= threshold)
        if hits:
            fired.append((hits, f"{text} ({hits}/{len(peaks)})"))
    fired.sort(key=lambda item: -item[0])
    return ", ".join(label for _, label in fired[:5]) or "none"


def idle_cost_table(quick: bool = False) -> list[Row]:
    """CPU one more trained word adds to the idle openWakeWord detector (% of one core)."""
    from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile
    from appliance.wakeword_training.model import FEATURES, FRAMES, Mlp, to_onnx

    models = _models_dir()
    features = models / "oww-features"
    frames = 50 if quick else 1500
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(2):  # classifiers of the trained shape (hidden 32); the cost is the shape's
            d = FRAMES * FEATURES
            mlp = Mlp(rng.normal(0, 0.01, (d, 32)), np.zeros(32), rng.normal(0, 0.1, (32, 1)), np.zeros(1))
            path = Path(tmp) / f"word{i}.onnx"
            path.write_bytes(to_onnx(mlp, f"word{i}"))
            paths.append(path)
        audio = rng.normal(0, 300, frames * 1280).astype(np.int16).reshape(frames, 1280)
        base = [WakeWordModelFile("hey_jarvis", sorted((models / "hey_jarvis").glob("*.onnx"))[0])]
        configs = [
            ("hey_jarvis", base),
            ("hey_jarvis + 1 trained", [*base, WakeWordModelFile("word0", paths[0])]),
            (
                "hey_jarvis + 2 trained",
                [*base, *(WakeWordModelFile(f"word{i}", p) for i, p in enumerate(paths))],
            ),
        ]
        costs: dict[str, float] = {}
        for label, words in configs:
            det = OpenWakeWordDetector(
                words, features / "melspectrogram.onnx", features / "embedding_model.onnx"
            )
            for frame in audio[:10]:
                det.scores(frame)
            best = float("inf")
            for _ in range(1 if quick else 3):  # the least disturbed of a few passes
                det.reset()
                t0 = time.process_time()
                for frame in audio:
                    det.scores(frame)
                best = min(best, time.process_time() - t0)
            costs[label] = best / (frames * core.FRAME_S) * 100
        base_pct = costs["hey_jarvis"]
        for label, pct in costs.items():
            words_added = label.count("trained") and int(label.split("+ ")[1][0])
            per_word = (pct - base_pct) / words_added if words_added else None
            rows.append(
                {
                    "detector": label,
                    "frames": frames,
                    "% of one core": pct,
                    "added per word %": per_word,
                    "verdict": ("PASS" if per_word <= IDLE_TARGET_PCT else "FAIL")
                    if per_word is not None
                    else "",
                    "load avg": os.getloadavg()[0],
                }
            )
    return rows


BENCHMARKS = {"wakeword.heldout": heldout_table, "wakeword.idle_cost": idle_cost_table}
