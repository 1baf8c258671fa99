"""Remote-mode benchmarks: what the appliance's ElevenLabs client adds, next to the official SDK.

Both clients talk, in the same run, to the same fake ElevenLabs server (`appliance fake-server`,
run as a separate process so its CPU is not counted) on 127.0.0.1:

- `remote.latency`: the server streams 100 ms agent audio frames in real time; latency is the
  time from the server writing a frame to its samples being handed to the audio layer
  (`Speaker.play()` for the appliance, `AudioInterface.output()` for the SDK: the same point,
  before any device buffering), and CPU is the client process's CPU while streaming, with the
  microphone streaming upstream at the same time (silence, in real time).
- `remote.upstream`: the same runs, the other way: how old the oldest sample of each
  `user_audio_chunk` is when the server receives it (capture → server), per chunk size.
- `remote.interrupt`: the server sends audio 1 s ahead of real time, then `interruption`;
  time until the output device plays silence. The appliance plays through its real
  `SounddeviceSpeaker` (20 ms blocks), the SDK through its real `DefaultAudioInterface` (PyAudio
  queue + writer thread, 62.5 ms buffers); both devices are simulated in real time.

Clocks: `time.monotonic()` on both sides (CLOCK_MONOTONIC, shared between processes on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.idle_loop import REPO_ROOT

Row = dict[str, Any]

RATE_HZ = 16000
LATENCY_TARGET_MS = 5.0  # p99 client-added latency
SILENCE_TARGET_MS = 100.0  # interruption → silence
MIC_BLOCK_S = 0.08  # the appliance's microphone block (input_block_ms)
SDK_CHUNK = 4000  # the SDK's recommended input chunk: 250 ms at 16 kHz


@dataclass(frozen=True)
class Settings:
    stream_s: float
    rounds: int
    """Streaming runs alternate between the clients, round after round (load hits all alike)."""
    chunk_sizes: tuple[int, ...]
    """The appliance's `chunk_ms` (microphone audio per user_audio_chunk) configurations."""
    interrupt_runs: int
    server_chunks: tuple[int, ...]
    """Agent audio chunk lengths (ms) the server sends in the interruption runs."""


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(stream_s=2.0, rounds=1, chunk_sizes=(100,), interrupt_runs=1, server_chunks=(100,))
    return Settings(
        stream_s=10.0, rounds=4, chunk_sizes=(100, 50, 250), interrupt_runs=3, server_chunks=(100, 250)
    )


# ---------------------------------------------------------------------- the fake server process
@contextlib.contextmanager
def fake_server(
    scenario: str,
    *,
    stream_s: float,
    ahead_s: float = 0.0,
    interrupt_after_s: float = 1.0,
    chunk_ms: int = 100,
) -> Iterator[tuple[int, Path]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    record = Path(tempfile.mkstemp(prefix="fake-elevenlabs-", suffix=".jsonl")[1])
    cmd = [
        sys.executable,
        "-m",
        "appliance.testing.fake_elevenlabs",
        "--port",
        str(port),
        "--scenario",
        scenario,
        "--voice",
        "tones",
        "--pace",
        "1",
        "--ahead",
        str(ahead_s),
        "--chunk-ms",
        str(chunk_ms),
        "--ping-interval",
        "1",
        "--stream-seconds",
        str(stream_s),
        "--interrupt-after",
        str(interrupt_after_s),
        "--record",
        str(record),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the fake ElevenLabs server did not start")
        yield port, record
    finally:
        proc.terminate()
        proc.wait(10)
        record.unlink(missing_ok=True)


def _records(path: Path, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise RuntimeError(f"the fake server recorded {len(lines)} of {count} connections")


# ---------------------------------------------------------------------- measurements
@dataclass
class StreamRun:
    client: str
    chunk_ms: int
    handed_at: list[float] = field(default_factory=list)
    pushed: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, samples) of each microphone block handed to the client, in order."""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)

    def latencies_ms(self) -> list[float]:
        sent = self.record["audio_sent_at"]
        n = min(len(sent), len(self.handed_at))
        return [(self.handed_at[i] - sent[i]) * 1000 for i in range(n)]

    def upstream_ms(self) -> list[float]:
        """Age of each chunk's oldest sample at the server (capture at the end of its block)."""
        ends = np.cumsum([n for _, n in self.pushed])
        times = np.array([t for t, _ in self.pushed])
        received = self.record["audio_received_at"]
        out: list[float] = []
        first = 0
        for recv_at, n_bytes in received:
            block = int(np.searchsorted(ends, first, side="right"))
            if block >= len(times):
                break
            # the block holding sample `first` was delivered at times[block], at its end
            captured = times[block] - (ends[block] - first) / RATE_HZ
            if captured >= received[0][0]:  # not audio buffered while the connection opened
                out.append((recv_at - captured) * 1000)
            first += n_bytes // 2
        return out


class _Window:
    """Process CPU and wall time between the first and the last audio hand-off."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    def mark(self) -> float:
        now = time.monotonic()
        point = (now, time.process_time())
        if self.first is None:
            self.first = point
        self.last = point
        return now

    def totals(self) -> tuple[float, float]:
        if self.first is None or self.last is None:
            return 0.0, 0.0
        return self.last[1] - self.first[1], self.last[0] - self.first[0]


def run_appliance_stream(port: int, chunk_ms: int, stream_s: float, agent_id: str) -> StreamRun:
    from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession, RemoteSettings
    from appliance.adapters.resample import Resampler
    from appliance.core.elevenlabs_protocol import InitiationData
    from appliance.runtime.clock import MonotonicClock
    from appliance.runtime.event_log import EventLog

    run = StreamRun("appliance", chunk_ms)
    window = _Window()

    class TimestampingSpeaker:
        playing = False

        async def play(self, audio: Any, sample_rate_hz: int) -> bool:
            run.handed_at.append(window.mark())
            return True

        def stop(self) -> None:
            return None

        async def close(self) -> None:
            return None

    async def main() -> None:
        settings = RemoteSettings(agent_id=agent_id, base_url=f"ws://127.0.0.1:{port}", chunk_ms=chunk_ms)
        session = ElevenLabsAgentSession(
            settings,
            InitiationData(),
            speaker=TimestampingSpeaker(),
            events=EventLog(MonotonicClock()),  # the real events stream (no file: no disk I/O)
            stopwatch=MonotonicClock(),
            resampler=lambda a, b: Resampler(a, b).process,
        )
        await session.start()
        block = np.zeros(round(MIC_BLOCK_S * RATE_HZ), dtype=np.int16)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < stream_s + 1.5:
            n += 1
            await asyncio.sleep(max(0.0, start + n * MIC_BLOCK_S - time.monotonic()))
            run.pushed.append((time.monotonic(), block.size))
            session.push_audio(block)
        await session.end("benchmark")
        await session.closed()

    asyncio.run(main())
    run.cpu_s, run.wall_s = window.totals()
    return run


def run_sdk_stream(port: int, stream_s: float, agent_id: str) -> StreamRun:
    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import AudioInterface, Conversation

    run = StreamRun("official SDK", 250)
    window = _Window()

    class TimestampingInterface(AudioInterface):  # type: ignore[misc]
        """A file/queue audio interface: 250 ms microphone chunks in real time, output timed."""

        def __init__(self) -> None:
            self._stop = threading.Event()

        def start(self, input_callback: Callable[[bytes], None]) -> None:
            def mic() -> None:
                chunk = np.zeros(SDK_CHUNK, dtype="<i2").tobytes()
                start = time.monotonic()
                n = 0
                while not self._stop.is_set():
                    n += 1
                    time.sleep(max(0.0, start + n * SDK_CHUNK / RATE_HZ - time.monotonic()))
                    run.pushed.append((time.monotonic(), SDK_CHUNK))
                    input_callback(chunk)

            threading.Thread(target=mic, daemon=True).start()

        def stop(self) -> None:
            self._stop.set()

        def output(self, audio: bytes) -> None:
            run.handed_at.append(window.mark())

        def interrupt(self) -> None:
            return None

    client = ElevenLabs(api_key="unused", base_url=f"http://127.0.0.1:{port}")
    conversation = Conversation(
        client, agent_id, requires_auth=False, audio_interface=TimestampingInterface()
    )
    conversation.start_session()
    time.sleep(stream_s + 1.5)
    conversation.end_session()
    conversation.wait_for_session_end()
    run.cpu_s, run.wall_s = window.totals()
    return run


# ---------------------------------------------------------------------- interruption → silence
class _SimDevice:
    """An output device consuming blocks in real time; notes when it last played sound."""

    def __init__(self) -> None:
        self.last_sound_end = 0.0


class _SimOutputStream:
    def __init__(self, request: Any, device: _SimDevice) -> None:
        self.request, self.device = request, device
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        frames = self.request.block_frames
        period = frames / self.request.sample_rate_hz
        out = np.zeros((frames, self.request.channels), dtype=np.int16)
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self.request.callback(out, frames, None, None)
            n += 1
            time.sleep(max(0.0, start + n * period - time.monotonic()))  # the block has played
            if out.any():
                self.device.last_sound_end = time.monotonic()

    def abort(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


class _SimBackend:
    def __init__(self, device: _SimDevice) -> None:
        self.device = device

    def lookup(self, spec: Any, kind: str) -> Any:
        from appliance.adapters.sounddevice import DeviceInfo

        return DeviceInfo(0, "simulated", 1, 1, 16000.0, "sim")

    def open_input(self, request: Any) -> Any:
        raise NotImplementedError

    def open_output(self, request: Any) -> Any:
        return _SimOutputStream(request, self.device)

    def refresh(self) -> None:
        return None


def appliance_interrupt(port: int) -> tuple[float, float]:
    """(interruption frame sent → stop() called, → last sound) in ms."""
    from appliance.adapters.elevenlabs.session import ElevenLabsAgentSession, RemoteSettings
    from appliance.adapters.sounddevice import SounddeviceSpeaker
    from appliance.core.elevenlabs_protocol import InitiationData
    from appliance.runtime.clock import MonotonicClock

    device = _SimDevice()
    stopped: list[float] = []

    class Events:
        def emit(self, type: str, **fields: Any) -> None:
            return None

    async def main() -> None:
        speaker = SounddeviceSpeaker(
            backend=_SimBackend(device), device_rate_hz=16000, device_channels=1, output_block_ms=20
        )
        inner_stop = speaker.stop

        def stop() -> None:
            stopped.append(time.monotonic())
            inner_stop()

        speaker.stop = stop  # type: ignore[method-assign]
        settings = RemoteSettings(agent_id="agent_bench", base_url=f"ws://127.0.0.1:{port}")
        session = ElevenLabsAgentSession(
            settings, InitiationData(), speaker=speaker, events=Events(), stopwatch=MonotonicClock()
        )
        await session.start()
        block = np.zeros(1280, dtype=np.int16)
        for _ in range(60):  # 4.8 s of microphone, in real time
            session.push_audio(block)
            await asyncio.sleep(MIC_BLOCK_S)
        await session.end("benchmark")
        await session.closed()
        await speaker.close()

    asyncio.run(main())
    return (stopped[0] if stopped else float("nan")), device.last_sound_end


def sdk_interrupt(port: int) -> tuple[float, float]:
    """The SDK's DefaultAudioInterface on a simulated PyAudio: (interrupt() called, last sound)."""
    from elevenlabs.client import ElevenLabs
    from elevenlabs.conversational_ai.conversation import Conversation

    device = _SimDevice()
    interrupted: list[float] = []

    class Stream:
        def __init__(self, rate: int, frames: int, callback: Any) -> None:
            self.rate, self.frames, self.callback = rate, frames, callback
            self._stop = threading.Event()
            if callback is not None:
                threading.Thread(target=self._mic, daemon=True).start()

        def _mic(self) -> None:
            silence = bytes(self.frames * 2)
            while not self._stop.is_set():
                time.sleep(self.frames / self.rate)
                self.callback(silence, self.frames, None, 0)

        def write(self, data: bytes) -> None:
            """Blocking write, as PortAudio's: returns once the buffers it filled have played."""
            samples = np.frombuffer(data, dtype="<i2")
            for i in range(0, samples.size, self.frames):
                piece = samples[i : i + self.frames]
                time.sleep(piece.size / self.rate)
                if piece.any():
                    device.last_sound_end = time.monotonic()

        def stop_stream(self) -> None:
            self._stop.set()

        def close(self) -> None:
            self._stop.set()

    class PyAudio:
        def open(self, *, rate: int, frames_per_buffer: int, stream_callback: Any = None, **_: Any) -> Stream:
            return Stream(rate, frames_per_buffer, stream_callback)

        def terminate(self) -> None:
            return None

    fake = types.ModuleType("pyaudio")
    fake.PyAudio = PyAudio  # type: ignore[attr-defined]
    fake.paInt16 = 8  # type: ignore[attr-defined]
    fake.paContinue = 0  # type: ignore[attr-defined]
    saved = sys.modules.get("pyaudio")
    sys.modules["pyaudio"] = fake
    try:
        from elevenlabs.conversational_ai.default_audio_interface import DefaultAudioInterface

        class Timed(DefaultAudioInterface):  # type: ignore[misc]
            def interrupt(self) -> None:
                interrupted.append(time.monotonic())
                super().interrupt()

        interface = Timed()
    finally:
        if saved is None:
            sys.modules.pop("pyaudio", None)
        else:
            sys.modules["pyaudio"] = saved
    client = ElevenLabs(api_key="unused", base_url=f"http://127.0.0.1:{port}")
    conversation = Conversation(client, "agent_bench", requires_auth=False, audio_interface=interface)
    conversation.start_session()
    time.sleep(4.8)
    conversation.end_session()
    conversation.wait_for_session_end()
    return (interrupted[0] if interrupted else float("nan")), device.last_sound_end


# ---------------------------------------------------------------------- all of it, once
@dataclass
class Results:
    streams: dict[tuple[str, int], list[StreamRun]]
    """(client, mic chunk ms) → its runs, one per round."""
    paired: dict[int, list[StreamRun]]
    """appliance chunk ms → the SDK runs made at the same time as that configuration's."""
    interrupts: dict[tuple[str, int], list[tuple[float, float, float]]]
    """(client, server chunk ms) → [(interruption sent, stop()/interrupt() called, last sound)]."""


def _client(
    key: tuple[str, int], agent: str, port: int, stream_s: float, out: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.remote",
        "--client",
        key[0],
        "--port",
        str(port),
        "--seconds",
        str(stream_s),
        "--chunk-ms",
        str(key[1]),
        "--agent-id",
        agent,
        "--out",
        str(out),
    ]
    return subprocess.Popen(cmd, cwd=REPO_ROOT)


@functools.lru_cache(maxsize=2)
def measure(quick: bool) -> Results:
    s = settings_for(quick)
    sdk_key = ("official SDK", 250)
    streams: dict[tuple[str, int], list[StreamRun]] = {("appliance", c): [] for c in s.chunk_sizes}
    streams[sdk_key] = []
    paired: dict[int, list[StreamRun]] = {c: [] for c in s.chunk_sizes}
    with (
        fake_server("stream", stream_s=s.stream_s) as (port, record_path),
        tempfile.TemporaryDirectory() as tmp,
    ):
        seen = 0
        for round_no in range(s.rounds):
            for chunk in s.chunk_sizes:
                # the appliance and the SDK at the same time, each in its own process: the same
                # load (other processes, the scheduler) hits both alike
                jobs = []
                for key in (("appliance", chunk), sdk_key):
                    agent = f"bench-{key[0].split()[-1].lower()}-{key[1]}-{chunk}-r{round_no}"
                    out = Path(tmp) / f"{agent}.json"
                    jobs.append((key, agent, out, _client(key, agent, port, s.stream_s, out)))
                for *_, proc in jobs:
                    if proc.wait(s.stream_s + 60) != 0:
                        raise RuntimeError(f"a benchmark client failed: {proc.args}")
                seen += len(jobs)
                records = {r["query"]["agent_id"]: r for r in _records(record_path, seen)}
                for key, agent, out, _ in jobs:
                    data = json.loads(out.read_text())
                    pushed = [(float(t), int(n)) for t, n in data["pushed"]]
                    run = StreamRun(
                        key[0],
                        key[1],
                        data["handed_at"],
                        pushed,
                        data["cpu_s"],
                        data["wall_s"],
                        records[agent],
                    )
                    streams[key].append(run)
                    if key == sdk_key:
                        paired[chunk].append(run)
    interrupts: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for chunk in s.server_chunks:
        with fake_server(
            "interrupt_stream", stream_s=3.0, ahead_s=1.0, interrupt_after_s=1.0, chunk_ms=chunk
        ) as (port, path):
            n = 0
            for _ in range(s.interrupt_runs):
                for client, fn in (("appliance", appliance_interrupt), ("official SDK", sdk_interrupt)):
                    called, silent = fn(port)
                    n += 1
                    sent = _records(path, n)[n - 1]["interruption_sent_at"][0]
                    interrupts.setdefault((client, chunk), []).append((sent, called, silent))
    return Results(streams, paired, interrupts)


def client_main(argv: Sequence[str]) -> int:
    """One streaming client in its own process (`--client appliance|sdk`); writes its timings."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.remote --client")
    p.add_argument("--client", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--chunk-ms", type=int, required=True)
    p.add_argument("--agent-id", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.client == "appliance":
        run = run_appliance_stream(a.port, a.chunk_ms, a.seconds, a.agent_id)
    else:
        run = run_sdk_stream(a.port, a.seconds, a.agent_id)
    doc = {"handed_at": run.handed_at, "pushed": run.pushed, "cpu_s": run.cpu_s, "wall_s": run.wall_s}
    a.out.write_text(json.dumps(doc))
    return 0


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _pooled(runs: list[StreamRun]) -> tuple[list[float], float | None]:
    latencies = [x for run in runs for x in run.latencies_ms()]
    wall = sum(run.wall_s for run in runs)
    return latencies, (100 * sum(run.cpu_s for run in runs) / wall if wall else None)


def latency_table(quick: bool = False) -> list[Row]:
    """Server audio frame → samples handed to the audio layer; CPU while streaming (p99 ≤ 5 ms, ≤ SDK)."""
    results = measure(quick)
    rows: list[Row] = []
    mine: list[StreamRun] = []
    for (client, chunk_ms), runs in results.streams.items():
        if client == "appliance":
            mine += runs
        paired = results.paired.get(chunk_ms) if client == "appliance" else None
        rows.append(_latency_row(client, str(chunk_ms), runs, paired))
    # The verdict pools every appliance run against every SDK run made at the same time (the
    # receive path does not depend on the microphone chunk size): p99 over more frames is
    # steadier than per configuration, where it is the 3rd largest of 300 values.
    sdk_runs = [run for runs in results.paired.values() for run in runs]
    row = _latency_row("appliance, all runs", "all", mine, sdk_runs)
    p99, sdk_p99 = row["p99 ms"], row["SDK p99 ms (same time)"]
    ok = p99 is not None and sdk_p99 is not None and p99 <= LATENCY_TARGET_MS and p99 <= sdk_p99
    row["target"] = f"p99 ≤ {LATENCY_TARGET_MS:g} ms, ≤ SDK"
    row["verdict"] = _verdict(ok)
    rows.append(row)
    return rows


def _latency_row(client: str, chunk: str, runs: list[StreamRun], sdk: list[StreamRun] | None) -> Row:
    lat, cpu = _pooled(runs)
    p99 = _pct(lat, 99)
    row: Row = {
        "client": client,
        "mic chunk ms": chunk,
        "runs": len(runs),
        "frames": len(lat),
        "p50 ms": _pct(lat, 50),
        "p90 ms": _pct(lat, 90),
        "p99 ms": p99,
        "max ms": max(lat) if lat else None,
        "CPU % of one core": cpu,
        "SDK p99 ms (same time)": None,
        "p99 × SDK": None,
        "CPU × SDK": None,
    }
    if sdk is not None:  # the SDK runs made at the same time as these
        sdk_lat, sdk_cpu = _pooled(sdk)
        sdk_p99 = _pct(sdk_lat, 99)
        row["SDK p99 ms (same time)"] = sdk_p99
        row["p99 × SDK"] = p99 / sdk_p99 if p99 is not None and sdk_p99 else None
        row["CPU × SDK"] = cpu / sdk_cpu if cpu is not None and sdk_cpu else None
    return row


def upstream_table(quick: bool = False) -> list[Row]:
    """Microphone → server: age of each user_audio_chunk's oldest sample on arrival."""
    rows: list[Row] = []
    for (client, chunk_ms), runs in measure(quick).streams.items():
        ages = [x for run in runs for x in run.upstream_ms()]
        chunks = sum(len(run.record["audio_received_at"]) for run in runs)
        spans = sum(r.record["audio_received_at"][-1][0] - r.record["audio_received_at"][0][0] for r in runs)
        rows.append(
            {
                "client": client,
                "mic chunk ms": chunk_ms,
                "chunks": chunks,
                "messages/s": chunks / spans if spans else None,
                "p50 ms": _pct(ages, 50),
                "p99 ms": _pct(ages, 99),
            }
        )
    return rows


def interrupt_table(quick: bool = False) -> list[Row]:
    """Interruption frame sent → the output device plays silence (target ≤ 100 ms)."""
    rows: list[Row] = []
    for (client, chunk), runs in measure(quick).interrupts.items():
        called = [(c - s) * 1000 for s, c, _ in runs]
        silent = [max(0.0, (q - s) * 1000) for s, _, q in runs]
        row: Row = {
            "client": client,
            "agent chunk ms": chunk,
            "output": OUTPUTS[client],
            "runs": len(runs),
            "→ stop() ms (median)": _pct(called, 50),
            "→ silence ms (median)": _pct(silent, 50),
            "→ silence ms (max)": max(silent) if silent else None,
        }
        if client == "appliance":
            row["target"] = f"≤ {SILENCE_TARGET_MS:g} ms"
            row["verdict"] = _verdict(bool(silent) and max(silent) <= SILENCE_TARGET_MS)
        rows.append(row)
    return rows


OUTPUTS = {
    "appliance": "SounddeviceSpeaker, 20 ms blocks",
    "official SDK": "DefaultAudioInterface, 62.5 ms buffers",
}


BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "remote.latency": latency_table,
    "remote.upstream": upstream_table,
    "remote.interrupt": interrupt_table,
}


if __name__ == "__main__":  # python -m benchmarks.remote: these tables only
    if "--client" in sys.argv:
        sys.exit(client_main(sys.argv[1:]))
    from benchmarks.common import format_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name, fn in BENCHMARKS.items():
        print(f"\n== {name}: {fn.__doc__}\n{format_table(fn('--quick' in sys.argv))}")
