"""Negatives a maker brings as features: openWakeWord's precomputed windows of real speech.

openWakeWord trains its classifiers against hours of real speech, music and noise given as the
same features this training uses (its melspectrogram and embedding models), downloads from its
project: windows shaped (N, 16, 96), as `openwakeword_features_ACAV100M_2000_hrs_16bit.npy`
(about 2,000 hours), or one stream of embeddings shaped (T, 96), as its
`validation_set_features.npy` (about 11 hours), whose windows are every 16 consecutive rows.
Synthesized speech alone leaves false accepts (benchmarks/README.md); openWakeWord's recipe
trains them away with real speech, so
`appliance wakeword train --negative-features FILE` adds a sample of such windows to the
negatives. The file is opened memory-mapped (a 17 GB file costs no memory), checked before
anything slow, and `windows` windows are drawn from it with the seed (the same file and seed,
the same windows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

EMBEDDING_DIMS = 96
# each window costs training memory (its copies in the fit, not only its 6 KB of float32) and
# CPU time: "hello lamp" with 5,000 windows took 513 s (810 CPU s) and 1.8 GB maximum resident
# set, with 20,000 636 s (965 CPU s) and 2.5 GB, without 1.7 GB (`/usr/bin/time -v`, this box).
# The default is near a quarter of the ~23,000 windows training makes itself, within 10 minutes.
DEFAULT_WINDOWS = 5_000
MAX_WINDOWS = 200_000  # ~8 GB at the peak: a big machine
SAMPLE_SEED = 71


def _open(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a .npy file") from None
    except PermissionError:
        raise ValueError(f"{path} cannot be read (permission denied)") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a NumPy .npy file of feature windows ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ValueError(f"{path} is a NumPy archive of several arrays, not one .npy array of windows")
    return array


def check(path: Path, context_frames: int) -> int:
    """The number of windows in `path`, or ValueError naming what is wrong: it must be a .npy
    array of floats shaped (N, frames, 96) with frames >= `context_frames` and N >= 1, or a
    stream (T, 96) with T >= `context_frames`."""
    return _checked(path, context_frames)[1]


def _checked(path: Path, context_frames: int) -> tuple[np.ndarray, int]:
    """The memory-mapped array of `path` and its number of windows (`check`)."""
    array = _open(path)
    stream = array.ndim == 2 and array.shape[1] == EMBEDDING_DIMS
    windows = array.ndim == 3 and array.shape[2] == EMBEDDING_DIMS and array.shape[1] >= context_frames
    if not (stream or windows):
        raise ValueError(
            f"{path} holds an array of shape {array.shape}: feature windows are "
            f"(N, {context_frames} or more frames, {EMBEDDING_DIMS}) or one stream (T, {EMBEDDING_DIMS}) "
            "(openWakeWord's embeddings)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path} holds {array.dtype} values: feature windows are floats (float16, float32)")
    count = array.shape[0] - context_frames + 1 if stream else array.shape[0]
    if count < 1:
        raise ValueError(f"{path} holds no windows (a stream of {array.shape[0]} embeddings)")
    return array, int(count)


def sample(path: Path, windows: int, seed: int, context_frames: int) -> npt.NDArray[np.float32]:
    """`windows` windows of `path` (all of them if it holds fewer), drawn with `seed`, in file
    order, as float32 (the last `context_frames` frames of each; of a stream, the
    `context_frames` rows from each drawn start)."""
    array, count = _checked(path, context_frames)
    take = min(windows, count)
    rng = np.random.default_rng([SAMPLE_SEED, seed])
    rows = np.sort(rng.choice(count, size=take, replace=False))
    out = np.empty((take, context_frames, EMBEDDING_DIMS), np.float32)
    if array.ndim == 2:
        for i, start in enumerate(rows):
            out[i] = array[start : start + context_frames]
    else:
        for start in range(0, take, 4096):  # a block at a time: never the file's dtype in one copy
            block = rows[start : start + 4096]
            out[start : start + block.size] = array[block, -context_frames:, :]
    if not np.isfinite(out).all():
        raise ValueError(f"{path} holds values that are not finite numbers (NaN or infinity)")
    return out
