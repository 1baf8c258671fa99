"""The composition root: the only place that builds adapters (with lazy imports).

`run_appliance(options)` loads the config, resolves models, opens audio (or the headless
WAV/pipe backends), wires the loop and runs it until the input ends or a signal arrives.

Stopping is bounded (`ProcessStop`): the first SIGTERM/SIGINT stops the loop (under 2 s,
whatever is in flight); a second one, or a stop that outlives `STOP_GUARD_S` in a run that owns
its process (the CLI), exits at once after ending the events file and the output WAV's header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import Config
from appliance.core.common import Event
from appliance.core.device import Chime, DeviceConfig, DeviceMachine
from appliance.core.endpointing import Endpointer
from appliance.core.progress import ProgressLimits
from appliance.core.wakeword import WakeWordGate
from appliance.errors import AudioDeviceError
from appliance.ports import (
    AgentSession,
    Clock,
    EchoCanceller,
    Microphone,
    Speaker,
    VoiceActivityDetector,
    WakeWordDetector,
)
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import MonotonicClock, StreamClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.loop import SESSION_MARGIN_S, ApplianceLoop, LoopLimits, LoopResult, SessionFactory
from appliance.runtime.playback_monitor import MonitoredSpeaker
from appliance.runtime.router import AudioRouter
from appliance.runtime.timers import Timers
from appliance.runtime.wiring import Preloaded as Preloaded
from appliance.runtime.wiring import RunOptions as RunOptions
from appliance.runtime.wiring import Wiring as Wiring

if TYPE_CHECKING:
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.runtime.local_agent import LocalModels

_LOGGER = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE_RECORDING = ASSETS / "example-hey-jarvis.wav"
FALLBACK_OUTPUT = Path("appliance-output.wav")
STOP_GUARD_S = 1.9
"""A process stopped by a signal exits within this, whatever still runs (`own_process` runs)."""
EXIT_GRACE_S = 0.4
"""After the run, worker threads still busy (a sentence being synthesized) get this long."""
CLOSE_S = 0.3
"""Each device and file closed at the end of a run gets this long."""


def open_audio(config: Config, options: RunOptions) -> Wiring:
    """Microphone, speaker, clock and events for this run. Never dies on a missing device."""
    from appliance.adapters.wav_audio import RawPipeMicrophone, WavFileMicrophone, WavFileSpeaker

    notes: list[str] = []
    audio = config.appliance.audio
    fast = options.input is not None and not options.realtime
    clock: Clock = StreamClock() if fast else MonotonicClock()
    mic: Microphone
    device_mic: Any = None
    duration: float | None = None
    if options.input == "-":
        # Unbuffered: the reader thread then holds no lock of sys.stdin, which the interpreter
        # takes at exit (a SIGTERM while it waits for input would otherwise abort the process).
        stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
        mic = RawPipeMicrophone(stdin, realtime=options.realtime)
    elif options.input is not None:
        wav_mic = WavFileMicrophone(Path(options.input), realtime=options.realtime)
        duration = wav_mic.duration_s
        mic = wav_mic
    else:
        try:
            from appliance.adapters.sounddevice import SounddeviceMicrophone

            sd_mic = SounddeviceMicrophone(
                device=audio.input_device,
                input_block_ms=audio.input_block_ms,
                input_queue_blocks=audio.input_queue_blocks,
            )
            mic = sd_mic
            device_mic = sd_mic
        except (AudioDeviceError, OSError) as err:
            if options.require_devices:
                raise AudioDeviceError(f"no microphone available: {err}") from err
            notes.append(
                f"no microphone available ({err}); running on the bundled example recording "
                f"{EXAMPLE_RECORDING.name} in real time instead"
            )
            wav_mic = WavFileMicrophone(EXAMPLE_RECORDING, realtime=True)
            duration = wav_mic.duration_s
            mic = wav_mic
    speaker: Speaker
    timeline = None if fast else clock
    if options.output is not None:
        speaker = WavFileSpeaker(Path(options.output), timeline=timeline)
    else:
        try:
            from appliance.adapters.sounddevice import SounddeviceSpeaker

            speaker = SounddeviceSpeaker(
                device=audio.output_device, output_block_ms=audio.output_block_ms, volume=audio.output_volume
            )
        except (AudioDeviceError, OSError) as err:
            if options.require_devices:
                raise AudioDeviceError(f"no speaker available: {err}") from err
            notes.append(f"no speaker available ({err}); writing what it would play to {FALLBACK_OUTPUT}")
            speaker = WavFileSpeaker(FALLBACK_OUTPUT, timeline=timeline)
    monitored = MonitoredSpeaker(speaker, clock)
    if options.simulate_echo:
        from appliance.runtime.echo_simulation import EchoMicrophone, load_impulse_response

        ir = load_impulse_response(options.simulate_echo_ir) if options.simulate_echo_ir else None
        mic = EchoMicrophone(
            mic,
            monitored,
            clock,
            gain=options.simulate_echo,
            impulse_response=ir,
            drift_ppm=options.simulate_echo_drift_ppm,
        )
        room = f" through the room response {options.simulate_echo_ir}" if ir is not None else ""
        drift = (
            f", speaker clock {options.simulate_echo_drift_ppm:+g} ppm"
            if options.simulate_echo_drift_ppm
            else ""
        )
        notes.append(
            f"simulating a room echo: the speaker comes back into the input at gain {options.simulate_echo}"
            f"{room}{drift}"
        )
    events = EventLog(clock, options.events)
    if device_mic is not None:
        device_mic.on_state_change(lambda state, reason: _report_microphone(events, str(state), reason))
    return Wiring(
        microphone=mic,
        speaker=monitored,
        clock=clock,
        events=events,
        timers=Timers(clock),
        input_duration_s=duration,
        notes=notes,
    )


def _report_microphone(events: EventLog, state: str, reason: str | None) -> None:
    """An unplugged microphone is an error event, not a crash; its return is said too."""
    if state == "reconnecting":
        message = f"microphone lost ({reason or 'no audio'}); retrying until it comes back"
        _LOGGER.warning("%s", message)
        events.emit(Event.ERROR, code="audio_device", message=message, stage="microphone")
    elif state == "open":
        events.emit("microphone_ready")


def load_listeners(config: Config) -> tuple[WakeWordDetector, VoiceActivityDetector]:
    """The wake-word detector and the VAD, from the model store (clear errors if missing)."""
    from appliance.adapters.silero_vad import SileroVad
    from appliance.config import resolve_models_dir
    from appliance.models.manifest import load_manifest
    from appliance.models.store import ModelStore
    from appliance.runtime.wake_words import build_detector, resolve_config_wake_words

    store = ModelStore(resolve_models_dir(config, os.environ), load_manifest())
    detector = build_detector(resolve_config_wake_words(config, store.manifest), store.path)
    vad = SileroVad(store.path("silero-vad") / "silero_vad.onnx")
    return detector, vad


def _raw_vad(vad: VoiceActivityDetector, config: Config) -> VoiceActivityDetector | None:
    """The second VAD the band double-talk detector needs (on the raw microphone)."""
    from appliance.adapters.silero_vad import SileroVad

    if config.band_double_talk_config() is None or not isinstance(vad, SileroVad):
        return None
    return vad.twin()


def _linear_filter(config: Config) -> LinearEchoFilter | None:
    """Our own linear echo filter, for `appliance.vad.barge_in_linear_echo_db`."""
    from appliance.adapters.linear_echo import LinearEchoFilter

    if config.linear_echo_config() is None or config.echo_cancellation in ("off", "gate"):
        return None  # the router uses it only with a canceller (not gating: no barge-in rule)
    return LinearEchoFilter()


def _residual_vad(vad: VoiceActivityDetector, config: Config) -> VoiceActivityDetector | None:
    """The VAD on that filter's residual (a twin: same model, own state)."""
    from appliance.adapters.silero_vad import SileroVad

    if _linear_filter(config) is None or not isinstance(vad, SileroVad):
        return None
    return vad.twin()


def build_loop(
    config: Config,
    wiring: Wiring,
    *,
    detector: WakeWordDetector,
    vad: VoiceActivityDetector,
    session_factory: Callable[[str], AgentSession],
    executor: ThreadPoolExecutor,
) -> ApplianceLoop:
    chime_cfg = config.appliance.chimes
    chimes = ChimePlayer(
        wiring.speaker,
        enabled=chime_cfg.enabled,
        volume=chime_cfg.volume,
        paths={
            Chime.WAKE: config.resolve_path(chime_cfg.wake) if chime_cfg.wake else None,
            Chime.DONE: config.resolve_path(chime_cfg.done) if chime_cfg.done else None,
            Chime.ERROR: config.resolve_path(chime_cfg.error) if chime_cfg.error else None,
        },
    )
    machine = DeviceMachine(
        DeviceConfig(
            no_speech_timeout_s=config.appliance.vad.no_speech_timeout_s,
            agents={word: (b.name, b.mode) for word, b in config.word_agents.items()},
            main_mode=config.appliance.mode,
        )
    )
    loop_ref: list[ApplianceLoop] = []
    router = AudioRouter(
        detector=detector,
        gate=WakeWordGate(config.wake_word_rules()),
        vad=vad,
        endpointer=Endpointer(config.endpoint_config()),
        executor=executor,
        post=lambda event: loop_ref[0].post(event),
        playback=wiring.speaker if isinstance(wiring.speaker, MonitoredSpeaker) else None,
        echo=build_echo_canceller(config.echo_cancellation),
        now=wiring.clock.now,
        double_talk=config.double_talk_config(),
        band_double_talk=config.band_double_talk_config(),
        raw_vad=_raw_vad(vad, config),
        linear_echo=config.linear_echo_config(),
        linear_filter=_linear_filter(config),
        residual_vad=_residual_vad(vad, config),
    )
    bound = float(config.conversation_config.conversation.max_duration_seconds) + SESSION_MARGIN_S
    loop = ApplianceLoop(
        timers=wiring.timers,
        machine=machine,
        microphone=wiring.microphone,
        router=router,
        session_factory=session_factory,
        chimes=chimes,
        events=wiring.events,
        clock=wiring.clock,
        limits=LoopLimits(progress=ProgressLimits(session_s=bound)),
    )
    loop_ref.append(loop)
    return loop


def build_echo_canceller(setting: str) -> EchoCanceller | None:
    """`appliance.audio.echo_cancellation`: None for `off`; gating for `gate`, and in place of
    an engine that cannot load here (said once in the log: the appliance still runs)."""
    from appliance.adapters.echo_suppressor import EchoSuppressor

    if setting == "off":
        return None
    if setting == "gate":
        return EchoSuppressor()
    from appliance.adapters.echo_canceller import ENGINES, EchoCancellerUnavailable

    try:
        return ENGINES[setting]()
    except EchoCancellerUnavailable as err:
        _LOGGER.warning(
            "appliance.audio.echo_cancellation: %s cannot run here (%s); falling back to gating", setting, err
        )
        return EchoSuppressor()


def session_factory_for(
    config: Config, wiring: Wiring, local_models: LocalModels | None
) -> Callable[[str], AgentSession]:
    """Which agent a wake word talks to: its own (`appliance.wake_words.words[].agent`, each
    factory built now, so nothing slow happens at the wake word) or the main one (also the one
    push-to-talk opens)."""
    if not config.word_agents:
        return _agent_factory(config, wiring, local_models)
    own = {word: _agent_factory(b.config, wiring, local_models) for word, b in config.word_agents.items()}
    main = _agent_factory(config, wiring, local_models)  # other words and push-to-talk

    def make(wake_word: str) -> AgentSession:
        return own.get(wake_word, main)(wake_word)

    return make


def _agent_factory(
    config: Config, wiring: Wiring, local_models: LocalModels | None
) -> Callable[[str], AgentSession]:
    """The sessions of one agent configuration (its mode)."""
    if config.appliance.mode in ("remote", "auto"):
        from appliance.runtime.remote_agent import agent_session_factory

        return agent_session_factory(config, wiring, local_models)
    if local_models is not None:
        from appliance.runtime.local_agent import local_session_factory

        return local_session_factory(
            config,
            local_models,
            speaker=wiring.speaker,
            events=wiring.events,
            clock=wiring.clock,
            timers=wiring.timers,
        )
    from appliance.runtime.capture_session import CaptureSession

    return lambda wake_word: CaptureSession()


def load_agent_models(config: Config) -> LocalModels | None:
    """Models of the local agent (None when the configured mode does not use it)."""
    if not config.uses_local_agent:  # no word opens a local agent (mode remote everywhere)
        return None  # auto keeps the local agent loaded: it takes over when the network fails
    from appliance.runtime.local_agent import load_local_models

    return load_local_models(config)


def preload(config: Config) -> Preloaded:
    detector, vad = load_listeners(config)
    return Preloaded(detector, vad, load_agent_models(config))


class ProcessStop:
    """SIGTERM / SIGINT. The first stops the service (bounded); with `own_process` (the CLI) a
    second one, or a stop still running after `STOP_GUARD_S`, ends the process at once: the
    events file is ended with `appliance_stopped`, the output WAV's header is written, one line
    on stderr says so, and `os._exit(0)` (a requested stop). Without `own_process` (tests, an
    embedding program) the process is never ended from here."""

    def __init__(self, wiring: Wiring, *, own_process: bool) -> None:
        self._wiring = wiring
        self._own = own_process
        self.signals = 0
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._why = ""
        self._guard: threading.Thread | None = None

    def on_signal(self, stop: Callable[[str], None], name: str) -> None:
        self.signals += 1
        if self.signals == 1 or not self._own:
            stop(name)
            self.arm(STOP_GUARD_S, f"{name}: the stop did not complete within {STOP_GUARD_S:g} s")
            return
        self.exit_now(f"second {name.removeprefix('signal_').upper()}: exiting now")

    @property
    def own_process(self) -> bool:
        return self._own

    def exit_after_the_run(self, signum: int, _frame: object = None) -> None:
        """A signal handler once the run is over (its files closed): exit at once."""
        self.exit_now(f"{signal.Signals(signum).name} as the run ended: exiting now")

    def ran_out(self) -> None:
        """The run is over (files closed): only busy worker threads can still hold the exit."""
        with self._cond:
            self._why = "the run is over; exiting without waiting any longer"

    def arm(self, seconds: float, why: str) -> None:
        """Exit the process `seconds` from now unless it has ended by then (`own_process` only)."""
        if not self._own:
            return
        with self._cond:
            deadline = time.monotonic() + seconds
            if self._deadline is None or deadline < self._deadline:
                self._deadline, self._why = deadline, why
                self._cond.notify_all()
            if self._guard is None:
                self._guard = threading.Thread(target=self._watch, name="stop-guard", daemon=True)
                self._guard.start()

    def _watch(self) -> None:
        with self._cond:
            while True:
                assert self._deadline is not None
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            why = self._why
        self.exit_now(why)

    def exit_now(self, why: str) -> None:
        """End the events file and the output WAV, say why on stderr, and `os._exit(0)`."""
        busy = sorted(
            t.name
            for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.main_thread()
        )
        detail = f"; leaving worker thread(s) behind: {', '.join(busy)}" if busy else ""
        with contextlib.suppress(Exception):
            self._wiring.events.finish("forced_exit")
        with contextlib.suppress(Exception):
            _wav_speaker(self._wiring).close_now()
        with contextlib.suppress(Exception):
            print(f"appliance: {why}{detail}", file=sys.stderr, flush=True)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stdout.flush()
        os._exit(0)


def _wav_speaker(wiring: Wiring) -> Any:
    from appliance.adapters.wav_audio import WavFileSpeaker

    inner = wiring.speaker.inner if isinstance(wiring.speaker, MonitoredSpeaker) else wiring.speaker
    return inner if isinstance(inner, WavFileSpeaker) else None


def exit_process(code: int, seconds: float = EXIT_GRACE_S) -> None:
    """End a CLI run's process with `code` once its files are closed: worker threads still busy
    (a model call that a stop abandoned) get `seconds`, then `os._exit`, which also skips the
    interpreter's teardown of the models (a few tenths of a second, more on a Pi). A signal
    meanwhile exits at once."""

    def busy() -> list[threading.Thread]:
        main = threading.main_thread()
        return [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not main]

    def leave(*_: Any) -> None:
        left = busy()
        with contextlib.suppress(Exception):
            if left:
                names = ", ".join(sorted(t.name for t in left))
                print(f"appliance: exiting without the busy worker thread(s): {names}", file=sys.stderr)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    with contextlib.suppress(ValueError):  # not the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, leave)
    deadline = time.monotonic() + seconds
    for thread in busy():
        thread.join(max(0.0, deadline - time.monotonic()))
    leave()


async def run_async(
    config: Config, options: RunOptions, preloaded: Preloaded | None = None, *, own_process: bool = False
) -> LoopResult:
    """Run until the input ends or SIGTERM/SIGINT; SIGHUP reloads the config (runtime/service.py:
    validated first, changed models loaded, applied between conversations). `own_process`: see
    `ProcessStop`."""
    from appliance.runtime.reload import reload_models
    from appliance.runtime.service import Service

    if own_process:
        from appliance.runtime.memory import fix_mmap_threshold

        fix_mmap_threshold()  # before the models allocate (runtime/memory.py)
    models = preloaded or preload(config)
    wiring = open_audio(config, options)
    for note in wiring.notes:
        _LOGGER.warning("%s", note)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="models")

    def make_loop(
        cfg: Config, m: Preloaded, wrap: Callable[[SessionFactory], SessionFactory]
    ) -> ApplianceLoop:
        factory = wrap(session_factory_for(cfg, wiring, m.local_models))
        return build_loop(
            cfg, wiring, detector=m.detector, vad=m.vad, session_factory=factory, executor=executor
        )

    service = Service(
        config,
        wiring,
        models,
        executor=executor,
        make_loop=make_loop,
        load_models=functools.partial(
            reload_models, load_listeners=load_listeners, load_agent_models=load_agent_models
        ),
    )
    aio = asyncio.get_running_loop()
    stopper = ProcessStop(wiring, own_process=own_process)
    before = _signal_handlers()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            name = f"signal_{signal.Signals(sig).name.lower()}"
            aio.add_signal_handler(sig, stopper.on_signal, service.stop, name)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        aio.add_signal_handler(signal.SIGHUP, service.request_reload)
    try:
        result = await service.run()
    finally:
        await _bounded(service.close(), "the service")
        await _bounded(wiring.microphone.close(), "the microphone")
        await _bounded(_close_speaker(wiring), "the speaker")
        speaker = _wav_speaker(wiring)
        if speaker is not None:
            speaker.close_now()  # a no-op after a clean close; else the header is written now
        wiring.events.close()
        executor.shutdown(wait=False, cancel_futures=True)  # a block in the models: not waited for
        if own_process:
            _let_workers_go(service.models)
        stopper.ran_out()
        _release_signals(aio, stopper, before)
    return result


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _signal_handlers() -> dict[int, Any]:
    return {sig: signal.getsignal(sig) for sig in _SIGNALS}


def _release_signals(aio: asyncio.AbstractEventLoop, stopper: ProcessStop, before: dict[int, Any]) -> None:
    """Take the run's signal handlers off the loop while it is still open. asyncio closes its
    self-pipe before it removes them, and a signal in between (a second SIGTERM while the run
    ends, a reload) is written to the closed pipe: "Exception ignored when trying to write to
    the signal wakeup fd", a traceback on stderr. After this the handlers are what they were
    before the run, except that a run owning its process (its files are closed now) exits at
    once on SIGTERM / SIGINT, as `exit_process` does."""
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            aio.remove_signal_handler(sig)  # the last one also unsets the wakeup fd
        with contextlib.suppress(ValueError, TypeError, OSError):  # not the main thread; a C handler
            if stopper.own_process and sig != getattr(signal, "SIGHUP", None):
                signal.signal(sig, stopper.exit_after_the_run)
            elif before.get(sig) is not None:
                signal.signal(sig, before[sig])


def _let_workers_go(models: Preloaded) -> None:
    """The process ends with this run: idle model threads end now, busy ones after their call
    (`exit_process` waits for those a little). Preloaded models shared with later runs (tests,
    benchmarks) are left alone: only a run that owns its process gets here."""
    agent = models.local_models
    if agent is None:
        return
    for name in ("stt_executor", "tts_executor"):
        pool = getattr(agent, name, None)
        if isinstance(pool, ThreadPoolExecutor):
            pool.shutdown(wait=False, cancel_futures=True)
    close = getattr(getattr(agent, "llm", None), "close", None)
    if callable(close) and "wait_s" in inspect.signature(close).parameters:
        close(wait_s=0.0)


async def _bounded(work: Any, what: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_S):
            await work
    except TimeoutError:
        _LOGGER.warning("closing %s took longer than %.1f s; left behind", what, CLOSE_S)
    except Exception as err:
        _LOGGER.warning("closing %s failed: %s", what, err)


async def _close_speaker(wiring: Wiring) -> None:
    inner = _wav_speaker(wiring)
    if inner is not None:
        pad = None
        if isinstance(wiring.clock, MonotonicClock) and wiring.input_duration_s is not None:
            # the input's timeline, as far as it was read (a stop can come long before its end)
            pad = min(wiring.input_duration_s, wiring.clock.now())
        await inner.close(pad_to_s=pad)
    else:
        await wiring.speaker.close()


def run_appliance(config: Config, options: RunOptions, *, own_process: bool = False) -> LoopResult:
    return asyncio.run(run_async(config, options, own_process=own_process))
