"""The device loop with fake sessions: nothing wedges, and every stop completes in time.

A session that cannot be created, started or run ends with an `error` event, the error chime
and a return to listening; a session that ignores `end()` is stopped, one that ignores `stop()`
is abandoned; the loop's own stop returns within its bound whatever the session does; and the
watchdog stops pinging when the loop is alive but makes no progress."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import yaml

from appliance.config import load_config_text
from appliance.core.device import Chime, DeviceConfig, DeviceMachine, WakeWordDetected
from appliance.core.endpointing import UtteranceEnded
from appliance.core.progress import ProgressLimits
from appliance.core.variables import MissingVariableError
from appliance.errors import AgentError
from appliance.logs import register_secret
from appliance.ports import AgentSession, Pcm16
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import MonotonicClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.loop import ApplianceLoop, LoopLimits
from appliance.runtime.router import AudioRouter
from appliance.runtime.timers import Timers
from appliance.testing.systemd import FakeNotifySocket

LIMITS = LoopLimits(start_s=0.3, end_grace_s=0.3, stop_s=0.2, shutdown_s=1.0, cleanup_s=0.2, drain_s=0.5)
SECRET = "sk-loop-test-0123456789abcdef"


# ----------------------------------------------------------------- fakes


class FakeRouter:
    def __init__(self) -> None:
        self.listening: list[bool] = []

    async def process(self, block: Pcm16) -> None:
        return None

    def set_listening(self, on: bool) -> None:
        self.listening.append(on)

    def reset_wake_word(self) -> None:
        return None


class FakeChimes:
    def __init__(self) -> None:
        self.played: list[Chime] = []

    async def play(self, chime: Chime) -> None:
        self.played.append(chime)


class Microphone:
    """Delivers nothing until `end` is set, then ends (the end of a headless input)."""

    sample_rate_hz = 16000
    dropped_blocks = 0

    def __init__(self) -> None:
        self.end = asyncio.Event()

    async def frames(self) -> AsyncIterator[Pcm16]:
        await self.end.wait()
        for _ in range(0):
            yield np.zeros(320, np.int16)

    async def close(self) -> None:
        return None


@dataclass
class Session:
    """A scripted agent session. `start`: ok | hang | raise. `on_end` / `on_stop`: close | ignore."""

    start_mode: str = "ok"
    on_end: str = "close"
    on_stop: str = "close"
    closed_raises: bool = False
    busy: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    _closed: asyncio.Future[str] | None = None

    def _future(self) -> asyncio.Future[str]:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    async def start(self) -> None:
        self.calls.append(("start", ""))
        if self.start_mode == "hang":
            await asyncio.Event().wait()
        if self.start_mode == "raise":
            raise AgentError(
                f"cannot reach the agent (key {SECRET})", code="remote_unreachable", retryable=True
            )
        self._future()

    def push_audio(self, frame: Pcm16) -> None:
        return None

    async def speech_started(self, t: float) -> None:
        return None

    async def utterance(self, utterance: UtteranceEnded) -> None:
        return None

    async def end(self, reason: str) -> None:
        self.calls.append(("end", reason))
        if self.on_end == "close" and not self._future().done():
            self._future().set_result(reason)

    async def stop(self, reason: str) -> None:
        self.calls.append(("stop", reason))
        if self.on_stop == "close" and not self._future().done():
            self._future().set_result(reason)

    async def closed(self) -> str:
        if self.closed_raises:
            await asyncio.sleep(0.01)
            raise RuntimeError(f"the agent crashed ({SECRET})")
        return await asyncio.shield(self._future())


class Factory:
    """The first session comes from `first` (a callable that may raise), later ones are good."""

    def __init__(self, first: Callable[[], AgentSession]) -> None:
        self.first: Callable[[], AgentSession] | None = first
        self.made: list[Session] = []

    def __call__(self, wake_word: str) -> AgentSession:
        first, self.first = self.first, None
        if first is not None:
            return first()
        session = Session()
        self.made.append(session)
        return cast(AgentSession, session)


@dataclass
class Rig:
    loop: ApplianceLoop
    events: EventLog
    chimes: FakeChimes
    mic: Microphone

    def types(self) -> list[str]:
        return [e["type"] for e in self.events.history]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events.history if e["type"] == kind]


def rig(
    factory: Callable[[str], AgentSession],
    *,
    limits: LoopLimits = LIMITS,
    no_speech_s: float = 60.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> Rig:
    clock = MonotonicClock()
    events = EventLog(clock)
    events.keep_history = True
    chimes, mic = FakeChimes(), Microphone()
    loop = ApplianceLoop(
        machine=DeviceMachine(DeviceConfig(no_speech_timeout_s=no_speech_s)),
        microphone=mic,
        router=cast(AudioRouter, FakeRouter()),
        session_factory=factory,
        chimes=cast(ChimePlayer, chimes),
        events=events,
        clock=clock,
        timers=Timers(clock),
        limits=limits,
        monotonic=monotonic,
    )
    return Rig(loop, events, chimes, mic)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def wake() -> WakeWordDetected:
    return WakeWordDetected("hey_jarvis", 0.9)


# ----------------------------------------------------------------- a session that cannot start or run


def _raise_missing_variable() -> AgentSession:
    raise MissingVariableError("customer_name", "the system prompt")


def _raise_bug() -> AgentSession:
    raise RuntimeError(f"template engine exploded near {SECRET}")


FAILURES = [
    (
        "the factory raises (an undefined {{var}})",
        _raise_missing_variable,
        "missing_dynamic_variable",
        "customer_name",
    ),
    ("the factory raises (a bug)", _raise_bug, "session_start_failed", "RuntimeError"),
    (
        "start() raises",
        lambda: cast(AgentSession, Session(start_mode="raise")),
        "remote_unreachable",
        "cannot reach",
    ),
    (
        "start() hangs",
        lambda: cast(AgentSession, Session(start_mode="hang")),
        "session_start_timeout",
        "0.3 s",
    ),
    ("closed() raises", lambda: cast(AgentSession, Session(closed_raises=True)), "agent_failed", "crashed"),
]


@pytest.mark.parametrize(("name", "first", "code", "says"), FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failed_session_is_an_error_and_the_device_listens_again(
    name: str, first: Callable[[], AgentSession], code: str, says: str
) -> None:
    register_secret(SECRET)
    factory = Factory(first)
    r = rig(factory)

    async def main() -> None:
        running = asyncio.create_task(r.loop.run())
        r.loop.post(wake())
        await until(lambda: "session_ended" in r.types(), "the failed session to end")
        await until(lambda: r.loop.session is None, "the session to be gone")
        # the next wake word starts a conversation as usual
        r.loop.post(wake())
        await until(
            lambda: bool(factory.made) and ("start", "") in factory.made[0].calls, "the second session"
        )
        assert r.loop.session is not None
        r.loop.stop("test_over")
        await asyncio.wait_for(running, 5)

    asyncio.run(main())
    errors = r.of("error")
    assert len(errors) == 1, errors
    assert errors[0]["code"] == code and errors[0]["stage"] == "agent"
    assert says in errors[0]["message"]
    assert SECRET not in str(r.events.history)
    ended = r.of("session_ended")
    assert ended[0]["reason"] == "error" and ended[1]["reason"] == "test_over"
    assert r.chimes.played[:2] == [Chime.WAKE, Chime.ERROR]
    assert r.types().count("session_started") == 2
    assert r.types()[-1] == "appliance_stopped"


# ----------------------------------------------------------------- every stop completes in time

STOPS = [
    # (name, session, how the stop comes, the calls the session sees)
    ("stop: a session that stops", Session(), "stop", [("stop", "signal_sigterm")]),
    (
        "stop: a session that ignores stop",
        Session(on_end="ignore", on_stop="ignore"),
        "stop",
        [("stop", "signal_sigterm")],
    ),
    ("input end: a session that finishes", Session(), "input", [("end", "input_ended")]),
    (
        "input end: a session still speaking",
        Session(on_end="ignore", busy=True),
        "input",
        [("end", "input_ended"), ("stop", "input_ended")],
    ),
    (
        "input end: a session that ignores everything",
        Session(on_end="ignore", on_stop="ignore", busy=True),
        "input",
        [("end", "input_ended"), ("stop", "input_ended")],
    ),
    (
        "input end, then a signal while it finishes",
        Session(on_end="ignore", on_stop="ignore", busy=True),
        "input+stop",
        [("end", "input_ended"), ("stop", "input_ended")],
    ),
]


@pytest.mark.parametrize(("name", "session", "how", "calls"), STOPS, ids=[s[0] for s in STOPS])
def test_a_stop_completes_in_time_whatever_the_session_does(
    name: str, session: Session, how: str, calls: list[tuple[str, str]]
) -> None:
    r = rig(lambda wake_word: cast(AgentSession, session))
    took: list[float] = []

    async def main() -> None:
        running = asyncio.create_task(r.loop.run())
        r.loop.post(wake())
        await until(lambda: r.loop.session is session and ("start", "") in session.calls, "the session")
        start = time.monotonic()
        if how == "stop":
            r.loop.stop("signal_sigterm")
        else:
            r.mic.end.set()
            if how == "input+stop":
                await until(lambda: ("end", "input_ended") in session.calls, "the graceful end")
                r.loop.stop("signal_sigterm")
        result = await asyncio.wait_for(running, 10)
        took.append(time.monotonic() - start)
        assert result.sessions == 1

    asyncio.run(main())
    # the end of the input first lets a busy session finish its answer, for at most drain_s
    bound = 2.0 + (LIMITS.drain_s if how == "input" and session.busy else 0.0)
    assert took[0] < bound, f"{name}: the stop took {took[0]:.2f} s"
    assert session.calls[1 : 1 + len(calls)] == calls
    types = r.types()
    assert types[-1] == "appliance_stopped" and "session_ended" in types
    assert types.index("session_ended") < types.index("appliance_stopped")


def test_the_end_of_the_input_lets_the_answer_in_progress_finish() -> None:
    """A realtime run whose input ends while the agent answers: the answer finishes (the
    session stops being busy), then the session is ended gracefully; nothing is stopped."""
    session = Session(busy=True)
    r = rig(lambda wake_word: cast(AgentSession, session), limits=replace(LIMITS, drain_s=30.0))
    took: list[float] = []

    async def main() -> None:
        running = asyncio.create_task(r.loop.run())
        r.loop.post(wake())
        await until(lambda: r.loop.session is session and ("start", "") in session.calls, "the session")
        r.mic.end.set()
        await asyncio.sleep(0.3)
        assert not running.done() and ("end", "input_ended") not in session.calls
        start = time.monotonic()
        session.busy = False  # the answer is out
        await asyncio.wait_for(running, 10)
        took.append(time.monotonic() - start)

    asyncio.run(main())
    assert took[0] < 2.0
    assert session.calls[1:2] == [("end", "input_ended")]
    assert "stop" not in [name for name, _ in session.calls]


def test_a_session_that_ignores_a_graceful_end_is_stopped_then_the_device_listens() -> None:
    """The no-speech timeout ends the session gracefully; it does not close, so it is stopped;
    one that ignores the stop too is abandoned. Either way the next wake word works."""
    sessions = [Session(on_end="ignore"), Session(on_end="ignore", on_stop="ignore"), Session()]
    made: list[Session] = []

    def factory(wake_word: str) -> AgentSession:
        made.append(sessions[len(made)])
        return cast(AgentSession, made[-1])

    r = rig(factory, no_speech_s=0.05)

    async def main() -> None:
        running = asyncio.create_task(r.loop.run())
        for n in range(2):
            r.loop.post(wake())
            await until(lambda n=n: len(r.of("session_ended")) > n, f"session {n} to end")  # type: ignore[misc]
            await until(lambda: not r.loop._runs, f"session {n} to be closed or abandoned")
        r.loop.post(wake())
        await until(lambda: len(made) == 3 and ("start", "") in made[2].calls, "the third session")
        r.loop.stop("done")
        await asyncio.wait_for(running, 5)

    asyncio.run(main())
    assert made[0].calls == [("start", ""), ("end", "no_speech"), ("stop", "no_speech")]
    assert made[1].calls == [("start", ""), ("end", "no_speech"), ("stop", "no_speech")]
    assert [e["reason"] for e in r.of("session_ended")][:2] == ["no_speech", "no_speech"]
    assert r.loop.progress_problem() is None


def test_status_feed_stop_is_bounded_too() -> None:
    session = Session(on_stop="ignore")
    r = rig(lambda wake_word: cast(AgentSession, session))

    async def main() -> float:
        running = asyncio.create_task(r.loop.run())
        r.loop.post(wake())
        await until(lambda: r.loop.session is session, "the session")
        start = time.monotonic()
        r.loop.end_session("stopped")
        await until(lambda: bool(r.of("session_ended")), "the session to end")
        took = time.monotonic() - start
        r.loop.stop("done")
        await asyncio.wait_for(running, 5)
        return took

    took = asyncio.run(main())
    assert took < 2.0
    assert r.of("session_ended")[0]["reason"] == "stopped"
    assert session.calls == [("start", ""), ("stop", "stopped")]


# ----------------------------------------------------------------- progress and the watchdog


class Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_conversation_past_its_bound_is_a_lack_of_progress() -> None:
    now = Now()
    limits = LoopLimits(progress=ProgressLimits(session_s=30.0))
    session = Session(on_end="ignore", on_stop="ignore")
    r = rig(lambda wake_word: cast(AgentSession, session), limits=limits, monotonic=now)

    async def main() -> list[str | None]:
        running = asyncio.create_task(r.loop.run())
        seen = [r.loop.progress_problem()]
        r.loop.post(wake())
        await until(lambda: r.loop.session is session, "the session")
        now.t += 29
        seen.append(r.loop.progress_problem())
        now.t += 2
        seen.append(r.loop.progress_problem())
        r.loop.stop("done")
        await asyncio.wait_for(running, 5)
        return seen

    seen = asyncio.run(main())
    assert seen[:2] == [None, None]
    assert seen[2] is not None and seen[2].startswith("a conversation running for 31 s")


def test_a_dead_consumer_is_a_lack_of_progress() -> None:
    r = rig(lambda wake_word: cast(AgentSession, Session()))

    def bug(now: float) -> None:
        raise RuntimeError("a bug in the consumer")

    async def main() -> str | None:
        running = asyncio.create_task(r.loop.run())
        await asyncio.sleep(0.05)
        assert r.loop.progress_problem() is None
        r.loop.progress.event_taken = bug  # type: ignore[method-assign]
        r.loop.post(wake())
        await asyncio.sleep(0.05)
        problem = r.loop.progress_problem()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return problem

    assert asyncio.run(main()) == "the event consumer stopped"


@pytest.fixture
def notify_socket() -> Iterator[FakeNotifySocket]:
    with tempfile.TemporaryDirectory(prefix="wd") as tmp:
        fake = FakeNotifySocket(str(Path(tmp) / "notify"))
        yield fake
        fake.close()


class NullSpeaker:
    sample_rate_hz = 16000
    playing = False

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        return True

    def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_the_watchdog_stops_pinging_when_the_loop_is_wedged(
    notify_socket: FakeNotifySocket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A conversation past its bound: the ticker still runs, but WATCHDOG=1 stops (systemd then
    restarts the device); pings resume once the loop makes progress again."""
    from appliance.runtime.app import Preloaded, Wiring
    from appliance.runtime.service import Service

    now = Now()
    limits = LoopLimits(progress=ProgressLimits(session_s=30.0))
    session = Session(on_end="ignore", on_stop="ignore")
    r = rig(lambda wake_word: cast(AgentSession, session), limits=limits, monotonic=now)
    doc = {"appliance": {"status": {"enabled": False}, "recording": {"dir": str(tmp_path)}}}
    config = load_config_text(yaml.safe_dump(doc), "test.yaml")
    clock = MonotonicClock()
    wiring = Wiring(
        microphone=r.mic, speaker=NullSpeaker(), clock=clock, events=r.events, timers=Timers(clock)
    )
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"}

    def pings() -> int:
        return len(notify_socket.times("WATCHDOG=1"))

    class Models:
        detector = vad = None

        def reset(self) -> None:
            return None

    models = Preloaded(Models(), Models(), None)
    with ThreadPoolExecutor(1) as executor:
        service = Service(
            config,
            wiring,
            models,
            executor=executor,
            make_loop=lambda *args: r.loop,
            load_models=lambda *args: models,
            env=env,
        )

        async def main() -> tuple[int, int, int]:
            running = asyncio.create_task(service.run())
            await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", count=3)
            r.loop.post(wake())
            await until(lambda: r.loop.session is session, "the session")
            now.t += 31  # the conversation is now past its bound
            await asyncio.sleep(0.1)
            # the pings sent, counted on the loop (the socket's own thread may record the last
            # ping before the wedge only later)
            assert service.watchdog is not None
            wedged = service.watchdog.pings
            await asyncio.sleep(0.4)
            still = service.watchdog.pings
            now.t -= 31  # (as if) progress again
            await asyncio.to_thread(notify_socket.wait_for, "WATCHDOG=1", count=still + 2)
            service.stop("signal_sigterm")
            await asyncio.wait_for(running, 5)
            await service.close()
            return wedged, still, pings()

        wedged, still, after = asyncio.run(main())
    assert wedged == still, "pinged while the loop made no progress"
    assert after >= still + 2
    assert any(t.startswith("STATUS=wedged: a conversation running for 31 s") for t in notify_socket.texts())
    assert "watchdog pings stop" in caplog.text and "pings resume" in caplog.text
