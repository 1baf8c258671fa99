"""The composition root: the only place that builds adapters (with lazy imports).

`run_appliance(options)` loads the config, resolves models, opens audio (or the headless
WAV/pipe backends), wires the loop and runs it until the input ends or a signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from appliance.errors import ApplianceError, AudioDeviceError, ModelError
from appliance.ports import AgentSession, Clock, Microphone, Speaker
from appliance.runtime.chimes import ChimePlayer
from appliance.runtime.clock import MonotonicClock, StreamClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.loop import ApplianceLoop, LoopResult
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
        mic = RawPipeMicrophone(sys.stdin.buffer, realtime=options.realtime)
    elif options.input is not None:
        wav_mic = WavFileMicrophone(Path(options.input), realtime=options.realtime)
        duration = wav_mic.duration_s
        mic = wav_mic
    else:
        try:
            from appliance.adapters.sounddevice_audio import SounddeviceMicrophone

            sd_mic = SounddeviceMicrophone(
                device=audio.input_device,
                input_block_ms=audio.input_block_ms,
                input_queue_blocks=audio.input_queue_blocks,
            )
            mic = sd_mic
            device_mic = sd_mic
        except (AudioDeviceError, OSError) as err:
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
            from appliance.adapters.sounddevice_audio import SounddeviceSpeaker

            speaker = SounddeviceSpeaker(
                device=audio.output_device, output_block_ms=audio.output_block_ms, volume=audio.output_volume
            )
        except (AudioDeviceError, OSError) as err:
            notes.append(f"no speaker available ({err}); writing what it would play to {FALLBACK_OUTPUT}")
            speaker = WavFileSpeaker(FALLBACK_OUTPUT, timeline=timeline)
    monitored = MonitoredSpeaker(speaker, clock)
    if options.simulate_echo:
        from appliance.testing.echo import EchoMicrophone

        mic = EchoMicrophone(mic, monitored, clock, gain=options.simulate_echo)
        notes.append(
            f"simulating a room echo: the speaker comes back into the input at gain {options.simulate_echo}"
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


def _log_conversation(event: dict[str, Any]) -> None:
    """What a person at the console wants to see: who said what, and how fast."""
    kind = event["type"]
    if kind == "user_transcript":
        _LOGGER.info("user: %s", event.get("user_transcript"))
    elif kind == "agent_response":
        _LOGGER.info("agent: %s", event.get("agent_response"))
    elif kind == "agent_response_correction":
        _LOGGER.info("agent interrupted after: %s", event.get("corrected_agent_response"))
    elif kind == "turn_metrics":
        _LOGGER.info(
            "turn: stt %.2fs, llm first token %.2fs, tts first audio %.2fs, end of speech to audio %.2fs",
            event.get("stt_s") or 0.0,
            event.get("llm_first_token_s") or 0.0,
            event.get("tts_first_audio_s") or 0.0,
            event.get("end_of_speech_to_first_audio_s") or 0.0,
        )
    elif kind in ("session_started", "session_ended"):
        _LOGGER.info("%s %s", kind.replace("_", " "), event.get("reason") or event.get("wake_word") or "")


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
    from appliance.modelstore import ModelStore, find_custom_wakewords, load_manifest

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
    from appliance.adapters.echo_suppressor import EchoSuppressor

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
        echo=EchoSuppressor() if config.appliance.vad.playback_gating else None,
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


def session_factory_for(
    config: Config, wiring: Wiring, local_models: Any | None
) -> Callable[[str], AgentSession]:
    """Which agent a wake word talks to."""
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
    mode = config.appliance.mode
    if mode == "remote":
        raise ApplianceError(
            "appliance.mode: remote is not available in this version yet; use mode: local",
            code="mode_unavailable",
        )
    if mode == "auto":
        _LOGGER.warning("appliance.mode auto: the remote agent is not available yet; using the local agent")
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
    models = preloaded or preload(config)
    detector, vad, local_models = models.detector, models.vad, models.local_models
    detector.reset()
    vad.reset()
    wiring = open_audio(config, options)
    for note in wiring.notes:
        _LOGGER.warning("%s", note)
    wiring.events.subscribe(_log_conversation)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="models")
    loop = build_loop(
        config,
        wiring,
        detector=detector,
        vad=vad,
        session_factory=session_factory_for(config, wiring, local_models),
        executor=executor,
    )
    aio = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            aio.add_signal_handler(sig, loop.stop, f"signal_{signal.Signals(sig).name.lower()}")
    try:
        result = await loop.run()
    finally:
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
