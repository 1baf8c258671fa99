"""When did a microphone block end? The appliance clock time of each block, from its arrival.

The echo canceller's reference (what the speaker played, by clock time) must line up with the
microphone's samples: a block that arrives 0.3 s late did not end 0.3 s late. A block's arrival
is its end plus whatever held it up (the device's period, the event loop, a busy model thread,
a loaded CPU): never earlier than its end. So the clock of the samples is the arrival minus the
sample count at its smallest: `offset = min(arrival - samples / rate)` over the last `window_s`
of audio, and a block ends at `offset + samples / rate`.

A stall (the process starved of CPU, the model thread busy) delays the blocks behind it, which
then arrive in a burst: the blocks on time before it keep the offset, and the timeline does not
move. Blocks the reader did not wait for (already queued: a backlog) are no candidates at all,
and the offset moves later only when a quarter of the window's blocks were waited for: a
backlog that lasts longer than the window (a loaded Pi behind by 0.5 s for seconds) does not
move the timeline either. Re-reading the clock
from a late block instead (what this replaces: "re-read when the two disagree by more than
0.2 s") moved the reference against the microphone by the stall and left
up to 0.2 s of it behind for good; the canceller then let its own voice through, and the agent
interrupted itself (benchmarks/README.md, `agent.echo.appliance`, living room under load). Only
a shift that lasts longer than `window_s` in the blocks the reader waited for (samples lost: the
input queue overflowed, the device restarted) moves the offset later, and only when it is
more than `jump_s` (samples are lost in whole device periods or blocks): the timeline follows it
then, counted in `jumps`. The least lateness of 2 s of blocks wanders by a few ms with the load;
following it (as this did before) moved the reference 0.3-2.5 ms (5-40 samples) at a time
against a continuous microphone, and our linear echo filter, misaligned by that, let the agent's
echo through as a user (captured in real time and replayed: benchmarks/README.md, `agent.echo`).

Pure: block sizes and arrival times in, block end times out.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

BACKLOG_S = 0.005
"""A block that arrives within this of the last one being done was already queued (a backlog):
its arrival is no measure of its end (`MicClock.block_end`'s `waited`, see `waited_for`)."""


def waited_for(arrived: float | None, last_done: float | None) -> bool:
    """Was the reader waiting for a block that arrived at `arrived`, the last one being done at
    `last_done` (clock times; None: unknown, or no block yet)? False: it was queued behind a
    backlog."""
    return arrived is None or last_done is None or arrived - last_done > BACKLOG_S


@dataclass
class MicClock:
    rate_hz: int
    window_s: float = 2.0
    """The offset is the smallest of the blocks in this much audio: a stall and the burst
    that catches up after it must fit in it (a 0.5 s stall, blocks processed in 40 ms of every
    80: 1 s); a lasting shift is followed this much later."""
    jump_s: float = 0.02
    """A move of the offset by more than this counts in `jumps` (the reference moved against
    the microphone: an adaptive echo filter restarts); a later offset by less is held."""
    samples: int = 0
    """Samples counted so far (the end of the last block)."""
    offset: float | None = None
    """The clock time of sample 0 (None: no block yet)."""
    jumps: int = 0
    min_waited: float = 0.25
    """The offset moves up (later) only when the blocks waited for fill this share of the
    window: after lost samples the reader keeps up again; a backlog's blocks were queued."""
    _waited: deque[int] = field(default_factory=deque)
    _candidates: deque[tuple[int, float]] = field(default_factory=deque)
    """(samples at a block's end, its arrival minus the samples' duration), offsets rising: the
    smallest in the window is first (a monotonic queue, at most one entry per block in it)."""

    def block_end(self, n_samples: int, arrived: float, waited: bool = True) -> float:
        """A block of `n_samples` arrived at clock time `arrived`: when it ended. `waited`: the
        reader was waiting for it (False: it was already queued when the reader asked, behind a
        backlog: its arrival says nothing of when it ended, and it is no candidate)."""
        self.samples += n_samples
        candidate = arrived - self.samples / self.rate_hz
        if waited or self.offset is None:
            while self._candidates and self._candidates[-1][1] >= candidate:
                self._candidates.pop()
            self._candidates.append((self.samples, candidate))
            self._waited.append(self.samples)
        oldest = self.samples - round(self.window_s * self.rate_hz)
        while self._candidates and self._candidates[0][0] <= oldest:
            self._candidates.popleft()
        while self._waited and self._waited[0] <= oldest:
            self._waited.popleft()
        # every candidate bounds the offset from above: down at once; up (samples lost) only
        # on the evidence of enough blocks waited for in the window, and only by more than
        # `jump_s`: the least lateness of 2 s of blocks wanders by a few ms with the load
        least = self._candidates[0][1] if self._candidates else math.inf
        enough = len(self._waited) * n_samples >= self.min_waited * self.window_s * self.rate_hz
        lasting = (
            enough
            and least < math.inf
            and self.offset is not None
            and least - self.offset > self.jump_s + 1e-9
        )
        offset = least if self.offset is None or least < self.offset or lasting else self.offset
        if self.offset is not None and abs(offset - self.offset) > self.jump_s + 1e-9:
            self.jumps += 1
        self.offset = offset
        return offset + self.samples / self.rate_hz
