"""Our own linear echo estimate (`adapters/linear_echo.py`): it converges on an echo path, keeps
it through double talk (the foreground follows the background only where it is better), keeps it
across a pause, and works on blocks of any size. Seeded noise, exact numbers of samples."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import fftconvolve

from appliance.adapters.linear_echo import LinearEchoFilter

RATE = 16000
F64 = npt.NDArray[np.float64]


def _path() -> F64:
    """An echo path: 30 ms of delay, then 60 ms of decaying reflections (seeded), gain 0.5."""
    rng = np.random.default_rng(3)
    taps = rng.normal(0.0, 1.0, 960) * np.exp(-np.arange(960) / 240.0)
    path = np.concatenate([np.zeros(480), taps])
    return 0.5 * path / float(np.sqrt(np.sum(path**2)))


def _signals(seconds: float, seed: int = 1) -> tuple[F64, F64]:
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, 0.1, round(seconds * RATE))
    return ref, fftconvolve(ref, _path())[: ref.size]


def _run(filt: LinearEchoFilter, mic: F64, ref: F64, block: int = 1280) -> tuple[F64, F64]:
    res, est = [], []
    for i in range(0, mic.size, block):
        r, e = filt.process(mic[i : i + block], ref[i : i + block])
        res.append(r)
        est.append(e)
    return np.concatenate(res), np.concatenate(est)


def _db(a: F64, b: F64) -> float:
    return float(10.0 * np.log10(np.sum(a**2) / np.sum(b**2)))


def test_it_converges_on_an_echo_path_and_estimates_the_echo() -> None:
    ref, echo = _signals(3.2)
    filt = LinearEchoFilter()
    res, est = _run(filt, echo, ref)
    assert res.size == echo.size
    # echo in ÷ residual per 0.5 s (measured 3.8, 7.0, 10.7, 14.5, 18.3, 22.2, 24.7 dB)
    per = [_db(echo[i : i + 8000], res[i : i + 8000]) for i in range(0, res.size, 8000)]
    assert per[0] < 6.0 and all(b > a + 1.0 for a, b in itertools.pairwise(per))
    late = slice(2 * RATE, res.size)
    assert _db(echo[late], res[late]) > 18.0
    assert np.allclose(res, echo - est)
    assert filt.copies > 0


def test_a_second_talker_does_not_pull_the_foreground_off_the_echo_path() -> None:
    """2 s of echo, then a talker (other noise) 6 dB over it for 1 s: the residual is the talker
    plus what is left of the echo, and that remainder stays small (the foreground kept its path)."""
    ref, echo = _signals(3.2)
    talker = np.zeros_like(echo)
    talker[2 * RATE :] = np.random.default_rng(9).normal(0.0, 2.0 * float(np.std(echo)), echo.size - 2 * RATE)
    filt = LinearEchoFilter()
    res, _ = _run(filt, echo + talker, ref)
    talk = slice(2 * RATE, echo.size)
    left = res[talk] - talker[talk]  # the echo the foreground missed while the talker spoke
    assert _db(echo[talk], left) > 14.0  # measured 16.4 dB
    assert _db(res[talk], talker[talk]) == pytest.approx(0.0, abs=0.5)
    # with only the background (it adapts into the talker), far more echo is left
    naive = LinearEchoFilter(copy_ratio=10.0)  # copies every block: no double-talk protection
    res_naive, _ = _run(naive, echo + talker, ref)
    assert _db(echo[talk], res_naive[talk] - talker[talk]) < _db(echo[talk], left) - 3.0


def test_a_pause_keeps_the_echo_path() -> None:
    ref, echo = _signals(2.56)
    filt = LinearEchoFilter()
    _run(filt, echo[: 2 * RATE], ref[: 2 * RATE])
    filt.pause()
    ref2, echo2 = _signals(0.64, seed=5)  # the next turn: other audio, the same room
    res, _ = _run(filt, echo2, ref2)
    after = slice(round(0.1 * RATE), res.size)  # past the path's length: the history is there again
    assert _db(echo2[after], res[after]) > 18.0  # measured 22.1 dB: where it left off


def test_blocks_of_any_size_give_the_same_output_lagging_by_the_samples_short_of_a_block() -> None:
    ref, echo = _signals(1.28)
    whole, _ = _run(LinearEchoFilter(), echo, ref, block=1280)
    odd, _ = _run(LinearEchoFilter(), echo, ref, block=1000)
    # 1000 = 3 filter blocks of 256 + 232 waiting: the output lags by those 232 samples
    assert np.allclose(odd[232:], whole[: odd.size - 232])
    assert not np.any(odd[:232])


def test_mismatched_lengths_are_said() -> None:
    with pytest.raises(ValueError, match="1280 microphone but 1000 reference samples"):
        LinearEchoFilter().process(np.zeros(1280), np.zeros(1000))
