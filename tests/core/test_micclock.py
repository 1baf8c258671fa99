"""The microphone's timeline from block arrivals (`core.micclock`): explicit times."""

from __future__ import annotations

import pytest

from appliance.core.micclock import MicClock, waited_for

RATE = 16000
BLOCK = 1280  # 80 ms


def _ends(arrivals: list[float], window_s: float = 2.0) -> tuple[list[float], MicClock]:
    clock = MicClock(RATE, window_s=window_s)
    return [clock.block_end(BLOCK, t) for t in arrivals], clock


def test_jitter_never_moves_the_timeline() -> None:
    """Blocks late by a varying few ms: each ends exactly one block after the last, at the
    earliest arrival's time."""
    late = [0.0, 0.012, 0.003, 0.019, 0.001, 0.015, 0.0, 0.008]
    ends, clock = _ends([0.08 * (k + 1) + d for k, d in enumerate(late)])
    assert ends == pytest.approx([0.08 * (k + 1) for k in range(len(late))], abs=1e-9)
    assert clock.jumps == 0


def test_the_least_lateness_wandering_with_the_load_does_not_move_the_timeline() -> None:
    """Captured in real time (living room, load 9, `agent.echo.stalls`): every block late by a
    few ms; once the one on time by 1 ms has left the 2 s window the least lateness is 3.5 ms.
    Following it moved the reference 2.5 ms (40 samples) against a continuous microphone; the
    linear echo filter then let the echo through. The timeline holds (a lost block is 80 ms)."""
    late = [0.001] + [0.0035 + 0.004 * (k % 3) for k in range(1, 60)]
    ends, clock = _ends([0.08 * (k + 1) + d for k, d in enumerate(late)])
    assert ends == pytest.approx([0.08 * (k + 1) + 0.001 for k in range(60)], abs=1e-9)
    assert clock.jumps == 0


@pytest.mark.parametrize("stall_s", [0.19, 0.21, 0.3, 0.5, 0.9, 1.0])
def test_a_stall_and_its_burst_keep_the_timeline(stall_s: float) -> None:
    """The sequence that made the real-time appliance interrupt itself under load: blocks on
    time, then the process stalls `stall_s`; the blocks held up arrive in a burst (30 ms apart:
    the model thread catches up), then on time again. Every block still ends where its samples
    say. (The rule this replaces re-read the clock from the first late block when it was more
    than 0.2 s late: the reference moved by the stall against the microphone, and by up to
    0.2 s for good.)"""
    true_ends = [0.08 * (k + 1) for k in range(40)]
    arrivals = []
    resume = true_ends[9] + stall_s  # block 9 and those after it wait for the stall's end
    for k, end in enumerate(true_ends):
        arrivals.append(end if k < 9 else max(end, resume + 0.03 * (k - 9)))
    ends, clock = _ends(arrivals)
    assert ends == pytest.approx(true_ends, abs=1e-9)
    assert clock.jumps == 0


def test_a_lasting_shift_is_followed_after_the_window() -> None:
    """Samples lost (the input queue overflowed: 0.32 s dropped): every block from then on
    arrives 0.32 s after its sample count. The timeline follows once the blocks from before the
    loss have left the 2 s window, in one jump."""
    arrivals = [0.08 * (k + 1) for k in range(10)] + [0.08 * (k + 1) + 0.32 for k in range(10, 60)]
    ends, clock = _ends(arrivals)
    assert ends[:34] == pytest.approx([0.08 * (k + 1) for k in range(34)], abs=1e-9)
    assert ends[34:] == pytest.approx(arrivals[34:], abs=1e-9)
    assert clock.jumps == 1


def test_a_late_first_block_is_corrected_by_the_next_on_time() -> None:
    """The first block waited 0.15 s (the model thread was warming up): the next block on time
    sets the timeline back, counted as a jump."""
    ends, clock = _ends([0.08 + 0.15, 0.16, 0.24])
    assert ends == pytest.approx([0.23, 0.16, 0.24], abs=1e-9)
    assert clock.jumps == 1


def test_the_remembered_arrivals_stay_bounded() -> None:
    """Arrivals ever later (a slow clock drift): one candidate per block in the window at most."""
    clock = MicClock(RATE, window_s=2.0)
    for k in range(1000):
        clock.block_end(BLOCK, 0.08 * (k + 1) * 1.001)
        assert len(clock._candidates) <= 25


def test_a_backlog_longer_than_the_window_does_not_move_the_timeline() -> None:
    """A loaded reader falls 0.5 s behind and stays there for 4 s (each block already queued
    when it asks: not waited for), then catches up: every block still ends where its samples
    say. Taken as candidates, those arrivals would move the timeline 0.5 s late after 2 s."""
    true_ends = [0.08 * (k + 1) for k in range(80)]
    clock = MicClock(RATE, window_s=2.0)
    ends = []
    for k, end in enumerate(true_ends):
        behind = 10 <= k < 60
        ends.append(clock.block_end(BLOCK, end + (0.5 if behind else 0.0), waited=not behind))
    assert ends == pytest.approx(true_ends, abs=1e-9)
    assert clock.jumps == 0


def test_a_late_block_waited_for_alone_in_a_backlog_does_not_move_the_timeline() -> None:
    """The reader was starved while waiting (a late block it had waited for), then stays behind
    for 3 s (queued blocks), once more: those 2 late blocks alone are too little evidence of lost
    samples to move the timeline later."""
    true_ends = [0.08 * (k + 1) for k in range(80)]
    clock = MicClock(RATE, window_s=2.0)
    ends = []
    for k, end in enumerate(true_ends):
        behind = 10 <= k < 50
        waited = not behind or k in (10, 30)
        ends.append(clock.block_end(BLOCK, end + (0.4 if behind else 0.0), waited=waited))
    assert ends == pytest.approx(true_ends, abs=1e-9)
    assert clock.jumps == 0


@pytest.mark.parametrize(
    ("arrived", "last_done", "waited"),
    [
        (1.000, None, True),  # the first block
        (None, 0.9, True),  # no clock: nothing to judge by
        (1.000, 0.920, True),  # the reader waited 80 ms for it
        (1.000, 0.996, False),  # there 4 ms after the last was done: queued behind a backlog
        (1.000, 0.9999, False),
        (1.000, 0.994, True),
    ],
)
def test_a_block_there_at_once_after_the_last_was_queued(
    arrived: float | None, last_done: float | None, waited: bool
) -> None:
    assert waited_for(arrived, last_done) is waited
