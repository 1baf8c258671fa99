"""The double-talk detector on energies and explicit audio times (10 ms frames)."""

from __future__ import annotations

import pytest

from appliance.core.doubletalk import DoubleTalkConfig, DoubleTalkDetector

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
