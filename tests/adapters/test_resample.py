from __future__ import annotations

import numpy as np
import pytest
import soxr

from appliance.adapters.resample import BlockAssembler, Resampler, downmix, resample, to_int16


def _stereo_sine(freq_hz: float, rate_hz: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    left = 0.5 * np.sin(2 * np.pi * freq_hz * t)
    right = 0.3 * np.sin(2 * np.pi * freq_hz * t + 0.2)
    return to_int16(np.stack([left, right], axis=1))


def _peak_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate_hz)[np.argmax(spectrum)])


def test_44k1_stereo_to_16k_mono_keeps_length_and_frequency() -> None:
    audio = _stereo_sine(1000.0, 44100, 2.0)
    block = 441  # 10 ms
    resampler = Resampler(44100, 16000)
    pieces = [resampler.process(audio[i : i + block]) for i in range(0, len(audio), block)]
    pieces.append(resampler.flush())
    out = np.concatenate(pieces)
    assert out.dtype == np.int16 and out.ndim == 1
    assert abs(out.size - 32000) <= 160  # within one (10 ms) block
    assert _peak_hz(out, 16000) == pytest.approx(1000.0, abs=2.0)
    # The mean of the channels survives: ~0.4 of full scale (0.5 and 0.3, nearly in phase).
    assert np.abs(out[1000:-1000]).max() / 32768 == pytest.approx(0.396, abs=0.02)


def test_streaming_over_small_blocks_equals_one_shot() -> None:
    rng = np.random.default_rng(7)
    audio = _stereo_sine(440.0, 44100, 1.0)
    sizes = rng.integers(1, 600, size=400)
    resampler = Resampler(44100, 16000)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(resampler.process(audio[start : start + size]))
        start += int(size)
        if start >= len(audio):
            break
    pieces.append(resampler.process(audio[start:], last=True))
    streamed = np.concatenate(pieces).astype(np.int32)
    one_shot = resample(audio, 44100, 16000).astype(np.int32)
    library = to_int16(soxr.resample(downmix(audio).astype(np.float32) / 32768, 44100, 16000))
    assert streamed.size == one_shot.size == library.size == 16000
    assert np.abs(streamed - one_shot).max() <= 2
    assert np.abs(streamed - library.astype(np.int32)).max() <= 2


def test_same_rate_mono_is_bit_exact_passthrough() -> None:
    audio = np.random.default_rng(1).integers(-32768, 32767, size=5000, dtype=np.int16)
    resampler = Resampler(16000, 16000)
    assert resampler.passthrough
    assert np.array_equal(resampler.process(audio), audio)
    assert resampler.flush().size == 0


def test_downmix_of_equal_channels_is_exact_and_float_is_converted() -> None:
    mono = np.array([1, -2, 32767, -32768], dtype=np.int16)
    assert np.array_equal(downmix(np.stack([mono, mono], axis=1)), mono)
    assert np.array_equal(
        resample(np.array([0.5, -1.0, 1.5], dtype=np.float32), 8000, 8000), [16384, -32768, 32767]
    )


def test_resampler_can_be_reused_after_flush() -> None:
    audio = _stereo_sine(300.0, 48000, 0.5)
    resampler = Resampler(48000, 16000)
    first = np.concatenate([resampler.process(audio), resampler.flush()])
    second = np.concatenate([resampler.process(audio), resampler.flush()])
    assert first.size == second.size == 8000
    assert np.abs(first.astype(np.int32) - second).max() <= 1


def test_block_assembler_recuts_into_fixed_blocks() -> None:
    assembler = BlockAssembler(4)
    data = np.arange(11, dtype=np.int16)
    blocks = assembler.push(data[:3]) + assembler.push(data[3:5]) + assembler.push(data[5:])
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    tail = assembler.flush()
    assert tail is not None and tail.tolist() == [8, 9, 10]
    assert assembler.flush() is None
