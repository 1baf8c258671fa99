"""`PiperTts`: the TextToSpeech port on Piper voices (VITS ONNX models + espeak-ng phonemes).

Voices are named `PiperVoiceSpec`s. Nothing is loaded when the adapter is built: a voice's ONNX
model is loaded on first use (or by `preload`) and kept in an LRU cache of `cache_size` models.
The cache holds ONNX sessions per model file, so every spec (speed, speaker, noise, config) that
points at the same `.onnx` file shares one session: a model is never loaded twice while cached.
Sessions are built here with `threads` intra-op threads (Piper's own loader would use every core);
1 by default: the first chunk is synthesized while the LLM generates, and under pi-class pi5 one
thread gave it sooner (0.55 s against 0.75 s with 2; 0.37 s against 0.65 s alone; issue 12).

Speed: the caller's `speed` (0.7–1.2, the ElevenLabs `tts.speed` range) multiplies the spec's
speed; Piper gets `length_scale = config length_scale / (spec.speed * speed)` (the config's
`inference.length_scale` is 1 for most voices). Text may contain raw phoneme spans `[[ ... ]]`;
Piper reads them as phonemes.

Not thread-safe by design: the runtime owns one TTS worker thread and calls this adapter only
from it (an ONNX session is never run concurrently, the cache is unlocked).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.errors import ModelError
from appliance.ports import Pcm16

if TYPE_CHECKING:
    from piper import PiperConfig, PiperVoice, SynthesisConfig

_LOGGER = logging.getLogger(__name__)

MIN_SPEED = 0.7
MAX_SPEED = 1.2
_SPEED_TOLERANCE = 1e-6
_FIX_HINT = "run 'appliance models provision'"


@dataclass(frozen=True)
class PiperVoiceSpec:
    """One named local voice: a Piper model plus the settings to speak with it.

    `config` defaults to `<model>.json`. `speaker` matters for multi-speaker models only.
    `speed` is this voice's own speed factor (1.0 = the model's natural pace). `noise_scale` and
    `noise_w_scale` override the config's inference values when set. `language` is the language
    the voice speaks (ISO 639-1), used by the runtime to pick a voice.
    """

    name: str
    model: Path
    config: Path | None = None
    speaker: int = 0
    speed: float = 1.0
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    language: str = "en"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"voice {self.name!r}: speed must be a positive number, got {self.speed}")
        if self.speaker < 0:
            raise ValueError(f"voice {self.name!r}: speaker must be >= 0, got {self.speaker}")

    @property
    def config_path(self) -> Path:
        return self.config if self.config is not None else Path(f"{self.model}.json")


@dataclass
class _LoadedModel:
    """One ONNX session and the Piper voices (one per config file) that share it."""

    session: Any
    voices: dict[Path, PiperVoice] = field(default_factory=dict)


class PiperTts:
    """Text to speech with local Piper voices, lazily loaded and LRU-cached."""

    def __init__(
        self,
        voices: dict[str, PiperVoiceSpec],
        default_voice: str,
        cache_size: int = 3,
        threads: int = 1,
    ) -> None:
        if not voices:
            raise ValueError("at least one Piper voice is needed")
        if default_voice not in voices:
            raise ValueError(f"default voice {default_voice!r} is not one of {sorted(voices)}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.voices = dict(voices)
        self.default_voice = default_voice
        self.cache_size = cache_size
        self.threads = threads
        self._models: OrderedDict[Path, _LoadedModel] = OrderedDict()
        self._configs: dict[Path, PiperConfig] = {}
        self._load_s: dict[str, float] = {}
        self._load_count = 0
        self._warned_unknown: set[str] = set()

    # -- the port ---------------------------------------------------------------------------

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        """The whole utterance as one int16 array, with its sample rate."""
        chunks = list(self.stream(text, voice, speed))
        if not chunks:
            return np.zeros(0, dtype=np.int16), self.sample_rate_hz(voice)
        audio = np.concatenate([chunk for chunk, _ in chunks]).astype(np.int16, copy=False)
        return audio, chunks[0][1]

    def stream(self, text: str, voice: str, speed: float) -> Iterator[tuple[Pcm16, int]]:
        """One (audio, rate) chunk per sentence (Piper's sentence split), each as soon as it is ready.

        Arguments are checked and the voice is loaded when this is called; synthesis happens as
        the iterator is consumed, so playback can start after the first sentence.
        """
        from piper import SynthesisConfig

        factor = check_speed(speed)
        name = self._resolve(voice)
        if not text.strip():
            return iter(())
        spec = self.voices[name]
        piper_voice = self._voice(name)
        syn_config = SynthesisConfig(
            speaker_id=spec.speaker,
            length_scale=piper_voice.config.length_scale / (spec.speed * factor),
            noise_scale=spec.noise_scale,
            noise_w_scale=spec.noise_w_scale,
        )
        return _chunks(piper_voice, text, syn_config)

    # -- extras -----------------------------------------------------------------------------

    def preload(self, names: Iterable[str]) -> None:
        """Load these voices now (more distinct models than `cache_size` evict the first ones)."""
        for name in names:
            self._voice(self._resolve(name))

    def phonemize(self, text: str, voice: str) -> str:
        """Piper's phonemes for `text` in `voice`, sentences separated by a space.

        The result can be fed back as `[[ ... ]]` raw phoneme input. Loads the voice.
        """
        name = self._resolve(voice)
        sentences = self._voice(name).phonemize(text)
        return " ".join("".join(phonemes).strip() for phonemes in sentences if phonemes)

    def sample_rate_hz(self, voice: str) -> int:
        """Output rate of `voice`, from its config file (the model is not loaded)."""
        spec = self.voices[self._resolve(voice)]
        return int(self._config(spec).sample_rate)

    def phoneme_symbols(self, voice: str) -> tuple[frozenset[str], str]:
        """The symbols `voice` accepts in `[[ ... ]]` phoneme input (its `phoneme_id_map`) and
        its espeak-ng voice (`en-us`), from its config file (the model is not loaded)."""
        config = self._config(self.voices[self._resolve(voice)])
        return frozenset(config.phoneme_id_map), str(config.espeak_voice)

    def load_stats(self) -> dict[str, float]:
        """Seconds spent loading models, per voice name whose use triggered the load.

        A voice that found its model already cached (shared with another voice) is not listed.
        Reloads after eviction add up.
        """
        return dict(self._load_s)

    @property
    def load_count(self) -> int:
        """How many ONNX sessions have been created so far."""
        return self._load_count

    @property
    def loaded_models(self) -> list[Path]:
        """Model files currently cached, least recently used first."""
        return list(self._models)

    # -- internals --------------------------------------------------------------------------

    def _resolve(self, voice: str) -> str:
        if voice in self.voices:
            return voice
        if voice not in self._warned_unknown:
            self._warned_unknown.add(voice)
            _LOGGER.warning(
                "unknown TTS voice %r; using the default voice %r (voices: %s)",
                voice,
                self.default_voice,
                ", ".join(sorted(self.voices)),
            )
        return self.default_voice

    def _voice(self, name: str) -> PiperVoice:
        """The loaded `PiperVoice` for voice `name` (loads its model on a cache miss)."""
        from piper import PiperVoice

        spec = self.voices[name]
        key = _key(spec.model)
        loaded = self._models.get(key)
        if loaded is None:
            config = self._config(spec)  # config problems surface before the slow load
            start = time.perf_counter()
            loaded = _LoadedModel(session=self._load_session(spec.model))
            elapsed = time.perf_counter() - start
            self._load_count += 1
            self._load_s[name] = self._load_s.get(name, 0.0) + elapsed
            _LOGGER.info("loaded Piper model %s for voice %r in %.2f s", spec.model, name, elapsed)
            self._models[key] = loaded
            while len(self._models) > self.cache_size:
                evicted, _ = self._models.popitem(last=False)
                _LOGGER.info("evicted Piper model %s from the voice cache", evicted)
        else:
            self._models.move_to_end(key)
            config = self._config(spec)
        config_key = _key(spec.config_path)
        piper_voice = loaded.voices.get(config_key)
        if piper_voice is None:
            if config.num_speakers > 1 and spec.speaker >= config.num_speakers:
                raise ModelError(
                    f"voice {name!r}: speaker {spec.speaker} out of range, "
                    f"{spec.model} has {config.num_speakers} speakers",
                    code="tts_load",
                )
            piper_voice = PiperVoice(session=loaded.session, config=config)
            loaded.voices[config_key] = piper_voice
        return piper_voice

    def _config(self, spec: PiperVoiceSpec) -> PiperConfig:
        """The parsed `PiperConfig` of a spec (cached; small JSON files)."""
        from piper import PiperConfig

        path = _key(spec.config_path)
        config = self._configs.get(path)
        if config is None:
            if not path.is_file():
                raise ModelError(
                    f"Piper voice config {spec.config_path} does not exist; {_FIX_HINT}",
                    code="tts_missing",
                )
            try:
                config = PiperConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ModelError(
                    f"cannot read Piper voice config {spec.config_path}: {err!r}", code="tts_load"
                ) from err
            self._configs[path] = config
        return config

    def _load_session(self, model: Path) -> Any:
        if not model.is_file():
            raise ModelError(f"Piper voice model {model} does not exist; {_FIX_HINT}", code="tts_missing")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelError(f"cannot load Piper voice model {model}: {err}", code="tts_load") from err
        return ShrinkingSession(session, ort.RunOptions())


class ShrinkingSession:
    """An onnxruntime session whose memory arena gives back its free regions after every run.

    A Piper voice's tensors grow with the text's length, and onnxruntime's CPU arena keeps every
    region it ever grew to: 40 sentences of 3-60 words took a process from 152 to 579 MiB, and
    it kept climbing (806 MiB after 300). With `memory.enable_memory_arena_shrinkage` the arena
    frees what is unused at the end of each run: 138 -> 142 MiB for the same sentences, for
    about 13 % more synthesis CPU (the regions are mapped again on the next run); without the
    arena at all, synthesis took twice the CPU. Piper calls `run(None, inputs)`; everything
    else is the wrapped session's.
    """

    def __init__(self, session: Any, run_options: Any) -> None:
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._session = session
        self._run_options = run_options

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self._run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _chunks(piper_voice: PiperVoice, text: str, syn_config: SynthesisConfig) -> Iterator[tuple[Pcm16, int]]:
    for chunk in piper_voice.synthesize(text, syn_config=syn_config):
        audio = np.asarray(chunk.audio_int16_array, dtype=np.int16)
        if audio.size:
            yield audio, int(chunk.sample_rate)


def check_speed(speed: float) -> float:
    """`speed` clamped to 0.7–1.2; ValueError if it is outside (beyond float rounding)."""
    if not math.isfinite(speed) or not (
        MIN_SPEED - _SPEED_TOLERANCE <= speed <= MAX_SPEED + _SPEED_TOLERANCE
    ):
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return min(max(float(speed), MIN_SPEED), MAX_SPEED)


def _key(path: Path) -> Path:
    """Cache key for a file: absolute, symlinks resolved (two names for one file share)."""
    return Path(path).expanduser().resolve()
