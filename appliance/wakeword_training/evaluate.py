"""Measure a wake-word classifier: recall on positive takes, false accepts per hour on negative
audio, the threshold curve and a suggested threshold (`appliance wakeword evaluate`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.adapters.openwakeword_detector import OpenWakeWordFeatures
from appliance.core import wakeword_training as core
from appliance.paths import write_atomic
from appliance.ports import Pcm16
from appliance.wakeword_training import augment, synth
from appliance.wakeword_training.train import (
    CHUNK_S,
    ModelSource,
    negative_audio_chunk,
    score_stream,
    trim,
)

RATE_HZ = 16000
REFRACTORY_FRAMES = 25  # 2 s, the default refractory_s
# the generated negatives' cache (~17 MB an hour of audio), beyond what one run uses itself
CACHE_MAX_BYTES = 512 * 2**20
PATIENCE_FRAMES = 1  # the default patience_frames


@dataclass(frozen=True)
class Evaluation:
    name: str
    positives: int
    negative_hours: float
    curve: list[core.CurvePoint]
    suggested: core.CurvePoint
    positive_peaks: list[float]


def pad_take(take: Pcm16, rng: np.random.Generator) -> Pcm16:
    """A positive take with 2 s of quiet room before it and 0.5 s after (the detector's view)."""
    x = np.concatenate(
        [
            augment.room_noise(2 * RATE_HZ, rng, 20.0),
            np.asarray(take, np.float64),
            augment.room_noise(RATE_HZ // 2, rng, 20.0),
        ]
    )
    return augment.to_pcm(x)


def take_scores(
    model: ModelSource, extractor: OpenWakeWordFeatures, takes: list[Pcm16], seed: int = 0
) -> list[list[float]]:
    """The frame scores of each padded take."""
    rng = np.random.default_rng(seed)
    return [score_stream(model, extractor.embeddings(pad_take(t, rng))).tolist() for t in takes]


def peak_scores(
    model: ModelSource,
    extractor: OpenWakeWordFeatures,
    takes: list[Pcm16],
    seed: int = 0,
    patience_frames: int = 1,
) -> list[float]:
    """The highest threshold each padded take fires at (`core.sustained_peak`)."""
    return [core.sustained_peak(s, patience_frames) for s in take_scores(model, extractor, takes, seed)]


def chunk_key(split: str, seed: int, index: int, piper: bool) -> str:
    """The cache name of one generated negative minute: what makes its audio (every eighth minute
    has Piper's voice among its speakers when Piper is installed, espeak-ng's only otherwise)."""
    version = "v3" if split == "validation" else "v2"  # v3: the validation split's own texts
    text = f"{version}:{split}:{seed}:{index}" + ("" if piper else ":espeak-only")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def negative_embeddings(
    extractor: OpenWakeWordFeatures,
    hours: float,
    seed: int,
    cache_dir: Path | None,
    on_chunk: Callable[[int, int], None] | None = None,
    split: str = "test",
) -> list[npt.NDArray[np.float32]]:
    """The embedding streams of `hours` of generated negative audio (one per minute) of a
    `split` ("validation" or "test", see `negative_audio_chunk`), cached in `cache_dir` as .npy
    files so a second evaluation reads them back."""
    chunks = max(1, round(hours * 3600 / CHUNK_S))
    out = []
    used: set[Path] = set()
    for index in range(chunks):
        path = None
        if cache_dir is not None:
            path = cache_dir / f"negative-{chunk_key(split, seed, index, synth.piper_available())}.npy"
            used.add(path)
            cached = _load_cached(path)
            if cached is not None:
                out.append(cached)
                if on_chunk:
                    on_chunk(index + 1, chunks)
                continue
        emb = extractor.embeddings(negative_audio_chunk(index, seed, split=split))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            np.save(buffer, emb)
            write_atomic(path, buffer.getvalue())  # an evaluation stopped meanwhile leaves no part
        out.append(emb)
        if on_chunk:
            on_chunk(index + 1, chunks)
    if cache_dir is not None:
        trim_cache(cache_dir, used)
    return out


def trim_cache(cache_dir: Path, keep: set[Path], max_bytes: int = CACHE_MAX_BYTES) -> None:
    """Delete the least recently used cached chunks (not those in `keep`, the ones just used)
    until the cache holds at most `max_bytes`."""
    entries = []
    for path in cache_dir.glob("negative-*.npy"):
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append((path in keep, st.st_mtime, st.st_size, path))
    total = sum(size for _, _, size, _ in entries)
    for kept, _, size, path in sorted(entries, key=lambda e: (e[0], e[1])):
        if total <= max_bytes or kept:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
    for path in keep:  # used now: the most recent, whether made or read back
        with contextlib.suppress(OSError):
            os.utime(path)


def _load_cached(path: Path) -> npt.NDArray[np.float32] | None:
    """A cached chunk's embeddings; None when there is none or it cannot be read (a cache written
    before writes were atomic may hold a part of one: it is made again)."""
    if not path.is_file():
        return None
    try:
        emb = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    if emb.ndim != 2 or emb.shape[1] != 96:
        return None
    return np.asarray(emb, dtype=np.float32)


def evaluate(
    name: str,
    model: Path,
    extractor: OpenWakeWordFeatures,
    positives: list[Pcm16],
    negative_streams: list[npt.NDArray[np.float32]],
    negative_seconds: float,
    max_false_accepts_per_hour: float = 0.5,
    extra_thresholds: tuple[float, ...] = (),
    patience_frames: int = 1,
) -> Evaluation:
    """The curve at the default thresholds and `extra_thresholds` (e.g. the trained one)."""
    peaks = peak_scores(model, extractor, positives, patience_frames=patience_frames)
    streams = [score_stream(model, e).tolist() for e in negative_streams]
    hours = negative_seconds / 3600
    thresholds = sorted({*core.default_thresholds(), *extra_thresholds})
    curve = core.threshold_curve(peaks, streams, hours, thresholds, REFRACTORY_FRAMES, patience_frames)
    return Evaluation(
        name, len(peaks), hours, curve, core.suggest_threshold(curve, max_false_accepts_per_hour), peaks
    )


def heldout_takes(phrase: str, count: int, seed: int) -> list[Pcm16]:
    """The phrase in voices training never uses, room-augmented."""
    rng = np.random.default_rng(seed)
    takes = []
    for voice in synth.voices(True, count, seed + 7):
        takes.append(augment.to_pcm(augment.augment(trim(synth.say(phrase, voice)), rng)))
    return takes


def clip_embeddings(
    extractor: OpenWakeWordFeatures, clips: list[Pcm16], seed: int = 0
) -> list[npt.NDArray[np.float32]]:
    """Each negative clip's embedding stream, after 2 s of quiet room (as `pad_take` gives a
    positive): the detector needs 2 s of audio before its first score, so without it a clip's
    first 2 s (all of a short clip) would never be scored, though counted in the hours."""
    rng = np.random.default_rng(seed)
    lead = 2 * RATE_HZ
    out = []
    for clip in clips:
        padded = np.concatenate([augment.room_noise(lead, rng, 20.0), np.asarray(clip, np.float64)])
        emb = extractor.embeddings(augment.to_pcm(padded))
        out.append(emb)
    return out
