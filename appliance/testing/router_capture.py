"""Capture what the audio router receives in a real-time run, and replay it offline.

A self-interruption in real time is rare and depends on timing: when each microphone block
arrived, what the speaker had played by then. `capturing(capture)` records, for every router
built while it is active, each block the router's model thread steps on (the samples, their
arrival on the appliance clock, whether the reader waited for them, the listening switch and
wake-word reset applied before it), every read of the playback reference the router makes for
it (the time, the samples, `playing`), each new playback chunk the speaker holds (its start and
stop on the clock, for analysis) and the events the block decided. `replay` steps a fresh
router through the same blocks with the same reads: the same decision, deterministically, and
any rule change can be measured on the captured failure.

Opt-in and bounded (`max_blocks`; older blocks are never dropped: the capture stops growing and
says so in `truncated`): nothing of this runs unless a benchmark or a test asks for it. It wraps
the router's instance methods (`AudioRouter.__init__` is patched only inside `capturing`).
Saved as one `.npz` (arrays and a JSON header, no pickles).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core.device import DeviceEvent

RATE_HZ = 16000
MAX_BLOCKS = 4000
"""About 5 min of 80 ms blocks (~40 MB with their reference reads)."""


@dataclass
class Read:
    t_start: float
    n: int
    playing: bool
    samples: npt.NDArray[np.float32]


@dataclass
class Block:
    samples: npt.NDArray[np.int16]
    arrived: float | None
    waited: bool
    listen: bool | None
    """The listening switch applied before this block (None: none pending)."""
    wake_reset: bool
    reads: list[Read] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    """`type(event).__name__@t` of what the block decided."""


@dataclass
class Chunk:
    start: float
    stop: float
    samples: npt.NDArray[np.float32]
    block: int
    """The index of the block during which the router first saw it."""


@dataclass
class RouterCapture:
    max_blocks: int = MAX_BLOCKS
    blocks: list[Block] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    """How the router was built (its configs, the canceller's name), for `replay`."""
    truncated: bool = False

    def attach(self, router: Any) -> None:
        """Record what `router` receives from now on (its instance methods are wrapped)."""
        orig_sync = router._process_sync
        orig_apply = router._apply_pending
        playback = router._playback
        seen: dict[tuple[float, int], float] = {}  # (start, samples) -> stop of the chunks recorded

        def apply_pending() -> None:
            block = self.blocks[-1] if self.blocks and not self.truncated else None
            if block is not None and not block.reads:
                block.listen, block.wake_reset = router._pending_listen, router._pending_wake_reset
            orig_apply()

        def process_sync(block: Any, arrived: float | None = None, waited: bool = True) -> list[DeviceEvent]:
            if len(self.blocks) >= self.max_blocks:
                self.truncated = True
                out: list[DeviceEvent] = orig_sync(block, arrived, waited)
                return out
            self.blocks.append(Block(np.array(block, dtype=np.int16), arrived, waited, None, False))
            events: list[DeviceEvent] = orig_sync(block, arrived, waited)
            self.blocks[-1].events = [_event_key(e) for e in events]
            segments = getattr(playback, "_segments", None)
            for start, samples, stop in list(segments or ()):
                key = (float(start), int(samples.size))
                if seen.get(key) != stop:
                    seen[key] = stop
                    self.chunks.append(Chunk(start, stop, np.array(samples), len(self.blocks) - 1))
            return events

        router._process_sync = process_sync
        router._apply_pending = apply_pending
        if playback is not None:
            router._playback = _RecordingPlayback(playback, self)

    def save(self, path: str | Path) -> None:
        blocks, chunks = self.blocks, self.chunks
        reads = [(i, r) for i, b in enumerate(blocks) for r in b.reads]
        header = {
            "settings": self.settings,
            "truncated": self.truncated,
            "events": [b.events for b in blocks],
            "listen": [b.listen for b in blocks],
            "arrived": [b.arrived for b in blocks],
        }
        np.savez_compressed(
            path,
            header=np.array(json.dumps(header)),
            samples=_cat([b.samples for b in blocks], np.int16),
            sizes=np.array([b.samples.size for b in blocks], dtype=np.int64),
            waited=np.array([b.waited for b in blocks], dtype=bool),
            wake_reset=np.array([b.wake_reset for b in blocks], dtype=bool),
            read_block=np.array([i for i, _ in reads], dtype=np.int64),
            read_t=np.array([r.t_start for _, r in reads], dtype=np.float64),
            read_playing=np.array([r.playing for _, r in reads], dtype=bool),
            read_sizes=np.array([r.samples.size for _, r in reads], dtype=np.int64),
            read_samples=_cat([r.samples for _, r in reads], np.float32),
            chunk_times=np.array([(c.start, c.stop) for c in chunks], dtype=np.float64).reshape(-1, 2),
            chunk_block=np.array([c.block for c in chunks], dtype=np.int64),
            chunk_sizes=np.array([c.samples.size for c in chunks], dtype=np.int64),
            chunk_samples=_cat([c.samples for c in chunks], np.float32),
        )

    @classmethod
    def load(cls, path: str | Path) -> RouterCapture:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            out = cls(settings=header["settings"], truncated=header["truncated"])
            samples = np.split(z["samples"], np.cumsum(z["sizes"])[:-1])
            for i, pcm in enumerate(samples if z["sizes"].size else []):
                out.blocks.append(
                    Block(
                        pcm.astype(np.int16),
                        header["arrived"][i],
                        bool(z["waited"][i]),
                        header["listen"][i],
                        bool(z["wake_reset"][i]),
                        events=header["events"][i],
                    )
                )
            ref = np.split(z["read_samples"], np.cumsum(z["read_sizes"])[:-1]) if z["read_sizes"].size else []
            for k, pcm in enumerate(ref):
                r = Read(
                    float(z["read_t"][k]), int(pcm.size), bool(z["read_playing"][k]), pcm.astype(np.float32)
                )
                out.blocks[int(z["read_block"][k])].reads.append(r)
            chunk = (
                np.split(z["chunk_samples"], np.cumsum(z["chunk_sizes"])[:-1])
                if z["chunk_sizes"].size
                else []
            )
            for k, pcm in enumerate(chunk):
                start, stop = z["chunk_times"][k]
                out.chunks.append(
                    Chunk(float(start), float(stop), pcm.astype(np.float32), int(z["chunk_block"][k]))
                )
        return out


class _RecordingPlayback:
    """The router's playback reference, recording each read into the current block."""

    def __init__(self, inner: Any, capture: RouterCapture) -> None:
        self._inner = inner
        self._capture = capture
        self._segments = getattr(inner, "_segments", None)

    @property
    def playing(self) -> bool:
        playing = bool(self._inner.playing)
        reads = self._current()
        if reads:
            reads[-1].playing = playing
        return playing

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = self._inner.reference(t_start, n_samples)
        reads = self._current()
        if reads is not None:
            reads.append(Read(t_start, n_samples, False, np.array(out, dtype=np.float32)))
        return out

    def _current(self) -> list[Read] | None:
        blocks = self._capture.blocks
        return None if not blocks or self._capture.truncated else blocks[-1].reads


class ReplayPlayback:
    """A `PlaybackReference` that answers the router's reads with the captured ones, in order
    (it checks that the router asks for the same span)."""

    def __init__(self) -> None:
        self.reads: list[Read] = []
        self.mismatches = 0
        self._last: Read | None = None

    @property
    def playing(self) -> bool:
        return self._last.playing if self._last is not None else False

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        if not self.reads:
            self.mismatches += 1
            return np.zeros(n_samples, dtype=np.float32)
        read = self.reads.pop(0)
        if read.n != n_samples or abs(read.t_start - t_start) > 1e-9:
            self.mismatches += 1
        self._last = read
        return read.samples


class ChunkPlayback:
    """A `PlaybackReference` rebuilt from the captured playback chunks (as `MonitoredSpeaker`
    reads them): the router may ask for other times than it did (its microphone timeline
    changed); `playing` is what the speaker said at the captured read."""

    def __init__(self, capture: RouterCapture) -> None:
        self._capture = capture
        self._chunks: dict[tuple[float, int], Chunk] = {}
        self._next = 0
        self.reads: list[Read] = []

    def at_block(self, index: int) -> None:
        chunks = self._capture.chunks
        while self._next < len(chunks) and chunks[self._next].block <= index:
            chunk = chunks[self._next]
            self._chunks[(chunk.start, chunk.samples.size)] = chunk  # a later stop replaces it
            self._next += 1

    @property
    def playing(self) -> bool:
        return self.reads[0].playing if self.reads else False

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        out = np.zeros(n_samples, dtype=np.float32)
        for chunk in self._chunks.values():
            offset = round((t_start - chunk.start) * RATE_HZ)
            limit = (
                chunk.samples.size if chunk.stop == math.inf else round((chunk.stop - chunk.start) * RATE_HZ)
            )
            lo, hi = max(0, offset), min(chunk.samples.size, limit, offset + n_samples)
            if hi > lo:
                out[lo - offset : hi - offset] += chunk.samples[lo:hi]
        return out


@dataclass
class Replay:
    events: list[list[str]]
    """Per block, what the replayed router decided."""
    differs: list[int]
    """Blocks whose decision differs from the captured one."""
    mismatched_reads: int


def replay(
    capture: RouterCapture,
    build: Callable[[Any, Callable[[], float]], Any],
    from_chunks: bool = False,
) -> Replay:
    """Step a fresh router (`build(playback, now)`, built as `capture.settings` says or with a
    rule changed) through the captured blocks, on the calling thread. `from_chunks`: the
    reference is read from the captured playback chunks at whatever time the router asks (its
    microphone timeline may differ from the captured one), not answered with the captured reads."""
    chunked = ChunkPlayback(capture) if from_chunks else None
    playback = ReplayPlayback()
    clock = [0.0]
    router = build(chunked if chunked is not None else playback, lambda: clock[0])
    events: list[list[str]] = []
    differs: list[int] = []
    for i, block in enumerate(capture.blocks):
        clock[0] = block.arrived if block.arrived is not None else clock[0]
        playback.reads = list(block.reads)
        if chunked is not None:
            chunked.at_block(i)
            chunked.reads = block.reads
        if block.listen is not None:
            router.set_listening(block.listen)
        if block.wake_reset:
            router.reset_wake_word()
        decided = [_event_key(e) for e in router._process_sync(block.samples, block.arrived, block.waited)]
        events.append(decided)
        playback.mismatches += len(playback.reads) if chunked is None else 0  # reads not asked for
        if decided != block.events:
            differs.append(i)
    return Replay(events, differs, playback.mismatches)


@contextmanager
def capturing(capture: RouterCapture) -> Iterator[RouterCapture]:
    """Every `AudioRouter` built inside the block is captured into `capture` (the last one
    built replaces the settings)."""
    from appliance.runtime.router import AudioRouter

    orig_init = AudioRouter.__init__

    def init(self: AudioRouter, **kwargs: Any) -> None:
        orig_init(self, **kwargs)
        capture.settings = _settings(kwargs)
        capture.attach(self)

    setattr(AudioRouter, "__init__", init)  # noqa: B010 - patched inside this block only
    try:
        yield capture
    finally:
        setattr(AudioRouter, "__init__", orig_init)  # noqa: B010


def _settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    def conf(value: Any) -> Any:
        return (
            dataclasses.asdict(value)
            if dataclasses.is_dataclass(value) and not isinstance(value, type)
            else None
        )

    from appliance.runtime.router import ECHO_TAIL_S

    echo = kwargs.get("echo")
    return {
        "echo": None if echo is None else str(echo.name),
        "endpoint": conf(kwargs["endpointer"].config),
        "double_talk": conf(kwargs.get("double_talk")),
        "band_double_talk": conf(kwargs.get("band_double_talk")),
        "linear_echo": conf(kwargs.get("linear_echo")),
        "raw_vad_always": bool(kwargs.get("raw_vad_always", True)),
        "wake_vad_gate": kwargs.get("wake_vad_gate", 0.5),
        "echo_tail_s": kwargs.get("echo_tail_s", ECHO_TAIL_S),
    }


def _event_key(event: object) -> str:
    t = getattr(event, "t", None)
    return f"{type(event).__name__}@{t:.3f}" if isinstance(t, float) else type(event).__name__


def _cat(parts: list[Any], dtype: Any) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
