"""The composition types: what a run is built from (`Wiring`), the models loaded once
(`Preloaded`) and the run's options (`RunOptions`).

A leaf of `appliance.runtime`: `app.py` (the composition root) builds these, `service.py`,
`reload.py` and `remote_agent.py` only read them, so none of them imports `app.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from appliance.ports import Clock, Microphone, Speaker, VoiceActivityDetector, WakeWordDetector
from appliance.runtime.event_log import EventLog
from appliance.runtime.timers import Timers

if TYPE_CHECKING:
    from appliance.runtime.local_agent import LocalModels


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


@dataclass
class Preloaded:
    """Models loaded once and reused across runs (tests, benchmarks, config reloads)."""

    detector: WakeWordDetector
    vad: VoiceActivityDetector
    local_models: LocalModels | None
