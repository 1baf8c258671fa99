"""The watchdog's decision: is the device loop making progress? (pure, explicit times)"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance.core.progress import ProgressLimits, ProgressMonitor

LIMITS = ProgressLimits(event_s=5.0, block_s=5.0, session_s=60.0, stop_s=10.0)
Step = Callable[[ProgressMonitor], None]


def _session_then_end(m: ProgressMonitor) -> None:
    m.session_started(1, 0.0)
    m.session_ended(1, 30.0)


def _two_sessions_old_one_stuck(m: ProgressMonitor) -> None:
    m.session_started(1, 0.0)  # never ends (abandoned by nobody)
    m.session_started(2, 50.0)
    m.session_ended(2, 55.0)


def _events_flow(m: ProgressMonitor) -> None:
    for t in range(0, 100, 2):
        m.event_posted(float(t))
        m.event_taken(float(t) + 0.001)


def _events_pile_up(m: ProgressMonitor) -> None:
    m.event_posted(0.0)
    m.event_posted(1.0)
    m.event_taken(2.0)  # one of two taken at 2 s, then nothing


@pytest.mark.parametrize(
    ("name", "steps", "now", "problem"),
    [
        ("idle for hours: nothing was started", [], 36000.0, None),
        ("events handled as they come", [_events_flow], 200.0, None),
        ("an event waits, within the bound", [lambda m: m.event_posted(0.0)], 4.0, None),
        ("an event never handled", [lambda m: m.event_posted(0.0)], 6.0, "1 event(s) not handled for 6 s"),
        ("events pile up behind a stuck consumer", [_events_pile_up], 8.0, "1 event(s) not handled for 6 s"),
        ("a block in processing, within the bound", [lambda m: m.block_started(0.0)], 4.0, None),
        (
            "one block never finishes",
            [lambda m: m.block_started(0.0)],
            7.0,
            "one microphone block in processing for 7 s",
        ),
        ("blocks finish", [lambda m: m.block_started(0.0), lambda m: m.block_done(0.01)], 100.0, None),
        ("a conversation within its bound", [lambda m: m.session_started(1, 0.0)], 59.0, None),
        (
            "a conversation past its bound",
            [lambda m: m.session_started(1, 0.0)],
            61.0,
            "a conversation running for 61 s (bound 60 s)",
        ),
        ("a conversation that ended", [_session_then_end], 1000.0, None),
        (
            "an old conversation never ended, a newer one did",
            [_two_sessions_old_one_stuck],
            70.0,
            "a conversation running for 70 s (bound 60 s)",
        ),
        ("a stop in progress", [lambda m: m.stop_requested(0.0)], 9.0, None),
        ("a stop that never completes", [lambda m: m.stop_requested(0.0)], 11.0, "a stop requested 11 s ago"),
        (
            "a vital task died",
            [lambda m: m.task_died("the event consumer")],
            0.0,
            "the event consumer stopped",
        ),
    ],
)
def test_progress(name: str, steps: list[Step], now: float, problem: str | None) -> None:
    monitor = ProgressMonitor(LIMITS)
    for step in steps:
        step(monitor)
    found = monitor.problem(now)
    if problem is None:
        assert found is None, name
    else:
        assert found is not None and found.startswith(problem), (name, found)


def test_a_second_stop_request_keeps_the_first_time() -> None:
    monitor = ProgressMonitor(LIMITS)
    monitor.stop_requested(0.0)
    monitor.stop_requested(9.0)
    assert monitor.problem(10.5) is not None
