"""The jitter buffer and the reconnect backoff: explicit `now`, no clock, no sleeps."""

from __future__ import annotations

import pytest

from appliance.core.playout import Backoff, JitterBuffer


def test_a_chunk_longer_than_the_target_is_never_held() -> None:
    jb: JitterBuffer[str] = JitterBuffer(target_s=0.06, max_wait_s=0.06)
    assert jb.push("a", 0.1, now=0.0) == ["a"]
    assert jb.push("b", 0.02, now=0.01) == ["b"]  # flowing: straight through
    assert jb.bursts == 1


def test_small_chunks_are_held_until_the_target_is_buffered() -> None:
    jb: JitterBuffer[str] = JitterBuffer(target_s=0.06, max_wait_s=0.5)
    assert jb.push("a", 0.02, now=0.0) == []
    assert jb.push("b", 0.02, now=0.01) == []
    assert jb.held == 2 and jb.deadline == 0.5
    assert jb.push("c", 0.02, now=0.02) == ["a", "b", "c"]
    assert jb.flowing


def test_held_chunks_are_released_at_the_deadline() -> None:
    jb: JitterBuffer[str] = JitterBuffer(target_s=1.0, max_wait_s=0.06)
    assert jb.push("a", 0.02, now=1.0) == []
    assert jb.due(now=1.05) == []
    assert jb.due(now=1.06) == ["a"]
    assert jb.deadline is None


def test_an_underrun_starts_a_new_burst() -> None:
    jb: JitterBuffer[str] = JitterBuffer(target_s=0.06, max_wait_s=0.5)
    assert jb.push("a", 0.1, now=0.0) == ["a"]
    jb.underrun()  # the speaker ran dry mid-response
    assert jb.push("b", 0.02, now=0.3) == []  # re-buffering
    assert jb.push("c", 0.05, now=0.31) == ["b", "c"]
    assert jb.bursts == 2


def test_clear_drops_what_is_held() -> None:
    jb: JitterBuffer[str] = JitterBuffer(target_s=1.0, max_wait_s=1.0)
    jb.push("a", 0.1, now=0.0)
    jb.push("b", 0.1, now=0.0)
    assert jb.clear() == 2
    assert jb.held == 0 and jb.deadline is None and not jb.flowing


def test_backoff_is_exponential_capped_and_jittered() -> None:
    b = Backoff(base_s=0.5, factor=2.0, max_s=4.0, jitter=0.5)
    assert [b.delay(n, lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [b.delay(n, lambda: 0.0) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert b.delay(2, lambda: 0.5) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        b.delay(0, lambda: 0.0)
