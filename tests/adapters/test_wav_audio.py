from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from appliance.adapters.wav_audio import RawPipeMicrophone, WavFileMicrophone, WavFileSpeaker, probe_wav_file
from appliance.errors import AudioDeviceError
from appliance.ports import Microphone, Pcm16, Speaker


def _sine(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate_hz * seconds)) / rate_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def _write_pcm16(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """`samples`: float [frames] or [frames, channels] in [-1, 1]."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes((frames * 32767).astype("<i2").tobytes())


def _write_raw_wav(path: Path, payload: bytes, rate_hz: int, channels: int, bits: int, tag: int) -> None:
    """A WAV the stdlib cannot write: IEEE float (tag 3) or WAVE_FORMAT_EXTENSIBLE (0xFFFE)."""
    block_align = channels * bits // 8
    if tag == 0xFFFE:
        fmt = struct.pack(
            "<HHIIHHHHI16s",
            0xFFFE,
            channels,
            rate_hz,
            rate_hz * block_align,
            block_align,
            bits,
            22,
            bits,
            0,
            b"\x01\x00" + bytes(14),  # KSDATAFORMAT_SUBTYPE_PCM
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate_hz, rate_hz * block_align, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to skip
    body += b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


async def _collect(mic: Microphone) -> list[Pcm16]:
    blocks = [block async for block in mic.frames()]
    await mic.close()
    return blocks


def _peak_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate_hz)[np.argmax(spectrum)])


def test_44k1_stereo_pcm16_reads_as_16k_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    tone = _sine(440.0, 44100, 1.5)
    _write_pcm16(path, np.stack([tone, 0.5 * tone], axis=1), 44100)
    mic = WavFileMicrophone(path, realtime=False)
    assert isinstance(mic, Microphone)
    assert mic.duration_s == pytest.approx(1.5)
    blocks = asyncio.run(_collect(mic))
    assert all(b.dtype == np.int16 and b.size == 1280 for b in blocks[:-1])
    audio = np.concatenate(blocks)
    assert audio.size == 24000
    assert _peak_hz(audio, 16000) == pytest.approx(440.0, abs=1.0)
    assert np.abs(audio[2000:-2000]).max() / 32768 == pytest.approx(0.375, abs=0.01)


def test_48k_mono_float32_reads_as_16k_mono(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    tone = _sine(1000.0, 48000, 0.75, amplitude=0.8).astype("<f4")
    _write_raw_wav(path, tone.tobytes(), 48000, 1, 32, tag=3)
    mic = WavFileMicrophone(path, realtime=False)
    assert mic.duration_s == pytest.approx(0.75)
    audio = np.concatenate(asyncio.run(_collect(mic)))
    assert audio.size == 12000
    assert _peak_hz(audio, 16000) == pytest.approx(1000.0, abs=2.0)
    assert np.abs(audio[1000:-1000]).max() / 32768 == pytest.approx(0.8, abs=0.01)


def test_24bit_extensible_and_8bit_pcm(tmp_path: Path) -> None:
    tone = _sine(500.0, 16000, 0.5)
    ints = np.rint(tone * (2**23 - 1)).astype("<i4")
    packed = np.frombuffer(ints.tobytes(), dtype=np.uint8).reshape(-1, 4)[:, :3].tobytes()
    _write_raw_wav(tmp_path / "24.wav", packed, 16000, 1, 24, tag=0xFFFE)
    audio24 = np.concatenate(asyncio.run(_collect(WavFileMicrophone(tmp_path / "24.wav", realtime=False))))
    expected = np.rint(tone * 32768).astype(np.int32)
    assert audio24.size == 8000
    assert np.abs(audio24.astype(np.int32) - expected).max() <= 1

    unsigned = np.rint(tone * 127 + 128).astype(np.uint8)
    _write_raw_wav(tmp_path / "8.wav", unsigned.tobytes(), 16000, 1, 8, tag=1)
    audio8 = np.concatenate(asyncio.run(_collect(WavFileMicrophone(tmp_path / "8.wav", realtime=False))))
    assert np.abs(audio8.astype(np.int32) - expected).max() <= 300  # 8-bit quantisation


def test_bad_input_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioDeviceError, match="cannot open input WAV"):
        WavFileMicrophone(tmp_path / "missing.wav", realtime=False)
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioDeviceError, match="not a RIFF/WAVE file"):
        WavFileMicrophone(tmp_path / "junk.wav", realtime=False)


def test_realtime_pacing_takes_wall_clock_time(tmp_path: Path) -> None:
    path = tmp_path / "one_second.wav"
    _write_pcm16(path, _sine(300.0, 16000, 1.0), 16000)

    async def run() -> tuple[float, int]:
        mic = WavFileMicrophone(path, realtime=True)
        start = time.monotonic()
        samples = sum([b.size async for b in mic.frames()])
        return time.monotonic() - start, samples

    elapsed, samples = asyncio.run(run())
    assert samples == 16000
    assert 0.9 <= elapsed < 2.0


def test_fast_mode_yields_as_fast_as_pulled(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    _write_pcm16(path, _sine(300.0, 16000, 20.0), 16000)
    start = time.monotonic()
    blocks = asyncio.run(_collect(WavFileMicrophone(path, realtime=False)))
    assert sum(b.size for b in blocks) == 320000
    assert time.monotonic() - start < 2.0


def test_raw_pipe_microphone_reads_stdin_like_pipe() -> None:
    data = np.random.default_rng(3).integers(-32768, 32767, size=5000, dtype=np.int16)
    payload = data.astype("<i2").tobytes() + b"\x7f"  # a partial trailing sample
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for i in range(0, len(payload), 777):  # odd-sized writes split samples
                pipe.write(payload[i : i + 777])
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=0) as stream:
        mic = RawPipeMicrophone(stream, realtime=False)
        blocks = asyncio.run(_collect(mic))
    thread.join()
    assert [b.size for b in blocks] == [1280, 1280, 1280, 1160]
    assert np.array_equal(np.concatenate(blocks), data)


# --- inputs that are not (supported) WAV: named, never read as audio ----------------------------


def _ulaw_wav(path: Path) -> None:
    _write_raw_wav(path, bytes(range(256)) * 40, 8000, 1, 8, tag=0x0007)


def _mp3_bytes() -> bytes:
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(400)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_ulaw_wav, "µ-law (G.711) samples are not supported; supported: WAV (RIFF/WAVE) with PCM "
         "(8, 16, 24 or 32-bit) or IEEE float (32 or 64-bit) samples, 1000–768000 Hz, any channel count"),
        (lambda p: p.write_bytes(_mp3_bytes()), "not a RIFF/WAVE file: it is an MP3 file; supported:"),
        (lambda p: p.write_bytes(b"\xff\xfb\x90\x64" + bytes(400)), "not a RIFF/WAVE file: it is an MP3"),
        (lambda p: p.write_bytes(b"fLaC" + bytes(100)), "not a RIFF/WAVE file: it is a FLAC file"),
        (lambda p: p.write_bytes(b""), "not a RIFF/WAVE file: the file is empty"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00"), "not a RIFF/WAVE file: the file is only 6 bytes"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00"),
         "truncated header: the file ends inside the fmt chunk"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "truncated header: the file ends before"),
        (lambda p: _write_raw_wav(p, bytes(100), 16000, 1, 16, tag=0x0002),
         "Microsoft ADPCM samples are not supported"),
        (lambda p: _write_raw_wav(p, bytes(100), 16000, 1, 16, tag=0x0003), "16-bit float (2-byte samples)"),
        (lambda p: _write_raw_wav(p, bytes(100), 500, 1, 16, tag=1), "a sample rate of 500 Hz is not"),
    ],
)  # fmt: skip
def test_files_that_are_not_supported_wavs_say_what_they_are(
    tmp_path: Path, make: Callable[[Path], None], expected: str
) -> None:
    path = tmp_path / "input.wav"
    make(path)
    for probe in (probe_wav_file, lambda p: WavFileMicrophone(p, realtime=False)):
        with pytest.raises(AudioDeviceError) as exc:
            probe(path)
        assert exc.value.code == "audio_file_invalid" and not exc.value.retryable
        assert str(exc.value).startswith(f"cannot read WAV file {path}: {expected}")


def _pipe(payload: bytes) -> BinaryIO:
    """A real pipe (short reads, no seeking) fed by a thread in odd-sized writes."""
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as pipe:
            for i in range(0, len(payload), 777):
                try:
                    pipe.write(payload[i : i + 777])
                except BrokenPipeError:
                    return

    threading.Thread(target=writer, daemon=True).start()
    return os.fdopen(read_fd, "rb", buffering=0)


def _riff(chunks: bytes, size: int | None = None) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) if size is None else size) + b"WAVE" + chunks


@pytest.mark.parametrize("streamed", [False, True])
def test_a_wav_stream_on_stdin_is_parsed_not_played_as_raw_samples(tmp_path: Path, streamed: bool) -> None:
    """`sox in.wav -t wav - | appliance run --input -`: the header is read, the audio resampled."""
    path = tmp_path / "stereo.wav"
    tone = _sine(440.0, 44100, 1.0)
    _write_pcm16(path, np.stack([tone, 0.5 * tone], axis=1), 44100)
    data = path.read_bytes()
    fmt_end = data.index(b"data")
    payload = data[fmt_end + 8 :]
    meta = b"LIST" + struct.pack("<I", 4) + b"INFO"
    # streamed: sizes unknown (0xFFFFFFFF), as arecord/sox write to a pipe; else a trailing chunk
    # after the data that must not be read as audio
    size = 0xFFFFFFFF if streamed else len(payload)
    trailer = b"" if streamed else b"LIST" + struct.pack("<I", 4) + b"INFO"
    stream = _riff(data[12:fmt_end] + meta + b"data" + struct.pack("<I", size) + payload + trailer)
    with _pipe(stream) as pipe:
        mic = RawPipeMicrophone(pipe, realtime=False)
        audio = np.concatenate(asyncio.run(_collect(mic)))
    expected = np.concatenate(asyncio.run(_collect(WavFileMicrophone(path, realtime=False))))
    assert mic.format is not None and (mic.format.sample_rate_hz, mic.format.channels) == (44100, 2)
    assert audio.size == expected.size == 16000
    assert np.abs(audio.astype(np.int32) - expected.astype(np.int32)).max() <= 2
    assert _peak_hz(audio, 16000) == pytest.approx(440.0, abs=1.0)


def test_a_stream_in_another_format_or_with_a_bad_header_is_refused() -> None:
    with _pipe(_mp3_bytes()) as pipe, pytest.raises(AudioDeviceError) as exc:
        asyncio.run(_collect(RawPipeMicrophone(pipe, realtime=False)))
    assert str(exc.value).startswith(
        "cannot read WAV file <stdin>: it is an MP3 file, not raw audio or a WAV stream; supported:"
    )
    ulaw = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    stream = _riff(b"fmt " + struct.pack("<I", 16) + ulaw + b"data" + struct.pack("<I", 100) + bytes(100))
    with _pipe(stream) as pipe, pytest.raises(AudioDeviceError, match=r"<stdin>: µ-law \(G.711\) samples"):
        asyncio.run(_collect(RawPipeMicrophone(pipe, realtime=False)))
    with (
        _pipe(_riff(b"fmt " + struct.pack("<I", 16) + ulaw[:6])) as pipe,
        pytest.raises(
            AudioDeviceError, match="<stdin>: truncated header: the file ends inside the fmt chunk"
        ),
    ):
        asyncio.run(_collect(RawPipeMicrophone(pipe, realtime=False)))


def test_raw_input_shorter_than_a_header_is_still_audio() -> None:
    samples = np.array([100, -200, 300, -400, 500], dtype=np.int16)
    with _pipe(samples.astype("<i2").tobytes() + b"\x01") as pipe:
        blocks = asyncio.run(_collect(RawPipeMicrophone(pipe, realtime=False)))
    assert np.array_equal(np.concatenate(blocks), samples)


def _new_threads(before: set[threading.Thread]) -> list[str]:
    """The microphone reader threads started since `before` that are still alive."""
    return [t.name for t in threading.enumerate() if t not in before and t.name == "raw-pipe-reader"]


def test_close_ends_the_reader_thread_even_while_a_read_waits_on_a_silent_pipe() -> None:
    """A writer that never closes (a live stdin): `close()` must not leave a thread blocked on
    the read behind, nor one waiting for the next request after the input ended."""
    before = set(threading.enumerate())
    with _pipe(bytes(100)) as pipe:  # ends: the reader goes idle, waiting for requests
        asyncio.run(_collect(RawPipeMicrophone(pipe, realtime=False)))
    assert _new_threads(before) == []

    read_fd, write_fd = os.pipe()
    os.write(write_fd, bytes(12 + 2560))  # the sniffed head and one 80 ms block, then nothing
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as stream:
            mic = RawPipeMicrophone(stream, realtime=False)

            async def run() -> tuple[int, float, list[Pcm16]]:
                frames = mic.frames()
                first = await anext(frames)
                rest = asyncio.create_task(anext(frames, None))  # the next read blocks: no data
                await asyncio.sleep(0.2)
                assert not rest.done() and _new_threads(before) == ["raw-pipe-reader"]
                start = time.monotonic()
                await mic.close()
                closed_s = time.monotonic() - start
                tail = await asyncio.wait_for(rest, 2.0)
                return first.size, closed_s, [] if tail is None else [tail]

            size, closed_s, tail = asyncio.run(run())
        assert size == 1280 and tail == []
        assert closed_s < 1.0
        # close() waits at most 0.5 s for the reader; on a loaded machine it may end just after
        deadline = time.monotonic() + 2.0
        while _new_threads(before) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _new_threads(before) == []
    finally:
        os.close(write_fd)


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def test_speaker_fast_mode_concatenates(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    first = np.full(1600, 1000, dtype=np.int16)
    second = np.full(2205, -1000, dtype=np.int16)  # 0.1 s at 22.05 kHz

    async def run() -> WavFileSpeaker:
        speaker = WavFileSpeaker(path, timeline=None)
        assert isinstance(speaker, Speaker)
        assert await speaker.play(first, 16000)
        assert await speaker.play(second, 22050)
        assert not speaker.playing
        await speaker.close()
        return speaker

    speaker = asyncio.run(run())
    assert speaker.played_s == pytest.approx(0.2)
    rate, audio = _read_wav(path)
    assert rate == 16000 and audio.size == 3200
    assert np.array_equal(audio[:1600], first)
    assert np.all(audio[1700:3100] < -900)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def test_speaker_timeline_places_audio_and_pads(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    clock = FakeClock()
    reply = np.full(1600, 2000, dtype=np.int16)  # 0.1 s

    async def run() -> None:
        speaker = WavFileSpeaker(path, timeline=clock)
        clock.t = 0.5
        assert await speaker.play(reply, 16000)
        clock.t = 0.55  # the previous reply still runs to 0.6: appended after it, no overlap
        assert await speaker.play(-reply, 16000)
        clock.t = 1.0
        assert await speaker.play(reply[:800], 8000)  # 0.1 s at 8 kHz
        await speaker.close(pad_to_s=2.0)
        await speaker.close(pad_to_s=3.0)  # idempotent

    asyncio.run(run())
    _, audio = _read_wav(path)
    assert audio.size == 32000
    assert not audio[:8000].any()
    assert np.array_equal(audio[8000:9600], reply)
    assert np.array_equal(audio[9600:11200], -reply)
    assert not audio[11200:16000].any()
    assert np.abs(audio[16100:17500] - 2000).max() < 50
    assert not audio[17700:].any()


def test_speaker_stop_cuts_realtime_play_within_a_block(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    clock = FakeClock()
    long_reply = np.full(32000, 1000, dtype=np.int16)  # 2 s

    async def run() -> tuple[bool, float, float]:
        speaker = WavFileSpeaker(path, timeline=clock, block_ms=20)
        task = asyncio.create_task(speaker.play(long_reply, 16000))
        while speaker.played_s < 0.1:
            await asyncio.sleep(0.005)
        assert speaker.playing
        at_stop = speaker.played_s
        speaker.stop()
        result = await task
        assert not speaker.playing
        assert await speaker.play(long_reply[:160], 16000)  # plays again after a stop
        await speaker.close()
        return result, at_stop, speaker.played_s - 0.01

    result, at_stop, after = asyncio.run(run())
    assert result is False
    assert after - at_stop <= 0.02 + 1e-9  # at most one more 20 ms block
    _, audio = _read_wav(path)
    assert np.count_nonzero(audio) == round((after + 0.01) * 16000)


def test_speaker_cancelled_play_stops_writing(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"

    async def run() -> tuple[WavFileSpeaker, float]:
        speaker = WavFileSpeaker(path, timeline=FakeClock())
        started = time.monotonic()
        task = asyncio.create_task(speaker.play(np.ones(32000, dtype=np.int16), 16000))
        await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started  # more than 0.05 s on a loaded machine
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        written = speaker.played_s
        await asyncio.sleep(0.05)
        assert speaker.played_s == written and not speaker.playing
        await speaker.close()
        return speaker, elapsed

    speaker, elapsed = asyncio.run(run())
    # paced in real time up to the cancel, then nothing more (the 2 s reply is not written out)
    assert 0 < speaker.played_s <= elapsed + 0.1 and speaker.played_s < 2.0
