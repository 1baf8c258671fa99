"""`FasterWhisperStt`: the SpeechToText port on faster-whisper (CTranslate2 Whisper).

The model is a converted CTranslate2 directory (`model.bin`, `config.json`, `tokenizer.json`,
vocabulary) that is already on disk: nothing is ever downloaded. The device VAD has already cut
the utterance, so Whisper's own VAD is off, decoding is greedy by default (`beam_size=1`), every
call is independent (`condition_on_previous_text=False`) and no timestamps are produced.

Keywords (`conversation_config.asr.keywords`: names, jargon) go to Whisper as its initial prompt
(`"Siobhan, Kalevala."`), which biases decoding toward their spelling: on piper-spoken sentences
with tiny.en, 4 of 5 rare names right instead of 0 of 5, ordinary sentences unchanged. The
prompt is bounded (`MAX_PROMPT_CHARS`).

Languages: with a multilingual model, `language=None` detects the language and returns its code.
An English-only model (`tiny.en`, `base.en`, ...) always decodes English; asking it for another
language logs one warning per language and returns "en".

Encoder window: Whisper's encoder always reads 30 s of log-mel frames, padded after the speech,
and that fixed cost dominates a short command (tiny.en, one thread: 0.46 s per command, most of
it the encoder). CTranslate2's encoder also takes a shorter input, so `WindowedWhisperModel`
encodes only `max(min_window_s, speech + WINDOW_MARGIN_S)` seconds (whole seconds, at most 30).
The decoder has never seen an input end early: with a short window it sometimes says the
sentence twice (at 10 s with a keyword prompt, "Please call Siobhan about dinner." twice). On 52
piper/espeak-ng commands with the kiosk's keyword prompt, word error rate 7.3 % with 30 s, 7.7 %
with 15 s, 8.7 % with 10 s; 0.49 / 0.22 / 0.17 s per command on one thread. The default is 15 s,
and a transcript that is one sentence said twice or more in a row is kept once
(`collapse_repeats`). `min_window_s: 30` restores the full window. Language detection (a
multilingual model asked for no language, and `detect_language`) always reads the full window.

Not thread-safe by design: the runtime owns one worker thread per model and calls `transcribe`
and `detect_language` only from it (a CTranslate2 model is never used concurrently).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.ports import MIC_RATE_HZ, Pcm16

_LOGGER = logging.getLogger(__name__)

_FIX_HINT = "run 'appliance models provision'"
WINDOW_MARGIN_S = 3.0
"""Padding frames kept after the speech when the window is longer than `min_window_s`."""
FULL_WINDOW_S = 30.0
_FRAMES_PER_S = 100  # Whisper's log-mel hop: 10 ms
FULL_WINDOW_FRAMES = round(FULL_WINDOW_S * _FRAMES_PER_S)
MAX_PROMPT_CHARS = 400
"""Whisper's prompt holds about 220 tokens; keywords beyond this are left out."""


def keyword_prompt(keywords: Sequence[str]) -> str | None:
    """The initial prompt for `keywords`: `"A, B, C."` (whole keywords up to MAX_PROMPT_CHARS)."""
    out: list[str] = []
    size = 0
    for word in (w.strip() for w in keywords):
        if not word:
            continue
        size += len(word) + 2
        if size > MAX_PROMPT_CHARS:
            break
        out.append(word)
    return ", ".join(out) + "." if out else None


class FasterWhisperStt:
    """Speech to text with a local faster-whisper model on the CPU."""

    sample_rate_hz = MIC_RATE_HZ

    def __init__(
        self,
        model_dir: Path,
        threads: int = 2,
        compute_type: str = "int8",
        beam_size: int = 1,
        keywords: Sequence[str] = (),
        min_window_s: float = 15.0,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1.0 <= min_window_s <= FULL_WINDOW_S:
            raise ValueError(f"min_window_s must be within 1..{FULL_WINDOW_S:g}, got {min_window_s}")
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(
                f"speech-to-text model directory {model_dir} does not exist; {_FIX_HINT}",
                code="stt_missing",
            )
        if not (model_dir / "model.bin").is_file():
            raise ModelError(
                f"speech-to-text model directory {model_dir} has no model.bin; {_FIX_HINT}",
                code="stt_missing",
            )
        try:
            self._model: Any = windowed_model_class()(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=1,
                local_files_only=True,
            )
        except Exception as err:
            raise ModelError(
                f"cannot load speech-to-text model {model_dir}: {err}; {_FIX_HINT}",
                code="stt_load",
            ) from err
        self.model_dir = model_dir
        self.threads = threads
        self.compute_type = compute_type
        self.beam_size = beam_size
        self._window_frames = round(min_window_s * _FRAMES_PER_S)
        self.initial_prompt = keyword_prompt(keywords)
        self.multilingual = _is_multilingual(self._model, model_dir)
        self.languages: frozenset[str] = frozenset(self._model.supported_languages)
        self._warned_languages: set[str] = set()

    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        """Text heard in 16 kHz mono int16 `audio`, and its language.

        `language` is an ISO 639-1 code ("en", "de", "pt-br" is read as "pt") or None to detect
        it (multilingual models; an English-only model answers "en").
        """
        lang = self._decoding_language(language)
        samples = _to_float32(audio)
        if samples.size == 0:
            return "", lang or "en"
        # Detecting the language needs the full window: on espeak-ng German, the multilingual base
        # model's confidence fell from 0.81 to 0.44 with 15 s. An English-only model never detects.
        full = lang is None and self.multilingual
        self._model.min_window_frames = FULL_WINDOW_FRAMES if full else self._window_frames
        segments, info = self._model.transcribe(
            samples,
            language=lang,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
            initial_prompt=self.initial_prompt,
        )
        # `segments` is a lazy generator: decoding happens while it is consumed.
        text = " ".join(part for part in (segment.text.strip() for segment in segments) if part)
        text = collapse_repeats(text)
        heard = lang if lang is not None else str(info.language)
        return text.strip(), heard

    def detect_language(self, audio: Pcm16) -> tuple[str, float]:
        """The most likely language of `audio` and its probability (English-only: ("en", 1.0))."""
        if not self.multilingual:
            return "en", 1.0
        samples = _to_float32(audio)
        if samples.size == 0:
            return "en", 0.0
        self._model.min_window_frames = FULL_WINDOW_FRAMES
        language, probability, _ = self._model.detect_language(samples)
        return str(language), float(probability)

    def _decoding_language(self, language: str | None) -> str | None:
        """The code to pass to Whisper: "en" for English-only models, None to detect."""
        if language is None:
            return None if self.multilingual else "en"
        code = _whisper_code(language, self.languages)
        if not self.multilingual:
            if code != "en":
                self._warn_once(
                    language,
                    "speech-to-text model %s is English-only; transcribing %r as English",
                )
            return "en"
        if code is None:
            self._warn_once(
                language, "speech-to-text model %s does not know language %r; detecting the language"
            )
        return code

    def _warn_once(self, language: str, message: str) -> None:
        if language not in self._warned_languages:
            self._warned_languages.add(language)
            _LOGGER.warning(message, self.model_dir, language)


def _whisper_code(language: str, known: frozenset[str]) -> str | None:
    """Map a language tag ("en", "EN", "pt-br", "zh_CN") to a Whisper code, or None."""
    tag = language.strip().lower().replace("_", "-")
    if tag in known:
        return tag
    base = tag.split("-", 1)[0]
    return base if base in known else None


def _is_multilingual(model: Any, model_dir: Path) -> bool:
    try:
        return bool(model.model.is_multilingual)
    except AttributeError:
        return not model_dir.name.endswith(".en")


def _to_float32(audio: Pcm16) -> npt.NDArray[np.float32]:
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio [samples], got shape {samples.shape}")
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    return samples.astype(np.float32) / np.float32(32768.0)


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def collapse_repeats(text: str) -> str:
    """`text` with a sentence that Whisper repeated back to back kept once.

    "Where can I get a coffee? Where can I get a coffee?" -> "Where can I get a coffee?".
    Sentences compare by their words (case and punctuation aside); a different sentence between
    two equal ones keeps both.
    """
    sentences = [m.group(0).strip() for m in _SENTENCE.finditer(text) if m.group(0).strip()]
    kept: list[str] = []
    for sentence in sentences:
        if kept and _words(kept[-1]) == _words(sentence) and _words(sentence):
            continue
        kept.append(sentence)
    return " ".join(kept) if len(kept) < len(sentences) else text


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def encoder_frames(features: npt.NDArray[np.float32], min_window_frames: int) -> int:
    """How many log-mel frames of a padded Whisper input (80 x 3000) the encoder needs.

    faster-whisper pads the speech's frames with exact zeros up to 30 s (`pad_or_trim`); a real
    frame is never all zeros (the log-mel floor is negative). The window keeps the speech, then
    WINDOW_MARGIN_S of the padding, and is at least `min_window_frames` long, in whole seconds.
    """
    total = int(features.shape[-1])
    if min_window_frames >= total:
        return total
    spoken = np.flatnonzero(np.any(features != 0.0, axis=0))
    content = int(spoken[-1]) + 1 if spoken.size else 0
    wanted = max(min_window_frames, content + round(WINDOW_MARGIN_S * _FRAMES_PER_S))
    return min(total, -(-wanted // _FRAMES_PER_S) * _FRAMES_PER_S)


def windowed_model_class() -> Any:
    """faster-whisper's `WhisperModel` whose encoder reads only the window `encoder_frames` keeps."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        min_window_frames = FULL_WINDOW_FRAMES

        def encode(self, features: Any) -> Any:
            single = features[0] if features.ndim == 3 and features.shape[0] == 1 else features
            if single.ndim == 2:
                frames = encoder_frames(single, self.min_window_frames)
                if frames < single.shape[-1]:
                    features = np.ascontiguousarray(single[:, :frames])
            return super().encode(features)

    return WindowedWhisperModel
