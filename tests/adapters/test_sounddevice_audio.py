from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sounddevice as sd
import soxr

from appliance.adapters.resample import resample
from appliance.adapters.sounddevice import (
    DeviceInfo,
    PortAudioBackend,
    SounddeviceMicrophone,
    SounddeviceSpeaker,
    StreamRequest,
    StreamState,
    list_devices,
    resolve_device,
)
from appliance.errors import AudioDeviceError
from appliance.ports import Microphone, Speaker

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- real library


def test_list_devices_and_resolve_without_a_sound_card() -> None:
    devices = list_devices()  # whatever PortAudio sees here; empty in a container
    assert all(isinstance(d, DeviceInfo) for d in devices)
    with pytest.raises(AudioDeviceError) as caught:
        resolve_device("nonexistent", "input")
    message = str(caught.value)
    if any(d.max_input_channels for d in devices):
        assert "no audio input device matches 'nonexistent'" in message
    else:
        assert message == (
            "no audio input devices found (is a microphone plugged in? "
            "`appliance devices` lists what PortAudio sees)"
        )
    assert caught.value.code == "audio_device" and caught.value.retryable


def _device(index: int, name: str, inputs: int, outputs: int) -> DeviceInfo:
    return DeviceInfo(index, name, inputs, outputs, 48000.0, "ALSA")


FAKE_DEVICES = [
    _device(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", 2, 2),
    _device(1, "USB PnP Sound Device: Audio (hw:1,0)", 1, 0),
    _device(2, "HDMI 0 (hw:0,3)", 0, 8),
    _device(3, "default", 64, 64),
]


def test_resolve_device_by_name_index_and_default() -> None:
    assert resolve_device(None, "input", FAKE_DEVICES) is None
    assert resolve_device("usb", "input", FAKE_DEVICES) == 1
    assert resolve_device("DEFAULT", "output", FAKE_DEVICES) == 3
    assert resolve_device("hdmi", "output", FAKE_DEVICES) == 2
    assert resolve_device(2, "output", FAKE_DEVICES) == 2
    assert resolve_device("1", "input", FAKE_DEVICES) == 1
    with pytest.raises(AudioDeviceError, match=r"no audio input device matches 'hdmi'") as caught:
        resolve_device("hdmi", "input", FAKE_DEVICES)
    assert "[1] USB PnP Sound Device: Audio (hw:1,0) (ALSA, 1 in, 0 out, 48000 Hz)" in str(caught.value)
    assert "HDMI" not in str(caught.value)  # only input devices are listed
    with pytest.raises(AudioDeviceError, match="no audio output device has index 1"):
        resolve_device(1, "output", FAKE_DEVICES)
    with pytest.raises(AudioDeviceError, match=r"no audio output devices found \(is a speaker plugged in"):
        resolve_device(None, "output", [])


ASOUNDRC = """
pcm.!default {{
  type asym
  playback.pcm "speakernative"
  capture.pcm "micnative"
}}
pcm.micnative {{
  type plug
  slave.pcm {{ type file; slave.pcm "null"; file "/dev/null"; infile "{d}/native.raw"; format "raw" }}
}}
pcm.mic16k {{
  type plug
  slave.pcm {{ type file; slave.pcm "null"; file "/dev/null"; infile "{d}/in16.raw"; format "raw" }}
}}
pcm.speaker16k {{
  type plug
  slave.pcm {{ type file; slave.pcm "null"; file "{d}/out16.raw"; format "raw" }}
}}
pcm.speakernative {{
  type plug
  slave.pcm {{ type file; slave.pcm "null"; file "{d}/outnative.raw"; format "raw" }}
}}
"""

# Runs with HOME pointing at the .asoundrc above (PortAudio reads the ALSA config at import).
# The ALSA file plugin is not paced, so the callbacks are wrapped to run at real-time speed.
SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, dataclasses, json, sys, time
    import numpy as np
    from appliance.adapters import sounddevice as sda

    def paced(callback, block_s):
        state = {"t0": None, "k": 0}
        def wrapped(*args):
            if state["t0"] is None:
                state["t0"] = time.monotonic()
            state["k"] += 1
            delay = state["t0"] + state["k"] * block_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            callback(*args)
        return wrapped

    class PacedBackend(sda.PortAudioBackend):
        def open_input(self, r):
            cb = paced(r.callback, r.block_frames / r.sample_rate_hz)
            return super().open_input(dataclasses.replace(r, callback=cb))
        def open_output(self, r):
            cb = paced(r.callback, r.block_frames / r.sample_rate_hz)
            return super().open_output(dataclasses.replace(r, callback=cb))

    async def record(device, samples, **kw):
        mic = sda.SounddeviceMicrophone(device, backend=PacedBackend(), **kw)
        states = []
        mic.on_state_change(lambda state, reason: states.append(str(state)))
        got, n = [], 0
        async with contextlib.aclosing(mic.frames()) as frames:
            async for block in frames:
                got.append(block)
                n += block.size
                if n >= samples:
                    break
        await mic.close()
        info = mic.device_info
        return np.concatenate(got), {
            "states": states, "dropped": mic.dropped_blocks, "device": info.name,
            "rate": info.default_sample_rate_hz, "channels": info.max_input_channels,
        }

    async def main():
        ref = np.fromfile("in16.raw", dtype="<i2")
        res = {"devices": [d.name for d in sda.list_devices()]}
        exact, res["mic16k"] = await record("MIC16", ref.size, device_rate_hz=16000, device_channels=1)
        exact.astype("<i2").tofile("mic16k.raw")
        native, res["micnative"] = await record(None, ref.size + 4000)
        native.astype("<i2").tofile("micnative.raw")

        spk = sda.SounddeviceSpeaker(
            "speaker16k", backend=PacedBackend(), device_rate_hz=16000, device_channels=1
        )
        res["play_full"] = await spk.play(ref, 16000)
        tone = np.full(48000, 1234, dtype=np.int16)  # 3 s
        started = asyncio.get_running_loop().time()
        task = asyncio.create_task(spk.play(tone, 16000))
        await asyncio.sleep(0.3)
        res["playing"] = spk.playing
        res["stopped_after_s"] = asyncio.get_running_loop().time() - started  # 0.3 s, more when loaded
        spk.stop()
        res["play_stopped"] = await asyncio.wait_for(task, 1.0)
        res["playing_after_stop"] = spk.playing
        await asyncio.sleep(0.1)
        await spk.close()

        spk = sda.SounddeviceSpeaker(None, backend=PacedBackend())
        res["native_out"] = {"rate": spk.sample_rate_hz, "channels": spk.channels}
        # Re-initialising PortAudio (microphone recovery) closes the speaker's stream first;
        # the next play() reopens it.
        sda.PortAudioBackend().refresh()
        res["devices_after_refresh"] = [d.name for d in sda.list_devices()]
        res["released_by_refresh"] = spk._stream is None
        res["native_play_full"] = await spk.play(ref, 16000)
        await spk.close()
        print(json.dumps(res))

    asyncio.run(main())
    """
)


def _best_correlation(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> tuple[float, int]:
    ref = reference.astype(np.float64)
    best = (-1.0, 0)
    for lag in range(max_lag):
        piece = signal[lag : lag + ref.size].astype(np.float64)
        if piece.size < ref.size:
            break
        best = max(best, (float(np.corrcoef(ref, piece)[0, 1]), lag))
    return best


@pytest.mark.slow
def test_real_sounddevice_through_alsa_file_plugin(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    spectrum = np.fft.rfft(rng.standard_normal(16000))
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    spectrum[(freqs < 100) | (freqs > 3000)] = 0  # band-limited noise: no periodicity to alias lags
    ref = np.fft.irfft(spectrum, 16000)
    ref = (ref / np.abs(ref).max() * 12000).astype("<i2")
    ref.tofile(tmp_path / "in16.raw")
    native = soxr.resample(ref.astype(np.float32) / 32768, 16000, 44100)
    stereo = np.stack([native, 0.6 * native], axis=1)  # downmix: 0.8 x the reference
    (stereo * 32767).astype("<i2").tofile(tmp_path / "native.raw")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(d=tmp_path))
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"mic16k", "micnative", "speaker16k", "speakernative"} <= set(res["devices"])

    # Microphone, device at 16 kHz mono: bit-exact.
    assert res["mic16k"]["device"] == "mic16k"
    assert res["mic16k"]["states"] == ["open", "closed"] and res["mic16k"]["dropped"] == 0
    exact = np.fromfile(tmp_path / "mic16k.raw", dtype="<i2")
    assert np.array_equal(exact[: ref.size], ref)

    # Microphone at the device's native rate (44.1 kHz, 2 channels): downmixed and resampled.
    assert res["micnative"]["rate"] == 44100.0
    captured = np.fromfile(tmp_path / "micnative.raw", dtype="<i2")
    corr, _lag = _best_correlation(ref[1000:13000], captured, 3000)
    assert corr > 0.99
    gain = np.abs(captured[2000:14000]).max() / np.abs(ref[2000:14000]).max()
    assert gain == pytest.approx(0.8, abs=0.05)

    # Speaker at 16 kHz mono: the samples reach the file exactly, after leading silence.
    assert res["play_full"] is True
    assert res["playing"] is True and res["play_stopped"] is False and res["playing_after_stop"] is False
    out = np.fromfile(tmp_path / "out16.raw", dtype="<i2")
    start = int(np.flatnonzero(out)[0]) - int(np.flatnonzero(ref)[0])
    assert np.array_equal(out[start : start + ref.size], ref)
    tone = np.flatnonzero(out == 1234)
    # cut where it was stopped (~0.3 s in, later if the sleep overran on a loaded machine; the
    # device's blocks in flight at most 0.3 s more), not the whole 3 s
    assert 0.1 * 16000 < tone.size < (res["stopped_after_s"] + 0.3) * 16000 < 3 * 16000
    assert not out[tone[-1] + 1 :].any()  # silence after the stop

    # Speaker at the native rate: resampled to 44.1 kHz stereo, reopened after a PortAudio refresh.
    assert res["native_out"] == {"rate": 44100, "channels": 2} and res["native_play_full"] is True
    assert res["released_by_refresh"] is True and res["devices_after_refresh"] == res["devices"]
    played = np.fromfile(tmp_path / "outnative.raw", dtype="<i2").reshape(-1, 2)
    assert np.array_equal(played[:, 0], played[:, 1])
    back = soxr.resample(played[:, 0].astype(np.float32), 44100, 16000)
    first = int(np.flatnonzero(np.abs(back) > 50)[0])
    corr, _lag = _best_correlation(ref[1000:13000], back[max(0, first - 200) :], 2000)
    assert corr > 0.99


# --------------------------------------------------------------------------- fakes


class FakeStream:
    def __init__(self, request: StreamRequest) -> None:
        self.request = request
        self.started = False
        self.closed = False

    def start(self) -> None:
        self.started = True

    def abort(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    def __init__(self, rate_hz: int = 16000, channels: int = 1, open_failures: int = 0) -> None:
        self.info = DeviceInfo(5, "Fake USB Mic", channels, channels, float(rate_hz), "ALSA")
        self.open_failures = open_failures
        self.streams: list[FakeStream] = []
        self.refreshes = 0
        self.lookups = 0

    def lookup(self, spec: str | int | None, kind: str) -> DeviceInfo:
        self.lookups += 1
        return self.info

    def _open(self, request: StreamRequest) -> FakeStream:
        if self.open_failures:
            self.open_failures -= 1
            raise sd.PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        stream = FakeStream(request)
        self.streams.append(stream)
        return stream

    open_input = _open
    open_output = _open

    def refresh(self) -> None:
        self.refreshes += 1


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.002)


def _block(value: int, frames: int = 1280, channels: int = 1) -> np.ndarray:
    return np.full((frames, channels), value, dtype=np.int16)


def test_microphone_reconnects_after_open_failures_and_stream_loss() -> None:
    backend = FakeBackend(open_failures=2)
    delays: list[int] = []

    def backoff_s(attempt: int) -> float:
        delays.append(attempt)
        return 0.01

    # no stall can be seen until the stall phase below shortens it (a loaded machine may pause
    # the test longer than a short timeout between two blocks it feeds)
    mic = SounddeviceMicrophone("fake", backend=backend, backoff_s=backoff_s, stall_timeout_s=60.0)
    assert isinstance(mic, Microphone)
    states: list[tuple[StreamState, str | None]] = []
    mic.on_state_change(lambda state, reason: states.append((state, reason)))

    async def run() -> None:
        received: list[np.ndarray] = []

        async def consume() -> None:
            async for block in mic.frames():
                received.append(block)

        consumer = asyncio.create_task(consume())
        await _until(lambda: mic.state == StreamState.OPEN)
        assert [s for s, _ in states] == [StreamState.RECONNECTING, StreamState.OPEN]
        assert "Device unavailable" in (states[0][1] or "")
        assert delays == [0, 1] and backend.refreshes == 2
        stream = backend.streams[-1]
        assert (
            stream.started and stream.request.sample_rate_hz == 16000 and stream.request.block_frames == 1280
        )
        stream.request.callback(_block(1), 1280, None, None)
        await _until(lambda: len(received) == 1)

        # The device disappears: PortAudio ends the stream.
        stream.request.finished_callback()
        await _until(lambda: len(backend.streams) == 2 and mic.state == StreamState.OPEN)
        assert stream.closed
        assert [s for s, _ in states][-2:] == [StreamState.RECONNECTING, StreamState.OPEN]
        assert "ended unexpectedly" in (states[-2][1] or "")
        backend.streams[-1].request.callback(_block(2), 1280, None, None)
        await _until(lambda: len(received) == 2)

        # The device stalls: no callback for longer than the stall timeout.
        mic._stall_timeout_s = 0.3
        await _until(lambda: len(backend.streams) == 3 and mic.state == StreamState.OPEN, timeout_s=3.0)
        assert "no audio from the device" in (states[-2][1] or "")
        backend.streams[-1].request.callback(_block(3), 1280, None, None)
        await _until(lambda: len(received) == 3)
        assert [int(b[0]) for b in received] == [1, 2, 3]
        assert mic.reconnects == 3

        await mic.close()
        await asyncio.wait_for(consumer, 1.0)  # frames() ends on close
        assert backend.streams[-1].closed and mic.state == StreamState.CLOSED

    asyncio.run(run())


def test_microphone_drops_oldest_blocks_and_counts_overflows() -> None:
    backend = FakeBackend(rate_hz=48000, channels=2)
    mic = SounddeviceMicrophone(None, backend=backend, input_queue_blocks=4, stall_timeout_s=5.0)

    async def run() -> list[np.ndarray]:
        frames = mic.frames()
        first = asyncio.ensure_future(anext(frames))
        await _until(lambda: bool(backend.streams))
        request = backend.streams[0].request
        assert request.channels == 2 and request.sample_rate_hz == 48000 and request.block_frames == 3840
        overflow = sd.CallbackFlags()
        overflow.input_overflow = True
        # A burst of 10 blocks while the consumer cannot run: only the newest 4 survive.
        for value in range(10):
            request.callback(_block(value * 1000, 3840, 2), 3840, None, overflow if value == 0 else None)
        assert mic.dropped_blocks == 6 and mic.input_overflows == 1
        blocks = [await asyncio.wait_for(first, 2.0)]
        # The resampler holds back its filter delay, so 4 input blocks give 3 whole output blocks.
        while len(blocks) < 3:
            blocks.append(await asyncio.wait_for(anext(frames), 2.0))
        await mic.close()
        return blocks

    audio = np.concatenate(asyncio.run(run()))
    # The surviving blocks are 6000..9000 (steps at each block edge, smoothed by the resampler).
    for index, value in enumerate([6000, 7000, 8000]):
        assert abs(int(audio[1280 * index + 640]) - value) < 50
        assert abs(np.median(audio[1280 * index : 1280 * (index + 1)]) - value) < 50


class FakeOutput:
    """Drives a fake output stream's callback like PortAudio would, one block per `pull()`."""

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.channels = stream.request.channels

    async def pull(self, frames: int = 320) -> np.ndarray:
        for _ in range(5):  # let the event loop run between blocks, as in real time
            await asyncio.sleep(0)
        out = np.full((frames, self.channels), 99, dtype=np.int16)
        self.stream.request.callback(out, frames, None, None)
        return out


def test_speaker_plays_stops_within_a_block_and_applies_volume() -> None:
    backend = FakeBackend(rate_hz=16000, channels=2)
    speaker = SounddeviceSpeaker("fake", backend=backend, output_block_ms=20, volume=1.0)
    assert isinstance(speaker, Speaker)
    stream = backend.streams[0]
    assert stream.started and stream.request.block_frames == 320 and stream.request.channels == 2
    device = FakeOutput(stream)

    async def run() -> None:
        audio = np.arange(1, 801, dtype=np.int16)
        task = asyncio.create_task(speaker.play(audio, 16000))
        await asyncio.sleep(0)
        assert speaker.playing
        first, second, third = await device.pull(), await device.pull(), await device.pull()
        assert np.array_equal(first[:, 0], audio[:320]) and np.array_equal(first[:, 1], audio[:320])
        assert np.array_equal(second[:, 0], audio[320:640])
        assert np.array_equal(third[:160, 0], audio[640:]) and not third[160:].any()
        assert await asyncio.wait_for(task, 1.0) is True and not speaker.playing

        # stop(): the pending play returns False and the next block is silent.
        task = asyncio.create_task(speaker.play(np.full(16000, 500, dtype=np.int16), 16000))
        assert (await device.pull())[:, 0].tolist() == [500] * 320
        speaker.stop()
        speaker.stop()  # idempotent
        assert await task is False
        assert not (await device.pull()).any()

        # volume: gain with clipping.
        speaker.volume = 5.0
        assert speaker.volume == 2.0
        task = asyncio.create_task(speaker.play(np.array([100, 20000, -20000], dtype=np.int16), 16000))
        assert (await device.pull())[:3, 0].tolist() == [200, 32767, -32768]
        assert await asyncio.wait_for(task, 1.0) is True

        # A cancelled play (barge-in by cancellation) is silent from the next block.
        speaker.volume = 1.0
        task = asyncio.create_task(speaker.play(np.full(16000, 7, dtype=np.int16), 16000))
        assert (await device.pull())[0, 0] == 7
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not (await device.pull()).any()

        await speaker.close()
        assert stream.closed
        assert await speaker.play(np.ones(10, dtype=np.int16), 16000) is False

    asyncio.run(run())


def test_speaker_resamples_back_to_back_chunks_as_one_stream() -> None:
    backend = FakeBackend(rate_hz=48000, channels=1)
    speaker = SounddeviceSpeaker(None, backend=backend, output_block_ms=20)
    device = FakeOutput(backend.streams[0])
    t = np.arange(16000) / 16000
    speech = (8000 * np.sin(2 * np.pi * 200 * t) + 3000 * np.sin(2 * np.pi * 1500 * t)).astype(np.int16)
    chunks = np.split(speech, 10)  # 100 ms chunks, as a streamed reply arrives

    async def run() -> np.ndarray:
        tasks = [asyncio.create_task(speaker.play(chunk, 16000)) for chunk in chunks[:3]]
        blocks = []
        for index in range(80):  # 20 ms blocks; a new 100 ms chunk arrives every 100 ms
            if index % 5 == 0 and 3 + index // 5 < len(chunks):
                tasks.append(asyncio.create_task(speaker.play(chunks[3 + index // 5], 16000)))
            blocks.append(await device.pull(960))
        assert await asyncio.gather(*tasks) == [True] * 10
        await speaker.close()
        return np.concatenate(blocks)[:, 0]

    played = asyncio.run(run())
    start = int(np.flatnonzero(played)[0])
    played = played[start : start + 48000].astype(np.int32)
    one_shot = resample(speech, 16000, 48000).astype(np.int32)
    assert played.size == 48000
    assert np.abs(played - one_shot).max() <= 2  # no edges at the 100 ms chunk boundaries


def test_speaker_reopens_after_the_stream_dies() -> None:
    backend = FakeBackend()
    speaker = SounddeviceSpeaker(None, backend=backend, stall_timeout_s=5.0)

    async def run() -> None:
        task = asyncio.create_task(speaker.play(np.ones(16000, dtype=np.int16), 16000))
        await asyncio.sleep(0.01)
        backend.streams[0].request.finished_callback()  # the device went away
        assert await asyncio.wait_for(task, 2.0) is False
        task = asyncio.create_task(speaker.play(np.ones(100, dtype=np.int16), 16000))
        # the device reopens in a worker thread and the play is queued after it returns: a block
        # pulled before that would be silence, and the play would then wait for the next one
        await _until(lambda: len(backend.streams) == 2 and speaker.playing)
        assert backend.streams[0].closed
        out = np.zeros((320, 1), dtype=np.int16)
        backend.streams[1].request.callback(out, 320, None, None)
        assert await asyncio.wait_for(task, 2.0) is True
        await speaker.close()

    asyncio.run(run())


def test_portaudio_refresh_waits_while_a_speaker_plays(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(sd, "_terminate", lambda: calls.append("terminate"))
    monkeypatch.setattr(sd, "_initialize", lambda: calls.append("initialize"))
    backend = FakeBackend()
    speaker = SounddeviceSpeaker(None, backend=backend)

    async def run() -> None:
        task = asyncio.create_task(speaker.play(np.ones(16000, dtype=np.int16), 16000))
        await asyncio.sleep(0)
        PortAudioBackend().refresh()  # playing: not now
        assert calls == [] and not backend.streams[0].closed
        speaker.stop()
        assert await task is False
        PortAudioBackend().refresh()
        assert calls == ["terminate", "initialize"] and backend.streams[0].closed
        await speaker.close()

    asyncio.run(run())


def test_speaker_without_output_device_fails_clearly() -> None:
    class NoDevices(FakeBackend):
        def lookup(self, spec: str | int | None, kind: str) -> DeviceInfo:
            resolve_device(spec, "output", [])
            raise AssertionError("unreachable")

    with pytest.raises(AudioDeviceError, match=r"no audio output devices found"):
        SounddeviceSpeaker(None, backend=NoDevices())
