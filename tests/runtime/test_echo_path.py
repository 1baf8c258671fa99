"""The echo path around the canceller: the config setting and its older spelling, the fallback
to gating, when the router runs the canceller (the agent speaking + the echo tail), and the
room simulation behind `--simulate-echo-ir` / `--simulate-echo-drift-ppm`."""

from __future__ import annotations

import asyncio
import logging
import struct
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from scipy.signal import fftconvolve

from appliance.adapters.echo_suppressor import EchoSuppressor
from appliance.config import load_config_text
from appliance.core.endpointing import EndpointConfig, Endpointer
from appliance.core.wakeword import WakeWordGate, WakeWordRule
from appliance.errors import ConfigError
from appliance.ports import Pcm16
from appliance.runtime.echo_simulation import (
    EchoMicrophone,
    RoomEcho,
    SimulationError,
    load_impulse_response,
)
from appliance.runtime.router import AudioRouter
from appliance.testing.rooms import SMALL, impulse_response, write_ir_wav

RATE = 16000


def config(appliance: dict[str, Any]) -> Any:
    return load_config_text(yaml.safe_dump({"appliance": appliance}), "test.yaml", log_warnings=False)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("appliance", "setting", "warning"),
    [
        ({}, "webrtc", None),
        ({"audio": {"echo_cancellation": "gate"}}, "gate", None),
        ({"audio": {"echo_cancellation": "off"}}, "off", None),
        (
            {"vad": {"playback_gating": False}},
            "off",
            "deprecated, use appliance.audio.echo_cancellation (now off)",
        ),
        (
            {"vad": {"playback_gating": True}},
            "webrtc",
            "deprecated, use appliance.audio.echo_cancellation (now webrtc",
        ),
        # both set: echo_cancellation wins, and a contradiction is said
        (
            {"vad": {"playback_gating": False}, "audio": {"echo_cancellation": "webrtc"}},
            "webrtc",
            "false ignored",
        ),
        ({"vad": {"playback_gating": True}, "audio": {"echo_cancellation": "off"}}, "off", "true ignored"),
        ({"vad": {"playback_gating": True}, "audio": {"echo_cancellation": "gate"}}, "gate", None),
    ],
)
def test_echo_cancellation_setting_and_the_older_playback_gating(
    appliance: dict[str, Any], setting: str, warning: str | None
) -> None:
    cfg = config(appliance)
    assert cfg.echo_cancellation == setting
    found = [w for w in cfg.warnings if w.startswith("appliance.vad.playback_gating: ")]
    if warning is None:
        assert found == []
    else:
        assert len(found) == 1 and warning in found[0], found


def test_an_unknown_engine_is_a_config_problem() -> None:
    with pytest.raises(ConfigError) as err:
        config({"audio": {"echo_cancellation": "speex"}})
    (line,) = err.value.problems
    assert line.startswith("appliance.audio.echo_cancellation: ") and "webrtc" in line


@pytest.mark.parametrize(
    ("vad", "min_speech_s", "threshold"),
    [
        ({}, 0.06, 0.8),  # the defaults: the faster barge-in rule is on
        ({"barge_in_min_speech_s": None}, None, 0.8),  # off: min_speech_s only, as before
        ({"barge_in_min_speech_s": 0.1, "barge_in_threshold": 0.9}, 0.1, 0.9),
    ],
)
def test_the_barge_in_rule_settings_reach_the_endpointer(
    vad: dict[str, Any], min_speech_s: float | None, threshold: float
) -> None:
    endpoint = config({"vad": vad}).endpoint_config()
    assert endpoint.barge_in_min_speech_s == min_speech_s
    assert endpoint.barge_in_threshold == threshold
    assert endpoint.min_speech_s == 0.2


@pytest.mark.parametrize(
    ("vad", "margin_db"),
    [
        ({}, 6.0),  # the default: double talk on the raw microphone counts before 2.5 s
        ({"barge_in_double_talk_db": 10}, 10.0),
        ({"barge_in_double_talk_db": None}, None),  # off: the fixed wait
        ({"barge_in_min_speech_s": None}, None),  # no barge-in rule, nothing to feed
    ],
)
def test_the_double_talk_setting(vad: dict[str, Any], margin_db: float | None) -> None:
    found = config({"vad": vad}).double_talk_config()
    assert (found and found.margin_db) == margin_db


@pytest.mark.parametrize(
    ("vad", "min_bands"),
    [
        ({}, None),  # the default: off (no second VAD)
        ({"barge_in_double_talk_bands": 3}, 3),
        ({"barge_in_double_talk_bands": 5}, 5),
        ({"barge_in_double_talk_bands": None}, None),  # off: no second VAD
        ({"barge_in_min_speech_s": None}, None),
    ],
)
def test_the_band_double_talk_setting(vad: dict[str, Any], min_bands: int | None) -> None:
    found = config({"vad": vad}).band_double_talk_config()
    assert (found and found.min_bands) == min_bands


@pytest.mark.parametrize(
    ("vad", "margin_db"),
    [
        ({}, 10.0),  # the default: on
        ({"barge_in_linear_echo_db": 10}, 10.0),
        ({"barge_in_linear_echo_db": 12.5}, 12.5),
        ({"barge_in_linear_echo_db": None}, None),  # off: no filter, no second VAD
        ({"barge_in_linear_echo_db": 10, "barge_in_min_speech_s": None}, None),
    ],
)
def test_the_linear_echo_setting(vad: dict[str, Any], margin_db: float | None) -> None:
    found = config({"vad": vad}).linear_echo_config()
    assert (found and found.margin_db) == margin_db
    if found is not None:
        assert found.hold_s == 0.1 and found.settle_s == 0.2  # `core.doubletalk.linear_residual_config`


@pytest.mark.parametrize(
    ("vad", "path"),
    [
        ({"barge_in_min_speech_s": 0.01}, "appliance.vad.barge_in_min_speech_s: "),
        ({"barge_in_min_speech_s": 3}, "appliance.vad.barge_in_min_speech_s: "),
        ({"barge_in_threshold": 1.0}, "appliance.vad.barge_in_threshold: "),
        ({"barge_in_threshold": "high"}, "appliance.vad.barge_in_threshold: "),
        ({"barge_in_double_talk_db": 0}, "appliance.vad.barge_in_double_talk_db: "),
        ({"barge_in_double_talk_db": 40}, "appliance.vad.barge_in_double_talk_db: "),
        ({"barge_in_double_talk_bands": 0}, "appliance.vad.barge_in_double_talk_bands: "),
        ({"barge_in_double_talk_bands": 17}, "appliance.vad.barge_in_double_talk_bands: "),
        ({"barge_in_double_talk_bands": 2.5}, "appliance.vad.barge_in_double_talk_bands: "),
        ({"barge_in_linear_echo_db": 2}, "appliance.vad.barge_in_linear_echo_db: "),
        ({"barge_in_linear_echo_db": 31}, "appliance.vad.barge_in_linear_echo_db: "),
        ({"barge_in_linear_echo_db": "loud"}, "appliance.vad.barge_in_linear_echo_db: "),
    ],
)
def test_bad_barge_in_settings_are_config_problems(vad: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        config({"vad": vad})
    (line,) = err.value.problems
    assert line.startswith(path), line


def test_an_engine_that_cannot_load_falls_back_to_gating(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.adapters import echo_canceller
    from appliance.runtime.app import build_echo_canceller

    def broken() -> echo_canceller.WebRtcEchoCanceller:
        raise echo_canceller.EchoCancellerUnavailable("no native library")

    assert isinstance(build_echo_canceller("webrtc"), echo_canceller.WebRtcEchoCanceller)
    monkeypatch.setitem(echo_canceller.ENGINES, "webrtc", broken)
    with caplog.at_level(logging.WARNING):
        fallback = build_echo_canceller("webrtc")
    assert isinstance(fallback, EchoSuppressor) and fallback.name == "gate"
    assert "appliance.audio.echo_cancellation: webrtc cannot run here (no native library)" in caplog.text
    assert build_echo_canceller("off") is None
    assert isinstance(build_echo_canceller("gate"), EchoSuppressor)


# ------------------------------------------------------------------ router: when it runs
class FakePlayback:
    def __init__(self) -> None:
        self.playing = False
        self.asked: list[tuple[float, int]] = []

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        self.asked.append((t_start, n_samples))
        return np.full(n_samples, 0.5 if self.playing else 0.0, np.float32)


class CountingCanceller:
    name = "fake"
    lookback_samples = 0

    def __init__(self) -> None:
        self.blocks = 0
        self.pauses = 0

    def process(self, mic: Pcm16, reference: npt.NDArray[np.float32]) -> Pcm16:
        assert reference.size == mic.size
        self.blocks += 1
        return np.zeros_like(mic)

    def pause(self) -> None:
        self.pauses += 1


class NeverWakes:
    frame_samples = 1280
    names: ClassVar[list[str]] = ["hey_jarvis"]

    def scores(self, frame: Pcm16) -> dict[str, float]:
        return {"hey_jarvis": 0.0}

    def reset(self) -> None:
        return None


class QuietVad:
    frame_samples = 512

    def probability(self, frame: Pcm16) -> float:
        return 0.0

    def reset(self) -> None:
        return None


async def _feed(router: AudioRouter, clock: list[float], block: Pcm16, n: int) -> None:
    """`n` microphone blocks of 80 ms into `router`, the clock advancing with each."""
    for _ in range(n):
        clock[0] += 0.08
        await router.process(block)


def _router(
    clock: list[float],
    playback: FakePlayback,
    echo: Any,
    endpointer: Endpointer | None = None,
    **kwargs: Any,
) -> AudioRouter:
    """The listening path with no wake word and a silent VAD, on the test's `clock`."""
    return AudioRouter(
        detector=NeverWakes(),
        gate=WakeWordGate({"hey_jarvis": WakeWordRule("hey_jarvis")}),
        vad=QuietVad(),
        endpointer=endpointer or Endpointer(EndpointConfig()),
        executor=ThreadPoolExecutor(1),
        post=lambda event: None,
        playback=playback,
        echo=echo,
        now=lambda: clock[0],
        **kwargs,
    )


def test_the_canceller_runs_while_the_agent_speaks_and_for_the_echo_tail_only() -> None:
    clock = [0.0]
    playback = FakePlayback()
    canceller = CountingCanceller()
    router = _router(clock, playback, canceller, echo_tail_s=0.5)
    block = np.ones(1280, np.int16)
    router.set_listening(True)

    async def feed(n: int) -> None:
        await _feed(router, clock, block, n)

    async def main() -> None:
        await feed(5)  # listening, the agent silent: nothing to cancel
        assert canceller.blocks == 0
        playback.playing = True
        await feed(10)
        assert canceller.blocks == 10
        # the block that just arrived ends now: its reference starts one block earlier
        t, n = playback.asked[-1]
        assert n == 1280 and t == pytest.approx(clock[0] - 0.08)
        playback.playing = False
        await feed(10)  # the tail: 0.5 s = 6 blocks after the last one heard playing
        assert canceller.blocks == 16 and canceller.pauses == 1
        playback.playing = True
        await feed(2)
        router.set_listening(False)  # the session ends mid-echo: the next block is not contiguous
        await feed(1)
        assert canceller.pauses == 2

    asyncio.run(main())
    assert router.echo_blocks == 18


def test_the_reference_advances_with_the_microphone_samples_not_the_event_loop_jitter() -> None:
    """Blocks arrive late by a varying few ms (the event loop is busy), then the process stalls
    0.5 s and the blocks held up arrive in a burst: the canceller's reference still advances
    exactly one block per block (`core.micclock`). Samples lost (a lasting shift of 0.4 s) move
    it once the blocks from before have left the 2 s window."""
    clock = [0.0]
    playback = FakePlayback()
    playback.playing = True
    router = _router(clock, playback, CountingCanceller())
    router.set_listening(True)
    jitter = [0.0, 0.012, 0.003, 0.019, 0.001, 0.015, 0.0, 0.008]
    arrivals = [0.08 * (k + 1) + late for k, late in enumerate(jitter)]
    resume = 0.08 * 9 + 0.5  # block 8 and those after it wait for the stall's end
    arrivals += [max(0.08 * (k + 1), resume + 0.02 * (k - 8)) for k in range(8, 30)]
    shifted = [0.08 * (k + 1) + 0.4 for k in range(30, 60)]

    async def main() -> None:
        for t in arrivals + shifted:
            clock[0] = t
            await router.process(np.ones(1280, np.int16))

    asyncio.run(main())
    starts = [t for t, _ in playback.asked]
    lookback = CountingCanceller().lookback_samples / RATE
    np.testing.assert_allclose(starts[:54], [0.08 * k - lookback for k in range(54)], atol=1e-9)
    np.testing.assert_allclose(starts[54:], [0.08 * k + 0.4 - lookback for k in range(54, 60)], atol=1e-9)
    assert router.mic_realigned == 1


class RecordingLinear:
    """A linear echo filter that returns the microphone as its residual and records pauses."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def process(
        self, mic: npt.NDArray[np.float64], reference: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        assert mic.size == reference.size
        self.calls.append("process")
        return mic.copy(), np.zeros_like(mic)

    def pause(self) -> None:
        self.calls.append("pause")


def test_a_lasting_shift_of_the_input_restarts_the_linear_filter_a_stall_does_not() -> None:
    """Samples lost move the reference against the microphone: the filter's residual would be
    the whole echo (a false double talk), so it forgets its history and its detector settles
    again. A stall whose blocks arrive in a burst moves nothing and restarts nothing."""
    from appliance.core.doubletalk import linear_residual_config

    clock = [0.0]
    playback = FakePlayback()
    playback.playing = True
    linear = RecordingLinear()
    router = _router(
        clock,
        playback,
        CountingCanceller(),
        linear_echo=linear_residual_config(10.0),
        linear_filter=linear,
        residual_vad=SpeechVad(),
    )
    router.set_listening(True)
    arrivals = [0.08 * (k + 1) + late for k, late in enumerate([0.0, 0.012, 0.003, 0.019])]
    arrivals += [max(0.08 * (k + 1), 0.4 + 0.5 + 0.02 * (k - 4)) for k in range(4, 20)]  # a stall
    arrivals += [0.08 * (k + 1) + 0.4 for k in range(20, 60)]  # 0.4 s of samples lost

    async def main() -> None:
        for t in arrivals:
            clock[0] = t
            await router.process(np.ones(1280, np.int16))

    asyncio.run(main())
    assert router.mic_realigned == 1 and router.linear_restarts == 1
    restart = linear.calls.index("pause")
    assert linear.calls == ["process"] * restart + ["pause"] + ["process"] * (60 - restart)
    assert restart == 44  # the first block whose 2 s window holds only shifted arrivals


# ------------------------------------------------------------------ room simulation
class Timeline:
    """A playback record: what the speaker played from clock time 0."""

    def __init__(self, audio: npt.NDArray[np.float64]) -> None:
        self.audio = audio.astype(np.float32)

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        out = np.zeros(n_samples, np.float32)
        start = round(t_start * RATE)
        lo, hi = max(0, start), min(self.audio.size, start + n_samples)
        if hi > lo:
            out[lo - start : hi - start] = self.audio[lo:hi]
        return out


def test_the_streamed_room_echo_is_the_convolution_of_the_playback() -> None:
    rng = np.random.default_rng(7)
    played = rng.standard_normal(3 * RATE) * 0.1
    ir = impulse_response(SMALL)
    echo = RoomEcho(Timeline(played), ir)
    blocks = [echo.render(i / RATE, 1280) for i in range(0, 4 * RATE, 1280)]  # past the end: the tail
    streamed = np.concatenate(blocks)
    expected = np.zeros(streamed.size)
    full = fftconvolve(played, ir)
    expected[: min(full.size, streamed.size)] = full[: streamed.size]
    np.testing.assert_allclose(streamed, expected, atol=1e-6)  # float32 playback record


def test_without_a_room_the_echo_is_the_delayed_playback_as_before() -> None:
    played = np.linspace(-0.5, 0.5, RATE)
    echo = RoomEcho(Timeline(played))
    np.testing.assert_array_equal(echo.render(0.25, 800), played[4000:4800].astype(np.float32))


def test_drift_stretches_the_echo_in_time() -> None:
    """A speaker clock 500 ppm fast: 4 s later its echo is 2 ms (32 samples) ahead."""
    played = np.zeros(6 * RATE)
    clicks = np.arange(RATE // 2, 5 * RATE, RATE // 2)
    played[clicks] = 1.0
    echo = RoomEcho(Timeline(played), drift_ppm=500.0)
    out = np.concatenate([echo.render(i / RATE, 1280) for i in range(0, 5 * RATE, 1280)])
    peaks = [c - 100 + int(np.argmax(out[c - 100 : c + 100])) for c in clicks]
    lead = np.array([c - p for c, p in zip(clicks, peaks, strict=True)], dtype=float)
    anchor = clicks[0] // 1280 * 1280  # the drift counts from the first block with sound in it
    expected = (clicks - anchor) * 500e-6
    np.testing.assert_allclose(lead, expected, atol=1.0)
    assert lead[-1] >= 2.0  # it did drift


def test_drift_starts_over_when_the_speaker_falls_silent() -> None:
    played = np.zeros(10 * RATE)
    played[RATE] = played[8 * RATE] = 1.0  # two turns, 7 s apart, silence (> 3 s) in between
    echo = RoomEcho(Timeline(played), drift_ppm=1000.0)
    out = np.concatenate([echo.render(i / RATE, 1280) for i in range(0, 9 * RATE, 1280)])
    # the first click anchors the drift (at its block); the second anchors it anew: both on time
    assert abs(int(np.argmax(out[: 2 * RATE])) - RATE) <= 2
    assert abs(int(np.argmax(out[7 * RATE :])) + 7 * RATE - 8 * RATE) <= 2


async def _collect(mic: EchoMicrophone) -> list[Pcm16]:
    return [block async for block in mic.frames()]


class _ManualClock:
    t = 0.0

    def now(self) -> float:
        return self.t


class _ScriptedSource:
    """80 ms blocks of `value`, each arriving at its time in `arrivals` on `clock`."""

    sample_rate_hz = RATE
    dropped_blocks = 0

    def __init__(self, clock: _ManualClock, arrivals: list[float], value: int = 0) -> None:
        self._clock, self._arrivals, self._value = clock, arrivals, value

    async def frames(self) -> Any:
        for t in self._arrivals:
            self._clock.t = t
            yield np.full(1280, self._value, np.int16)

    async def close(self) -> None:
        return None


def test_the_echo_microphone_adds_the_scaled_room_echo() -> None:
    clock = _ManualClock()
    source = _ScriptedSource(clock, [0.08 * (k + 1) for k in range(10)], value=100)
    played = np.random.default_rng(3).standard_normal(RATE) * 0.05
    ir = impulse_response(SMALL)
    mic = EchoMicrophone(source, Timeline(played), clock, gain=2.0, delay_s=0.03, impulse_response=ir)
    out = np.concatenate(asyncio.run(_collect(mic))).astype(np.float64)
    expected_echo = np.concatenate([np.zeros(480), fftconvolve(played, ir)])[: out.size] * 2.0 * 32768
    np.testing.assert_allclose(out, np.clip(np.rint(100 + expected_echo), -32768, 32767), atol=1.0)


def test_the_simulated_echo_stays_on_the_microphones_samples_through_a_stall() -> None:
    """The input stalls 0.5 s after its 5th block and the blocks held up come in a burst: the
    echo is still the playback convolved with the room, sample for sample (a room's echo does
    not jump when the appliance is late reading it)."""

    clock = _ManualClock()
    arrivals = [
        max(0.08 * (k + 1), 0.08 * 6 + 0.5 + 0.01 * (k - 5)) if k >= 5 else 0.08 * (k + 1) for k in range(30)
    ]
    played = np.random.default_rng(5).standard_normal(3 * RATE) * 0.05
    ir = impulse_response(SMALL)
    mic = EchoMicrophone(
        _ScriptedSource(clock, arrivals), Timeline(played), clock, gain=1.0, delay_s=0.03, impulse_response=ir
    )
    out = np.concatenate(asyncio.run(_collect(mic))).astype(np.float64)
    expected_echo = np.concatenate([np.zeros(480), fftconvolve(played, ir)])[: out.size] * 32768
    np.testing.assert_allclose(out, np.clip(np.rint(expected_echo), -32768, 32767), atol=1.0)


# ------------------------------------------------------------------ impulse response files
def _wav(path: Path, data: npt.NDArray[Any], rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(data, "<i2").tobytes())
    return path


def test_an_impulse_response_at_any_rate_is_resampled_and_scaled_to_unit_energy(tmp_path: Path) -> None:
    ir = impulse_response(SMALL)
    at16 = load_impulse_response(write_ir_wav(tmp_path / "16k.wav", ir))
    assert np.sum(at16**2) == pytest.approx(1.0)
    np.testing.assert_allclose(at16[: ir.size], ir[: at16.size], atol=2e-3)
    import soxr

    at48 = load_impulse_response(write_ir_wav(tmp_path / "48k.wav", soxr.resample(ir, RATE, 48000), 48000))
    assert np.sum(at48**2) == pytest.approx(1.0)
    assert abs(int(np.argmax(np.abs(at48))) - int(np.argmax(np.abs(ir)))) <= 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: _wav(p, np.zeros((100, 2), np.int16), RATE, channels=2),
            "2 channels; a room impulse response is mono",
        ),
        (lambda p: _wav(p, np.zeros(100, np.int16), RATE), "the impulse response is silent"),
        (lambda p: _wav(p, np.full(3 * RATE, 1000, np.int16), RATE), "3.0 s of response; at most 2 s"),
        (lambda p: _wav(p, np.full(9 * RATE, 1000, np.int16), RATE), "9.0 s long; at most 2 s"),
        (lambda p: p.write_bytes(b"not a wav file at all") and p, "not a RIFF/WAVE file"),
        (lambda p: p, "cannot read the file"),
    ],
)
def test_bad_impulse_response_files_are_said_clearly(tmp_path: Path, make: Any, message: str) -> None:
    path = make(tmp_path / "room.wav")
    with pytest.raises(SimulationError) as err:
        load_impulse_response(path)
    assert str(err.value).startswith(f"--simulate-echo-ir: {path}: ") and message in str(err.value)


def test_the_cli_rejects_a_bad_room_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance import cli
    from appliance.runtime import app

    def no_models(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the models must not load")

    monkeypatch.setattr(app, "run_appliance", no_models)
    monkeypatch.setattr(app, "preload", no_models)
    wav_in = _wav(tmp_path / "in.wav", np.zeros(RATE, np.int16), RATE)
    stereo = _wav(tmp_path / "room.wav", np.zeros((10, 2), np.int16), RATE, channels=2)
    base = ["run", "--input", str(wav_in), "--simulate-echo", "0.5"]
    assert cli.main([*base, "--simulate-echo-ir", str(stereo)]) == 2
    assert f"--simulate-echo-ir: {stereo}: 2 channels" in capsys.readouterr().err
    assert cli.main([*base, "--simulate-echo-drift-ppm", "5000"]) == 2
    assert "--simulate-echo-drift-ppm: 5000 is outside ±1000 ppm" in capsys.readouterr().err
    assert cli.main(["run", "--input", str(wav_in), "--simulate-echo-ir", str(stereo)]) == 2
    assert "need --simulate-echo GAIN" in capsys.readouterr().err


def test_float_and_24_bit_impulse_responses_load(tmp_path: Path) -> None:
    ir = impulse_response(SMALL)
    path = tmp_path / "float.wav"
    data = (ir / np.max(np.abs(ir)) * 0.5).astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 22050, 22050 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    loaded = load_impulse_response(path)
    assert np.sum(loaded**2) == pytest.approx(1.0)


class RecordingEndpointer(Endpointer):
    def __init__(self) -> None:
        super().__init__(EndpointConfig())
        self.talk_over: list[tuple[float, float | None]] = []
        self.double_talk: list[tuple[float, bool]] = []
        self.raw_probs: list[tuple[float, float | None]] = []
        self.playing: list[tuple[float, bool]] = []

    def process(
        self,
        prob: float,
        frame: bytes,
        t_end: float,
        talk_over_s: float | None = None,
        double_talk: bool = False,
        raw_prob: float | None = None,
        playing: bool = True,
    ) -> list[Any]:
        self.talk_over.append((round(t_end, 3), None if talk_over_s is None else round(talk_over_s, 3)))
        self.double_talk.append((round(t_end, 3), double_talk))
        self.raw_probs.append((round(t_end, 3), raw_prob))
        self.playing.append((round(t_end, 3), playing))
        return super().process(prob, frame, t_end, talk_over_s, double_talk, raw_prob, playing)


def _talk_over_router(
    clock: list[float], playback: Any, started: list[float], echo: Any, **extra: Any
) -> tuple[AudioRouter, RecordingEndpointer]:
    """A router whose own VAD hears nothing and whose endpointer has the barge-in rule: what makes
    a barge-in is the evidence `extra` configures (bands, the linear residual); `started` gets
    each speech start's time."""
    from appliance.core.endpointing import SpeechStarted

    endpointer = RecordingEndpointer()
    endpointer.config = EndpointConfig(barge_in_min_speech_s=0.06)
    router = AudioRouter(
        detector=NeverWakes(),
        gate=WakeWordGate({"hey_jarvis": WakeWordRule("hey_jarvis")}),
        vad=QuietVad(),
        endpointer=endpointer,
        executor=ThreadPoolExecutor(1),
        post=lambda event: started.extend([event.t] if isinstance(event, SpeechStarted) else []),
        playback=playback,
        echo=echo,
        now=lambda: clock[0],
        **extra,
    )
    return router, endpointer


class GatingCanceller(CountingCanceller):
    name = "gate"


@pytest.mark.parametrize("gating", [False, True])
def test_the_endpointer_hears_how_long_the_canceller_has_run_in_the_agents_turn(gating: bool) -> None:
    clock = [0.0]
    playback = FakePlayback()
    endpointer = RecordingEndpointer()
    echo = GatingCanceller() if gating else CountingCanceller()
    router = _router(clock, playback, echo, endpointer, echo_tail_s=0.5)
    block = np.ones(1280, np.int16)  # 0.08 s: 2.5 VAD frames of 0.032 s
    router.set_listening(True)

    async def feed(n: int) -> None:
        await _feed(router, clock, block, n)

    async def main() -> None:
        await feed(5)  # 0-0.4 s: the agent silent
        playback.playing = True
        await feed(40)  # 0.4-3.6 s: it speaks; the canceller starts with the block at 0.4 s
        playback.playing = False
        await feed(10)  # the 0.5 s tail (to 4.08 s), then nothing
        playback.playing = True
        await feed(5)  # the next turn: 4.4-4.8 s

    asyncio.run(main())
    assert len(endpointer.talk_over) == int(4.8 * RATE) // 512
    if gating:  # gating leaves too much echo for the barge-in rule: the endpointer never hears of it
        assert {s for t, s in endpointer.talk_over} == {None}
        return
    # the canceller starts with the block from 0.4 s, stops after the tail (its last block ends at
    # 4.08 s: 0.48 s after the last one with playback), starts again at 4.4 s. VAD frames are cut
    # from the stream, not from blocks: a frame is in the turn when its end is.
    for t, talk_over_s in endpointer.talk_over:
        if t <= 0.4 or 4.08 + 0.032 < t <= 4.4:
            assert talk_over_s is None, t
        elif t <= 4.08:
            assert talk_over_s == pytest.approx(t - 0.4, abs=1e-6), t
        elif t > 4.4:
            assert talk_over_s == pytest.approx(t - 4.4, abs=1e-6), t
    assert [s for t, s in endpointer.talk_over if 0.4 < t < 0.46] == [
        pytest.approx(0.016),
        pytest.approx(0.048),
    ]
    # it hears whether the agent's words are in the frame's block (not in the tail after them: the
    # blocks from 3.6 s on hold no playback once the canceller's lookback has passed)
    assert all(p for t, p in endpointer.playing if 0.48 < t <= 3.6)
    assert not any(p for t, p in endpointer.playing if 3.76 < t <= 4.4)


@pytest.mark.parametrize(("engine", "detector"), [("fake", True), ("fake", False), ("gate", True)])
def test_the_endpointer_hears_of_double_talk_on_the_raw_microphone(engine: str, detector: bool) -> None:
    """The playback at 0.5 of full scale; its echo at a quarter of that (-12 dB) for 1.6 s, then
    a second talker at 0.5 (12 dB over the echo) for 2 blocks, then the echo again."""
    from appliance.core.doubletalk import DoubleTalkConfig

    clock = [0.0]
    playback = FakePlayback()
    playback.playing = True
    endpointer = RecordingEndpointer()
    echo = GatingCanceller() if engine == "gate" else CountingCanceller()
    router = _router(clock, playback, echo, endpointer, double_talk=DoubleTalkConfig() if detector else None)
    router.set_listening(True)
    blocks = [4096] * 20 + [16384] * 2 + [4096] * 4  # 0.125 and 0.5 of full scale

    async def main() -> None:
        for level in blocks:
            clock[0] += 0.08
            await router.process(np.full(1280, level, np.int16))

    asyncio.run(main())
    marked = [t for t, dt in endpointer.double_talk if dt]
    if engine == "gate" or not detector:
        assert marked == []
        return
    # the talker's blocks span 1.6-1.76 s; a 32 ms VAD frame is marked when a 10 ms frame in it is
    assert marked and min(marked) > 1.6 and max(marked) < 1.76 + 0.032
    assert [t for t, _ in endpointer.double_talk if 1.6 + 0.032 <= t <= 1.76] == [
        t for t in marked if 1.6 + 0.032 <= t <= 1.76
    ]


class NoisePlayback:
    """White noise at -20 dBFS (seeded), by audio-clock time: every band has playback."""

    def __init__(self) -> None:
        self.playing = True
        self.noise = np.random.default_rng(7).normal(0.0, 0.1, 16000 * 10).astype(np.float32)

    def reference(self, t_start: float, n_samples: int) -> npt.NDArray[np.float32]:
        start = round(t_start * RATE)
        return self.noise[start : start + n_samples].copy()


class SpeechVad:
    """Scores every frame as speech (the raw microphone carries the agent's echo anyway)."""

    frame_samples = 512

    def __init__(self) -> None:
        self.frames = 0
        self.resets = 0

    def probability(self, frame: Pcm16) -> float:
        self.frames += 1
        return 0.9

    def reset(self) -> None:
        self.resets += 1


@pytest.mark.parametrize(("raw_vad", "always"), [(True, True), (True, False), (False, True)])
def test_the_raw_microphones_vad_speaks_in_frames_whose_bands_show_a_second_talker(
    raw_vad: bool, always: bool
) -> None:
    """The echo: the playback at -12 dB (the same samples) for 1.6 s, then with a second talker
    (other noise, 12 dB over the echo in every band) for 2 blocks, then the echo alone again. The
    canceller's output VAD says nothing (it suppressed the talker); the raw VAD, asked about the
    frames the bands mark, makes the barge-in."""
    from appliance.core.doubletalk import BandDoubleTalkConfig

    clock = [0.0]
    playback = NoisePlayback()
    vad = SpeechVad()
    started: list[float] = []
    router, endpointer = _talk_over_router(
        clock,
        playback,
        started,
        CountingCanceller(),
        band_double_talk=BandDoubleTalkConfig(),
        raw_vad=vad if raw_vad else None,
        raw_vad_always=always,
    )
    router.set_listening(True)
    talker = np.random.default_rng(8).normal(0.0, 0.1, 1280 * 2)

    async def main() -> None:
        for i in range(26):
            clock[0] += 0.08
            echo = 0.25 * playback.reference(clock[0] - 0.08, 1280).astype(np.float64)
            if i in (20, 21):
                echo += talker[(i - 20) * 1280 : (i - 19) * 1280]
            await router.process(np.rint(echo * 32768.0).astype(np.int16))

    asyncio.run(main())
    given = [t for t, p in endpointer.raw_probs if p is not None]
    if not raw_vad:
        assert given == [] and started == []
        return
    # only frames overlapping the talker's blocks (1.6-1.76 s) or the 0.1 s hold after them are
    # marked and asked about
    assert given and min(given) > 1.6 and max(given) < 1.76 + 0.1 + 0.032
    assert len(started) == 1 and 1.6 - 0.032 <= started[0] <= 1.7
    # always: the raw VAD follows the audio while the canceller runs; else only marked frames
    assert vad.frames == (len(endpointer.raw_probs) if always else len(given))


@pytest.mark.parametrize(("linear", "engine"), [(True, "fake"), (False, "fake"), (True, "gate")])
def test_the_vad_on_our_linear_residual_speaks_in_frames_where_it_rises_over_the_echo_estimate(
    linear: bool, engine: str
) -> None:
    """The echo: the playback (white noise) at -12 dB, 3 ms late, for 1.6 s, then with a second
    talker 12 dB over it for 2 blocks, then the echo alone again. The canceller's output VAD
    says nothing (it suppressed the talker); our linear filter has learned the echo path by then,
    its residual rises over its echo estimate in the talker's frames only, and the VAD on that
    residual, counted in those frames, makes the barge-in."""
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.core.doubletalk import linear_residual_config

    clock = [0.0]
    playback = NoisePlayback()
    vad = SpeechVad()
    started: list[float] = []
    router, endpointer = _talk_over_router(
        clock,
        playback,
        started,
        GatingCanceller() if engine == "gate" else CountingCanceller(),
        linear_echo=linear_residual_config(10.0),
        linear_filter=LinearEchoFilter() if linear else None,
        residual_vad=vad,
    )
    router.set_listening(True)
    talker = np.random.default_rng(8).normal(0.0, 0.1, 1280 * 2)
    late = np.concatenate([np.zeros(48), playback.noise])  # the echo path: 3 ms

    async def main() -> None:
        for i in range(26):
            clock[0] += 0.08
            echo = 0.25 * late[i * 1280 : (i + 1) * 1280].astype(np.float64)
            if i in (20, 21):
                echo += talker[(i - 20) * 1280 : (i - 19) * 1280]
            await router.process(np.rint(echo * 32768.0).astype(np.int16))

    asyncio.run(main())
    given = [t for t, p in endpointer.raw_probs if p is not None]
    if not linear or engine == "gate":  # off, or gating (no barge-in rule): the VAD never runs
        assert given == [] and started == [] and vad.frames == 0
        return
    # only frames overlapping the talker's blocks (1.6-1.76 s) or the 0.1 s hold after them
    assert given and min(given) > 1.6 and max(given) < 1.76 + 0.1 + 0.032
    assert len(started) == 1 and 1.6 - 0.032 <= started[0] <= 1.7
    # the residual's VAD follows the audio while the canceller runs (every frame)
    assert vad.frames == len(endpointer.raw_probs)


@pytest.mark.parametrize("max_explained", [0.8, None])
def test_our_linear_filter_leaking_after_the_echo_path_moved_a_sample_is_not_a_talker(
    max_explained: float | None,
) -> None:
    """As above, but no second talker: at 4 s the echo path moves by one sample (captured in
    real time: a new playback chunk placed one sample off). The converged filter leaks a linear
    copy of its estimate, 3 dB over it: 'double talk' on the energies; the estimate explains
    that residual (`router.explained_share` near 1), so no frame is marked and the agent does
    not interrupt itself. Without the check (None) it does."""
    import dataclasses

    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.core.doubletalk import linear_residual_config

    clock = [0.0]
    playback = NoisePlayback()
    started: list[float] = []
    router, endpointer = _talk_over_router(
        clock,
        playback,
        started,
        CountingCanceller(),
        linear_echo=dataclasses.replace(linear_residual_config(10.0), max_explained=max_explained),
        linear_filter=LinearEchoFilter(),
        residual_vad=SpeechVad(),
    )
    router.set_listening(True)
    before = np.concatenate([np.zeros(48), playback.noise])  # the echo path: 3 ms
    after = np.concatenate([np.zeros(49), playback.noise])  # one sample more

    async def main() -> None:
        for i in range(56):
            clock[0] += 0.08
            path = before if i < 50 else after
            echo = 0.25 * path[i * 1280 : (i + 1) * 1280].astype(np.float64)
            await router.process(np.rint(echo * 32768.0).astype(np.int16))

    asyncio.run(main())
    given = [t for t, p in endpointer.raw_probs if p is not None]
    if max_explained is None:
        assert given and min(given) > 4.0 and len(started) == 1
    else:
        assert given == [] and started == []


def test_the_share_of_a_residual_its_estimate_explains() -> None:
    from appliance.runtime.router import explained_share

    rng = np.random.default_rng(3)
    estimate = rng.normal(0.0, 0.1, (3, 160))
    shifted = np.concatenate([np.zeros((1, 2)), estimate[:1, :-2]], axis=1)  # 2 samples late
    voice = rng.normal(0.0, 0.1, (1, 160))
    residual = np.concatenate([-0.5 * shifted, voice, 0.3 * shifted + voice])
    shares = explained_share(residual, estimate[[0, 1, 0]])
    assert shares[0] == pytest.approx(1.0, abs=1e-6)
    assert shares[1] < 0.15  # a voice the estimate knows nothing of: chance, 9 taps of 160
    assert 0.05 < shares[2] < 0.3  # the voice dominates a little leakage
    assert explained_share(np.zeros((1, 160)), np.zeros((1, 160))) == [0.0]


@pytest.mark.parametrize(
    ("appliance", "built"),
    [
        ({}, True),  # the default: the canceller and the filter beside it
        ({"vad": {"barge_in_linear_echo_db": 10}}, True),
        ({"audio": {"echo_cancellation": "gate"}}, False),
        ({"audio": {"echo_cancellation": "gate"}, "vad": {"barge_in_linear_echo_db": 10}}, False),
        ({"audio": {"echo_cancellation": "off"}, "vad": {"barge_in_linear_echo_db": 10}}, False),
        ({"vad": {"barge_in_linear_echo_db": None}}, False),
    ],
)
def test_the_appliance_builds_the_linear_filter_only_beside_a_canceller(
    appliance: dict[str, Any], built: bool
) -> None:
    from appliance.adapters.linear_echo import LinearEchoFilter
    from appliance.runtime.app import _linear_filter

    assert isinstance(_linear_filter(config(appliance)), LinearEchoFilter) == built
