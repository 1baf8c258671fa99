"""The device loop: the single consumer of the event queue and the effect runner.

Control never waits behind audio: the router posts outcomes, the consumer feeds them to the
pure `DeviceMachine` and runs the effects it asks for. Long work (starting a session,
answering an utterance, playing a chime) runs in tasks so the consumer is always free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import assert_never

from appliance.core.device import (
    NO_SPEECH_TIMER,
    ArmTimer,
    CancelTimer,
    DeviceEvent,
    DeviceMachine,
    Effect,
    Emit,
    EndSession,
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
from appliance.errors import ApplianceError
from appliance.logs import redact
from appliance.ports import AgentSession, Clock, EventSink, Microphone
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import StreamClock
from appliance.runtime.router import AudioRouter
from appliance.runtime.timers import Timers

_LOGGER = logging.getLogger(__name__)

SessionFactory = Callable[[str], AgentSession]
_DEVICE = "device:"


@dataclass
class LoopResult:
    reason: str
    sessions: int
    dropped_blocks: int


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
        self._session: AgentSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[str] | None = None
        self.sessions = 0
        self._tick_hooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------ public
    @property
    def session(self) -> AgentSession | None:
        """The conversation in progress, if any (the status feed's commands use it)."""
        return self._session

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` from the ticker every 20 ms, in every mode: the systemd watchdog pings
        from here, so a wedged event loop stops pinging. A hook that raises is dropped."""
        self._tick_hooks.append(hook)

    def post(self, event: DeviceEvent) -> None:
        """Thread-unsafe by design: the router calls it on the loop thread."""
        self._queue.put_nowait(event)

    async def run(self) -> LoopResult:
        self._done = asyncio.get_running_loop().create_future()
        self._events.emit("appliance_started")
        pump = asyncio.create_task(self._pump_audio(), name="audio-pump")
        consumer = asyncio.create_task(self._consume(), name="event-consumer")
        ticker = asyncio.create_task(self._tick(), name="timers")
        try:
            reason = await self._done
        finally:
            for task in (pump, consumer, ticker):
                if task is not None:
                    task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(
                pump, consumer, *(t for t in (ticker,) if t), *self._tasks, return_exceptions=True
            )
            if self._session is not None:
                with contextlib.suppress(Exception):
                    await self._session.end("shutdown")
        self._events.emit("appliance_stopped", reason=reason)
        return LoopResult(reason=reason, sessions=self.sessions, dropped_blocks=self._mic.dropped_blocks)

    def stop(self, reason: str = "stopped") -> None:
        self.post(InputEnded(reason))

    # ------------------------------------------------------------ audio
    async def _pump_audio(self) -> None:
        try:
            async for block in self._mic.frames():
                if self._stream_clock is not None:
                    # Fast runs are turn based: input waits while the agent thinks or speaks.
                    await self._wait_session_idle()
                    self._stream_clock.advance(block.size / 16000)
                session = self._session
                if session is not None:
                    session.push_audio(block)
                await self._router.process(block)
                if self._stream_clock is not None:
                    self._timers.fire_due()
                    await asyncio.sleep(0)  # let the consumer run between blocks
        except ApplianceError as err:
            self.post(StageFailed("microphone", err.code, str(err), err.retryable))
            self.post(InputEnded("microphone_failed"))
            return
        self.post(InputEnded("input_ended"))

    async def _wait_session_idle(self) -> None:
        while self._session is not None and self._session.busy:
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------ control
    async def _consume(self) -> None:
        while True:
            event = await self._queue.get()
            effects = self._machine.handle(event, self._clock.now())
            for effect in effects:
                try:
                    self._run(effect)
                except Exception as err:  # an effect must never kill the loop
                    _LOGGER.exception("effect %s failed", type(effect).__name__)
                    self._events.emit("error", code="internal", message=redact(str(err)), stage="runtime")

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

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except ApplianceError as err:
                self.post(StageFailed("agent", err.code, redact(str(err)), err.retryable))
            except Exception as err:
                _LOGGER.exception("%s failed", name)
                self.post(StageFailed("agent", "agent_failed", redact(f"{type(err).__name__}: {err}")))

        task = asyncio.create_task(guarded(), name=name)
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
                if self._session is not None:
                    self._spawn(self._session.end(reason), "session-end")
            case ForwardSpeechStarted(t=t):
                if self._session is not None:
                    self._spawn(self._session.speech_started(t), "speech-started")
            case ForwardUtterance(utterance=utterance):
                if self._session is not None:
                    self._spawn(self._session.utterance(utterance), "utterance")
            case SetListening(on=on):
                self._router.set_listening(on)
            case ArmTimer(name=name, deadline=deadline):
                self._timers.arm(_DEVICE + name, deadline, functools.partial(self.post, TimerFired(name)))
            case CancelTimer(name=name):
                self._timers.cancel(_DEVICE + name)
            case ResetWakeWord():
                self._router.reset_wake_word()
            case Shutdown(reason=reason):
                if self._done is not None and not self._done.done():
                    self._done.set_result(reason)
            case _:
                assert_never(effect)

    def _start_session(self, wake_word: str) -> None:
        session = self._session_factory(wake_word)
        self._session = session
        self.sessions += 1

        async def lifecycle() -> None:
            try:
                await session.start()
                reason = await session.closed()
            finally:
                if self._session is session:
                    self._session = None
            self.post(SessionEnded(reason))

        async def guarded() -> None:
            try:
                await lifecycle()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                code = err.code if isinstance(err, ApplianceError) else "agent_failed"
                retryable = err.retryable if isinstance(err, ApplianceError) else False
                _LOGGER.warning("session failed: %s", redact(str(err)))
                self.post(StageFailed("agent", code, redact(str(err)), retryable))

        task = asyncio.create_task(guarded(), name="session")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
