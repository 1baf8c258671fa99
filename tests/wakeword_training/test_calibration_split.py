"""The calibration split `train` chooses its written threshold and patience on is its own:
voices and texts that neither training nor the benchmark's validation and test splits use."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.wakeword_training import synth, train
from appliance.wakeword_training.calibrate import THRESHOLDS


def _variants(voices: list[synth.Voice]) -> set[str]:
    return {v.name.split("+")[1] for v in voices if v.engine == "espeak"}


def test_calibration_voices_are_neither_training_nor_heldout_voices() -> None:
    voices = synth.calibration_voices(200, 3, piper=False)
    assert _variants(voices) == set(synth.CALIBRATION_VARIANTS)
    assert not set(synth.CALIBRATION_VARIANTS) & {*synth.TRAIN_VARIANTS, *synth.HELDOUT_VARIANTS}
    lengths = set(synth.CALIBRATION_PIPER_LENGTHS)
    assert not lengths & {*synth.TRAIN_PIPER_LENGTHS, *synth.HELDOUT_PIPER_LENGTHS}
    assert synth.calibration_voices(12, 3, piper=False) == synth.calibration_voices(12, 3, piper=False)


def test_calibration_texts_are_used_nowhere_else() -> None:
    calibration = {*train.CALIBRATION_PHRASES, *train.CALIBRATION_SENTENCES}
    others = {
        *train.SENTENCES,
        *train.OTHER_PHRASES,
        *train.VALIDATION_PHRASES,
        *train.VALIDATION_SENTENCES,
        *train.TEST_PHRASES,
        *train.TEST_SENTENCES,
    }
    assert not calibration & others


def test_thresholds_stay_inside_what_the_config_accepts() -> None:
    assert tuple(sorted(set(THRESHOLDS))) == THRESHOLDS
    assert THRESHOLDS[0] > 0 and THRESHOLDS[-1] < 1  # appliance.wake_words.words[].threshold


def test_a_calibration_text_saying_the_phrase_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []

    def say(text: str, voice: synth.Voice) -> np.ndarray:
        said.append(text)
        return np.full(16000, 1000, dtype=np.int16)

    monkeypatch.setattr(synth, "say", say)
    monkeypatch.setattr(synth, "piper_available", lambda: False)
    chunk = train.negative_audio_chunk(0, 1, split="calibration", exclude="Hello World")
    assert chunk.shape == (int(train.CHUNK_S * train.RATE_HZ),)
    assert said and "hello world" not in said
    said.clear()
    train.negative_audio_chunk(0, 1, split="calibration")
    assert "hello world" in said  # without `exclude` this seed's minute does say it
