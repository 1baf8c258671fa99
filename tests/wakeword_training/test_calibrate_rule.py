"""`calibrate`'s written point over designed scores (no model, no audio): no false accept in the
calibration audio, unless that leaves the word hearing under `RECALL_FLOOR` of the takes because
one sound-alike there scores near 1; then the fewest false accepts that hear the floor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.wakeword_training import calibrate as cb

FRAMES_PER_MINUTE = 750  # 80 ms frames


def _take(peak: float) -> list[float]:
    return [0.0] * 20 + [peak] * 4 + [0.0] * 6  # held 4 frames: any patience 1-3 reaches it


def _minute(peak: float | None) -> np.ndarray:
    stream = np.zeros(FRAMES_PER_MINUTE)
    if peak is not None:
        stream[300:304] = peak  # a sound-alike held 4 frames, as a take
    return stream


class _Extractor:
    def embeddings(self, chunk: Any) -> np.ndarray:
        return np.zeros((chunk, 96), np.float32)  # `chunk` is the minute's index here


def _calibrate(
    monkeypatch: pytest.MonkeyPatch, takes: list[float], loud: dict[int, float], minutes: int = 4
) -> cb.Calibration:
    monkeypatch.setattr(cb, "calibration_takes", lambda phrase, count, seed: list(range(count)))
    monkeypatch.setattr(cb, "take_scores", lambda model, extractor, t, seed: [_take(p) for p in takes])
    chunks: list[int] = []

    def chunk(index: int, seed: int, **kwargs: Any) -> int:
        chunks.append(index)
        return FRAMES_PER_MINUTE

    monkeypatch.setattr(cb, "negative_audio_chunk", chunk)
    monkeypatch.setattr(cb, "score_stream", lambda model, emb: _minute(loud.get(chunks[-1])))
    return cb.calibrate(b"model", _Extractor(), "hey computer", 0, minutes, len(takes))  # type: ignore[arg-type]


def test_no_false_accept_when_that_still_hears_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 takes, 9 at 0.999, 1 at 0.97; a sound-alike at 0.98: above it the word hears 90 % with
    # none (ties to the highest threshold that does)
    cal = _calibrate(monkeypatch, [0.999] * 9 + [0.97], {2: 0.98})
    assert (cal.threshold, cal.false_accepts, cal.recall) == (0.999, 0, 0.9)
    assert cal.no_false_accept_recall is None


def test_one_sound_alike_near_1_does_not_make_the_word_deaf(monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 takes at 0.999, 4 at 0.975; a sound-alike at 0.99: with none the word hears 60 %
    cal = _calibrate(monkeypatch, [0.999] * 6 + [0.975] * 4, {1: 0.99})
    assert (cal.threshold, cal.false_accepts, cal.recall) == (0.97, 1, 1.0)  # the highest hearing all
    assert cal.no_false_accept_recall == pytest.approx(0.6)


def test_more_false_accepts_than_allowed_keep_the_point_with_none(monkeypatch: pytest.MonkeyPatch) -> None:
    loud = {i: 0.99 for i in range(cb.FLOOR_MAX_FALSE_ACCEPTS + 1)}  # one in each of 3 minutes
    cal = _calibrate(monkeypatch, [0.999] * 6 + [0.975] * 4, loud)
    assert cal.false_accepts == 0 and cal.recall == pytest.approx(0.6)
    assert cal.threshold > 0.99 and cal.no_false_accept_recall is None
