"""The calibration split `train` chooses its written threshold and patience on is its own:
voices and texts that neither training nor the benchmark's validation and test splits use."""

from __future__ import annotations

from pathlib import Path

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


def _words(texts: tuple[str, ...] | list[str]) -> set[str]:
    return {w for t in texts for w in train._plain(t).split()}


@pytest.mark.parametrize("phrase", ["hey computer", "okay kiosk", "hello lamp", "jarvis"])
def test_carrier_phrases_pair_the_phrase_with_words_of_their_own_split(phrase: str) -> None:
    """Training's carrier negatives ("hey garden", "garden computer") and the calibration
    split's ("hey kettle") never use a word of a held-out text, nor one another's words."""
    heldout = _words(
        [*train.TEST_SENTENCES, *train.TEST_PHRASES, *train.VALIDATION_SENTENCES, *train.VALIDATION_PHRASES]
    )
    calibration_texts = _words([*train.CALIBRATION_SENTENCES, *train.CALIBRATION_PHRASES])
    training = train.carrier_phrases(phrase, 100)
    calibration = train.carrier_phrases(phrase, 100, train.CALIBRATION_CARRIER_WORDS)
    words = phrase.split()
    for carriers, others in ((training, calibration_texts), (calibration, set(train.CARRIER_WORDS) | set())):
        assert carriers and len(set(carriers)) == len(carriers)
        new = _words(carriers) - set(words)
        assert not new & heldout and not new & others
        for text in carriers:  # one word of the phrase kept, one other word
            assert len(text.split()) == 2 and not train.core.sounds_same(text, phrase)
    assert not _words(training) - set(words) & _words(calibration) - set(words)
    assert train.carrier_phrases(phrase, 4) == training[:4]
    if len(words) == 2:
        assert training[:2] == [f"{words[0]} garden", f"garden {words[1]}"]


def test_calibration_carriers_are_among_its_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []

    def say(text: str, voice: synth.Voice) -> np.ndarray:
        said.append(text)
        return np.full(1600, 1000, dtype=np.int16)  # short takes: a minute says most texts

    monkeypatch.setattr(synth, "say", say)
    monkeypatch.setattr(synth, "piper_available", lambda: False)
    carriers = set(train.carrier_phrases("hello lamp", 6, train.CALIBRATION_CARRIER_WORDS))
    for index in (0, 1, 2):
        train.negative_audio_chunk(
            index, 1, split="calibration", exclude="hello lamp", calibration_carriers=6
        )
    assert carriers <= set(said) <= {*train.CALIBRATION_SENTENCES, *train.CALIBRATION_PHRASES, *carriers}
    said.clear()
    for index in (0, 1, 2):
        train.negative_audio_chunk(index, 1, split="calibration", exclude="hello lamp")
    assert said and not carriers & set(said)


@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng is not installed")
def test_every_accent_and_variant_is_a_voice_of_its_own() -> None:
    """Each accent with a variant sounds unlike the accent alone, and each variant changes the
    voice: an accent that silently drops its "+variant" (espeak-ng's "en-gb") would make every
    voice drawn in it one voice."""
    phrase = "hello lamp"
    plain = synth.Voice("espeak", "en-us")
    for accent in {*synth.TRAIN_ACCENTS, *synth.HELDOUT_ACCENTS}:
        alone = synth.say(phrase, synth.Voice("espeak", accent))
        varied = synth.say(phrase, synth.Voice("espeak", f"{accent}+m3"))
        assert alone.size and varied.size and not _same(alone, varied), accent
    reference = synth.say(phrase, plain)
    made = synth.random_variant_names()
    assert made, "espeak-ng's data folder was not found: no random variants"
    for variant in {*synth.TRAIN_VARIANTS, *synth.HELDOUT_VARIANTS, *synth.CALIBRATION_VARIANTS, *made[:4]}:
        audio = synth.say(phrase, synth.Voice("espeak", f"en-us+{variant}"))
        assert audio.size and not _same(audio, reference), variant


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


def test_random_variants_stay_inside_their_spans() -> None:
    texts = [synth.random_variant(k) for k in range(synth.RANDOM_VARIANTS)]
    assert len(set(texts)) == len(texts)
    for k, text in enumerate(texts):
        lines = [line.split() for line in text.splitlines()]
        assert ["name", f"rv{k}"] in lines
        formants = [[int(v) for v in line[1:]] for line in lines if line[0] == "formant"]
        assert [f[0] for f in formants] == list(range(9))
        for n, freq, strength, width in formants:
            assert 50 <= freq <= 150 and 40 <= width <= 180
            assert (30 if n < 4 else 10) <= strength <= 150
        [pitch] = [line for line in lines if line[0] == "pitch"]
        assert 62 <= int(pitch[1]) < int(pitch[2])


@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng is not installed")
def test_only_training_speaks_in_random_variants() -> None:
    made = set(synth.random_variant_names())
    assert made and _variants(synth.voices(False, 300, 1, piper=False)) & made
    assert not _variants(synth.voices(True, 300, 1, piper=False)) & made
    assert not _variants(synth.calibration_voices(300, 1, piper=False)) & made


@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng is not installed")
def test_without_espeak_ng_s_data_folder_training_keeps_the_fixed_variants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(synth, "espeak_data_dir", lambda: None)
    synth._random_variant_data.cache_clear()
    try:
        assert synth.random_variant_names() == ()
        assert _variants(synth.voices(False, 300, 1, piper=False)) <= set(synth.TRAIN_VARIANTS)
        with pytest.raises(RuntimeError, match="random variant"):
            synth.say("hello", synth.Voice("espeak", "en+rv3"))
    finally:
        synth._random_variant_data.cache_clear()


@pytest.mark.skipif(not synth.espeak_available(), reason="espeak-ng is not installed")
def test_the_random_variants_folder_is_made_once_and_made_again_when_stale(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under the state folder, one per espeak-ng folder and set of variants (a training stopped
    by a signal leaves no temporary folder behind); a folder that lost a variant is made again."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    synth._random_variant_data.cache_clear()
    try:
        first = synth._random_variant_data()
        assert first is not None and first.parent == tmp_path / "appliance" / "espeak-variants"
        synth._random_variant_data.cache_clear()
        assert synth._random_variant_data() == first  # reused
        (first / "espeak-ng-data" / "voices" / "!v" / "rv7").write_text("broken")
        synth._random_variant_data.cache_clear()
        assert synth._random_variant_data() == first
        assert (first / "espeak-ng-data" / "voices" / "!v" / "rv7").read_text() == synth.random_variant(7)
        assert [p.name for p in first.parent.iterdir()] == [first.name]  # no work folder left
        assert synth.say("hello lamp", synth.Voice("espeak", "en+rv7")).size
    finally:
        synth._random_variant_data.cache_clear()
