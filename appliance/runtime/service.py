"""What makes a run a long-lived service: systemd notifications and watchdog, the status feed
and its commands, SIGHUP config reloads, turn summaries in the log, optional recordings.

`run_async` (app.py) builds one `Service` around the audio wiring and calls `run()`, which
runs device loops until one stops for a reason other than a reload:

- READY=1 once the models are loaded and the microphone delivers (the first
  `microphone_ready` of a device microphone, or the loop's start for file and pipe input);
  WATCHDOG=1 from the loop's ticker while the loop makes progress (`ApplianceLoop.progress_problem`:
  a loop that is alive but wedged stops pinging, and systemd restarts it); STATUS= at every
  state change; STOPPING=1 on stop.
- SIGTERM / SIGINT: the conversation is stopped at once and the loop returns within its
  shutdown bound (`LoopLimits.shutdown_s`), whatever is in flight.
- SIGHUP: the file is read and validated, changed models are loaded and the next loop is
  built, all while the current loop keeps running; an invalid config (or a model that will
  not load) keeps the old one and says why (log, `error` event `config_reload_failed`). A
  valid one is swapped in when no conversation is running (the current one is finished first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from appliance.config import DEFAULT_SOURCE, Config, load_config
from appliance.core.common import Event
from appliance.core.retention import RetentionPolicy, policy_from_privacy
from appliance.core.status import AGENT_BUSY, AGENT_IDLE, State, Status, next_status
from appliance.errors import ConfigError
from appliance.logs import redact
from appliance.paths import default_socket_path, recordings_dir
from appliance.ports import AgentSession
from appliance.preflight import check_runnable
from appliance.runtime.controls import COMMANDS, Controls, ServiceMicrophone, speaker_volume_target
from appliance.runtime.loop import ApplianceLoop, LoopResult
from appliance.runtime.recorder import SWEEP_INTERVAL_S, RecordingStore, TurnRecorder
from appliance.runtime.reload import changed_sections, needs_restart, release_models
from appliance.runtime.status_feed import StatusFeed
from appliance.runtime.systemd_notify import SystemdNotifier, Watchdog
from appliance.runtime.turn_log import TurnLog

if TYPE_CHECKING:
    from appliance.runtime.wiring import Preloaded, Wiring

_LOGGER = logging.getLogger(__name__)

RELOAD = "reload"

SessionFactory = Callable[[str], AgentSession]
MakeLoop = Callable[[Config, "Preloaded", Callable[[SessionFactory], SessionFactory]], ApplianceLoop]
LoadModels = Callable[[Config, Config, "Preloaded"], "Preloaded"]


def recording_policy(config: Config) -> RetentionPolicy:
    return policy_from_privacy(
        config.platform_settings.privacy.model_dump(), enabled=config.appliance.recording.enabled
    )


def _shows_text(policy: RetentionPolicy) -> bool:
    """Transcripts in the journal are storage too: not under zero retention / no transcripts."""
    return not (policy.zero_retention_mode or policy.delete_transcript_and_pii)


def _problem_text(err: Exception) -> str:
    if isinstance(err, ConfigError):
        return "; ".join(err.problems)
    return str(err)


class Service:
    def __init__(
        self,
        config: Config,
        wiring: Wiring,
        models: Preloaded,
        *,
        executor: Executor,
        make_loop: MakeLoop,
        load_models: LoadModels,
        env: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        env = os.environ if env is None else env
        self.config = config
        self.models = models
        self._wiring = wiring
        self._executor = executor
        self._make_loop = make_loop
        self._load_models = load_models
        self.events = wiring.events
        self.notifier = SystemdNotifier.from_env(env)
        interval = self.notifier.watchdog_interval_s
        self.watchdog = Watchdog(self.notifier, interval) if interval is not None else None
        device_mic = hasattr(wiring.microphone, "on_state_change")
        self.microphone = ServiceMicrophone(wiring.microphone)
        wiring.microphone = self.microphone
        self.controls = Controls(self.microphone, wiring.speaker, wiring.events)
        self.status = Status()
        self._ready_on = "microphone_ready" if device_mic else "appliance_started"
        self.ready = False
        self._busy = False
        self.loop: ApplianceLoop | None = None
        self._stop_reason: str | None = None
        self._stopping_sent = False
        self._pending: tuple[Config, Preloaded, ApplianceLoop] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        policy = recording_policy(config)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recordings")
        folder = (
            config.resolve_path(config.appliance.recording.dir) if config.appliance.recording.dir else None
        )
        self.recorder = TurnRecorder(
            RecordingStore(folder or recordings_dir(env)), policy, self._io, wall_clock=wall_clock
        )
        self.turn_log = TurnLog(show_text=_shows_text(policy))
        self._reloads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload")
        self._no_progress: str | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self._aio_thread = 0
        self.feed: StatusFeed | None = None
        status = config.appliance.status
        if status.enabled:
            path = config.resolve_path(status.socket) if status.socket else default_socket_path(env)
            self.feed = StatusFeed(path, self.controls.execute, self._hello)
        wiring.events.subscribe(self._on_event)

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> LoopResult:
        self._aio = asyncio.get_running_loop()
        self._aio_thread = threading.get_ident()
        if self.feed is not None:
            await self.feed.start()
        self._spawn(self._sweep_forever(), "recordings-sweep")
        loop = self._make_loop(self.config, self.models, self.recorder.wrap)
        sessions = 0
        while True:
            await self._reset_listeners()
            self._attach(loop)
            result = await loop.run()
            sessions += result.sessions
            pending, self._pending = self._pending, None
            if result.reason != RELOAD or pending is None or self._stop_reason is not None:
                if pending is not None:
                    release_models(pending[1], self.models)
                return LoopResult(result.reason, sessions, result.dropped_blocks)
            loop = self._swap(*pending)

    def stop(self, reason: str = "stopped") -> None:
        """SIGTERM / SIGINT: stop the conversation now, close the loop (bounded), release devices."""
        if self._stop_reason is None:
            self._stop_reason = reason
            _LOGGER.info("stopping (%s)", reason)
            self._stopping(f"stopping ({reason})")
        if self.loop is not None:
            self.loop.stop(reason)

    def _stopping(self, status: str) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notifier.stopping(status)

    async def close(self, timeout_s: float = 0.3) -> None:
        """Bounded: a task that does not stop in `timeout_s` is left behind; worker threads
        (recordings, a reload loading models) finish on their own (the CLI bounds the exit)."""
        self._stopping("stopping")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if self._pending is not None:
            release_models(self._pending[1], self.models)
            self._pending = None
        if self.feed is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.feed.close()
            except TimeoutError:
                _LOGGER.warning("the status feed did not close within %.1f s", timeout_s)
        self.recorder.on_event({"type": "session_ended"})  # a turn still open is stored
        self._io.shutdown(wait=False)  # queued writes still run; nothing waits for them here
        self._reloads.shutdown(wait=False, cancel_futures=True)
        self.notifier.close()

    def _attach(self, loop: ApplianceLoop) -> None:
        self.loop = loop
        self.controls.loop = loop
        self._busy = False
        loop.add_tick_hook(self._tick)
        if self._stop_reason is not None:  # a signal came while loops were being swapped
            loop.stop(self._stop_reason)

    async def _reset_listeners(self) -> None:
        """Fresh detector and VAD state for a new loop, on the model thread (a stopped loop's
        last block may still be running there)."""

        def reset() -> None:
            self.models.detector.reset()
            self.models.vad.reset()

        await asyncio.get_running_loop().run_in_executor(self._executor, reset)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ ticker (every 20 ms)
    def _tick(self) -> None:
        if self.watchdog is not None:
            self._watchdog_tick()
        session = self.loop.session if self.loop is not None else None
        busy = bool(session is not None and session.busy)
        if busy != self._busy:
            self._busy = busy
            self._update({"type": AGENT_BUSY if busy else AGENT_IDLE, "t": self._wiring.clock.now()})

    def _watchdog_tick(self) -> None:
        """Ping only while the loop makes progress: systemd restarts a wedged device."""
        assert self.watchdog is not None
        problem = self.loop.progress_problem() if self.loop is not None else None
        if problem is None:
            if self._no_progress is not None:
                _LOGGER.warning("the loop makes progress again; watchdog pings resume")
                self._no_progress = None
            self.watchdog.tick()
            return
        if self._no_progress is None:
            _LOGGER.error("no progress: %s; watchdog pings stop (systemd restarts the appliance)", problem)
            self.notifier.status(f"wedged: {problem}")
        self._no_progress = problem

    # ------------------------------------------------------------ events
    def _on_event(self, event: dict[str, Any]) -> None:
        if self._aio is not None and threading.get_ident() != self._aio_thread:
            # An event from a worker thread: the feed's sockets live on the event loop.
            self._aio.call_soon_threadsafe(self._on_event, event)
            return
        self.turn_log.on_event(event)
        self.recorder.on_event(event)
        self._update(event)
        kind = event["type"]
        if not self.ready and kind == self._ready_on:
            self.ready = True
            words = ", ".join(w.name for w in self.config.appliance.wake_words.words)
            self.notifier.ready(f"ready: listening for {words}")
            _LOGGER.info("ready: listening for %s", words)
        if kind == "session_ended" and self._pending is not None and self.loop is not None:
            _LOGGER.info("conversation over: applying the new configuration")
            self.loop.stop(RELOAD)

    def _update(self, event: dict[str, Any]) -> None:
        before = self.status.state
        self.status = next_status(self.status, event)
        after = self.status.state
        if after is before:
            return
        self.notifier.status(str(after))
        if self.feed is not None:
            self.feed.broadcast(
                {
                    "type": "state",
                    "state": str(after),
                    "previous": str(before),
                    "event": event["type"],
                    "t": event.get("t"),
                }
            )

    def _hello(self) -> dict[str, Any]:
        return {
            "state": str(self.status.state),
            "muted": self.microphone.muted,
            "volume": self.controls.volume,
            "mode": self.config.appliance.mode,
            "wake_words": [w.name for w in self.config.appliance.wake_words.words],
            "commands": list(COMMANDS),
        }

    @property
    def state(self) -> State:
        return self.status.state

    # ------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """SIGHUP."""
        if self._reload_task is not None and not self._reload_task.done():
            _LOGGER.info("a configuration reload is already in progress")
            return
        self._reload_task = asyncio.create_task(self._reload(), name="reload")
        self._tasks.add(self._reload_task)
        self._reload_task.add_done_callback(self._tasks.discard)

    async def _reload(self) -> None:
        source = self.config.source
        path = None if source == DEFAULT_SOURCE else source
        self.notifier.reloading()
        _LOGGER.info("reloading the configuration from %s", source)
        try:
            # Its own worker, not the default executor: a stop never waits for a model load.
            aio = asyncio.get_running_loop()
            new = await aio.run_in_executor(self._reloads, load_config, path)
            # what check-config and run refuse (unresolvable variables, a prompt over n_ctx)
            for warning in await aio.run_in_executor(self._reloads, check_runnable, new):
                _LOGGER.warning("%s: %s", new.source, warning)
            models = await aio.run_in_executor(
                self._reloads, partial(self._load_models, self.config, new, self.models)
            )
            try:
                loop = self._make_loop(new, models, self.recorder.wrap)
            except Exception:
                release_models(models, self.models)
                raise
        except Exception as err:
            message = redact(_problem_text(err))
            _LOGGER.error("configuration reload failed; the running configuration stays: %s", message)
            self.events.emit(Event.ERROR, code="config_reload_failed", message=message, stage="config")
            self.notifier.ready(f"reload failed; running {source} unchanged")
            return
        if self._pending is not None:
            release_models(self._pending[1], self.models)
        self._pending = (new, models, loop)
        if self.loop is not None and self.loop.session is None:
            self.loop.stop(RELOAD)
        else:
            _LOGGER.info("the new configuration applies when the current conversation ends")

    def _swap(self, new: Config, models: Preloaded, loop: ApplianceLoop) -> ApplianceLoop:
        old, old_models = self.config, self.models
        self.config, self.models = new, models
        release_models(old_models, models)
        changed = changed_sections(old, new)
        restart = needs_restart(old, new)
        if restart:
            _LOGGER.warning("changed settings that need a restart to apply: %s", ", ".join(restart))
        policy = recording_policy(new)
        self.recorder.policy = policy
        self.turn_log.show_text = _shows_text(policy)
        if old.appliance.audio.output_volume != new.appliance.audio.output_volume:
            target = speaker_volume_target(self._wiring.speaker)
            if target is not None:
                target.volume = new.appliance.audio.output_volume
        if old.appliance.logging.level != new.appliance.logging.level:
            logging.getLogger().setLevel(new.appliance.logging.level)
        if "platform_settings" in changed or "appliance.recording" in changed:
            sweep = asyncio.get_running_loop().run_in_executor(self._io, self.recorder.sweep)
            self._spawn(_quietly(sweep), "recordings-sweep-now")
        _LOGGER.info("configuration reloaded (%s)", ", ".join(changed) or "no changes")
        self.events.emit("config_reloaded", source=new.source, changed=changed, needs_restart=restart)
        self.notifier.ready("configuration reloaded")
        return loop

    # ------------------------------------------------------------ recordings
    async def _sweep_forever(self) -> None:
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(self._io, self.recorder.sweep)
            except Exception:
                _LOGGER.exception("sweeping expired recordings failed")
            await asyncio.sleep(SWEEP_INTERVAL_S)


async def _quietly(work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception:
        _LOGGER.exception("background work failed")
