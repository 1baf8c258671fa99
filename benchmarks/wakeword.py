"""Custom wake words trained from text (issue 14): held-out recall, false accepts, idle cost.

`wakeword.heldout` trains each phrase from text alone (default data set, seed 0) and measures it
on data training never saw, split in two:
- validation (for choosing): held-out takes (seed 2000) and 2 hours of negative audio in held-out
  voices reading texts of its own, used neither in training nor in the test split (seed 1): two
  hours, because one cannot tell 0.5 false accepts an hour from 2 (0 or 1 in an hour either way).
  The threshold and patience are `core.choose_operating_point` on its curves (no false accept in
  the 2 hours: a margin), and enrolling calibrates its verifier on these negatives.
- test (for reporting only, never tuned on): other held-out takes (seed 1000) and 2 hours of
  negative audio in held-out voices reading texts used nowhere else (seed 0), and noise.
The test negatives are generated once and cached as features under the state folder.
"held-out Flite speaker": 30 takes of Flite's `rms` (a voice built from one man's recordings;
training and the splits use no Flite voice) at five durations, room-augmented, at the written
point: a kind of voice the espeak-ng held-out voices are not. Empty without Flite.
Enrolling: 3 takes of one held-out voice (small pitch and speed changes, room augmentation), then
recall on 20 more takes of that voice and false accepts on the test negatives with the enrolled
model. "what fires" lists the near misses and test texts that fire the word in held-out voices.
`wakeword.idle_cost` measures what one more classifier of the trained shape adds to the idle
loop's openWakeWord detector.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.core import wakeword_training as core
from appliance.paths import state_dir
from appliance.ports import Pcm16
from appliance.wakeword_training import augment, synth
from appliance.wakeword_training import evaluate as ev
from appliance.wakeword_training.enroll import enroll
from appliance.wakeword_training.train import (
    MICRO,
    TEST_PHRASES,
    TEST_SENTENCES,
    features_for,
    score_stream,
    train_word,
    trim,
)

Row = dict[str, Any]
PHRASES = ("hey computer", "okay kiosk", "hello lamp")
NEGATIVE_HOURS = 2.05  # 123 one-minute chunks: each scores 59.3 s after the features warm up, so ≥ 2 h
VALIDATION_HOURS = NEGATIVE_HOURS
HELDOUT_TAKES = 60
FLITE_DURATIONS = (0.8, 0.9, 1.0, 1.1, 1.25)
FLITE_AUGMENTS = 6  # room-augmented takes of each duration
ENROLL_TAKES = 3
ENROLL_HELDOUT_TAKES = 20
PATIENCES = (1, 2, 3)  # patience_frames tried on the validation split
# finer than the default curve near 1: a threshold for under 0.5 false accepts an hour may be there
# (0.985 and 0.993 … 0.99999: 1 − m/1000, 1 − m/10⁴, 1 − m/10⁵ for m = 7, 5, 3, 2, 1.5, 1)
EXTRA_THRESHOLDS = (0.985, *(round(1 - m * 10.0**-k, 6) for k in (3, 4, 5) for m in (7, 5, 3, 2, 1.5, 1)))
RECALL_TARGET = 0.90
ENROLL_RECALL_TARGET = 0.98
FA_TARGET = 0.5
# the budget on the validation split when choosing: none in its 2 hours (a margin; at 1 in 2 hours,
# 0.5 an hour, the chosen thresholds fired 1.5–2 times an hour on the test split)
VALIDATION_FA_PER_HOUR = 0.0
IDLE_TARGET_PCT = 0.3
TRAIN_TARGET_S = 600.0
QUICK = MICRO


def _models_dir() -> Path:
    from appliance.models.manifest import default_models_dir

    return default_models_dir(os.environ)


def _point(curve: list[core.CurvePoint], threshold: float) -> core.CurvePoint:
    return next(p for p in curve if p.threshold == threshold)


def _curves(
    model: Path,
    extractor: Any,
    takes: list[Pcm16],
    negatives: list[Any],
    seconds: float,
    extra: tuple[float, ...],
    patiences: tuple[int, ...] = PATIENCES,
) -> dict[int, list[core.CurvePoint]]:
    """The threshold curve at each patience (the takes and negatives are scored once)."""
    per_take = ev.take_scores(model, extractor, takes)
    streams = [score_stream(model, e).tolist() for e in negatives]
    thresholds = sorted({*core.default_thresholds(), *EXTRA_THRESHOLDS, *extra})
    return {
        p: core.threshold_curve(
            [core.sustained_peak(s, p) for s in per_take],
            streams,
            seconds / 3600,
            thresholds,
            ev.REFRACTORY_FRAMES,
            p,
        )
        for p in patiences
    }


def heldout_table(quick: bool = False, phrases: tuple[str, ...] | None = None) -> list[Row]:
    """Trained from text: recall and false accepts on the test split at the threshold and patience
    `train` wrote (chosen on its own calibration split) and at those chosen on the validation
    split, enrolling one voice, and what still fires the word."""
    phrases = phrases or (PHRASES[-1:] if quick else PHRASES)
    hours = 1 / 60 if quick else NEGATIVE_HOURS
    takes_n = 3 if quick else HELDOUT_TAKES
    models = _models_dir()
    extractor = features_for(models)
    cache = None if quick else state_dir() / "wakeword-eval"  # a quick run writes nothing
    test_neg = ev.negative_embeddings(extractor, hours, 0, cache, split="test")
    val_neg = ev.negative_embeddings(
        extractor, 1 / 60 if quick else VALIDATION_HOURS, 1, cache, split="validation"
    )
    test_s = sum(e.shape[0] for e in test_neg) * core.FRAME_S
    val_s = sum(e.shape[0] for e in val_neg) * core.FRAME_S
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
            model = result.model_path
            val_takes = ev.heldout_takes(phrase, takes_n, 2000)
            curves = _curves(model, extractor, val_takes, val_neg, val_s, (result.threshold,))
            patience, suggested = core.choose_operating_point(curves, VALIDATION_FA_PER_HOUR)
            chosen = suggested.threshold
            test_takes = ev.heldout_takes(phrase, takes_n, 1000)
            written = result.patience_frames
            test_curves = _curves(
                model,
                extractor,
                test_takes,
                test_neg,
                test_s,
                (chosen, result.threshold),
                tuple(sorted({patience, written})),
            )
            trained = _point(test_curves[written], result.threshold)
            after_speech = ev.peak_scores(model, extractor, _after_speech(test_takes, 3000), 1000, written)
            flite_takes = _flite_takes(phrase, 1 if quick else FLITE_AUGMENTS, 7)
            flite_peaks = ev.peak_scores(model, extractor, flite_takes, 1000, written)
            flite_hits = [p >= result.threshold for p in flite_peaks]
            at = _point(test_curves[patience], chosen)
            enrolled = _enroll_row(
                phrase, name, model, extractor, chosen, patience, val_neg, test_neg, test_s, quick
            )
            fires = _confusions(phrase, model, extractor, chosen, patience, quick)
            passed = (
                at.recall >= RECALL_TARGET
                and at.false_accepts_per_hour <= FA_TARGET
                and train_s <= TRAIN_TARGET_S
                and enrolled["enrolled recall %"] >= 100 * ENROLL_RECALL_TARGET
                and enrolled["FA/h enrolled"] <= at.false_accepts_per_hour
            )
            rows.append(
                {
                    "phrase": phrase,
                    "train s": train_s,
                    "train CPU s": train_cpu,
                    "load avg": os.getloadavg()[0],
                    "held-out takes": len(test_takes),
                    "negative h": test_s / 3600,
                    "validation h": val_s / 3600,
                    "patience": patience,
                    "trained threshold": result.threshold,
                    "trained patience": written,
                    "recall % @trained": 100 * trained.recall,
                    "FA/h @trained": trained.false_accepts_per_hour,
                    "recall % after speech @trained": 100
                    * float(np.mean([p >= result.threshold for p in after_speech])),
                    "held-out Flite speaker recall % @trained": (
                        100 * float(np.mean(flite_hits)) if flite_hits else None
                    ),
                    "suggested threshold": chosen,
                    "validation recall %": 100 * suggested.recall,
                    "validation FA/h": suggested.false_accepts_per_hour,
                    "recall % @suggested": 100 * at.recall,
                    "FA/h @suggested": at.false_accepts_per_hour,
                    "false accepts": at.false_accepts,
                    **enrolled,
                    "verdict": "PASS" if passed else "FAIL",
                    "near misses ≥ threshold": fires,
                }
            )
    return rows


def _after_speech(takes: list[Pcm16], seed: int) -> list[Pcm16]:
    """Each take with a test sentence in another held-out voice ending 0.2–0.5 s before it (a
    word said right after talking: a classifier that learnt "quiet before the phrase" misses it)."""
    rng = np.random.default_rng(seed)
    voices = synth.voices(True, 8, seed + 1, piper=False)
    out = []
    for i, take in enumerate(takes):
        said = trim(synth.say(TEST_SENTENCES[i % len(TEST_SENTENCES)], voices[i % len(voices)]))
        lead = augment.augment(said, rng, strength=0.6)
        gap = augment.room_noise(int(rng.uniform(0.2, 0.5) * 16000), rng, 20.0)
        out.append(augment.to_pcm(np.concatenate([lead, gap, np.asarray(take, np.float64)])))
    return out


def _flite_takes(phrase: str, augments: int, seed: int) -> list[Pcm16]:
    """The phrase in the held-out Flite speaker at each of `FLITE_DURATIONS`, `augments` room
    augmentations of each (none without Flite)."""
    if not synth.flite_available():
        return []
    rng = np.random.default_rng(seed)
    takes = []
    for stretch in FLITE_DURATIONS:
        voice = synth.Voice("flite", synth.HELDOUT_FLITE_SPEAKER, pitch=100, length_scale=stretch)
        take = trim(synth.say(phrase, voice))
        takes += [augment.to_pcm(augment.augment(take, rng)) for _ in range(augments)]
    return takes


def _voice_takes(phrase: str, count: int, seed: int) -> list[Pcm16]:
    """One held-out espeak-ng voice saying the phrase `count` times, each a little higher or
    lower and faster or slower, in a room."""
    [voice] = synth.voices(True, 1, seed, piper=False)
    rng = np.random.default_rng(seed)
    takes = []
    for _ in range(count):
        pitch = int(np.clip(voice.pitch + rng.integers(-4, 5), 0, 99))
        speed = int(voice.speed + rng.integers(-12, 13))
        take = trim(synth.say(phrase, synth.Voice("espeak", voice.name, pitch, speed)))
        takes.append(augment.to_pcm(augment.augment(take, rng, strength=0.6)))
    return takes


def _enroll_row(
    phrase: str,
    name: str,
    model: Path,
    extractor: Any,
    threshold: float,
    patience: int,
    val_neg: list[Any],
    test_neg: list[Any],
    test_s: float,
    quick: bool,
) -> Row:
    """Enroll 3 takes of one held-out voice; recall on that voice's other takes before and after,
    and false accepts per hour on the test negatives after (at the same threshold)."""
    n_heldout = 2 if quick else ENROLL_HELDOUT_TAKES
    takes = _voice_takes(phrase, ENROLL_TAKES + n_heldout, 4242)
    mine, others = takes[:ENROLL_TAKES], takes[ENROLL_TAKES:]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(model, folder / model.name)
        result = enroll(folder, name, extractor, mine, val_neg)
        before = ev.peak_scores(model, extractor, others, 9, patience)
        after = ev.peak_scores(result.model_path, extractor, others, 9, patience)
        streams = [score_stream(result.model_path, e).tolist() for e in test_neg]
        fa = sum(core.count_activations(s, threshold, ev.REFRACTORY_FRAMES, patience) for s in streams)
    return {
        "enroll voice recall % before": 100 * float(np.mean([p >= threshold for p in before])),
        "enrolled recall %": 100 * float(np.mean([p >= threshold for p in after])),
        "FA/h enrolled": fa / (test_s / 3600),
    }


def _confusions(
    phrase: str, model: Path, extractor: Any, threshold: float, patience: int, quick: bool
) -> str:
    """Near misses and test texts that fire the word in held-out voices: 'text (fired/said)',
    worst first."""
    texts = core.near_misses(phrase, 4 if quick else 16)
    if not quick:
        texts += [t for t in (*TEST_PHRASES, *TEST_SENTENCES) if t not in texts]
    voices = synth.voices(True, 2 if quick else 4, 77)
    rng = np.random.default_rng(5)
    fired: list[tuple[int, str]] = []
    for text in texts:
        takes = [synth.say(text, v) for v in voices]
        peaks = ev.peak_scores(
            model, extractor, [t for t in takes if t.size], int(rng.integers(1000)), patience
        )
        hits = sum(1 for p in peaks if p >= threshold)
        if hits:
            fired.append((hits, f"{text} ({hits}/{len(peaks)})"))
    fired.sort(key=lambda item: -item[0])
    return ", ".join(label for _, label in fired[:8]) or "none"


def idle_cost_table(quick: bool = False) -> list[Row]:
    """CPU one more trained word adds to the idle openWakeWord detector (% of one core)."""
    from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile
    from appliance.wakeword_training.model import FEATURES, Ensemble, Mlp, to_onnx
    from appliance.wakeword_training.train import TrainSize

    models = _models_dir()
    features = models / "oww-features"
    frames = 50 if quick else 1500
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        size = TrainSize()
        for i in range(2):  # classifiers of the trained shape (frames, hidden, members): its cost
            d = size.context_frames * FEATURES
            h = size.hidden
            mlps = tuple(
                Mlp(rng.normal(0, 0.01, (d, h)), np.zeros(h), rng.normal(0, 0.1, (h, 1)), np.zeros(1))
                for _ in range(size.members)
            )
            path = Path(tmp) / f"word{i}.onnx"
            path.write_bytes(to_onnx(mlps[0] if len(mlps) == 1 else Ensemble(mlps), f"word{i}"))
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
