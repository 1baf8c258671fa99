"""The soak's bookkeeping (benchmarks/soak.py) without running the appliance: the schedule is
seeded and covers the audio asked for, and a session that does not come back to idle in time is
counted as stuck."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import soak  # noqa: E402

CLIPS = {
    key: np.zeros(16000, dtype=np.int16)  # 1 s per phrase: enough for the bookkeeping
    for key in [
        *soak.WAKE_PHRASES,
        *((q, 1.0) for q in soak.QUESTIONS),
        (soak.STORY_REQUEST, 1.0),
        (soak.STOP, 1.0),
        *((c, 1.0) for c in soak.CHATTER),
        ("<example wake word>", 1.0),
    ]
}


def episodes(audio_s: float = 3600.0, seed: int = 9) -> list[soak.Episode]:
    return soak.schedule(soak.SoakSettings(audio_s=audio_s, seed=seed), CLIPS)


def test_the_schedule_is_seeded_and_covers_the_audio() -> None:
    eps = episodes()
    assert [(e.kind, e.parts) for e in eps] == [(e.kind, e.parts) for e in episodes()]
    assert [(e.kind, e.parts) for e in eps] != [(e.kind, e.parts) for e in episodes(seed=10)]
    end = eps[-1].start_s + eps[-1].length_s(CLIPS)
    assert 3600.0 <= end < 3600.0 + 400.0
    assert {e.kind for e in eps} == {k for k, _ in soak.EPISODE_MIX}
    for e in eps:
        rendered = sum(piece.size for piece in soak.render(e, CLIPS, 1))
        assert abs(rendered / 16000 - e.length_s(CLIPS)) < 0.01


def result(sessions: list[list[float | None]], *, realtime: bool = False) -> soak.SoakResult:
    eps = episodes(audio_s=600.0)
    stats = soak.EventStats(sessions=sessions, stopped_reason="input_ended")
    settings = soak.SoakSettings(audio_s=600.0, realtime=realtime)
    end = eps[-1].start_s + eps[-1].length_s(CLIPS)
    return soak.SoakResult(settings, eps, stats, [], 60.0, end, 0, None, soak.SoakLlm(settings), "")


def test_sessions_that_end_before_the_next_episode_are_not_stuck() -> None:
    eps = [e for e in episodes(audio_s=600.0) if e.wake]
    sessions: list[list[float | None]] = [[e.start_s + 3.0, e.start_s + 25.0] for e in eps]
    audit = soak.audit_sessions(result(sessions))
    assert (audit.stuck, audit.missed_wakes, audit.false_wakes) == (0, 0, 0)
    assert abs(audit.longest_s - 22.0) < 1e-6


def test_a_session_that_outlives_its_episode_or_never_ends_is_stuck() -> None:
    all_eps = episodes(audio_s=600.0)
    woken = [i for i, e in enumerate(all_eps) if e.wake and i + 1 < len(all_eps)]
    first, second = woken[0], woken[1]
    late_end = all_eps[first + 1].start_s + 5.0  # still open when the next episode began
    sessions: list[list[float | None]] = [
        [all_eps[first].start_s + 3.0, late_end],
        [all_eps[second].start_s + 3.0, None],
    ]
    audit = soak.audit_sessions(result(sessions))
    assert audit.stuck == 2
    # in real time the agent's speech runs on the same clock: only the absolute bound applies
    assert soak.audit_sessions(result(sessions, realtime=True)).stuck == 1
    long = [[all_eps[first].start_s + 3.0, all_eps[first].start_s + 3.0 + soak.SESSION_BOUND_S + 1]]
    assert soak.audit_sessions(result(long, realtime=True)).stuck == 1


def test_rss_slope_needs_a_long_enough_run_after_the_warm_up() -> None:
    rising = [soak.Sample(i, i * 60.0, 500.0 + i * 0.1, 10, 10) for i in range(600)]  # 10 h, +6 MiB/h
    slope = soak.rss_slope(rising, warmup_s=3600.0)
    assert slope is not None and abs(slope - 6.0) < 1e-6
    assert soak.rss_slope(rising[:14], warmup_s=0.0) is None  # 13 min: no slope


def test_the_table_says_fail_for_a_stuck_session_and_a_wedge() -> None:
    all_eps = episodes(audio_s=600.0)
    first = next(i for i, e in enumerate(all_eps) if e.wake)
    ok = result([[all_eps[first].start_s + 3.0, all_eps[first].start_s + 20.0]])
    ok.samples = [soak.Sample(i, i * 10.0, 500.0, 12, 11) for i in range(60)]
    rows = {row["metric"]: row for row in soak.table(ok)}
    assert rows["stuck sessions"]["verdict"] == "PASS" and rows["sessions"]["value"] == 1
    assert rows["stopped (reason, exit code)"]["verdict"] == "PASS"
    assert rows["open fds start / after warm-up / end"]["value"] == "11 / 11 / 11"
    stuck = result([[all_eps[first].start_s + 3.0, None]])
    stuck.wedged_at_s = 120.0
    rows = {row["metric"]: row for row in soak.table(stuck)}
    assert rows["stuck sessions"]["value"] == 1 and rows["stuck sessions"]["verdict"] == "FAIL"
    assert rows["wedged at audio (s)"]["verdict"] == "FAIL"
