"""sd_notify against a fake NOTIFY_SOCKET, and the watchdog from the event loop's ticker."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from appliance.core.device import DeviceMachine
from appliance.ports import Pcm16
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import MonotonicClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.loop import ApplianceLoop
from appliance.runtime.router import AudioRouter
from appliance.runtime.systemd_notify import SystemdNotifier, Watchdog
from appliance.runtime.timers import Timers
from appliance.testing.systemd import FakeNotifySocket

FakeSystemd = FakeNotifySocket


@pytest.fixture
def fake_systemd() -> Iterator[FakeSystemd]:
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        fake = FakeSystemd(str(Path(tmp) / "notify"))
        yield fake
        fake.close()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_env({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert notifier.ready() is False and notifier.sent == 0


def test_messages_reach_a_path_socket(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": fake_systemd.address})
    assert notifier.ready("ready: listening for hey_jarvis")
    assert notifier.status("listening")
    assert notifier.reloading()
    assert notifier.stopping("stopping (signal_sigterm)")
    fake_systemd.wait_for("STOPPING=1")
    got = [m for _, m in fake_systemd.messages]
    assert got[0] == "READY=1\nSTATUS=ready: listening for hey_jarvis"
    assert got[1] == "STATUS=listening"
    assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=") and got[2].split("=")[-1].isdigit()
    assert got[3] == "STOPPING=1\nSTATUS=stopping (signal_sigterm)"
    notifier.close()


def test_abstract_socket_names() -> None:
    name = f"@appliance-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeSystemd(name)
    try:
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": name})
        assert notifier.ready()
        fake.wait_for("READY=1")
    finally:
        fake.close()


def test_watchdog_interval_is_half_of_watchdog_usec_and_honours_watchdog_pid() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert SystemdNotifier.from_env(env).watchdog_interval_s == 15.0
    mine = {**env, "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_env(mine).watchdog_interval_s == 15.0
    other = {**env, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier.from_env(other).watchdog_interval_s is None
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_watchdog_cadence_with_a_fake_clock(fake_systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": fake_systemd.address, "WATCHDOG_USEC": "1000000"})
    now = [100.0]
    interval = notifier.watchdog_interval_s
    assert interval == 0.5
    dog = Watchdog(notifier, interval, clock=lambda: now[0])
    pinged_at = []
    for _ in range(150):  # 3 s of ticks, 20 ms apart
        before = dog.pings
        dog.tick()
        if dog.pings > before:
            pinged_at.append(round(now[0] - 100.0, 2))
        now[0] += 0.02
    assert pinged_at == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


# ----------------------------------------------------------------- the loop's ticker


class SilentMicrophone:
    """A microphone that never delivers (an idle room is not needed: nothing to process)."""

    sample_rate_hz = 16000
    dropped_blocks = 0

    async def frames(self) -> AsyncIterator[Pcm16]:
        await asyncio.Event().wait()
        yield np.zeros(0, np.int16)

    async def close(self) -> None:
        return None


def idle_loop() -> ApplianceLoop:
    clock = MonotonicClock()
    return ApplianceLoop(
        machine=DeviceMachine(),
        microphone=SilentMicrophone(),
        router=cast(AudioRouter, object()),  # never reached: the microphone delivers nothing
        session_factory=lambda wake_word: cast(Any, None),
        chimes=cast(ChimePlayer, object()),
        events=EventLog(clock),
        clock=clock,
        timers=Timers(clock),
    )


def test_watchdog_pings_from_the_ticker_and_stops_while_the_event_loop_is_blocked(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": fake_systemd.address, "WATCHDOG_USEC": "200000"})
    interval = notifier.watchdog_interval_s
    assert interval == 0.1
    # The schedule is timed where it is made, not where the datagrams arrive (the fake socket's
    # receiver thread wakes with a loaded machine's jitter): `ticks` are the watchdog's clock
    # readings, one per tick of the loop's ticker; `pinged` the reading of each tick that sent
    # WATCHDOG=1, recorded by whichever thread sends it.
    ticks: list[float] = []
    pinged: list[float] = []

    def clock() -> float:
        ticks.append(time.monotonic())
        return ticks[-1]

    send = notifier.watchdog

    def watchdog() -> bool:
        pinged.append(ticks[-1])
        return send()

    monkeypatch.setattr(notifier, "watchdog", watchdog)
    dog = Watchdog(notifier, interval, clock=clock)
    blocked: list[float] = []

    def block() -> None:
        blocked.append(time.monotonic())
        time.sleep(0.6)  # a wedged event loop: a blocking call where none belongs
        blocked.append(time.monotonic())

    async def main() -> None:
        loop = idle_loop()
        loop.add_tick_hook(dog.tick)
        aio = asyncio.get_running_loop()
        aio.call_later(0.5, block)
        aio.call_later(1.6, loop.stop)
        await loop.run()

    asyncio.run(main())
    fake_systemd.wait_for("WATCHDOG=1", count=len(pinged))  # every ping reached the socket
    assert fake_systemd.count("WATCHDOG=1") == len(pinged) == dog.pings
    start, end = blocked
    during = [t for t in pinged if start < t < end]
    assert during == [], f"pinged while the loop was blocked: {[round(t - start, 3) for t in during]}"
    before = [t for t in pinged if t <= start]
    after = [t for t in pinged if t >= end]
    assert len(before) >= 3 and len(after) >= 3
    # every 100 ms on a fixed grid from the first ping: never ahead of it (exact: a ping per 20 ms
    # tick fails). Single gaps are not floored: a ping a late tick delayed is followed by one
    # sooner than 100 ms (back on the grid), and the ticker's 20 ms phase alone moves a gap by a tick.
    ahead = [k for k, t in enumerate(before) if t - before[0] < k * interval - 1e-6]
    assert ahead == [], (ahead, [round(t - before[0], 3) for t in before])
    gaps = sorted(b - a for a, b in itertools.pairwise(before))
    # and not much slower (a busy test machine delays ticks: bounds with room for its jitter,
    # still far from the 600 ms block)
    assert gaps[len(gaps) // 2] <= 0.2 and gaps[-1] < 0.45, gaps
    # the first tick after the block pings (it is overdue), and the ticker resumed at once
    assert after[0] == min(t for t in ticks if t >= end)
    assert after[0] - end < 0.3
