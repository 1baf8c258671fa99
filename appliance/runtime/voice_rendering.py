"""How the local agent's text becomes voices: multi-voice labels, speeds, pronunciation.

`VoiceRenderer.synthesize(text, label, default_voice, speed)` runs on the TTS worker thread for
one segment (text without markup, the voice label that speaks it). It picks the local voice
(`supported_voices[label].voice_id`, a name in `appliance.local.voices`; the session's current
default voice for text outside tags and for a label whose voice_id is not a local voice),
multiplies the agent's `tts.speed` by the label's `speed`, applies the pronunciation
dictionaries for that voice (a text with a phoneme entry goes to Piper as phonemes, the words
around the entry phonemized in context by espeak-ng), and calls the TTS.

A label with its own speed speaks through a *variant* of its Piper voice (same model file, so
the same cached ONNX session: no extra load or memory), registered on first use as
`<voice>@<speed>`; both speeds are 0.7–1.2, their product may not be, which the variant's own
speed factor allows. An engine without named Piper voices gets the product clamped to 0.7–1.2.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.core.pronunciation import Lexicon, LexiconError, Pronouncer, load_pls
from appliance.errors import ConfigError
from appliance.ports import Pcm16, TextToSpeech

if TYPE_CHECKING:
    from appliance.agent_config import SupportedVoice
    from appliance.config import Config

_LOGGER = logging.getLogger(__name__)

PLACEHOLDER_WORDS = ("placeholder", "butterfly", "telescope", "umbrella")
"""Stand-ins for phoneme entries when the text is phonemized in context (one not in the text)."""
MIN_SPEED = 0.7
MAX_SPEED = 1.2

MULTIVOICE_PROMPT = (
    'When a message should be spoken by a particular person, use markup: "<CHARACTER>message</CHARACTER>"'
    " where CHARACTER is the character label.\n"
    "\n"
    "Available voices are as follows:\n"
    "- default: any text outside of the CHARACTER tags"
)
"""The platform's system-prompt block for `tts.supported_voices` (seed digest §4.1), verbatim."""


def multivoice_prompt(voices: Iterable[SupportedVoice]) -> str:
    """The block for these voices, one `- <label>: <description>` line each ("" if none)."""
    lines = [f"- {v.label}: {v.description}" if v.description else f"- {v.label}" for v in voices]
    return "\n".join([MULTIVOICE_PROMPT, *lines]) if lines else ""


@dataclass(frozen=True)
class LabelVoice:
    """What a multi-voice label speaks with."""

    label: str
    voice: str | None
    """Local voice name; None: the session's default voice (the voice_id is not a local voice)."""
    speed: float = 1.0
    language: str | None = None


def label_voices(config: Config) -> dict[str, LabelVoice]:
    """`tts.supported_voices` resolved to local voices (unknown voice ids were warned about
    once when the config was loaded)."""
    local = config.appliance.local.voices
    return {
        v.label: LabelVoice(v.label, v.voice_id if v.voice_id in local else None, v.speed or 1.0, v.language)
        for v in config.conversation_config.tts.supported_voices
    }


def language_voice(config: Config, language: str) -> str | None:
    """The local voice for `language` after a `language_detection` switch: the language
    preset's `overrides.tts.voice_id`, else a supported voice with that `language`, else a
    local voice with that `language`; None: keep the current voice."""
    local = config.appliance.local.voices
    cc = config.conversation_config
    preset = cc.language_presets.get(language)
    preset_voice = preset.overrides.tts.voice_id if preset is not None and preset.overrides.tts else None
    if preset_voice in local:
        return preset_voice
    for supported in cc.tts.supported_voices:
        if supported.language == language and supported.voice_id in local:
            return supported.voice_id
    return next((name for name, voice in local.items() if voice.language == language), None)


def load_lexicon(config: Config) -> Lexicon | None:
    """The pronunciation dictionaries with a local `path`, in config order (None if none).

    A missing or broken file is a ConfigError whose line is `<file>:<line>: <problem>`.
    """
    lexicons: list[Lexicon] = []
    problems: list[str] = []
    for locator in config.conversation_config.tts.pronunciation_dictionary_locators:
        if locator.path is None:
            continue  # platform-only dictionary: warned about when the config was loaded
        try:
            lexicons.append(load_pls(config.resolve_path(locator.path)))
        except LexiconError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError(problems, source=config.source)
    return Lexicon.combine(lexicons) if lexicons else None


class VoiceRenderer:
    """Segments to audio. Used from the TTS worker thread only (like the TTS itself)."""

    def __init__(
        self,
        tts: TextToSpeech,
        labels: Mapping[str, LabelVoice] | None = None,
        lexicon: Lexicon | None = None,
    ) -> None:
        self.tts = tts
        self.labels = dict(labels or {})
        self.lexicon = lexicon
        self._pronouncers: dict[str, Pronouncer] = {}
        self._placeholders: dict[tuple[str, str], re.Pattern[str]] = {}
        self._clamp_warned: set[str] = set()

    @property
    def label_names(self) -> frozenset[str]:
        return frozenset(self.labels)

    def voice_for(self, label: str | None, default_voice: str) -> tuple[str, float]:
        """(local voice, the label's speed factor) for a segment."""
        spec = self.labels.get(label) if label is not None else None
        if spec is None:
            return default_voice, 1.0
        return spec.voice or default_voice, spec.speed

    def synthesize(self, text: str, label: str | None, default_voice: str, speed: float) -> tuple[Pcm16, int]:
        """Audio for one segment: `label` (None: default voice) at `speed` × the label's speed."""
        voice, factor = self.voice_for(label, default_voice)
        # Piper reads `[[ ... ]]` as raw phonemes: only the dictionaries may write them
        text = self.pronounce(text.replace("[[", "[ [").replace("]]", "] ]"), voice)
        if factor != 1.0:
            variant = self._variant(voice, factor)
            if variant is not None:
                voice = variant
            else:
                wanted = speed * factor
                speed = min(max(wanted, MIN_SPEED), MAX_SPEED)
                if speed != wanted and voice not in self._clamp_warned:
                    self._clamp_warned.add(voice)
                    _LOGGER.warning("voice %r: speed %.2f clamped to %.2f", voice, wanted, speed)
        return self.tts.synthesize(text, voice, speed)

    def pronounce(self, text: str, voice: str) -> str:
        """`text` with the pronunciation dictionaries applied for `voice`.

        Aliases replace words. With a phoneme entry, the whole text goes to Piper as phonemes
        when the TTS can phonemize: espeak-ng phonemizes the text with a placeholder word in
        each entry's place (so the words around it keep their context: "a" before a noun is
        not read as the letter A, a comma after it still pauses) and the entry's phonemes
        replace the placeholder's. Otherwise (or if the placeholder is not found back) the
        entry is an inline `[[ ... ]]` span.
        """
        if self.lexicon is None or not len(self.lexicon):
            return text
        pronouncer = self.pronouncer(voice)
        parts = pronouncer.parts(text)
        if all(phonemes is None for _, phonemes in parts):
            return "".join(piece for piece, _ in parts)
        in_context = self._phonemes_in_context(parts, voice)
        if in_context is not None:
            return in_context
        return "".join(piece if phonemes is None else f"[[ {phonemes} ]]" for piece, phonemes in parts)

    def _phonemes_in_context(self, parts: list[tuple[str, str | None]], voice: str) -> str | None:
        phonemize = getattr(self.tts, "phonemize", None)
        if phonemize is None:
            return None
        plain = " ".join(piece for piece, phonemes in parts if phonemes is None).lower()
        word = next((w for w in PLACEHOLDER_WORDS if w not in plain), None)
        if word is None:
            return None
        marked = "".join(piece if phonemes is None else word for piece, phonemes in parts)
        full = str(phonemize(marked, voice))
        key = (voice, word)
        if key not in self._placeholders:
            bare = "".join(ch for ch in str(phonemize(word, voice)) if ch not in "ˈˌ").strip()
            self._placeholders[key] = re.compile("".join(f"[ˈˌ]?{re.escape(ch)}" for ch in bare))
        entries = [phonemes for _, phonemes in parts if phonemes is not None]
        found = list(self._placeholders[key].finditer(full))
        if not found or len(found) != len(entries):
            return None
        out: list[str] = []
        pos = 0
        for match, phonemes in zip(found, entries, strict=True):
            out += [full[pos : match.start()], phonemes]
            pos = match.end()
        out.append(full[pos:])
        return f"[[ {' '.join(''.join(out).split())} ]]"

    def pronouncer(self, voice: str) -> Pronouncer:
        """The dictionaries made ready for `voice` (its phoneme set); warnings logged once."""
        pronouncer = self._pronouncers.get(voice)
        if pronouncer is None:
            symbols: frozenset[str] | None = None
            language = "en"
            phoneme_symbols = getattr(self.tts, "phoneme_symbols", None)
            if phoneme_symbols is not None:
                symbols, language = phoneme_symbols(voice)
            pronouncer = (self.lexicon or Lexicon()).for_voice(symbols, language)
            for warning in pronouncer.warnings:
                _LOGGER.warning("pronunciation for voice %r: %s", voice, warning)
            self._pronouncers[voice] = pronouncer
        return pronouncer

    def _variant(self, voice: str, factor: float) -> str | None:
        """A Piper voice `voice` with its speed × `factor`, registered once; None if the TTS
        has no named Piper voices."""
        voices: Any = getattr(self.tts, "voices", None)
        if not isinstance(voices, dict) or voice not in voices:
            return None
        name = f"{voice}@{factor:g}"
        if name not in voices:
            base = voices[voice]
            voices[name] = dataclasses.replace(base, name=name, speed=base.speed * factor)
        return name
