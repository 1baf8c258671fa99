"""Choose the threshold and patience `train` writes into NAME.wakeword.json.

On a calibration split of its own: the phrase in voices neither training nor the benchmark's
held-out splits use (`synth.calibration_voices`), room-augmented, and minutes of negative audio
in those voices reading texts used nowhere else (`negative_audio_chunk(split="calibration")`),
and noise. `core.choose_operating_point` picks, over patience 1–3, the best recall with no false
accept at all in the calibration audio (ties to the higher threshold): a margin, since a room
has other speech than any generated set. Unless that point hears fewer than `RECALL_FLOOR` of the
takes: the calibration texts hold sound-alikes on purpose ("hey cortana", "lamp shade"), and one
scoring near 1 would push the threshold to where the word misses every other take. Then
`core.keep_recall` takes the point that hears at least that many with the fewest false accepts
(at most `FLOOR_MAX_FALSE_ACCEPTS` in the calibration audio; more, and the word keeps the point
with none, and `train` says it hears little).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from appliance.adapters.openwakeword_detector import OpenWakeWordFeatures
from appliance.core import wakeword_training as core
from appliance.ports import Pcm16
from appliance.wakeword_training import augment, synth
from appliance.wakeword_training.evaluate import REFRACTORY_FRAMES, take_scores
from appliance.wakeword_training.train import ModelSource, negative_audio_chunk, score_stream, trim

PATIENCES = (1, 2, 3)
FA_BUDGET_PER_HOUR = 0.0
RECALL_FLOOR = 0.9  # the recall target: under it the word trades a false accept for hearing
FLOOR_MAX_FALSE_ACCEPTS = 2  # in the calibration audio (32 min by default, its hardest phrases in it)
# the curve's thresholds: the default ones and a finer tail near 1 (1 − m/10^k), where a point
# with no false accept usually is
THRESHOLDS = tuple(
    sorted(
        {
            *core.default_thresholds(),
            0.985,
            *(round(1 - m * 10.0**-k, 6) for k in (3, 4, 5) for m in (7, 5, 3, 2, 1.5, 1)),
        }
    )
)
TAKES_SEED = 500  # offsets from the training seed: positives and negatives of their own
NEGATIVES_SEED = 300


@dataclass(frozen=True)
class Calibration:
    threshold: float
    patience_frames: int
    recall: float
    false_accepts: int
    false_accepts_per_hour: float
    takes: int
    negative_seconds: float
    # the recall of the point with no false accept, when the written point is another one
    # (`core.keep_recall`); None when it is that point
    no_false_accept_recall: float | None = None


def calibration_takes(phrase: str, count: int, seed: int) -> list[Pcm16]:
    """The phrase in `count` calibration voices, room-augmented."""
    rng = np.random.default_rng(seed)
    return [
        augment.to_pcm(augment.augment(trim(synth.say(phrase, voice)), rng))
        for voice in synth.calibration_voices(count, seed + 7)
    ]


def calibrate(
    model: ModelSource,
    extractor: OpenWakeWordFeatures,
    phrase: str,
    seed: int,
    minutes: int,
    takes: int,
    step: Callable[[str], None] = lambda label: None,
    carriers: int = 0,
) -> Calibration:
    """The operating point of `model` on the calibration split (`minutes` of negative audio,
    `takes` positive takes), deterministic with `seed`."""
    peaks_per_take = take_scores(model, extractor, calibration_takes(phrase, takes, seed + TAKES_SEED), seed)
    step("calibration takes")
    streams: list[list[float]] = []
    frames = 0
    for index in range(max(1, minutes)):
        chunk = negative_audio_chunk(
            index, seed + NEGATIVES_SEED, split="calibration", exclude=phrase, calibration_carriers=carriers
        )
        emb = extractor.embeddings(chunk)
        frames += emb.shape[0]
        streams.append(score_stream(model, emb).tolist())
        step("calibration audio")
    seconds = frames * core.FRAME_S
    curves = {
        p: core.threshold_curve(
            [core.sustained_peak(s, p) for s in peaks_per_take],
            streams,
            seconds / 3600,
            list(THRESHOLDS),
            REFRACTORY_FRAMES,
            p,
        )
        for p in PATIENCES
    }
    strict = core.choose_operating_point(curves, FA_BUDGET_PER_HOUR)
    patience, point = core.keep_recall(curves, strict, RECALL_FLOOR, FLOOR_MAX_FALSE_ACCEPTS)
    return Calibration(
        point.threshold,
        patience,
        point.recall,
        point.false_accepts,
        point.false_accepts_per_hour,
        len(peaks_per_take),
        seconds,
        None if (patience, point) == strict else strict[1].recall,
    )
