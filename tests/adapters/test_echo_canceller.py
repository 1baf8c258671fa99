"""The WebRTC echo canceller (livekit's AEC3) on a seeded room: it removes the echo, keeps the
user's voice during double talk, and works on blocks of any size.

Everything is deterministic: a synthesized talker (no model), a pyroomacoustics room computed
without randomness, and AEC3, which has no randomness either."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import fftconvolve

from appliance.adapters.echo_canceller import FRAME_SAMPLES, ResidualEchoSuppressor, WebRtcEchoCanceller
from appliance.testing.rooms import ROOMS, SMALL, Room, erle_db, impulse_response, speech_like

RATE = 16000
DELAY = 480  # 30 ms of device latency on top of the room's own delay


def room_echo(far: npt.NDArray[np.float64], gain: float) -> npt.NDArray[np.float64]:
    echo = fftconvolve(far, impulse_response(SMALL))[: far.size]
    out: npt.NDArray[np.float64] = np.concatenate([np.zeros(DELAY), echo])[: far.size] * gain
    return out


def pcm(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


def run(
    canceller: WebRtcEchoCanceller, mic: npt.NDArray[np.int16], far: npt.NDArray[np.float64], block: int
) -> npt.NDArray[np.int16]:
    lookback = canceller.lookback_samples
    ref = np.concatenate([np.zeros(lookback), far]).astype(np.float32)
    parts = [
        canceller.process(mic[i : i + block], ref[i : i + lookback + block])
        for i in range(0, mic.size - block + 1, block)
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def far() -> npt.NDArray[np.float64]:
    return speech_like(10.0, seed=1)


def test_the_echo_is_cancelled_by_25_db_after_convergence(far: npt.NDArray[np.float64]) -> None:
    mic = pcm(room_echo(far, 1.0))
    canceller = WebRtcEchoCanceller()
    out = run(canceller, mic, far, 1280)
    assert out.size == mic.size
    converged = slice(3 * RATE, None)
    assert erle_db(mic[converged], out[converged]) >= 25.0
    assert canceller.frames == mic.size // FRAME_SAMPLES and canceller.cpu_s > 0


def test_the_one_tap_gate_removes_far_less_of_a_rooms_echo(far: npt.NDArray[np.float64]) -> None:
    """The control: what gating (the fallback) leaves of the same room's echo."""
    from appliance.adapters.echo_suppressor import EchoSuppressor

    mic = pcm(room_echo(far, 1.0))
    gate = EchoSuppressor()
    d = gate.lookback_samples
    ref = np.concatenate([np.zeros(d), far]).astype(np.float32)
    gated = np.concatenate(
        [gate.process(mic[i : i + 1280], ref[i : i + 1280 + d]) for i in range(0, far.size - 1279, 1280)]
    )
    cancelled = run(WebRtcEchoCanceller(), mic, far, 1280)
    converged = slice(3 * RATE, gated.size)
    assert erle_db(mic[converged], cancelled[converged]) >= erle_db(mic[converged], gated[converged]) + 15.0


@pytest.mark.parametrize(("residual_suppression", "correlation"), [(False, 0.8), (True, 0.7)])
def test_double_talk_keeps_the_users_voice(
    far: npt.NDArray[np.float64], residual_suppression: bool, correlation: float
) -> None:
    """The user talks over the agent (after convergence): their voice comes through within a few
    dB of what the module makes of it without any echo, while the echo alone (before they talk)
    is cancelled. (The module's capture path delays and phase-shifts by a few ms, so the
    comparison is with its own echo-free output, sample for sample.) The residual echo
    suppressor reshapes the voice during double talk (bins down to -10.5 dB where it predicts
    echo): it follows the echo-free voice less closely."""
    near = speech_like(10.0, seed=2, f0_hz=210.0)
    near[: 5 * RATE] = 0.0
    echo = room_echo(far, 1.0)
    make = lambda: WebRtcEchoCanceller(residual_suppression=residual_suppression)  # noqa: E731
    out = run(make(), pcm(echo + near), far, 1280).astype(np.float64)
    alone = run(make(), pcm(near), np.zeros_like(far), 1280).astype(np.float64)
    talk = slice(5 * RATE, out.size)
    kept_db = 10 * np.log10(np.sum(out[talk] ** 2) / np.sum(alone[talk] ** 2))
    assert -6.0 <= kept_db <= 3.0, kept_db
    # what comes through is the user: it follows their echo-free signal
    assert np.corrcoef(out[talk], alone[talk])[0, 1] > correlation
    quiet = slice(3 * RATE, 5 * RATE)
    assert erle_db(pcm(echo)[quiet], out[quiet]) >= 25.0


def test_blocks_of_any_size_keep_their_length_and_lag_at_most_one_frame(far: npt.NDArray[np.float64]) -> None:
    mic = pcm(room_echo(far, 1.0))
    canceller = WebRtcEchoCanceller()
    out = run(canceller, mic, far, 240)  # 15 ms blocks: not a whole number of 10 ms frames
    assert out.size == mic.size // 240 * 240
    assert 0 < canceller.padded_samples < FRAME_SAMPLES
    assert erle_db(mic[3 * RATE : out.size], out[3 * RATE :]) >= 25.0


def test_each_turn_starts_from_a_fresh_module_and_cancels_from_its_first_second(
    far: npt.NDArray[np.float64],
) -> None:
    """Between two agent turns the canceller sees nothing (`pause`); the next turn starts from
    the module's cautious initial state, which already cancels."""
    mic = pcm(room_echo(far, 1.0))
    canceller = WebRtcEchoCanceller()
    run(canceller, mic[: 5 * RATE], far[: 5 * RATE], 1280)
    canceller.pause()
    later = run(canceller, mic[5 * RATE :], far[5 * RATE :], 1280)
    assert canceller.restarts == 1
    assert erle_db(mic[5 * RATE : 6 * RATE], later[:RATE]) >= 25.0


def test_without_any_echo_the_users_voice_passes_unchanged(far: npt.NDArray[np.float64]) -> None:
    """Headphones, or a headless run without a simulated echo: the agent plays, nothing of it
    reaches the microphone, the user talks. AEC3 alone would suppress them until its transparent
    mode sets in (seconds later); the echo path check passes the block through after 1 s."""
    near = speech_like(10.0, seed=2, f0_hz=210.0)
    mic = pcm(near * 0.7)
    canceller = WebRtcEchoCanceller()
    out = run(canceller, mic, far, 1280)
    assert not canceller.echo_path.present and canceller.echo_path.correlation < 0.2
    np.testing.assert_array_equal(out[2 * RATE :], mic[2 * RATE : out.size])


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.name)
@pytest.mark.parametrize("gain", [0.05, 2.0])
def test_an_echo_path_is_never_ruled_out(far: npt.NDArray[np.float64], room: Room, gain: float) -> None:
    """Any room, any echo level (down to -26 dB): the echo path check finds it at once."""
    echo = fftconvolve(far, impulse_response(room))[: far.size]
    mic = pcm(np.concatenate([np.zeros(DELAY), echo])[: far.size] * gain)
    canceller = WebRtcEchoCanceller()
    run(canceller, mic, far, 1280)
    assert canceller.passed_blocks == 0 and canceller.echo_path.correlation > 0.5


def test_the_reference_must_match_the_block() -> None:
    canceller = WebRtcEchoCanceller()
    with pytest.raises(ValueError, match="reference has 160 samples for a 160-sample block"):
        canceller.process(np.zeros(160, np.int16), np.zeros(160, np.float32))


def test_building_the_canceller_does_not_load_livekit_until_the_agent_speaks() -> None:
    """An idle device listening for its wake word carries neither the library nor a module
    (about 26 MiB); the first processed block loads them."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from appliance.adapters.echo_canceller import WebRtcEchoCanceller\n"
        "c = WebRtcEchoCanceller()\n"
        "assert 'livekit' not in sys.modules, 'livekit imported at build'\n"
        "mic = np.zeros(1280, dtype=np.int16)\n"
        "c.process(mic, np.zeros(1280 + c.lookback_samples, dtype=np.float32))\n"
        "assert 'livekit' in sys.modules and c.frames == 8\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ the residual echo suppressor
def _suppress(
    res: ResidualEchoSuppressor, cleaned: npt.NDArray[np.float64], ref: npt.NDArray[np.float64]
) -> Any:
    return np.concatenate(
        [
            res.process(cleaned[i : i + 1280], ref[i : i + 1280], cleaned[i : i + 1280])
            for i in range(0, cleaned.size, 1280)
        ]
    )


def test_the_residual_suppressor_passes_audio_one_hop_late_without_playback() -> None:
    x = np.random.default_rng(3).standard_normal(RATE) * 0.1
    out = _suppress(ResidualEchoSuppressor(), x, np.zeros_like(x))
    assert out.size == x.size
    np.testing.assert_allclose(out[FRAME_SAMPLES:], x[:-FRAME_SAMPLES], atol=1e-9)


def test_the_residual_suppressor_learns_a_late_tail_and_keeps_a_louder_voice() -> None:
    """A residual AEC3 leaves: the playback's late reverberation (150-400 ms after it, decaying),
    at -20 dB. After 4 s it is suppressed by more than 6 dB; a voice 10 dB over it passes
    within 3 dB over its first 0.5 s (a barge-in is decided within 0.3 s)."""
    rng = np.random.default_rng(4)
    ref = rng.standard_normal(8 * RATE) * 0.1 * np.repeat(rng.random(8 * 25) > 0.3, RATE // 25)  # bursts
    lags = np.arange(int(0.15 * RATE), int(0.4 * RATE))
    tail = np.zeros(int(0.4 * RATE))
    tail[lags] = rng.standard_normal(lags.size) * np.exp(-(lags - lags[0]) / (0.1 * RATE))
    residual = fftconvolve(ref, tail)[: ref.size]
    residual *= 0.1 * np.sqrt(np.mean(ref**2) / np.mean(residual**2))
    res = ResidualEchoSuppressor()
    out = _suppress(res, residual, ref)
    late = slice(5 * RATE, None)
    assert erle_db(residual[late], out[late]) > 6.0
    voice = speech_like(8.0, seed=5) * np.sqrt(
        np.mean(residual**2) * 10 / np.mean(speech_like(8.0, seed=5) ** 2)
    )
    voice[: 6 * RATE] = 0.0
    both = _suppress(res, residual + voice, ref)
    # it learns from every hop with playback, the voice's too: a long double talk loses more
    for seconds, floor_db in ((0.5, -3.0), (2.0, -6.0)):
        onset = slice(6 * RATE, 6 * RATE + int(seconds * RATE))
        out_onset = both[onset.start + FRAME_SAMPLES : onset.stop + FRAME_SAMPLES]
        kept_db = 10 * np.log10(np.sum(out_onset**2) / np.sum((residual + voice)[onset] ** 2))
        assert floor_db < kept_db < 0.0, (seconds, kept_db)
