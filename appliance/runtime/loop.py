"""The device loop: the single consumer of the event queue and the effect runner.

Control never waits behind audio: the router posts outcomes, the consumer feeds them to the
pure `DeviceMachine` and runs the effects it asks for. Long work (starting a session,
answering an utterance, playing a chime) runs in tasks so the consumer is always free.

Every wait has a deadline (`LoopLimits`): a session that cannot be created or started ends
with an `error` event and the error chime, and the device listens again; a graceful end that
does not close in time becomes a stop, and a stop that does not close in time abandons the
session. A stop of the loop (`stop()`: a signal, a reload; or the end of the input) completes
within `shutdown_s` whatever is in flight. `progress_problem()` tells the systemd watchdog when
the loop is alive but no longer making progress (`core/progress.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, assert_never

from appliance.core.common import Event
from appliance.core.device import (
    NO_SPEECH_TIMER,
    ArmTimer,
    CancelTimer,
    DeviceEvent,
    DeviceMachine,
    Effect,
    Emit,
    EndSession,
    ForwardSpeechPaused,
    ForwardSpeechResumed,
    ForwardSpeechStarted,
    ForwardUtterance,
    InputEnded,
    PlayChime,
    ResetWakeWord,
    SessionEnded,
    SetListening,
    Shutdown,
    StageFailed,
    StartSession,
    TimerFired,
)
from appliance.core.progress import ProgressLimits, ProgressMonitor
from appliance.errors import ApplianceError
from appliance.logs import redact
from appliance.ports import MIC_RATE_HZ, AgentSession, Clock, EventSink, Microphone
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import StreamClock
from appliance.runtime.memory import release_free_memory
from appliance.runtime.router import AudioRouter
from appliance.runtime.tasks import TaskFailure, spawn_guarded
from appliance.runtime.timers import Timers

_LOGGER = logging.getLogger(__name__)

_TRIM_AFTER_S = 0.5
"""After a session ends, its freed memory goes back to the system (`runtime/memory.py`)."""

SessionFactory = Callable[[str], AgentSession]
_DEVICE = "device:"
_FORWARDS = frozenset({"utterance", "speech-started"})
SESSION_MARGIN_S = 30.0
"""Added to a conversation's own bound (`max_duration_seconds`) before the watchdog gives up."""


@dataclass(frozen=True)
class LoopLimits:
    start_s: float = 10.0
    """`session.start()` (connect, handshake, first message queued) returns within this."""
    end_grace_s: float = 0.8
    """A graceful end (the agent finishes what it is saying) before the session is stopped."""
    stop_s: float = 0.4
    """After a session's `stop()` (silence now), before it is abandoned (its task cancelled)."""
    shutdown_s: float = 1.5
    """From a stop of the loop (signal, reload, end of the input) until `run()` returns."""
    drain_s: float = 120.0
    """At the end of the input, the answer in progress may finish (the user has spoken; the
    agent answers) for at most this long before the end of the input stops the loop. A signal
    or a reload during the drain stops at once."""
    cleanup_s: float = 0.3
    """Tasks cancelled at the end of `run()` get this long; the rest are abandoned."""
    progress: ProgressLimits = field(default_factory=ProgressLimits)


@dataclass
class LoopResult:
    reason: str
    sessions: int
    dropped_blocks: int


@dataclass(eq=False)
class _SessionRun:
    """One conversation from the wake word to its end (the lifecycle task and how it ends)."""

    key: int
    wake_word: str
    session: AgentSession | None = None
    task: asyncio.Task[None] | None = None
    started: bool = False
    failed: bool = False
    finished: bool = False
    abandoned: str | None = None
    pending_end: tuple[str, bool] | None = None
    ending: asyncio.Task[None] | None = None
    hurry: asyncio.Event = field(default_factory=asyncio.Event)


async def _stop_now(session: AgentSession, reason: str) -> None:
    """Silence now when the agent can (`stop`), else the graceful `end`."""
    stop: Any = getattr(session, "stop", None)
    if callable(stop):
        await stop(reason)
    else:
        await session.end(reason)


class ApplianceLoop:
    def __init__(
        self,
        *,
        machine: DeviceMachine,
        microphone: Microphone,
        router: AudioRouter,
        session_factory: SessionFactory,
        chimes: ChimePlayer,
        events: EventSink,
        clock: Clock,
        timers: Timers,
        limits: LoopLimits | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._machine = machine
        self._mic = microphone
        self._router = router
        self._session_factory = session_factory
        self._chimes = chimes
        self._events = events
        self._clock = clock
        self._stream_clock = clock if isinstance(clock, StreamClock) else None
        self._queue: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self._timers = timers
        self.limits = limits or LoopLimits()
        self._monotonic = monotonic
        self.progress = ProgressMonitor(self.limits.progress)
        self._session: AgentSession | None = None
        self._current: _SessionRun | None = None
        self._runs: set[_SessionRun] = set()
        self._keys = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[str] | None = None
        self._stop_reason: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.sessions = 0
        self._tick_hooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------ public
    @property
    def session(self) -> AgentSession | None:
        """The conversation in progress, if any (the status feed's commands use it)."""
        return self._session

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` from the ticker every 20 ms, in every mode: the systemd watchdog pings
        from here (while `progress_problem()` is None). A hook that raises is dropped."""
        self._tick_hooks.append(hook)

    def progress_problem(self) -> str | None:
        """What keeps the loop from making progress now, or None (see `core/progress.py`)."""
        return self.progress.problem(self._monotonic())

    def post(self, event: DeviceEvent) -> None:
        """Thread-unsafe by design: the router calls it on the loop thread."""
        self.progress.event_posted(self._monotonic())
        self._queue.put_nowait(event)

    async def run(self) -> LoopResult:
        self._done = asyncio.get_running_loop().create_future()
        self._events.emit("appliance_started")
        pump = asyncio.create_task(self._pump_audio(), name="audio-pump")
        consumer = asyncio.create_task(self._consume(), name="event-consumer")
        ticker = asyncio.create_task(self._tick(), name="timers")
        consumer.add_done_callback(functools.partial(self._vital_done, "the event consumer"))
        ticker.add_done_callback(functools.partial(self._vital_done, "the loop ticker"))
        if self._stop_reason is not None:  # stopped before it ran (a signal during a reload)
            self._arm_deadline()
        try:
            reason = await self._done
        finally:
            if self._deadline is not None:
                self._deadline.cancel()
            await self._cleanup([pump, consumer, ticker])
        self._events.emit("appliance_stopped", reason=reason)
        return LoopResult(reason=reason, sessions=self.sessions, dropped_blocks=self._mic.dropped_blocks)

    def stop(self, reason: str = "stopped") -> None:
        """A requested stop (signal, reload): the session is stopped at once (not allowed to
        finish its sentence) and `run()` returns within `limits.shutdown_s`."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self.progress.stop_requested(self._monotonic())
            if self._done is not None:
                self._arm_deadline()
        for run in list(self._runs):
            run.hurry.set()  # a graceful end in progress becomes a stop
        self.post(InputEnded(reason))

    def end_session(self, reason: str) -> None:
        """End the conversation in progress now (the status feed's stop, mute), with the
        loop's deadlines; the device machine hears `SessionEnded` as usual."""
        self._end_current(reason, immediate=True)

    # ------------------------------------------------------------ audio
    async def _pump_audio(self) -> None:
        try:
            async for block in self._mic.frames():
                if self._stream_clock is not None:
                    # Fast runs are turn based: input waits while the agent thinks or speaks.
                    await self._wait_session_idle()
                    self._stream_clock.advance(block.size / MIC_RATE_HZ)
                self.progress.block_started(self._monotonic())
                session = self._session
                if session is not None:
                    session.push_audio(block)
                await self._router.process(block)
                self.progress.block_done(self._monotonic())
                if self._stream_clock is not None:
                    self._timers.fire_due()
                    await asyncio.sleep(0)  # let the consumer run between blocks
        except ApplianceError as err:
            self.post(StageFailed("microphone", err.code, str(err), err.retryable))
            self.post(InputEnded("microphone_failed"))
            return
        # The end of the input is input too: it comes after the last answer (bounded).
        await self._settle(self._monotonic() + self.limits.drain_s)
        self.post(InputEnded("input_ended"))

    async def _wait_session_idle(self) -> None:
        while self._session is not None and self._session.busy:
            await asyncio.sleep(0.005)

    async def _settle(self, deadline: float) -> None:
        """Until the last utterance has been handed over and answered, a stop is requested, or
        `deadline` (monotonic) passes."""
        quiet = 0
        while quiet < 2 and self._stop_reason is None:
            if self._monotonic() >= deadline:
                _LOGGER.warning(
                    "the answer in progress did not finish within %.0f s of the end of the input",
                    self.limits.drain_s,
                )
                return
            forwarding = any(t.get_name() in _FORWARDS for t in self._tasks)
            busy = self._session is not None and self._session.busy
            quiet = 0 if (forwarding or busy or not self._queue.empty()) else quiet + 1
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------ control
    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            self.progress.event_taken(self._monotonic())
            if isinstance(event, InputEnded) and self._done is not None:
                self._arm_deadline()
            try:
                effects = self._machine.handle(event, self._clock.now())
            except Exception as err:  # a machine bug must not kill the consumer
                _LOGGER.exception("the device machine failed on %s", type(event).__name__)
                self._events.emit(Event.ERROR, code="internal", message=redact(str(err)), stage="runtime")
                continue
            for effect in effects:
                try:
                    self._run(effect)
                except Exception as err:  # an effect must never kill the loop
                    _LOGGER.exception("effect %s failed", type(effect).__name__)
                    self._events.emit(Event.ERROR, code="internal", message=redact(str(err)), stage="runtime")

    async def _tick(self) -> None:
        last = self._clock.now()
        while True:
            await asyncio.sleep(0.02)
            for hook in list(self._tick_hooks):
                try:
                    hook()
                except Exception:
                    _LOGGER.exception("tick hook failed; dropped")
                    self._tick_hooks.remove(hook)
            if self._stream_clock is not None:
                continue  # fast runs fire timers from the audio pump, on the audio clock
            now = self._clock.now()
            if self._session is not None and self._session.busy:
                # The no-speech timeout counts user silence, not the agent's own speech.
                self._timers.postpone(_DEVICE + NO_SPEECH_TIMER, now - last)
            last = now
            self._timers.fire_due()

    def _vital_done(self, what: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (self._done is not None and self._done.done()):
            return
        error = task.exception()
        if error is not None:
            _LOGGER.error("%s failed: %s", what, redact(f"{type(error).__name__}: {error}"))
        self.progress.task_died(what)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        spawn_guarded(coro, name, tasks=self._tasks, on_failure=self._work_failed, logger=_LOGGER)

    def _work_failed(self, failure: TaskFailure) -> None:
        code = failure.code or "agent_failed"
        self.post(StageFailed("agent", code, failure.message, failure.retryable))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run(self, effect: Effect) -> None:
        match effect:
            case Emit(type=type_, fields=fields):
                self._events.emit(type_, **fields)
            case PlayChime(chime=chime):
                self._spawn(self._chimes.play(chime), f"chime-{chime}")
            case StartSession(wake_word=wake_word):
                self._start_session(wake_word)
            case EndSession(reason=reason):
                self._end_current(reason, immediate=self._stop_reason is not None or reason == "error")
            case ForwardSpeechStarted(t=t):
                if self._session is not None:
                    self._spawn(self._session.speech_started(t), "speech-started")
            case ForwardUtterance(utterance=utterance):
                if self._session is not None:
                    self._spawn(self._session.utterance(utterance), "utterance")
            case ForwardSpeechPaused(paused=paused):
                speculate = getattr(self._session, "speech_paused", None)  # local sessions only
                if speculate is not None:
                    speculate(paused.audio)
            case ForwardSpeechResumed():
                discard = getattr(self._session, "speech_resumed", None)
                if discard is not None:
                    discard()
            case SetListening(on=on):
                self._router.set_listening(on)
            case ArmTimer(name=name, deadline=deadline):
                self._timers.arm(_DEVICE + name, deadline, functools.partial(self.post, TimerFired(name)))
            case CancelTimer(name=name):
                self._timers.cancel(_DEVICE + name)
            case ResetWakeWord():
                self._router.reset_wake_word()
            case Shutdown(reason=reason):
                self._set_done(reason)
            case _:
                assert_never(effect)

    def _set_done(self, reason: str) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(reason)

    # ------------------------------------------------------------ stopping
    def _arm_deadline(self) -> None:
        if self._deadline is None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self.limits.shutdown_s, self._overdue)

    def _overdue(self) -> None:
        """The stop did not complete in time: abandon what still runs, and finish anyway."""
        if self._done is None or self._done.done():
            return
        reason = self._stop_reason or "input_ended"
        _LOGGER.warning(
            "the stop did not complete within %.1f s; abandoning what is still running",
            self.limits.shutdown_s,
        )
        for run in list(self._runs):
            self._abandon(run, reason)  # the machine hears SessionEnded and shuts down
        asyncio.get_running_loop().call_later(0.2, self._set_done, reason)

    async def _cleanup(self, loops: list[asyncio.Task[None]]) -> None:
        """Cancel everything; what does not stop within `cleanup_s` is left behind."""
        runs = [r for r in self._runs if not r.finished]
        for task in (*loops, *self._tasks):
            task.cancel()
        sessions = [r.session for r in runs if r.session is not None and r.started and r.ending is None]
        if sessions:  # a session still running at shutdown: silence it first
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.limits.cleanup_s / 2):
                    await asyncio.gather(
                        *(_stop_now(s, "shutdown") for s in sessions), return_exceptions=True
                    )
        for run in runs:
            self._abandon(run, "shutdown")
        pending = {*loops, *self._tasks, *(r.task for r in runs if r.task is not None)}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=self.limits.cleanup_s)
        if still:
            names = ", ".join(sorted(t.get_name() for t in still))
            _LOGGER.warning("left behind %d task(s) that did not stop in time: %s", len(still), names)

    # ------------------------------------------------------------ sessions
    def _start_session(self, wake_word: str) -> None:
        run = _SessionRun(next(self._keys), wake_word)
        self._current = run
        self._session = None
        self._runs.add(run)
        self.sessions += 1
        self.progress.session_started(run.key, self._monotonic())
        try:  # at once: the audio right after the wake word already goes to the session
            session = self._session_factory(wake_word)
        except Exception as err:
            self._session_failed(run, err, "cannot start the conversation", "session_start_failed")
            self._finish_run(run, "error")
            return
        run.session = self._session = session
        run.task = asyncio.create_task(self._lifecycle(run, session), name="session")

    async def _lifecycle(self, run: _SessionRun, session: AgentSession) -> None:
        """Start the session and wait for its end; every failure ends it with an `error`."""
        reason = "error"
        try:
            try:
                async with asyncio.timeout(self.limits.start_s):
                    await session.start()
            except TimeoutError:
                message = f"the conversation did not start within {self.limits.start_s:g} s"
                self._session_failed(run, None, message, "session_start_timeout")
                await self._discard(session)
                return
            except Exception as err:
                self._session_failed(run, err, "cannot start the conversation", "session_start_failed")
                await self._discard(session)
                return
            run.started = True
            if run.pending_end is not None:
                self._begin_end(run, *run.pending_end)
            reason = await session.closed()
        except asyncio.CancelledError:
            if run.abandoned is None:
                raise
            reason = run.abandoned
            if not run.started:
                self._track(asyncio.create_task(self._discard(session), name="session-discard"))
        except Exception as err:
            self._session_failed(run, err, "the conversation failed", "agent_failed")
        finally:
            self._finish_run(run, reason)

    def _session_failed(self, run: _SessionRun, err: Exception | None, context: str, code: str) -> None:
        run.failed = True
        retryable = False
        if isinstance(err, ApplianceError):
            code, retryable = err.code, err.retryable
            message = f"{context}: {err}"
        elif err is not None:
            message = f"{context}: {type(err).__name__}: {err}"
        else:
            message = context
        message = redact(message)
        _LOGGER.error("%s", message)
        if err is not None and not isinstance(err, ApplianceError):
            _LOGGER.debug("session failure", exc_info=err)
        self.post(StageFailed("agent", code, message, retryable))

    def _finish_run(self, run: _SessionRun, reason: str) -> None:
        """Once per run: forget it, and tell the machine if it is still the current one."""
        if run.finished:
            return
        run.finished = True
        self._runs.discard(run)
        self.progress.session_ended(run.key, self._monotonic())
        # The session's buffers are free now; hand them back once its threads have let go.
        asyncio.get_running_loop().call_later(_TRIM_AFTER_S, release_free_memory)
        if self._current is run:
            self._current = None
            self._session = None
            self.post(SessionEnded(reason))

    def _abandon(self, run: _SessionRun, reason: str) -> None:
        if run.finished:
            return
        run.abandoned = reason
        if run.task is not None and not run.task.done():
            run.task.cancel()
        self._finish_run(run, reason)

    async def _discard(self, session: AgentSession) -> None:
        """A session that failed to start: ask it to stop and release what it holds (bounded)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.limits.stop_s):
                await _stop_now(session, "error")
                await session.closed()

    def _end_current(self, reason: str, *, immediate: bool) -> None:
        run = self._current
        if run is None or run.failed or run.finished:
            return
        if not run.started:
            if immediate:
                self._abandon(run, reason)  # cancels a start in progress
            else:
                run.pending_end = (reason, immediate)
            return
        self._begin_end(run, reason, immediate)

    def _begin_end(self, run: _SessionRun, reason: str, immediate: bool) -> None:
        if run.ending is not None:
            if immediate:
                run.hurry.set()
            return
        run.ending = asyncio.create_task(self._ending(run, reason, immediate), name="session-end")
        self._track(run.ending)

    async def _ending(self, run: _SessionRun, reason: str, immediate: bool) -> None:
        """end() → (grace) → stop() → (stop_s) → abandoned: a session always ends in time."""
        session = run.session
        assert session is not None and run.task is not None
        if not immediate and not run.hurry.is_set():
            await self._call(session.end(reason), "end")
            if await self._closes_within(run, self.limits.end_grace_s):
                return
            if not run.hurry.is_set():
                _LOGGER.info(
                    "the conversation did not finish within %.1f s: stopping it", self.limits.end_grace_s
                )
        await self._call(_stop_now(session, reason), "stop")
        if await self._closes_within(run, self.limits.stop_s, hurry=False):
            return
        _LOGGER.warning(
            "the conversation did not close within %.1f s of its stop: abandoned", self.limits.stop_s
        )
        self._abandon(run, reason)

    async def _call(self, call: Awaitable[None], what: str) -> None:
        try:
            async with asyncio.timeout(self.limits.stop_s):
                await call
        except TimeoutError:
            _LOGGER.warning("session %s() did not return within %.1f s", what, self.limits.stop_s)
        except Exception as err:
            _LOGGER.warning("session %s() failed: %s", what, redact(f"{type(err).__name__}: {err}"))

    async def _closes_within(self, run: _SessionRun, seconds: float, *, hurry: bool = True) -> bool:
        """True once the session has closed; False after `seconds` (or a hurry, if `hurry`)."""
        assert run.task is not None
        waiters: set[asyncio.Future[Any]] = {run.task}
        hurried = asyncio.ensure_future(run.hurry.wait()) if hurry else None
        if hurried is not None:
            waiters.add(hurried)
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if hurried is not None:
                hurried.cancel()
        return run.task.done() or run.finished
