"""The double-talk detector on energies and explicit audio times (10 ms frames)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from appliance.core.doubletalk import (
    BandDoubleTalkConfig,
    BandDoubleTalkDetector,
    DoubleTalkConfig,
    DoubleTalkDetector,
    linear_residual_config,
)

F = 0.01
PLAY = 1e-2  # -20 dBFS of playback
ECHO = 0.25 * PLAY  # an echo path of gain 0.5 (-6 dB)


def db(x: float) -> float:
    return 10.0 ** (x / 10.0)


def run(
    frames: list[tuple[float, float]], det: DoubleTalkDetector | None = None, t0: float = 0.0
) -> list[int]:
    """(mic energy, playback energy) per frame → the indices of the frames judged double talk."""
    det = det or DoubleTalkDetector()
    return [i for i, (mic, ref) in enumerate(frames) if det.update(mic, ref, t0 + (i + 1) * F)]


def echo(n: int, gain_db: float = 0.0) -> list[tuple[float, float]]:
    return [(ECHO * db(gain_db), PLAY)] * n


@pytest.mark.parametrize(
    ("frames", "double_talk"),
    [
        # echo alone, steady or fluctuating within the margin: never double talk
        (echo(300), []),
        (echo(100) + [(ECHO * db(5.0), PLAY), (ECHO * db(-20.0), PLAY)] * 100, []),
        # after 1 s of echo, the microphone 10 dB above it: double talk at once; 4 dB: not
        (echo(100) + echo(3, 10.0) + echo(10), [100, 101, 102]),
        (echo(100) + echo(3, 4.0) + echo(10), []),
        # before 0.5 s of playback is learned (it teaches 0.5 s after it was heard): no decision
        (echo(60) + echo(3, 20.0), []),
        (echo(99) + echo(3, 20.0), [99, 100, 101]),
        # a long second talker: double talk until its own frames teach the level (0.5 s later)
        (echo(100) + echo(100, 10.0), list(range(100, 150))),
        # no playback at all: nothing to judge, nothing learned
        ([(ECHO, 0.0)] * 200, []),
    ],
)
def test_double_talk_decisions(frames: list[tuple[float, float]], double_talk: list[int]) -> None:
    assert run(frames) == double_talk


def test_the_reverberant_tail_is_not_double_talk_but_a_voice_in_the_pause_is() -> None:
    # playback stops after 1.5 s; a room tail decays 75 dB/s (RT60 0.8 s), faster than the
    # envelope (60 dB/s): never double talk
    tail = [(ECHO * db(-0.75 * (k + 1)), 0.0) for k in range(40)]
    assert run(echo(150) + tail) == []
    # a voice at the echo's own level 0.1 s into the pause: the envelope has fallen by then (its
    # first 0.1 s holds the loudest playback of the path's delay, then 0.6 dB per frame)
    voice = [(ECHO, 0.0)] * 30
    found = run(echo(150) + tail[:10] + voice)
    assert found and found[0] == 150 + 10 + 10  # 6 dB of envelope decay past the held 0.1 s


def test_the_learned_level_follows_the_echo_path_and_survives_a_pause() -> None:
    det = DoubleTalkDetector()
    run(echo(200, 6.0), det)  # an echo path of gain 1: microphone / playback about 0 dB
    assert det.learned_db == pytest.approx(0.0, abs=0.1)
    det.pause()  # the agent's turn ends
    assert det.learned_db == pytest.approx(0.0, abs=0.1)
    # the next turn: the learned level holds at once (no 0.5 s wait), 8 dB over the echo is not
    # double talk at gain 1 (2 dB over its level), 14 dB is
    assert run(echo(3, 14.0) + echo(3, 8.0), det, t0=5.0) == [0, 1, 2]
    assert det.during(5.0, 5.03) and det.during(5.02, 5.05)
    assert not det.during(5.03, 5.06)


def test_margin_is_configurable() -> None:
    strict = DoubleTalkDetector(DoubleTalkConfig(margin_db=12.0))
    assert run(echo(100) + echo(3, 10.0), strict) == []
    assert run(echo(100) + echo(3, 13.0)) == [100, 101, 102]


def test_a_held_frame_counts_for_hold_s_after_it() -> None:
    det = DoubleTalkDetector(DoubleTalkConfig(hold_s=0.1))
    assert run(echo(100) + echo(1, 10.0) + echo(20), det) == [100]  # the frame ending at 1.01 s
    assert det.during(1.0, 1.01) and det.during(1.01, 1.1) and det.during(1.1, 1.109)
    assert not det.during(1.11, 1.2)
    plain = DoubleTalkDetector()  # hold_s 0: only the frame itself
    run(echo(100) + echo(1, 10.0) + echo(20), plain)
    assert plain.during(1.0, 1.01) and not plain.during(1.01, 1.1)


def test_no_double_talk_in_the_first_settle_s_of_a_turn() -> None:
    det = DoubleTalkDetector(DoubleTalkConfig(settle_s=0.2))
    run(echo(100), det)
    det.pause()  # the next turn starts at 5 s: its first 0.2 s are never double talk
    assert run(echo(25, 10.0), det, t0=5.0) == [19, 20, 21, 22, 23, 24]
    det.pause()
    assert run(echo(5) + echo(20, 10.0), det, t0=9.0) == list(range(19, 25))
    # a silence in the playback (its envelope under the floor) starts the settling over
    quiet = [(0.0, 0.0)] * 80
    fresh = DoubleTalkDetector(DoubleTalkConfig(settle_s=0.2))
    assert run(echo(100) + quiet + echo(25, 10.0), fresh) == list(range(199, 205))
    # the first turn too, and without a pause in between the turn goes on
    first = DoubleTalkDetector(DoubleTalkConfig(settle_s=2.0))
    assert run(echo(100) + echo(3, 10.0), first) == []
    # (those 3 frames taught a level 10 dB higher: 25 dB over the echo is double talk still)
    assert run(echo(100) + echo(3, 25.0), first, t0=1.03) == [100, 101, 102]


def test_the_linear_residual_configuration() -> None:
    """Our own filter's residual against its echo estimate (`adapters/linear_echo.py`)."""
    cfg = linear_residual_config(10.0)
    assert cfg.margin_db == 10.0
    assert (cfg.hold_s, cfg.settle_s, cfg.forget_db_per_s, cfg.pause_floor, cfg.leak_hold_s) == (
        0.1,
        0.2,
        3.0,
        1e-5,
        0.5,
    )
    assert (cfg.max_explained, cfg.pause_max_explained) == (0.8, 0.3)
    det = DoubleTalkDetector(cfg)
    # the filter converging (the residual is the echo: 0 dB) for 0.5 s, then 15 dB under its
    # estimate; what the convergence taught is forgotten at 3 dB/s (the learning lags 0.5 s)
    est = 1e-2
    assert run([(est, est)] * 50 + [(est * db(-15.0), est)] * 450, det) == []
    assert det.learned_db == pytest.approx(-12.0, abs=1e-6)
    # a user 10 dB over that level is double talk
    assert run([(est * db(-1.5), est)] * 3 + [(est * db(-2.5), est)] * 3, det, t0=5.0) == [0, 1, 2]
    # an estimate under the playback floor (-50 dBFS) is neither judged nor learned from
    assert run([(1e-5, 0.9e-5)] * 3, det, t0=5.06) == []


@pytest.mark.parametrize("pause_floor", [1e-5, None])
def test_a_short_pause_in_the_playback_raises_the_linear_detectors_margin(pause_floor: float | None) -> None:
    """The sequence of the real-time self-interruption under stalls (small room, gain 1.0, the
    event loop stalled 0.1-0.4 s: the agent's next words came late): the filter converged (the
    residual 10 dB under its estimate at -18 dBFS), a 40 ms pause in the playback (the estimate
    at -52 dBFS, the residual equal to it: the microphone silent) while the envelope, falling
    60 dB/s from -18 dBFS, stays far over the -50 dBFS floor; the playback comes back and 40 ms
    later the residual reaches the estimate's level (+0.5 dB: 10.5 dB over the learned level)
    for 5 frames. `pause_floor` None: the envelope alone. (The linear residual's own setting
    asks the estimate instead of raising the margin: `pause_max_explained`, below.)"""
    cfg = dataclasses.replace(
        linear_residual_config(10.0), pause_floor=pause_floor, pause_max_explained=None, max_explained=None
    )
    det = DoubleTalkDetector(cfg)
    est = db(-18.0)
    assert run([(est * db(-10.0), est)] * 500, det) == []  # 5 s of speech, converged
    assert det.learned_db == pytest.approx(-10.0, abs=1e-6)
    pause = [(db(-52.0), db(-52.0))] * 4
    rise = [(e * db(-10.0), e) for e in (db(-33.0), db(-26.0), db(-22.0), est)]
    restart = [(est * db(0.5), est)] * 5
    marked = run(pause + rise + restart, det, t0=5.0)
    assert marked == ([] if pause_floor is not None else [8, 9, 10, 11, 12])
    # a user in those 0.2 s is double talk still, 10 dB louder than otherwise needed
    assert run([(est * db(10.5), est)] * 2, det, t0=5.13) == [0, 1]
    # 0.2 s after the pause (5.04 s) the margin is back to 10 dB
    assert run([(est * db(-10.0), est)] * 10, det, t0=5.15) == []
    assert run([(est * db(0.5), est)] * 3, det, t0=5.25) == [0, 1, 2]


@pytest.mark.parametrize(
    ("explained", "marked"),
    [
        (None, [0, 1, 2, 3, 4]),  # not measured: the energies alone decide
        ([0.05, 0.4, 0.66, 0.79, 0.3], [0, 1, 2, 3, 4]),  # a user's onset (measured 0.00-0.66)
        ([0.99, 1.0, 0.98, 0.99, 1.0], []),  # leakage: a linear copy of the estimate
        ([0.99, 0.99, 0.2, 0.3, 0.99], [2, 3]),  # a user starting within the leakage
    ],
)
def test_a_residual_the_estimate_explains_is_not_double_talk(
    explained: list[float] | None, marked: list[int]
) -> None:
    """Captured in real time (small room, gain 1.0, nobody talking) and replayed: the echo path
    moved by one sample against the filter (a new playback chunk), the residual rose to 11-22 dB
    over its learned level, 4 dB over its own estimate, for 7 frames, and the residual VAD read
    0.96: the agent interrupted itself. 0.98-1.00 of those frames' energy was a short filter on
    the estimate (`max_explained` 0.8)."""
    cfg = linear_residual_config(10.0)
    assert cfg.max_explained == 0.8
    det = DoubleTalkDetector(cfg)
    est = db(-25.0)
    assert run([(est * db(-20.0), est)] * 500, det) == []  # converged: the residual 20 dB under it
    frames = [(est * db(4.0), est)] * 5  # 24 dB over the learned level
    found = [
        i
        for i, (res, e) in enumerate(frames)
        if det.update(res, e, 5.0 + (i + 1) * F, None if explained is None else explained[i])
    ]
    assert found == marked


@pytest.mark.parametrize(
    ("explained", "marked"),
    [
        (0.73, []),  # the agent's next words, its echo placed a sample off: leakage
        (0.35, []),
        (0.13, [0]),  # a user starting just after the agent resumed (measured 0.03-0.13)
        (None, [0]),  # not measured: the energies alone
    ],
)
def test_after_a_pause_in_the_playback_a_frame_counts_only_if_the_estimate_hardly_explains_it(
    explained: float | None, marked: list[int]
) -> None:
    """Captured in real time (small room, gain 2.0, the model thread stalled) and replayed: the
    playback paused 90 ms (the estimate at -52 to -70 dBFS), the agent's next words came back, and
    30 ms later the residual rose 11.2 dB over the learned level, 0.73 explained by the estimate
    (under `max_explained` 0.8): the residual VAD read 0.89-0.96 and the agent interrupted itself.
    For `settle_s` after such a pause a frame counts only under `pause_max_explained` (0.3)."""
    det = DoubleTalkDetector(linear_residual_config(10.0))
    est = db(-20.0)
    assert run([(est * db(-16.0), est)] * 500, det) == []  # the learned level -16 dB
    pause = [(db(-63.0), db(-63.0))] * 9
    assert run(pause, det, t0=5.0) == []
    found = det.update(est * db(-16.0 + 11.2), est, 5.12, explained)
    assert ([0] if found else []) == marked


def test_the_explained_share_is_asked_only_for_frames_over_the_margin() -> None:
    """The router passes a callable (a least-squares fit per frame): the detector asks it only
    where it decides, a frame over the margin."""
    det = DoubleTalkDetector(linear_residual_config(10.0))
    asked: list[float] = []

    def share(t: float) -> Callable[[], float]:
        return lambda: asked.append(t) or 0.1

    est = db(-25.0)
    frames = [(est * db(-20.0), est)] * 500 + [(est * db(-5.0), est)] * 2 + [(est * db(-20.0), est)] * 2
    found = [i for i, (r, e) in enumerate(frames) if det.update(r, e, (i + 1) * F, share((i + 1) * F))]
    assert found == [500, 501] and asked == pytest.approx([5.01, 5.02])


def test_after_a_leak_the_margin_is_higher_while_the_filter_reconverges() -> None:
    """The echo path moved a sample under a converged filter (white noise through the router:
    `tests/runtime/test_echo_path.py`): 0.45 s of leakage 12-15 dB over the learned level, all
    explained, then a partly re-converged copy leaks 11-12 dB, 0.63-0.73 explained. For 0.5 s
    after the last explained leak the margin is 10 dB higher: not double talk; a user 21 dB
    over the level is."""
    det = DoubleTalkDetector(linear_residual_config(10.0))
    est = db(-25.0)
    assert run([(est * db(-20.0), est)] * 500, det) == []
    leak = [(est * db(-20.0 + 14.0), est)] * 45
    assert [i for i, (r, e) in enumerate(leak) if det.update(r, e, 5.0 + (i + 1) * F, 0.99)] == []
    partly = [(est * db(-20.0 + 12.0), est)] * 3
    assert [i for i, (r, e) in enumerate(partly) if det.update(r, e, 5.45 + (i + 1) * F, 0.7)] == []
    assert det.update(est * db(-20.0 + 21.0), est, 5.5, 0.3)
    # the leak has taught its level by now; 15 dB over it is double talk once 0.5 s have passed
    # since the last leaking frame (5.45 s)
    assert not det.update(est * db(-20.0), est, 5.92, 0.3)  # the echo alone again
    assert det.learned_db == pytest.approx(-6.0, abs=0.1)  # the leak's level, learned by now
    user = est * db(det.learned_db + 15.0)
    assert not det.update(user, est, 5.94, 0.3)
    assert det.update(user, est, 5.96, 0.3)


# --- the band detector: 4 bands here (the router feeds 16), explicit energies per band -------


BAND_PLAY = [1e-3, 1e-3, 1e-4, 1e-5]
BAND_ECHO = [0.25 * p for p in BAND_PLAY]


def bands(n: int, lift_db: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> list[tuple[list[float], list[float]]]:
    """`n` frames of echo alone, each band's microphone lifted by `lift_db` (a second talker)."""
    mic = [e * db(g) for e, g in zip(BAND_ECHO, lift_db, strict=True)]
    return [(mic, BAND_PLAY)] * n


def run_bands(
    frames: list[tuple[list[float], list[float]]],
    det: BandDoubleTalkDetector | None = None,
    t0: float = 0.0,
) -> list[int]:
    """The number of marked bands per frame."""
    det = det or BandDoubleTalkDetector(BandDoubleTalkConfig(min_bands=2))
    return [det.update(mic, ref, t0 + (i + 1) * F) for i, (mic, ref) in enumerate(frames)]


@pytest.mark.parametrize(
    ("frames", "marked"),
    [
        # echo alone: no band marked
        (bands(200), [0] * 200),
        # after 1 s of echo, two bands 12 dB up (a voice in those bands), one 8 dB (not enough)
        (bands(100) + bands(3, (12.0, 12.0, 8.0, 0.0)), [0] * 100 + [2] * 3),
        # before 0.5 s of playback is learned: no decision, even 20 dB up in every band
        (bands(60) + bands(3, (20.0,) * 4), [0] * 63),
        (bands(99) + bands(3, (20.0,) * 4), [0] * 99 + [4] * 3),
    ],
)
def test_band_decisions(frames: list[tuple[list[float], list[float]]], marked: list[int]) -> None:
    assert run_bands(frames) == marked


def test_a_band_without_playback_is_neither_learned_nor_judged() -> None:
    silent_top = [1e-3, 1e-3, 1e-4, 0.0]
    det = BandDoubleTalkDetector(BandDoubleTalkConfig(min_bands=1))
    frames = [([0.25 * p for p in silent_top[:3]] + [1e-6], silent_top)] * 100
    loud_top = [([0.25 * p for p in silent_top[:3]] + [1e-2], silent_top)] * 3
    assert run_bands(frames + loud_top, det) == [0] * 103
    assert det.learned_db[3] is None and det.learned_db[0] == pytest.approx(-6.02, abs=0.01)


def test_band_during_counts_frames_with_at_least_min_bands() -> None:
    det = BandDoubleTalkDetector(BandDoubleTalkConfig(min_bands=3))
    assert det.config.hold_s == 0.1
    run_bands(bands(100) + bands(2, (12.0, 12.0, 0.0, 0.0)) + bands(2, (12.0, 12.0, 12.0, 0.0)), det)
    assert not det.during(1.0, 1.02)  # two bands marked: not double talk at min_bands 3
    assert det.during(1.02, 1.04) and det.during(1.03, 1.04)
    # a double-talk frame counts for `hold_s` (0.1 s) after it: the frame ending at 1.04 s
    assert det.during(1.04, 1.1) and det.during(1.1, 1.139)
    assert not det.during(1.14, 1.2)
    det.pause()  # the turn ends: decisions forgotten, learned levels kept
    assert not det.during(1.0, 1.04)
    assert run_bands(bands(2, (12.0, 12.0, 12.0, 0.0)), det, t0=5.0) == [3, 3]


def test_band_counts_must_match() -> None:
    with pytest.raises(ValueError, match="4 microphone bands but 3 playback bands"):
        BandDoubleTalkDetector().update([1.0] * 4, [1.0] * 3, 0.01)
