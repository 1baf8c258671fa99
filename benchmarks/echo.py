"""Echo benchmarks: does the agent interrupt itself on its own voice in a room, can the user
still talk over it, and what does the echo canceller cost.

Rooms come from pyroomacoustics (`appliance.testing.rooms`: RT60 0.2–0.8 s, speaker–microphone
4–50 cm); the echo is the agent's playback convolved with the room's impulse response, scaled by
the gain (unit-energy responses: gain = echo level / playback level), 30 ms late
(`appliance.runtime.echo_simulation.RoomEcho`, the code behind `--simulate-echo-ir`).
Agent and user speech are piper (joe). Every table puts gating (`appliance.audio.
echo_cancellation: gate`) and the canceller (`webrtc`) side by side.

- `agent.echo`: the session's listening path itself (`AudioRouter`: the echo canceller, the real
  Silero VAD, the `Endpointer` with the default config) on the audio clock, faster than real
  time, for every room × gain: self-interruptions per agent turn, barge-in detection rate and
  delay over several talk-over trials, ERLE after convergence, the canceller's CPU.
- `agent.echo.appliance`: the whole appliance in real time (`run_async`, realtime, with
  `simulate_echo_ir`): a scripted story, nobody talking / the user saying "Stop" over it.
- `agent.echo.cpu`: the canceller alone on 20 s of the agent's speech; run it under
  `../shared/tools/pi-class pi4 -- ...` too (the table reads the CPU quota it runs under).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.runtime.cpus import cgroup_cpu_quota
from appliance.testing.router_capture import RouterCapture, capturing
from benchmarks.common import (
    RATE_HZ,
    _appliance_config,
    _concat,
    _errors,
    _preloaded,
    _say,
    _silence,
    _wake_and_ask,
    _words,
    run_appliance,
)

Row = dict[str, Any]
Pcm16 = npt.NDArray[np.int16]

STORY = (
    "Once upon a time, in a quiet village by the sea, there lived an old fisherman.",
    "Every morning he rowed his small boat past the lighthouse and cast his nets.",
    "One day he caught a golden fish that could speak.",
    "The fish promised him three wishes if he would let it go.",
)
STORY_REQUEST = "Tell me a story."
STOP_UTTERANCE = "Stop, stop please."
SPARE_REPLY = "Okay."
MODES = ("gate", "webrtc")
SLOW_RULE = "webrtc, min_speech_s only"
"""The canceller with the endpointer's normal rule only (`appliance.vad.barge_in_min_speech_s:
null`): the same audio as the `webrtc` row, to show what the barge-in rule changes."""
BANDS = "webrtc + band double talk"
"""The canceller with the band double-talk detector and the raw-microphone VAD on
(`appliance.vad.barge_in_double_talk_bands: 3`; off by default), without the linear echo
estimate (as it was measured)."""
NO_LINEAR = "webrtc, no linear echo"
"""The canceller without our own linear echo estimate (`appliance.vad.barge_in_linear_echo_db:
null`; on by default since stop 13): the default before."""
LINEAR = "webrtc + linear echo"
"""The canceller with our own linear echo estimate (`appliance.vad.barge_in_linear_echo_db: 10`,
the default: the same as `webrtc`): the filter on the raw microphone whose residual, risen over
its echo estimate, marks frames in which a second VAD on the residual counts."""
LINEAR_MARGIN_DB = 10.0
PATH_MODES = (*MODES, NO_LINEAR, BANDS, SLOW_RULE)
FIXED_WAIT = "webrtc, fixed wait"
"""The canceller with the barge-in rule held for the fixed 2.5 s (`appliance.vad.
barge_in_double_talk_db: null`): no double-talk detection on the raw microphone."""
WITH_LINEAR = "webrtc + linear echo filter + residual VAD"
"""The CPU table's row with what the linear echo estimate adds (on by default,
`appliance.vad.barge_in_linear_echo_db`): the adaptive filter, the residual's energies and
detector, the second Silero VAD on the residual."""
WITH_BANDS = "webrtc + band double talk + raw-microphone VAD"
"""The CPU table's row with what `BANDS` adds while the agent speaks: the band energies and
detector, and the second Silero VAD on the raw microphone."""
DEVICE_DELAY_S = 0.03  # what --simulate-echo adds on top of the room's own delay
BARGE_IN_WINDOW_S = 0.30  # target: detected within this long after the user starts speaking
CONVERGENCE_S = 2.0  # ERLE counts from this far into the agent's speech
ERLE_TARGET_DB = 25.0
CPU_TARGET_PCT = 5.0
BARGE_IN_RATE_TARGET = 0.95
USER_PHRASES = (
    STOP_UTTERANCE,
    "Wait, wait a moment.",
    "Hey, what time is it?",
    "No, tell me about the weather.",
)


@dataclass(frozen=True)
class Settings:
    rooms: tuple[str, ...] = ("small", "living", "hall-close", "hall")
    gains: tuple[float, ...] = (0.5, 1.0, 2.0)
    turns: int = len(STORY)  # agent turns in the quiet session (one story sentence each)
    trials: int = 12  # talk-over trials per room, gain and mode
    appliance: tuple[tuple[str, float], ...] = (
        ("small", 1.0),
        ("small", 2.0),
        ("living", 1.0),
        ("hall-close", 1.0),
        ("hall", 1.0),
    )
    appliance_modes: tuple[str, ...] = MODES
    story_sentences: int = len(STORY)
    talk_after_reply_s: float = 4.0
    cpu_audio_s: float = 20.0
    realtime: bool = True
    """`agent.echo.appliance` runs in real time; False (the suite's smoke check of the table's
    code) runs it on the file clock, where echo timing is not the device's: not a measurement."""


FULL = Settings()
QUICK = Settings(
    rooms=("small",),
    gains=(1.0,),
    turns=2,
    trials=2,
    appliance=(("small", 1.0),),
    appliance_modes=("webrtc",),  # the default; the session path (`agent.echo`) has both
    story_sentences=2,
    talk_after_reply_s=2.5,
    cpu_audio_s=4.0,
)


def settings_for(quick: bool) -> Settings:
    return QUICK if quick else FULL


def _room(name: str) -> Any:
    from appliance.testing.rooms import ROOMS

    return next(r for r in ROOMS if r.name == name)


@functools.cache
def _ir(name: str) -> npt.NDArray[np.float64]:
    from appliance.testing.rooms import impulse_response

    return impulse_response(_room(name))


# ---------------------------------------------------------------------------------------------
# the session path, offline


class Timeline:
    """The playback record: what the speaker played, by audio-clock time (`PlaybackReference`)."""

    def __init__(self, total_s: float) -> None:
        self.audio = np.zeros(round(total_s * RATE_HZ), dtype=np.float32)
        self.spans: list[tuple[float, float]] = []
        self.now = 0.0

    def play(self, at_s: float, pcm: Pcm16) -> None:
        start = round(at_s * RATE_HZ)
        end = min(self.audio.size, start + pcm.size)
        self.audio[start:end] += pcm[: end - start].astype(np.float32) / 32768.0
        self.spans.append((start / RATE_HZ, end / RATE_HZ))

    @property
    def playing(self) -> bool:
        return any(a <= self.now < b for a, b in self.spans)

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        out = np.zeros(n_samples, dtype=np.float32)
        start = round(t_start * RATE_HZ)
        lo, hi = max(0, start), min(self.audio.size, start + n_samples)
        if hi > lo:
            out[lo - start : hi - start] = self.audio[lo:hi]
        return out


class Metered:
    """Wraps an `EchoCanceller`: its thread CPU time, and what went in and came out."""

    def __init__(self, inner: Any, now: Callable[[], float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.lookback_samples = inner.lookback_samples
        self.cpu_s = 0.0
        self.audio_s = 0.0
        self.blocks: list[tuple[float, Pcm16, Pcm16]] = []  # (block end time, in, out)
        self._now = now

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        t0 = time.thread_time()
        out: Pcm16 = self.inner.process(mic, reference)
        self.cpu_s += time.thread_time() - t0
        self.audio_s += mic.size / RATE_HZ
        self.blocks.append((self._now(), mic.copy(), out.copy()))
        return out

    def pause(self) -> None:
        self.inner.pause()


class MeteredVad:
    """Wraps the second (raw microphone) VAD: its thread CPU time and frames."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.frame_samples: int = inner.frame_samples
        self.cpu_s = 0.0
        self.frames = 0

    def probability(self, frame: Pcm16) -> float:
        t0 = time.thread_time()
        p = float(self.inner.probability(frame))
        self.cpu_s += time.thread_time() - t0
        self.frames += 1
        return p

    def reset(self) -> None:
        self.inner.reset()


class RecordedVad:
    """Wraps the VAD: every frame's probability, by the audio time at the frame's end."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.frame_samples: int = inner.frame_samples
        self.probs: list[tuple[float, float]] = []
        self._samples = 0

    def probability(self, frame: Pcm16) -> float:
        p = float(self.inner.probability(frame))
        self._samples += int(frame.size)
        self.probs.append((self._samples / RATE_HZ, p))
        return p

    def reset(self) -> None:
        self.inner.reset()


@dataclass
class PathRun:
    speech_starts: list[float] = field(default_factory=list)  # decision times (audio clock)
    canceller: Metered | None = None
    vad: list[tuple[float, float]] = field(default_factory=list)  # (frame end, probability)
    raw_vad: MeteredVad | None = None
    linear: MeteredLinear | None = None
    residual_vad: MeteredVad | None = None


class MeteredLinear:
    """Wraps the linear echo filter: its thread CPU time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cpu_s = 0.0

    def process(
        self, mic: npt.NDArray[np.float64], reference: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        t0 = time.thread_time()
        out: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] = self.inner.process(mic, reference)
        self.cpu_s += time.thread_time() - t0
        return out

    def pause(self) -> None:
        self.inner.pause()


def run_session_path(
    mode: str,
    timeline: Timeline,
    room: str | None,
    gain: float,
    user: list[tuple[float, Pcm16]],
    total_s: float,
) -> PathRun:
    """The router's listening path on `total_s` of audio: the room's echo of `timeline` plus the
    user's speech (at their start times), 80 ms blocks, the audio clock."""
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.core.doubletalk import BandDoubleTalkConfig
    from appliance.core.endpointing import Endpointer, SpeechStarted
    from appliance.core.wakeword import WakeWordGate
    from appliance.runtime.app import build_echo_canceller
    from appliance.runtime.echo_simulation import RoomEcho
    from appliance.runtime.router import AudioRouter

    config = _appliance_config()
    preloaded = _preloaded()
    endpoint = config.endpoint_config()
    double_talk = config.double_talk_config()
    bands = config.band_double_talk_config()
    raw_vad_always = os.environ.get("ECHO_BENCH_RAW_VAD", "always") == "always"
    linear = config.linear_echo_config()
    if mode in (NO_LINEAR, "gate", "off"):  # gating has no barge-in rule: no filter either
        linear = None
    if mode == NO_LINEAR:
        mode = "webrtc"
    if mode == LINEAR:
        from appliance.core.doubletalk import linear_residual_config

        mode, linear = "webrtc", linear_residual_config(LINEAR_MARGIN_DB)
    if mode == SLOW_RULE:
        # as the config has it: without the barge-in rule there is no band detector to feed
        mode, endpoint, bands = "webrtc", dataclasses.replace(endpoint, barge_in_min_speech_s=None), None
        linear = None
    elif mode == FIXED_WAIT:
        mode, double_talk, bands, linear = "webrtc", None, None, None
    elif mode == BANDS:
        mode, bands, linear = "webrtc", BandDoubleTalkConfig(min_bands=3), None
    inner = build_echo_canceller(mode)
    canceller = Metered(inner, lambda: timeline.now) if inner is not None else None
    result = PathRun(canceller=canceller)
    if bands is not None:
        result.raw_vad = MeteredVad(preloaded.vad.twin())
    if linear is not None:
        result.linear = MeteredLinear(LinearEchoFilter())
        result.residual_vad = MeteredVad(preloaded.vad.twin())
    block = 1280
    echo = RoomEcho(timeline, _ir(room) if room else None)
    near = np.zeros(round(total_s * RATE_HZ), dtype=np.float64)
    for at_s, pcm in user:
        start = round(at_s * RATE_HZ)
        end = min(near.size, start + pcm.size)
        near[start:end] += pcm[: end - start]
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="echo-bench")

    def post(event: Any) -> None:
        if isinstance(event, SpeechStarted):
            result.speech_starts.append(timeline.now)

    vad = RecordedVad(preloaded.vad)  # the router listens from the first sample: frames are contiguous
    router = AudioRouter(
        detector=preloaded.detector,
        gate=WakeWordGate(config.wake_word_rules()),
        vad=vad,
        endpointer=Endpointer(endpoint),
        executor=executor,
        post=post,
        playback=timeline,
        echo=canceller,
        now=lambda: timeline.now,
        double_talk=double_talk,
        band_double_talk=bands,
        raw_vad=result.raw_vad,
        raw_vad_always=raw_vad_always,
        linear_echo=linear,
        linear_filter=result.linear,
        residual_vad=result.residual_vad,
    )
    router.set_listening(True)

    async def feed() -> None:
        for i in range(0, near.size - block + 1, block):
            timeline.now = (i + block) / RATE_HZ
            start_s = i / RATE_HZ - DEVICE_DELAY_S
            mixed = near[i : i + block] + echo.render(start_s, block) * gain * 32768.0
            await router.process(np.clip(np.rint(mixed), -32768, 32767).astype(np.int16))

    try:
        asyncio.run(feed())
    finally:
        executor.shutdown(wait=True)
    result.vad = vad.probs
    return result


def _onset_s(pcm: Pcm16) -> float:
    """Where the speech in `pcm` starts: the first 10 ms frame within 30 dB of the loudest."""
    frames = pcm[: pcm.size // 160 * 160].astype(np.float64).reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    return float(np.argmax(level > level.max() - 30.0)) * 0.01


@dataclass
class PathResult:
    turns: int = 0
    turns_self_interrupted: int = 0
    trials: int = 0
    detected: int = 0
    in_window: int = 0
    false_in_trials: int = 0
    delays_s: list[float] = field(default_factory=list)
    vad_delays_s: list[float] = field(default_factory=list)
    """User's speech start → the end of the first VAD frame at or above the threshold after it."""
    erle_db: float | None = None
    cpu_pct: float | None = None
    raw_vad_cpu_pct: float | None = None
    """The second VAD (raw microphone) per second the canceller ran."""
    linear_cpu_pct: float | None = None
    """The linear echo filter + the VAD on its residual per second the canceller ran."""


def measure_path(mode: str, room: str | None, gain: float, settings: Settings) -> PathResult:
    res = PathResult()
    # 1. nobody talks: one session, one story sentence per agent turn, 1.5 s apart
    replies = [_say(STORY[i % len(STORY)]) for i in range(settings.turns)]
    lead_s, gap_s = 1.0, 1.5
    total = lead_s + sum(r.size / RATE_HZ + gap_s for r in replies)
    timeline = Timeline(total)
    at = lead_s
    for reply in replies:
        timeline.play(at, reply)
        at += reply.size / RATE_HZ + gap_s
    quiet = run_session_path(mode, timeline, room, gain, [], total)
    res.turns = len(replies)
    for a, b in timeline.spans:
        if any(a <= t <= b + gap_s for t in quiet.speech_starts):
            res.turns_self_interrupted += 1
    if quiet.canceller is not None:
        res.cpu_pct = 100.0 * quiet.canceller.cpu_s / max(quiet.canceller.audio_s, 1e-9)
        res.erle_db = _erle(quiet.canceller, timeline)
        if quiet.raw_vad is not None:
            res.raw_vad_cpu_pct = 100.0 * quiet.raw_vad.cpu_s / max(quiet.canceller.audio_s, 1e-9)
        if quiet.linear is not None and quiet.residual_vad is not None:
            cpu_s = quiet.linear.cpu_s + quiet.residual_vad.cpu_s
            res.linear_cpu_pct = 100.0 * cpu_s / max(quiet.canceller.audio_s, 1e-9)
    # 2. the user talks over the agent's first reply of a fresh session, at varied points
    story = _say(" ".join(STORY[: settings.story_sentences]))
    reply_s = story.size / RATE_HZ
    for k in range(settings.trials):
        phrase = _say(USER_PHRASES[k % len(USER_PHRASES)])
        into_s = 0.5 + (reply_s - 3.0) * (k + 0.5) / settings.trials  # spread over the reply
        total = lead_s + into_s + phrase.size / RATE_HZ + 1.0
        timeline = Timeline(total)
        timeline.play(lead_s, story)
        user_at = lead_s + into_s
        run = run_session_path(mode, timeline, room, gain, [(user_at, phrase)], total)
        onset = user_at + _onset_s(phrase)
        res.trials += 1
        res.false_in_trials += sum(t < onset for t in run.speech_starts)
        threshold = _appliance_config().appliance.vad.threshold
        crossing = [t - onset for t, p in run.vad if t > onset and p >= threshold]
        if crossing:
            res.vad_delays_s.append(crossing[0])
        after = [t - onset for t in run.speech_starts if t >= onset]
        if after:
            res.detected += 1
            res.delays_s.append(after[0])
            res.in_window += after[0] <= BARGE_IN_WINDOW_S
    return res


def _erle(canceller: Metered, timeline: Timeline) -> float | None:
    """Echo in ÷ echo out over the agent's speech after `CONVERGENCE_S` of it (nobody talks)."""
    from appliance.testing.rooms import erle_db

    first = timeline.spans[0][0] if timeline.spans else 0.0
    ins: list[Pcm16] = []
    outs: list[Pcm16] = []
    for t_end, mic, out in canceller.blocks:
        if t_end - first >= CONVERGENCE_S and timeline.reference(t_end - 0.08, 1280).any():
            ins.append(mic)
            outs.append(out)
    if not ins:
        return None
    return erle_db(np.concatenate(ins), np.concatenate(outs))


def echo_table(quick: bool = False) -> list[Row]:
    """Echo in a room: self-interruptions, barge-in and ERLE on the session path, gating vs canceller"""
    settings = settings_for(quick)
    rows: list[Row] = []
    floor = measure_path("off", None, 0.0, dataclasses.replace(settings, turns=1))
    rows.append(
        {
            "room": "no echo (the VAD's own delay)",
            "gain": None,
            "mode": "off",
            "turns self-interrupted": f"{floor.turns_self_interrupted}/{floor.turns}",
            "barge-in detected": f"{floor.detected}/{floor.trials}",
            "≤ 300 ms": f"{floor.in_window}/{floor.trials}",
            "VAD ≥ threshold median ms": _ms(_median(floor.vad_delays_s)),
            "delay median ms": _ms(_median(floor.delays_s)),
            "delay max ms": _ms(max(floor.delays_s, default=None)),
            "false starts": floor.false_in_trials,
            "ERLE dB": None,
            "CPU %": None,
            "raw VAD CPU %": None,
            "linear filter + VAD CPU %": None,
            "target": "—",
            "verdict": "—",
        }
    )
    for room in settings.rooms:
        for gain in settings.gains:
            targeted = gain <= 1.0 or room == "small"
            for mode in MODES if quick else PATH_MODES:
                r = measure_path(mode, room, gain, settings)
                ok = (
                    r.turns_self_interrupted == 0
                    and r.false_in_trials == 0
                    and r.in_window >= BARGE_IN_RATE_TARGET * r.trials
                    and (r.erle_db or 0.0) >= ERLE_TARGET_DB
                    and (r.cpu_pct or 0.0) + (r.raw_vad_cpu_pct or 0.0) + (r.linear_cpu_pct or 0.0)
                    <= CPU_TARGET_PCT
                )
                rows.append(
                    {
                        "room": _room(room).label,
                        "gain": gain,
                        "mode": mode,
                        "turns self-interrupted": f"{r.turns_self_interrupted}/{r.turns}",
                        "barge-in detected": f"{r.detected}/{r.trials}",
                        "≤ 300 ms": f"{r.in_window}/{r.trials}",
                        "VAD ≥ threshold median ms": _ms(_median(r.vad_delays_s)),
                        "delay median ms": _ms(_median(r.delays_s)),
                        "delay max ms": _ms(max(r.delays_s, default=None)),
                        "false starts": r.false_in_trials,
                        "ERLE dB": r.erle_db,
                        "CPU %": r.cpu_pct,
                        "raw VAD CPU %": r.raw_vad_cpu_pct,
                        "linear filter + VAD CPU %": r.linear_cpu_pct,
                        "target": "yes" if targeted else "no",
                        "verdict": ("PASS" if ok else "FAIL") if targeted else "—",
                    }
                )
    return rows


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


# ---------------------------------------------------------------------------------------------
# the whole appliance in real time


@dataclass(frozen=True)
class ApplianceEcho:
    agent_turns: int
    self_interruptions: int
    barge_in: bool | None
    barge_in_delay_s: float | None
    heard_stop: bool | None
    errors: int


def _echo_config(url: str, mode: str) -> Any:
    def overrides(raw: dict[str, Any]) -> None:
        prompt = raw["conversation_config"]["agent"]["prompt"]
        prompt.update(llm="custom-llm", custom_llm={"url": url, "model_id": "scripted-model"})
        appliance = raw["appliance"]
        appliance["local"]["llm"] = {"backend": "openai"}
        if mode == LINEAR:  # the estimate on, whatever the default
            appliance.setdefault("vad", {})["barge_in_linear_echo_db"] = LINEAR_MARGIN_DB
        appliance.setdefault("audio", {})["echo_cancellation"] = "webrtc" if mode == LINEAR else mode
        raw["conversation_config"]["turn"]["turn_timeout"] = 30  # no re-prompt within a run

    return _appliance_config(overrides)


def appliance_run(
    mode: str,
    room: str,
    gain: float,
    talk_over: bool,
    settings: Settings,
    capture: RouterCapture | None = None,
) -> ApplianceEcho:
    """Wake word + "Tell me a story." + (silence, or "Stop" over the reply), in real time;
    `capture`: what the router receives is recorded there (`appliance.testing.router_capture`)."""
    from appliance.adapters.openai_llm import OpenAiCompatibleLlm
    from appliance.testing.openai_server import ScriptedOpenAiServer, text_reply
    from appliance.testing.rooms import cache_dir, write_ir_wav

    story = " ".join(STORY[: settings.story_sentences])
    reply_s = _say(story).size / RATE_HZ
    lead_s = 1.0 + _say("Hey Jarvis!").size / RATE_HZ + 0.5 + _say(STORY_REQUEST).size / RATE_HZ
    if talk_over:
        gap_s = 1.5 + settings.talk_after_reply_s
        stop = _say(STOP_UTTERANCE)
        audio = _concat(_wake_and_ask(STORY_REQUEST, gap_s), stop, _silence(4.0))
        stop_at_s: float | None = lead_s + gap_s + _onset_s(stop)
    else:
        audio = _wake_and_ask(STORY_REQUEST, reply_s + 3.0)
        stop_at_s = None
    ir_wav = cache_dir() / f"{room}.wav"
    if not ir_wav.exists():
        ir_wav.parent.mkdir(parents=True, exist_ok=True)
        write_ir_wav(ir_wav, _ir(room))
    with ScriptedOpenAiServer() as server:
        server.add(text_reply(*[w + " " for w in story.split()]))
        server.add(*[text_reply(SPARE_REPLY) for _ in range(12)])
        preloaded = _preloaded()
        llm = OpenAiCompatibleLlm(server.url, "scripted-model", None)
        models = dataclasses.replace(
            preloaded, local_models=dataclasses.replace(preloaded.local_models, llm=llm, concurrent_llm=True)
        )
        with capturing(capture) if capture is not None else contextlib.nullcontext():
            events = run_appliance(
                _echo_config(server.url, mode),
                models,
                audio,
                realtime=settings.realtime,
                echo=gain,
                echo_ir=ir_wav,
            )
    interruptions = [e["t"] for e in events if e["type"] == "interruption"]
    transcripts = [e["user_transcript"] for e in events if e["type"] == "user_transcript"]
    if stop_at_s is None:
        false, barge, delay, heard = len(interruptions), None, None, None
    else:
        false = sum(t < stop_at_s for t in interruptions)
        after = [t - stop_at_s for t in interruptions if t >= stop_at_s]
        barge, delay = bool(after), (after[0] if after else None)
        heard = any("stop" in _words(t) for t in transcripts)
    return ApplianceEcho(
        agent_turns=sum(e["type"] == "agent_response" for e in events),
        self_interruptions=false,
        barge_in=barge,
        barge_in_delay_s=delay,
        heard_stop=heard,
        errors=_errors(events),
    )


def appliance_table(quick: bool = False) -> list[Row]:
    """Echo in a room, the whole appliance in real time: gating vs canceller"""
    settings = settings_for(quick)
    rows: list[Row] = []
    for room, gain in settings.appliance:
        for mode in settings.appliance_modes:
            quiet = appliance_run(mode, room, gain, False, settings)
            talk = appliance_run(mode, room, gain, True, settings)
            runs = (quiet, talk)
            failed = any(r.errors or not r.agent_turns for r in runs)
            ok = quiet.self_interruptions == 0 and talk.self_interruptions == 0 and bool(talk.barge_in)
            rows.append(
                {
                    "room": _room(room).label,
                    "gain": gain,
                    "mode": mode,
                    "quiet: agent turns": quiet.agent_turns,
                    "quiet: self-interruptions": quiet.self_interruptions,
                    "talk-over: self-interruptions": talk.self_interruptions,
                    "barge-in detected": talk.barge_in,
                    "barge-in delay ms": _ms(talk.barge_in_delay_s),
                    "'stop' heard": talk.heard_stop,
                    "errors": quiet.errors + talk.errors,
                    "verdict": "ERROR" if failed else ("PASS" if ok else "FAIL"),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# the canceller's CPU


def cpu_table(quick: bool = False) -> list[Row]:
    """The echo canceller's CPU while the agent speaks (hall room, gain 1.0, 80 ms blocks)"""
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.core.doubletalk import BandDoubleTalkDetector, DoubleTalkDetector, linear_residual_config
    from appliance.runtime.app import build_echo_canceller
    from appliance.runtime.echo_simulation import RoomEcho
    from appliance.runtime.router import band_energies

    settings = settings_for(quick)
    speech = _say(" ".join(STORY))
    reps = int(np.ceil(settings.cpu_audio_s * RATE_HZ / speech.size))
    played = np.tile(speech, reps)[: round(settings.cpu_audio_s * RATE_HZ)]
    timeline = Timeline(played.size / RATE_HZ + 1.0)
    timeline.play(0.0, played)
    echo = RoomEcho(timeline, _ir("hall"))
    block = 1280
    blocks = [
        (i, np.clip(np.rint(echo.render(i / RATE_HZ - DEVICE_DELAY_S, block) * 32768.0), -32768, 32767))
        for i in range(0, played.size - block + 1, block)
    ]
    quota = cgroup_cpu_quota()
    rows: list[Row] = []
    modes = (*MODES, WITH_BANDS) if quick else (*MODES, WITH_BANDS, WITH_LINEAR)  # not in --quick
    for mode in modes:
        canceller = build_echo_canceller("webrtc" if mode in (WITH_BANDS, WITH_LINEAR) else mode)
        assert canceller is not None
        lookback = canceller.lookback_samples
        bands = BandDoubleTalkDetector() if mode == WITH_BANDS else None
        raw_vad = _preloaded().vad.twin() if mode in (WITH_BANDS, WITH_LINEAR) else None
        linear = LinearEchoFilter() if mode == WITH_LINEAR else None
        residual_dt = None if linear is None else DoubleTalkDetector(linear_residual_config(LINEAR_MARGIN_DB))
        pending = np.zeros(0, dtype=np.int16)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i, mic in blocks:
            ref = timeline.reference((i - lookback) / RATE_HZ, block + lookback)
            canceller.process(mic.astype(np.int16), ref)
            vad_input = mic.astype(np.int16)
            if linear is not None and residual_dt is not None:  # what the router adds (80 ms blocks)
                res, est = linear.process(mic / 32768.0, ref[lookback:].astype(np.float64))
                res_e = np.mean(res.reshape(-1, 160) ** 2, axis=1)
                est_e = np.mean(est.reshape(-1, 160) ** 2, axis=1)
                for k in range(res_e.size):
                    residual_dt.update(float(res_e[k]), float(est_e[k]), (i + 160 * (k + 1)) / RATE_HZ)
                vad_input = np.clip(np.rint(res * 32768.0), -32768, 32767).astype(np.int16)
            if bands is not None:  # what the router adds (80 ms blocks)
                mic_b = band_energies(mic / 32768.0)
                ref_b = band_energies(ref[lookback:].astype(np.float64))
                for k in range(mic_b.shape[0]):
                    bands.update(mic_b[k].tolist(), ref_b[k].tolist(), (i + 160 * (k + 1)) / RATE_HZ)
            if raw_vad is not None:
                pending = np.concatenate([pending, vad_input])
                while pending.size >= raw_vad.frame_samples:
                    raw_vad.probability(pending[: raw_vad.frame_samples])
                    pending = pending[raw_vad.frame_samples :]
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        audio_s = len(blocks) * block / RATE_HZ
        rows.append(
            {
                "mode": mode,
                "audio s": audio_s,
                "CPU % of one core": 100.0 * cpu / audio_s,
                "ms per 80 ms block": 1000.0 * cpu / len(blocks),
                "wall × real time": wall / audio_s,
                "CPU quota (cores)": quota,
                "% of the quota": None if quota is None else 100.0 * cpu / audio_s / quota,
                "verdict": ("PASS" if 100.0 * cpu / audio_s <= CPU_TARGET_PCT else "FAIL")
                if quota is None
                else "—",
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# the whole appliance in real time, with injected stalls (opt-in: `--only agent.echo.stalls`)

STALL_P = 0.04
"""Each 80 ms microphone block has this chance of a stall after it while the canceller runs."""
STALL_S = (0.05, 0.6)
"""A stall sleeps this long (uniform)."""
STALL_AFTER_BLOCKS = 60
"""No stall in the first blocks (the wake word and the request: the reply is what is tested)."""
STALL_ROWS: tuple[tuple[str, float, str, int], ...] = (
    ("small", 1.0, "loop", 23),
    ("small", 2.0, "model", 13),
    ("living", 1.0, "loop", 7),
    ("living", 1.0, "model", 11),
    ("hall", 1.0, "loop", 17),
)
"""(room, gain, where the stalls happen, seed): `loop` the event loop between the microphone and
the router, `model` the model thread after the router's block (the seeds of the `aec6` runs)."""


@dataclass
class _StallProbe:
    """Per run: the stalls injected and each block's end on the router's timeline and the true
    one (the echo is rendered at each block's true capture time, as a real room does)."""

    where: str
    rng: Any
    stalls: list[float] = field(default_factory=list)
    true_ends: list[float] = field(default_factory=list)
    router_ends: list[float] = field(default_factory=list)

    def stall(self) -> None:
        if self.rng.random() < STALL_P:
            s = self.rng.uniform(*STALL_S)
            self.stalls.append(s)
            time.sleep(s)  # the stall itself: this thread does nothing else meanwhile

    def error_s(self) -> float:
        k = min(len(self.true_ends), len(self.router_ends))
        err = np.abs(np.array(self.router_ends[:k]) - np.array(self.true_ends[:k]))
        return float(err.max()) if k else 0.0


def _stalled_run(
    room: str,
    gain: float,
    probe: _StallProbe,
    settings: Settings,
    mode: str = "webrtc",
    capture: RouterCapture | None = None,
) -> ApplianceEcho:
    """`appliance_run` (quiet) with `probe`'s stalls injected: the benchmark wraps the echo
    simulator's microphone and the router's block step for the run, and restores them after."""
    from appliance.ports import MIC_RATE_HZ
    from appliance.runtime import echo_simulation
    from appliance.runtime import router as router_mod

    mic_cls, router_cls = echo_simulation.EchoMicrophone, router_mod.AudioRouter
    orig_frames, orig_clock, orig_sync = mic_cls.frames, router_cls._mic_clock, router_cls._process_sync

    async def frames(self: Any) -> Any:
        loop = asyncio.get_running_loop()
        t0, to_clock = loop.time(), self._clock.now() - loop.time()
        samples = 0
        async for block in self._inner.frames():
            samples += block.size
            end = t0 + samples / MIC_RATE_HZ + to_clock  # the true capture time (a real-time input)
            probe.true_ends.append(end)
            start = end - block.size / MIC_RATE_HZ - self.delay_s
            echo_pcm = self._echo.render(start, block.size) * (self.gain * 32768.0)
            mixed = np.clip(block.astype(np.float64) + echo_pcm, -32768, 32767)
            if probe.where == "loop" and samples > STALL_AFTER_BLOCKS * block.size:
                probe.stall()
            yield np.rint(mixed).astype(np.int16)

    def mic_clock(self: Any, n: int, arrived: float | None, waited: bool = True) -> float | None:
        end: float | None = orig_clock(self, n, arrived, waited)
        if end is not None:
            probe.router_ends.append(end)
        return end

    def process_sync(self: Any, block: Pcm16, arrived: float | None = None, waited: bool = True) -> Any:
        out = orig_sync(self, block, arrived, waited)
        if probe.where == "model" and self.samples_in > STALL_AFTER_BLOCKS * block.size:
            probe.stall()
        return out

    setattr(mic_cls, "frames", frames)  # noqa: B010 - patched for this run only, restored below
    setattr(router_cls, "_mic_clock", mic_clock)  # noqa: B010
    setattr(router_cls, "_process_sync", process_sync)  # noqa: B010
    try:
        return appliance_run(mode, room, gain, False, settings, capture)
    finally:
        setattr(mic_cls, "frames", orig_frames)  # noqa: B010
        setattr(router_cls, "_mic_clock", orig_clock)  # noqa: B010
        setattr(router_cls, "_process_sync", orig_sync)  # noqa: B010


def stall_table(quick: bool = False) -> list[Row]:
    """Echo in a room, the whole appliance in real time, with stalls: self-interruptions"""
    import random

    runs = 1 if quick else int(os.environ.get("ECHO_STALL_RUNS", "4"))
    mode = os.environ.get("ECHO_STALL_MODE", "webrtc")  # "webrtc + linear echo": the estimate on
    keep = os.environ.get("ECHO_CAPTURE_DIR")  # self-interrupted runs' captures are saved there
    rows: list[Row] = []
    for room, gain, where, seed in STALL_ROWS[:1] if quick else STALL_ROWS:
        interrupted = turns = errors = 0
        stalls: list[float] = []
        worst = 0.0
        load = os.getloadavg()[0]
        for i in range(runs):
            probe = _StallProbe(where, random.Random(seed * 1000 + i))
            capture = RouterCapture() if keep else None
            result = _stalled_run(room, gain, probe, FULL, mode, capture)
            if capture is not None and keep and result.self_interruptions:
                capture.save(Path(keep) / f"stalls-{room}-{gain:g}-{where}-{seed}-{i}.npz")
            interrupted += result.self_interruptions > 0
            turns += result.agent_turns
            errors += result.errors
            stalls.extend(probe.stalls)
            worst = max(worst, probe.error_s())
        rows.append(
            {
                "room": _room(room).label,
                "gain": gain,
                "mode": mode,
                "stalls on": "event loop" if where == "loop" else "model thread",
                "seed": seed,
                "runs": runs,
                "runs self-interrupted": interrupted,
                "agent turns": turns,
                "stalls injected": len(stalls),
                "longest stall ms": _ms(max(stalls, default=0.0)),
                "max block-time error ms": _ms(worst),
                "load": f"{load:.1f}-{os.getloadavg()[0]:.1f}",
                "errors": errors,
                "verdict": "ERROR" if errors or turns < runs else ("PASS" if interrupted == 0 else "FAIL"),
            }
        )
    return rows


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "agent.echo": echo_table,
    "agent.echo.appliance": appliance_table,
    "agent.echo.cpu": cpu_table,
}
OPT_IN_BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {"agent.echo.stalls": stall_table}
"""Run only when named exactly (`--only agent.echo.stalls`): 5 rows × 4 real-time runs, ~8 min."""


def replay_capture(capture: RouterCapture, linear: Any = "captured", from_chunks: bool = False) -> Any:
    """`appliance.testing.router_capture.replay` through a router built as the captured one was
    (the preloaded models; fresh canceller, filter and VAD twins, as `build_loop` makes them);
    `linear`: the linear estimate's `DoubleTalkConfig` to use instead (None: off)."""
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.core.doubletalk import BandDoubleTalkConfig, DoubleTalkConfig
    from appliance.core.endpointing import EndpointConfig, Endpointer
    from appliance.core.wakeword import WakeWordGate
    from appliance.runtime.app import build_echo_canceller
    from appliance.runtime.router import AudioRouter
    from appliance.testing.router_capture import replay

    cfg = capture.settings
    preloaded = _preloaded()
    config = _appliance_config()
    linear_cfg = (
        (DoubleTalkConfig(**cfg["linear_echo"]) if cfg["linear_echo"] else None)
        if linear == "captured"
        else linear
    )
    bands = BandDoubleTalkConfig(**cfg["band_double_talk"]) if cfg["band_double_talk"] else None
    executor = ThreadPoolExecutor(max_workers=1)

    def build(playback: Any, now: Callable[[], float]) -> Any:
        preloaded.detector.reset()
        preloaded.vad.reset()
        return AudioRouter(
            detector=preloaded.detector,
            gate=WakeWordGate(config.wake_word_rules()),
            vad=preloaded.vad,
            endpointer=Endpointer(EndpointConfig(**cfg["endpoint"])),
            executor=executor,
            post=lambda event: None,
            wake_vad_gate=cfg["wake_vad_gate"],
            playback=playback,
            echo=build_echo_canceller(cfg["echo"]) if cfg["echo"] else None,
            now=now,
            echo_tail_s=cfg["echo_tail_s"],
            double_talk=DoubleTalkConfig(**cfg["double_talk"]) if cfg["double_talk"] else None,
            band_double_talk=bands,
            raw_vad=preloaded.vad.twin() if bands is not None else None,
            raw_vad_always=cfg["raw_vad_always"],
            linear_echo=linear_cfg,
            linear_filter=LinearEchoFilter() if linear_cfg is not None else None,
            residual_vad=preloaded.vad.twin() if linear_cfg is not None else None,
        )

    try:
        return replay(capture, build, from_chunks)
    finally:
        executor.shutdown(wait=True)
