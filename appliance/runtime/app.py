"""The composition root: the only place that builds adapters (with lazy imports).

`run_appliance(options)` loads the config, resolves models, opens audio (or the headless
WAV/pipe backends), wires the loop and runs it until the input ends or a signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.core.device import Chime, DeviceConfig, DeviceMachine
from appliance.core.endpointing import Endpointer
from appliance.core.wakeword import WakeWordGate
from appliance.errors import AudioDeviceError, ModelError
from appliance.ports import AgentSession, Clock, EchoCanceller, Microphone, Speaker
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import MonotonicClock, StreamClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.loop import ApplianceLoop, LoopResult, SessionFactory
from appliance.runtime.playback_monitor import MonitoredSpeaker
from appliance.runtime.router import AudioRouter
from appliance.runtime.timers import Timers

_LOGGER = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLE_RECORDING = ASSETS / "example-hey-jarvis.wav"
FALLBACK_OUTPUT = Path("appliance-output.wav")


@dataclass
class RunOptions:
    input: str | None = None
    """A WAV path, `-` for raw 16 kHz s16le on stdin, or None for the microphone."""
    output: str | None = None
    """A WAV path for what the speaker would play, or None for the speaker."""
    events: str | None = None
    realtime: bool = False
    simulate_echo: float | None = None
    """Testing aid: mix the speaker's output back into the input at this gain (30 ms late)."""
    simulate_echo_ir: str | None = None
    """With `simulate_echo`: a room impulse response WAV the playback is convolved with."""
    simulate_echo_drift_ppm: float = 0.0
    """With `simulate_echo`: the speaker's clock runs this many ppm fast (negative: slow)."""
    require_devices: bool = False
    """A service: a missing microphone or speaker is an error (exit 4, systemd retries) instead
    of the example recording / a WAV file standing in."""


@dataclass
class Wiring:
    """What a run is built from; tests build one with fakes."""

    microphone: Microphone
    speaker: Speaker
    clock: Clock
    events: EventLog
    timers: Timers
    input_duration_s: float | None = None
    notes: list[str] = field(default_factory=list)


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
        events.emit("error", code="audio_device", message=message, stage="microphone")
    elif state == "open":
        events.emit("microphone_ready")


def load_listeners(config: Config) -> tuple[Any, Any]:
    """The wake-word detector and the VAD, from the model store (clear errors if missing)."""
    from appliance.adapters.openwakeword_detector import OpenWakeWordDetector, WakeWordModelFile
    from appliance.adapters.silero_vad import SileroVad
    from appliance.config import resolve_models_dir
    from appliance.models.manifest import load_manifest
    from appliance.models.store import ModelStore, find_custom_wakewords

    store = ModelStore(resolve_models_dir(config, os.environ), load_manifest())
    custom_dir = config.appliance.wake_words.custom_dir
    custom = find_custom_wakewords(config.resolve_path(custom_dir)) if custom_dir else {}
    files: list[WakeWordModelFile] = []
    for word in config.appliance.wake_words.words:
        if word.path:
            files.append(WakeWordModelFile(word.name, config.resolve_path(word.path)))
        elif word.name in custom:
            files.append(WakeWordModelFile(word.name, custom[word.name]))
        else:
            known = store.manifest.names
            if word.name not in known:
                raise ModelError(
                    f"appliance.wake_words.words: unknown wake word '{word.name}': not a bundled model "
                    f"({', '.join(n for n in known if store.manifest.get(n).kind == 'wakeword')}) and not "
                    f"in the custom folder {custom_dir or '(none configured)'}",
                    code="wakeword_missing",
                )
            model_dir = store.path(word.name)
            onnx = sorted(model_dir.glob("*.onnx"))
            files.append(WakeWordModelFile(word.name, onnx[0]))
    features = store.path("oww-features")
    detector = OpenWakeWordDetector(
        files, features / "melspectrogram.onnx", features / "embedding_model.onnx"
    )
    vad = SileroVad(store.path("silero-vad") / "silero_vad.onnx")
    return detector, vad


def build_loop(
    config: Config,
    wiring: Wiring,
    *,
    detector: Any,
    vad: Any,
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
    machine = DeviceMachine(DeviceConfig(no_speech_timeout_s=config.appliance.vad.no_speech_timeout_s))
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
    )
    loop = ApplianceLoop(
        timers=wiring.timers,
        machine=machine,
        microphone=wiring.microphone,
        router=router,
        session_factory=session_factory,
        chimes=chimes,
        events=wiring.events,
        clock=wiring.clock,
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
    config: Config, wiring: Wiring, local_models: Any | None
) -> Callable[[str], AgentSession]:
    """Which agent a wake word talks to."""
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


def load_agent_models(config: Config) -> Any | None:
    """Models of the local agent (None when the configured mode does not use it)."""
    if config.appliance.mode == "remote":
        return None  # auto keeps the local agent loaded: it takes over when the network fails
    from appliance.runtime.local_agent import load_local_models

    return load_local_models(config)


@dataclass
class Preloaded:
    """Models loaded once and reused across runs (tests, benchmarks, config reloads)."""

    detector: Any
    vad: Any
    local_models: Any | None


def preload(config: Config) -> Preloaded:
    detector, vad = load_listeners(config)
    return Preloaded(detector, vad, load_agent_models(config))


async def run_async(config: Config, options: RunOptions, preloaded: Preloaded | None = None) -> LoopResult:
    """Run until the input ends or SIGTERM/SIGINT; SIGHUP reloads the config (runtime/service.py:
    validated first, changed models loaded, applied between conversations)."""
    from appliance.runtime.reload import reload_models
    from appliance.runtime.service import Service

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
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            aio.add_signal_handler(sig, service.stop, f"signal_{signal.Signals(sig).name.lower()}")
    with contextlib.suppress(NotImplementedError, RuntimeError):
        aio.add_signal_handler(signal.SIGHUP, service.request_reload)
    try:
        result = await service.run()
    finally:
        await service.close()
        await wiring.microphone.close()
        await _close_speaker(wiring)
        wiring.events.close()
        executor.shutdown(wait=True)
    return result


async def _close_speaker(wiring: Wiring) -> None:
    from appliance.adapters.wav_audio import WavFileSpeaker

    inner = wiring.speaker.inner if isinstance(wiring.speaker, MonitoredSpeaker) else wiring.speaker
    if isinstance(inner, WavFileSpeaker):
        pad = wiring.input_duration_s if isinstance(wiring.clock, MonotonicClock) else None
        await inner.close(pad_to_s=pad)
    else:
        await wiring.speaker.close()


def run_appliance(config: Config, options: RunOptions) -> LoopResult:
    return asyncio.run(run_async(config, options))
