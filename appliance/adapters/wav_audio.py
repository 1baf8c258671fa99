"""Headless audio: a WAV file or a raw stdin pipe as the microphone, a WAV file as the speaker.

Used by `appliance run --input in.wav --output out.wav` and by the end-to-end tests. Reading uses
a small RIFF parser instead of the stdlib `wave` module because `wave` in Python 3.11 rejects
IEEE-float and WAVE_FORMAT_EXTENSIBLE files (what most DAWs and `sox` write for float and
24-bit); the parser handles 8/16/24/32-bit PCM and 32/64-bit float, any rate and channel count,
and streams the data chunk block by block. Writing uses `wave` (16-bit mono), whose header is
patched on every write, so out.wav is valid even if the process dies.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import os
import queue
import select
import struct
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from appliance.adapters.resample import BlockAssembler, Resampler, resample
from appliance.errors import AudioDeviceError
from appliance.ports import MIC_RATE_HZ, Clock, Pcm16

_LOGGER = logging.getLogger(__name__)

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law (G.711)",
    0x0007: "µ-law (G.711)",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x0161: "WMA",
    0x2000: "AC-3",
}
MIN_WAV_RATE_HZ = 1000
MAX_WAV_RATE_HZ = 768_000
SUPPORTED_WAV = (
    "supported: WAV (RIFF/WAVE) with PCM (8, 16, 24 or 32-bit) or IEEE float (32 or 64-bit) samples, "
    f"{MIN_WAV_RATE_HZ}–{MAX_WAV_RATE_HZ} Hz, any channel count"
)
_MAX_FMT_BYTES = 4096
_MAX_STREAM_SKIP_BYTES = 16 * 1024 * 1024
"""A WAV stream may carry this much in chunks before its audio (metadata, pictures)."""


def _bad_file(path: str, why: str) -> AudioDeviceError:
    return AudioDeviceError(f"cannot read WAV file {path}: {why}", code="audio_file_invalid", retryable=False)


def describe_non_wav(head: bytes, *, strict: bool = False) -> str | None:
    """What a file that does not start with a RIFF/WAVE header is, from its first bytes; None when
    nothing is recognised. `strict`: only signatures that raw 16-bit samples practically never
    start with (for stdin, where raw samples are valid input)."""
    if head[:3] == b"ID3" and head[3:4] in (b"\x02", b"\x03", b"\x04"):
        return "it is an MP3 file"
    if not strict and len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE6 in (0xE2, 0xE4, 0xE6):
        return "it is an MP3 file"
    if head[:4] == b"fLaC":
        return "it is a FLAC file"
    if head[:4] == b"OggS":
        return "it is an Ogg (Vorbis/Opus) file"
    if head[:4] == b"RF64":
        return "it is an RF64 (64-bit WAV) file"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "it is an AIFF file"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return f"it is a RIFF {head[8:12].decode('latin-1').strip()!r} file, not WAVE"
    if not strict and head[4:8] == b"ftyp":
        return "it is an MP4/M4A file"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "it is a WebM/Matroska file"
    if head[:4] == b".snd":
        return "it is a Sun/NeXT AU file"
    return None


def _what_instead(head: bytes) -> str:
    if not head:
        return "the file is empty"
    known = describe_non_wav(head)
    if known is not None:
        return known
    if len(head) < 12:
        return f"the file is only {len(head)} bytes"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it looks like text"
    return "no RIFF/WAVE header"


@dataclass(frozen=True)
class WavFormat:
    """What the `fmt ` and `data` chunks of a WAV file say."""

    sample_rate_hz: int
    channels: int
    sample_bytes: int
    is_float: bool
    frames: int
    data_offset: int

    @property
    def frame_bytes(self) -> int:
        return self.sample_bytes * self.channels

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


_Fmt = tuple[int, int, int, int, int]  # tag, channels, rate, block_align, bits


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to `n` bytes; fewer only at the end of the input (pipes return short reads)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        piece = read(n - got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def _parse_header(
    read: Callable[[int], bytes], skip: Callable[[int], None], path: str, head: bytes | None = None
) -> tuple[_Fmt, int]:
    """The fmt fields and the data chunk's declared size; `read` is left at the first sample.
    `head`: the first 12 bytes, when the caller has read them already."""
    head = _read_exact(read, 12) if head is None else head
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise _bad_file(path, f"not a RIFF/WAVE file: {_what_instead(head)}; {SUPPORTED_WAV}")
    fmt: _Fmt | None = None
    while True:
        chunk = _read_exact(read, 8)
        if len(chunk) < 8:
            missing = "data chunk" if fmt is not None else "fmt chunk"
            raise _bad_file(path, f"truncated header: the file ends before the {missing}")
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"fmt ":
            if size < 16 or size > _MAX_FMT_BYTES:
                raise _bad_file(path, f"invalid fmt chunk ({size} bytes)")
            body = _read_exact(read, size + (size & 1))
            if len(body) < size:
                raise _bad_file(path, "truncated header: the file ends inside the fmt chunk")
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise _bad_file(path, "data chunk before fmt chunk")
            return fmt, size
        else:
            skip(size + (size & 1))


def _check_format(fmt: _Fmt, path: str) -> tuple[int, bool]:
    """(sample bytes, is float) of a format the reader supports; else a clear error."""
    tag, channels, rate, block_align, bits = fmt
    if tag not in (_FORMAT_PCM, _FORMAT_FLOAT):  # first: a codec's block is not PCM's
        name = _FORMAT_NAMES.get(tag, f"format tag 0x{tag:04x}")
        raise _bad_file(path, f"{name} samples are not supported; {SUPPORTED_WAV}")
    if channels < 1 or rate < 1 or block_align < channels:
        raise _bad_file(path, f"invalid format ({channels} channels, {rate} Hz, block {block_align})")
    sample_bytes = block_align // channels
    if tag == _FORMAT_PCM and sample_bytes in (1, 2, 3, 4):
        is_float = False
    elif tag == _FORMAT_FLOAT and sample_bytes in (4, 8):
        is_float = True
    else:
        kind = "float" if tag == _FORMAT_FLOAT else "PCM"
        raise _bad_file(
            path, f"{bits}-bit {kind} ({sample_bytes}-byte samples) is not supported; {SUPPORTED_WAV}"
        )
    if not MIN_WAV_RATE_HZ <= rate <= MAX_WAV_RATE_HZ:
        raise _bad_file(path, f"a sample rate of {rate} Hz is not supported; {SUPPORTED_WAV}")
    return sample_bytes, is_float


def read_wav_format(f: BinaryIO, path: str = "<wav>") -> WavFormat:
    """Parse the RIFF header of a seekable file; leaves `f` positioned at the start of the samples."""

    def skip(n: int) -> None:
        f.seek(n, os.SEEK_CUR)

    fmt, size = _parse_header(f.read, skip, path)
    sample_bytes, is_float = _check_format(fmt, path)
    _tag, channels, rate, block_align, _bits = fmt
    data_offset = f.tell()
    # Streamed WAVs (arecord/sox to a pipe) carry 0 or 0xFFFFFFFF: trust the file size then.
    available = os.fstat(f.fileno()).st_size - data_offset if _has_fileno(f) else size
    if size in (0, 0xFFFFFFFF) or size > available:
        size = available
    return WavFormat(rate, channels, sample_bytes, is_float, max(0, size) // block_align, data_offset)


def probe_wav_file(path: str | os.PathLike[str]) -> WavFormat:
    """Open and check a WAV file without reading its samples (for checks before anything slow)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return read_wav_format(f, name)
    except OSError as err:
        raise AudioDeviceError(
            f"cannot open input WAV {name}: {err.strerror or err}", code="audio_file_invalid", retryable=False
        ) from err


def _has_fileno(f: BinaryIO) -> bool:
    try:
        f.fileno()
    except (OSError, AttributeError, ValueError):
        return False
    return True


def decode_samples(raw: bytes, fmt: WavFormat) -> npt.NDArray[Any]:
    """Little-endian WAV sample bytes to `[frames, channels]`: int16 for 8/16-bit, else float32."""
    usable = len(raw) - len(raw) % fmt.frame_bytes
    buf = np.frombuffer(raw[:usable], dtype=np.uint8)
    width = fmt.sample_bytes
    data: npt.NDArray[Any]
    if fmt.is_float:
        data = buf.view("<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:
        data = ((buf.astype(np.int16) - 128) << 8).astype(np.int16)
    elif width == 2:
        data = buf.view("<i2").astype(np.int16)
    elif width == 3:
        wide = np.zeros((buf.size // 3, 4), dtype=np.uint8)
        wide[:, 1:] = buf.reshape(-1, 3)
        data = wide.reshape(-1).view("<i4").astype(np.float32) / np.float32(2**31)
    else:
        data = buf.view("<i4").astype(np.float32) / np.float32(2**31)
    return data.reshape(-1, fmt.channels)


class _Pacer:
    """Wall-clock pacing against a monotonic schedule: block k is due at start + samples_k / rate.

    Sleeping until an absolute deadline (not for a fixed interval) means scheduling jitter never
    accumulates into drift.
    """

    def __init__(self, rate_hz: int) -> None:
        self._rate_hz = rate_hz
        self._start: float | None = None
        self._samples = 0

    async def wait(self, samples: int) -> None:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        self._samples += samples
        delay = self._start + self._samples / self._rate_hz - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def deliver(self, block: Pcm16, realtime: bool) -> Pcm16:
        """The block once it is due in real time, or after one turn of the event loop."""
        if realtime:
            await self.wait(block.size)
        else:
            await asyncio.sleep(0)
        return block


class WavFileMicrophone:
    """A WAV file as the microphone: 16 kHz mono int16 blocks of `block_ms`, then the end.

    `realtime=True` delivers each block when a real microphone would have (block k at
    (k + 1) * block_ms after the first pull); otherwise as fast as the consumer pulls.
    The last block may be shorter than `block_ms`.
    """

    sample_rate_hz: int = MIC_RATE_HZ
    dropped_blocks: int = 0

    def __init__(self, path: str | os.PathLike[str], realtime: bool, block_ms: int = 80) -> None:
        self.path = os.fspath(path)
        self.realtime = realtime
        self.block_ms = block_ms
        self.dropped_blocks = 0
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as err:
            raise AudioDeviceError(
                f"cannot open input WAV {self.path}: {err.strerror or err}",
                code="audio_file_invalid",
                retryable=False,
            ) from err
        try:
            self.format = read_wav_format(self._file, self.path)
        except BaseException:
            self._file.close()
            raise
        self._closed = False

    @property
    def duration_s(self) -> float:
        return self.format.duration_s

    async def frames(self) -> AsyncIterator[Pcm16]:
        fmt = self.format
        block_samples = MIC_RATE_HZ * self.block_ms // 1000
        in_frames = max(1, math.ceil(fmt.sample_rate_hz * self.block_ms / 1000))
        resampler = Resampler(fmt.sample_rate_hz, MIC_RATE_HZ)
        assembler = BlockAssembler(block_samples)
        pacer = _Pacer(MIC_RATE_HZ)
        self._file.seek(fmt.data_offset)
        remaining = fmt.frames
        while remaining > 0 and not self._closed:
            n = min(in_frames, remaining)
            raw = self._file.read(n * fmt.frame_bytes)
            got = len(raw) // fmt.frame_bytes
            remaining = remaining - got if got == n else 0  # a short read: the file was truncated
            out = resampler.process(decode_samples(raw, fmt), last=remaining == 0)
            for block in assembler.push(out):
                yield await pacer.deliver(block, self.realtime)
        if self._closed:
            return
        tail = assembler.flush()
        if tail is not None:
            yield await pacer.deliver(tail, self.realtime)

    async def close(self) -> None:
        self._closed = True
        self._file.close()


_READ_POLL_S = 0.05  # a read on a pipe wakes this often to see whether the reader was closed
_READER_STOP_S = 0.5  # close() waits this long at most for the reader thread to end


def _selectable_fd(stream: BinaryIO) -> int | None:
    """The file descriptor to wait on before each read, or None where a read cannot be waited
    for that way (a buffered stream may hold data that `select` does not see; BytesIO)."""
    if not isinstance(stream, io.RawIOBase):
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return None


class _ThreadReader:
    """Blocking reads of a binary stream on one daemon thread, awaited from asyncio.

    A daemon thread (rather than `asyncio.to_thread`) because a read blocked on a stdin that
    never closes would otherwise make `asyncio.run` wait forever for the default executor at exit.
    One read at a time, on demand, so there is back-pressure on the writer of the pipe. On an
    unbuffered pipe (the appliance's stdin) each read first waits for data in `_READ_POLL_S`
    slices, so `close()` ends the thread within `_READER_STOP_S` even while the writer is silent.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._fd = _selectable_fd(stream)
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], object], asyncio.AbstractEventLoop, asyncio.Future[object]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def read_now(self, n: int) -> bytes:
        """One read of up to `n` bytes on the calling (reader) thread; b"" at the end of the
        input or once the reader is closed."""
        if self._fd is not None:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], _READ_POLL_S)
                if ready:
                    break
        if self._stop.is_set():
            return b""
        data = self._stream.read(n)
        return bytes(data) if data is not None else b""

    async def read(self, n: int) -> bytes:
        data = await self.call(lambda: self.read_now(n))
        assert isinstance(data, bytes)
        return data

    async def call(self, work: Callable[[], object]) -> object:
        """Run `work` (blocking reads through `read_now`) on the reader thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raw-pipe-reader", daemon=True)
            self._thread.start()
        self._requests.put((work, loop, future))
        return await future

    async def close(self) -> None:
        """End the thread: now if it is idle, after its read's current poll if it is reading."""
        self._stop.set()
        self._requests.put(None)
        thread = self._thread
        deadline = time.monotonic() + _READER_STOP_S
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if thread is not None and thread.is_alive():  # a read that cannot be waited for (not a pipe)
            _LOGGER.debug("the input reader thread is still in a read; abandoned (daemon)")

    def _run(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            work, loop, future = request
            try:
                result: object = work()
            except Exception as err:  # handed to the awaiting task
                result = err
            try:
                loop.call_soon_threadsafe(_settle, future, result)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


def _settle(future: asyncio.Future[object], result: object) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


STDIN_NAME = "<stdin>"


class RawPipeMicrophone:
    """Audio from a pipe (stdin) as the microphone, until end of file: raw 16 kHz mono s16le, or
    a WAV stream (`sox ... -t wav -`, `arecord -f S16_LE ...`), recognised by its RIFF/WAVE header
    and then read like a WAV file (any supported format, resampled to 16 kHz mono).

    The stream is read on a thread so the event loop never blocks. A stream that starts like
    another audio format (MP3, FLAC, Ogg, ...) is refused with `audio_file_invalid` rather than
    played as noise. An odd trailing byte (a partial sample) at end of input is dropped.
    """

    sample_rate_hz: int = MIC_RATE_HZ
    dropped_blocks: int = 0

    def __init__(self, stream: BinaryIO, realtime: bool, block_ms: int = 80) -> None:
        self.realtime = realtime
        self.block_ms = block_ms
        self.dropped_blocks = 0
        self.received_samples = 0
        self.format: WavFormat | None = None
        """The WAV stream's format, once its header was read (None for raw input)."""
        self._stream = stream
        self._reader = _ThreadReader(stream)
        self._closed = False

    async def frames(self) -> AsyncIterator[Pcm16]:
        block_samples = MIC_RATE_HZ * self.block_ms // 1000
        assembler = BlockAssembler(block_samples)
        pacer = _Pacer(MIC_RATE_HZ)
        head = await self._reader.call(lambda: _read_exact(self._reader.read_now, 12))
        assert isinstance(head, bytes)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            pieces = self._wav_pieces(head)
        else:
            other = describe_non_wav(head, strict=True)
            if other is not None:
                raise _bad_file(STDIN_NAME, f"{other}, not raw audio or a WAV stream; {SUPPORTED_WAV}")
            pieces = self._raw_pieces(head)
        async for piece in pieces:
            for block in assembler.push(piece):
                yield await pacer.deliver(block, self.realtime)
        tail = assembler.flush()
        if tail is not None and not self._closed:
            yield await pacer.deliver(tail, self.realtime)

    async def _raw_pieces(self, head: bytes) -> AsyncIterator[Pcm16]:
        carry = head
        read = MIC_RATE_HZ * self.block_ms // 1000 * 2
        while not self._closed:
            data = await self._reader.read(read)
            if not data:
                break
            data = carry + data
            even = len(data) - len(data) % 2
            carry = data[even:]
            samples = np.frombuffer(data[:even], dtype="<i2").astype(np.int16)
            self.received_samples += int(samples.size)
            yield samples
        if len(carry) >= 2 and not self._closed:  # input shorter than the sniffed header
            even = len(carry) - len(carry) % 2
            samples = np.frombuffer(carry[:even], dtype="<i2").astype(np.int16)
            self.received_samples += int(samples.size)
            carry = carry[even:]
            yield samples
        if carry:
            _LOGGER.debug("raw input ended with a partial sample (%d byte); dropped", len(carry))

    async def _wav_pieces(self, head: bytes) -> AsyncIterator[Pcm16]:
        skipped = 0

        def skip(n: int) -> None:
            nonlocal skipped
            skipped += n
            if skipped > _MAX_STREAM_SKIP_BYTES:
                raise _bad_file(STDIN_NAME, "more than 16 MiB of chunks before the audio data")
            while n > 0:
                got = len(_read_exact(self._reader.read_now, min(n, 65536)))
                if got == 0:
                    return
                n -= got

        def header() -> tuple[_Fmt, int]:
            return _parse_header(self._reader.read_now, skip, STDIN_NAME, head)

        parsed = await self._reader.call(header)
        assert isinstance(parsed, tuple)
        fmt, size = parsed
        sample_bytes, is_float = _check_format(fmt, STDIN_NAME)
        _tag, channels, rate, block_align, _bits = fmt
        unknown = size in (0, 0xFFFFFFFF)  # streamed: the length was not known when it was written
        self.format = wav = WavFormat(
            rate, channels, sample_bytes, is_float, 0 if unknown else size // block_align, 0
        )
        remaining = None if unknown else size - size % block_align
        chunk = max(1, math.ceil(rate * self.block_ms / 1000)) * block_align
        resampler = Resampler(rate, MIC_RATE_HZ)
        carry = b""
        while not self._closed and remaining != 0:
            data = await self._reader.read(chunk if remaining is None else min(chunk, remaining))
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            data = carry + data
            usable = len(data) - len(data) % block_align
            carry = data[usable:]
            out = resampler.process(decode_samples(data[:usable], wav))
            self.received_samples += int(out.size)
            yield out
        if self._closed:
            return
        out = resampler.flush()
        self.received_samples += int(out.size)
        yield out
        if carry:
            _LOGGER.debug("WAV input ended with a partial frame (%d bytes); dropped", len(carry))

    async def close(self) -> None:
        self._closed = True
        await self._reader.close()


class WavFileSpeaker:
    """The speaker as a 16-bit mono WAV file at `sample_rate_hz` (whatever `play()` gets is resampled).

    `timeline=None` (fast headless runs): each `play()` is appended right after the previous one
    and returns at once. `timeline=clock` (realtime headless runs): each `play()` starts at the
    sample position `clock.now() * rate` (silence fills the gap; never earlier than the end of
    what is already written) and is written in blocks of `block_ms` paced at wall-clock speed,
    so `stop()` cuts it within one block. `close(pad_to_s)` pads the file with silence so it
    lines up with the input recording.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        timeline: Clock | None = None,
        *,
        sample_rate_hz: int = MIC_RATE_HZ,
        block_ms: int = 20,
    ) -> None:
        self.path = os.fspath(path)
        self.sample_rate_hz = sample_rate_hz
        self.block_ms = block_ms
        self._timeline = timeline
        try:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close_now()
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close_now()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate_hz)
            # The header now, flushed: the file is a valid (empty) WAV even if the run is killed.
            self._wav.writeframes(b"")
            self._file.flush()
        except OSError as err:
            raise AudioDeviceError(
                f"cannot write output WAV {self.path}: {err.strerror or err}",
                code="audio_file_invalid",
                retryable=False,
            ) from err
        self._written = 0
        self._played = 0
        self._stop_generation = 0
        self._playing = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._file_lock = threading.Lock()  # `close_now()` may come from another thread

    @property
    def played_s(self) -> float:
        """Seconds of audio written by `play()` (not counting gap or padding silence)."""
        return self._played / self.sample_rate_hz

    @property
    def written_s(self) -> float:
        """Length of the output file so far, silence included."""
        return self._written / self.sample_rate_hz

    @property
    def playing(self) -> bool:
        return self._playing

    def stop(self) -> None:
        self._stop_generation += 1

    async def play(self, audio: Pcm16, sample_rate_hz: int) -> bool:
        generation = self._stop_generation
        data = resample(audio, sample_rate_hz, self.sample_rate_hz) if audio.size else audio
        async with self._lock:
            if self._closed:
                _LOGGER.warning("play() on a closed WAV speaker (%s) ignored", self.path)
                return False
            if generation != self._stop_generation:
                return False
            if self._timeline is None:
                self._write(data)
                self._played += int(data.size)
                return True
            return await self._play_paced(data, generation)

    async def _play_paced(self, data: Pcm16, generation: int) -> bool:
        assert self._timeline is not None
        start = round(self._timeline.now() * self.sample_rate_hz)
        if start > self._written:
            self._write_silence(start - self._written)
        block = max(1, self.sample_rate_hz * self.block_ms // 1000)
        pacer = _Pacer(self.sample_rate_hz)
        self._playing = True
        try:
            for offset in range(0, data.size, block):
                if generation != self._stop_generation:
                    return False
                piece = data[offset : offset + block]
                self._write(piece)
                self._played += int(piece.size)
                await pacer.wait(piece.size)
            return generation == self._stop_generation
        finally:
            self._playing = False

    def _write(self, data: Pcm16) -> None:
        if data.size:
            with self._file_lock:
                if self._closed:
                    return
                # `wave` patches the header's sizes after every write: flushed, the file on disk
                # is a valid WAV at every moment
                self._wav.writeframes(data.astype("<i2").tobytes())
                self._file.flush()
            self._written += int(data.size)

    def _write_silence(self, samples: int) -> None:
        chunk = self.sample_rate_hz  # one second at a time
        while samples > 0:
            n = min(samples, chunk)
            self._write(np.zeros(n, dtype=np.int16))
            samples -= n

    async def close(self, pad_to_s: float | None = None) -> None:
        """Stop, pad with silence to `pad_to_s` seconds if given, and finish the WAV header."""
        if self._closed:
            return
        self.stop()
        async with self._lock:
            if self._closed:
                return
            if pad_to_s is not None:
                target = round(pad_to_s * self.sample_rate_hz)
                if target > self._written:
                    self._write_silence(target - self._written)
            self.close_now()

    def close_now(self) -> None:
        """Finish the WAV header now, from any thread (an emergency exit, a stuck `close()`).
        Idempotent; later writes are dropped."""
        self.stop()
        locked = self._file_lock.acquire(timeout=0.5)
        if not locked:
            _LOGGER.warning("the WAV output %s is busy; closing it anyway", self.path)
        try:
            if self._closed:
                return
            self._closed = True
            self._wav.close()
            self._file.close()
        except (OSError, wave.Error) as err:
            _LOGGER.warning("cannot finish the WAV output %s: %s", self.path, err)
        finally:
            if locked:
                self._file_lock.release()
