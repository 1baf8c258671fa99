"""Scripted faults for the fault matrix and the soak.

Wrappers around the real adapters that fail when told to, the way a library fails (an exception
out of a blocking call, a read error out of the microphone):

- `FaultyStt` / `FaultyTts`: raise `InjectedFault` on chosen calls (`on_calls`), on texts with a
  word (`on_text`, TTS), or at a seeded rate (`at_rate`); `FaultyStt(delay_s=...)` blocks its
  worker thread first, like a slow model that cannot be interrupted.
- `FaultyMicrophone`: the inner microphone's blocks, then `AudioDeviceError` after `fail_at_s`
  seconds of audio (a headless input that dies: the run ends).
- `ScriptedInputBackend`: a PortAudio stand-in for the device microphone (`SounddeviceMicrophone`)
  that plays a recording in real time and loses the device at chosen moments for a while (the
  stream ends, lookups fail), as an unplugged USB microphone does; the adapter reconnects.

`python -m appliance.testing.faults [fault options] -- run --config ...` is the `appliance`
command line with these installed (the models are wrapped when they are loaded), for faults
that need a real process (signals, exit codes)::

    python -m appliance.testing.faults --stt-delay 30 -- run --input - --events ev.jsonl

`signal_in_state(state, ...)` runs that command line in real time on the bundled example
recording, sends a signal once the events show the session `state` (idle, listening,
transcribing, thinking, speaking) and measures how long the process takes to exit: the fault
matrix asserts on it, the `stop` benchmark tabulates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.errors import AudioDeviceError
from appliance.ports import MIC_RATE_HZ, Microphone, Pcm16

_LOGGER = logging.getLogger(__name__)

FailWhen = Callable[[int, str], bool]
"""(call number from 1, the text for a TTS call or "") → fail this call?"""


class InjectedFault(RuntimeError):
    """A failure the test asked for (a model raising out of its call)."""


def never(_n: int, _text: str) -> bool:
    return False


def on_calls(*numbers: int) -> FailWhen:
    """Fail the calls with these numbers (1 = the first call)."""
    chosen = frozenset(numbers)
    return lambda n, _text: n in chosen


def on_text(word: str) -> FailWhen:
    """Fail every call whose text holds `word` (case-insensitive)."""
    needle = word.lower()
    return lambda _n, text: needle in text.lower()


def at_rate(rate: float, seed: int) -> FailWhen:
    """Fail each call with probability `rate`, from a seeded generator (same calls, same faults)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be between 0 and 1, got {rate}")
    rng = random.Random(seed)
    return lambda _n, _text: rng.random() < rate


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.failures = 0

    def next(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls

    def failed(self) -> None:
        with self._lock:
            self.failures += 1


class FaultyStt:
    """The SpeechToText port around a real one; attributes pass through."""

    def __init__(self, inner: Any, fail_when: FailWhen = never, *, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.fail_when = fail_when
        self.delay_s = delay_s
        self.counter = _Counter()

    def transcribe(self, audio: Pcm16, language: str | None) -> tuple[str, str]:
        n = self.counter.next()
        if self.delay_s > 0:
            time.sleep(self.delay_s)  # blocks the STT worker thread, as a slow model would
        if self.fail_when(n, ""):
            self.counter.failed()
            _LOGGER.warning("injected STT failure (call %d)", n)
            raise InjectedFault(f"injected STT failure (call {n})")
        result: tuple[str, str] = self.inner.transcribe(audio, language)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FaultyTts:
    """The TextToSpeech port around a real one; attributes (`voices`, `phonemize`, ...) pass
    through, so the voice renderer sees the real engine."""

    def __init__(self, inner: Any, fail_when: FailWhen = never) -> None:
        self.inner = inner
        self.fail_when = fail_when
        self.counter = _Counter()

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[Pcm16, int]:
        n = self.counter.next()
        if self.fail_when(n, text):
            self.counter.failed()
            _LOGGER.warning("injected TTS failure (call %d: %r)", n, text[:40])
            raise InjectedFault(f"injected TTS failure (call {n})")
        result: tuple[Pcm16, int] = self.inner.synthesize(text, voice, speed)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FaultyMicrophone:
    """The inner microphone's blocks until `fail_at_s` seconds of audio, then a read error."""

    sample_rate_hz: int = MIC_RATE_HZ

    def __init__(self, inner: Microphone, fail_at_s: float) -> None:
        self.inner = inner
        self.fail_at_s = fail_at_s
        self.delivered_s = 0.0

    @property
    def dropped_blocks(self) -> int:
        return self.inner.dropped_blocks

    @dropped_blocks.setter
    def dropped_blocks(self, value: int) -> None:
        self.inner.dropped_blocks = value

    async def frames(self) -> AsyncIterator[Pcm16]:
        samples = 0
        async for block in self.inner.frames():
            if samples >= self.fail_at_s * MIC_RATE_HZ:
                _LOGGER.warning("injected microphone read error after %.2f s of audio", self.delivered_s)
                raise AudioDeviceError(
                    f"injected microphone read error after {self.delivered_s:.2f} s of audio",
                    code="audio_device",
                )
            samples += int(block.size)
            self.delivered_s = samples / MIC_RATE_HZ
            yield block

    async def close(self) -> None:
        await self.inner.close()


class ScriptedInputBackend:
    """`AudioBackend` for `SounddeviceMicrophone`: `audio` (16 kHz mono) in real time through the
    stream callback, then silence (a device never ends). At each time in `outages` (seconds since
    the first stream started) the stream ends and the device is gone for `outage_s`; what it
    would have recorded meanwhile is lost, like a real device that keeps time."""

    def __init__(
        self, audio: Pcm16, outages: Sequence[float] = (), outage_s: float = 1.0, block_ms: int = 20
    ) -> None:
        self.audio = audio
        self.outages = sorted(outages)
        self.outage_s = outage_s
        self.block_ms = block_ms
        self.opened = 0
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._down_until = 0.0
        self._next_outage = 0

    def _now(self) -> float:
        with self._lock:
            if self._t0 is None:
                self._t0 = time.monotonic()
            return time.monotonic() - self._t0

    def lookup(self, spec: Any, kind: str) -> Any:
        from appliance.adapters.sounddevice import DeviceInfo

        if kind != "input":
            raise AudioDeviceError("the scripted backend has no output device")
        if self._t0 is not None and self._now() < self._down_until:
            raise AudioDeviceError("scripted microphone unplugged")
        return DeviceInfo(0, "scripted microphone", 1, 0, float(MIC_RATE_HZ), "scripted")

    def open_input(self, request: Any) -> _ScriptedStream:
        if request.sample_rate_hz != MIC_RATE_HZ:
            raise AudioDeviceError(f"the scripted microphone runs at {MIC_RATE_HZ} Hz only")
        self.opened += 1
        return _ScriptedStream(self, request)

    def open_output(self, request: Any) -> Any:
        raise AudioDeviceError("the scripted backend has no output device")

    def refresh(self) -> None:
        return None

    def _outage_due(self, t: float) -> bool:
        with self._lock:
            if self._next_outage < len(self.outages) and t >= self.outages[self._next_outage]:
                self._next_outage += 1
                self._down_until = t + self.outage_s
                return True
        return False


class _ScriptedStream:
    def __init__(self, backend: ScriptedInputBackend, request: Any) -> None:
        self._backend = backend
        self._request = request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scripted-microphone", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        import numpy as np

        backend = self._backend
        frames = self._request.block_frames
        block_s = frames / MIC_RATE_HZ
        position = round(backend._now() * MIC_RATE_HZ)  # after an outage: what it missed is lost
        next_due = time.monotonic()
        while not self._stop.is_set():
            next_due += block_s
            delay = next_due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            t = backend._now()
            if backend._outage_due(t):
                _LOGGER.warning("scripted microphone unplugged at %.2f s", t)
                self._request.finished_callback()
                return
            block = backend.audio[position : position + frames]
            position += frames
            if block.size < frames:
                block = np.concatenate([block, np.zeros(frames - block.size, dtype=np.int16)])
            self._request.callback(block.reshape(-1, 1), frames, None, None)


def with_faults(models: Any, *, stt: FaultyStt | None = None, tts: FaultyTts | None = None) -> Any:
    """A copy of the local models (`runtime.local_agent.LocalModels`) with faulty STT/TTS."""
    changes: dict[str, Any] = {}
    if stt is not None:
        changes["stt"] = stt
    if tts is not None:
        changes["tts"] = tts
    return dataclasses.replace(models, **changes)


# --------------------------------------------------------------------------- a signal in a state
SESSION_STATES = ("idle", "listening", "transcribing", "thinking", "speaking")
STATE_REACHED = {
    "idle": "appliance_started",
    "listening": "listening_started",
    "transcribing": "utterance_ended",
    "thinking": "user_transcript",
    "speaking": "audio",
}
"""The event after which the appliance is in the state (until the next step of the session)."""
STORY = (
    "Once upon a time, an old fisherman lived in a quiet village by the sea. Every morning he rowed "
    "past the lighthouse and cast his nets. One day he caught a golden fish that could speak. The "
    "fish promised him three wishes if he would let it go. He thought for a long time about what "
    "to wish for, and then he went home to ask his wife."
)
EXAMPLE_WAKE_END_S = 2.3
"""The bundled recording: "Hey Jarvis." up to here, then "What is the capital of France?"."""
STOP_BOUND_S = 2.0
"""A stop completes within 2 s whatever is in flight (issue 9)."""
STOP_MARGIN_S = 1.0
"""Process teardown and a loaded test machine: the subprocess must be gone within bound + margin."""


@dataclasses.dataclass
class SignalRun:
    state: str
    returncode: int | None
    stop_s: float
    """Wall time from the signal to the process's exit."""
    events: list[dict[str, Any]]
    lines: list[str]
    """The events file's lines, as written."""
    stderr: str
    out: Path
    llm_requests: int


def state_input(state: str) -> Any:
    """The input for a state: quiet (idle), the wake word then quiet (listening), or the whole
    example recording then quiet; 40 s of quiet, so the input never ends first."""
    from appliance.runtime.app import EXAMPLE_RECORDING
    from appliance.testing.speech import concat, read_wav, silence

    example, rate = read_wav(EXAMPLE_RECORDING)
    if rate != MIC_RATE_HZ:
        raise ValueError(f"{EXAMPLE_RECORDING} is not 16 kHz")
    if state == "idle":
        return silence(40.0)
    if state == "listening":
        return concat(example[: int(EXAMPLE_WAKE_END_S * MIC_RATE_HZ)], silence(40.0))
    return concat(example, silence(40.0))


def signal_in_state(
    state: str,
    workdir: Path,
    config: Callable[[str], Mapping[str, Any]],
    *,
    signum: int = signal.SIGTERM,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 90.0,
    settle_s: float = 0.3,
) -> SignalRun:
    """`appliance run --realtime` (via this module) until the events show `state`, then `signum`.

    `config(llm_url)` is the YAML config (as a dict) for a local agent whose custom LLM is at
    `llm_url`: a scripted server that never answers (thinking) or tells a long story (the other
    states). Transcribing: the STT blocks its thread for 30 s. The signal goes `settle_s` after the
    state's event; the process is killed if it has not exited 30 s later (`stop_s` then says so).
    """
    import yaml

    from appliance.testing.openai_server import ScriptedOpenAiServer, hang_reply, text_reply
    from appliance.testing.speech import write_wav

    if state not in SESSION_STATES:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(SESSION_STATES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    wav = write_wav(workdir / "in.wav", state_input(state))
    out, events_path, stderr_path = workdir / "out.wav", workdir / "events.jsonl", workdir / "stderr.txt"
    story = text_reply(*(w + " " for w in STORY.split()))
    reply = hang_reply() if state == "thinking" else story
    with ScriptedOpenAiServer(responder=lambda _request: reply) as server:
        cfg_path = workdir / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(dict(config(server.url))), encoding="utf-8")
        faults = ["--stt-delay", "30"] if state == "transcribing" else []
        args = [
            sys.executable, "-m", "appliance.testing.faults", *faults, "--", "run", "--config", str(cfg_path),
            "--input", str(wav), "--output", str(out), "--events", str(events_path), "--realtime",
        ]  # fmt: skip
        with stderr_path.open("w", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            )  # fmt: skip
        try:
            _wait_for_event(events_path, proc, STATE_REACHED[state], ready_timeout_s)
            if state == "thinking":  # the request is at the LLM, which never answers
                deadline = time.monotonic() + 10
                while not server.chat_requests and time.monotonic() < deadline:
                    time.sleep(0.02)
            time.sleep(settle_s)
            stop_s = stop_timed(proc, signum)
        finally:
            kill_if_running(proc)
        requests = len(server.chat_requests)
    lines = events_path.read_text(encoding="utf-8").splitlines() if events_path.exists() else []
    events = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
    return SignalRun(state, proc.returncode, stop_s, events, lines, stderr_path.read_text(), out, requests)


def stop_timed(proc: subprocess.Popen[bytes], signum: int, timeout_s: float = 30.0) -> float:
    """Send `signum`, wait up to `timeout_s` for the exit (then kill): seconds from signal to exit."""
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - sent


def kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap `proc` unless it has exited already (a test's cleanup)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _wait_for_event(path: Path, proc: subprocess.Popen[bytes], kind: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.endswith("}") and json.loads(line).get("type") == kind:
                    return
        if proc.poll() is not None:
            raise RuntimeError(f"the appliance exited ({proc.returncode}) before a {kind} event")
        time.sleep(0.05)
    raise TimeoutError(f"no {kind} event within {timeout_s:g} s")


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m appliance.testing.faults",
        description="Run the appliance command line with scripted faults: "
        "python -m appliance.testing.faults [options] -- run ...",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --*-fail-rate draws")
    p.add_argument("--stt-delay", type=float, default=0.0, metavar="S", help="every STT call blocks S s")
    p.add_argument("--stt-fail-calls", default="", metavar="N,N", help="STT calls that fail (1 = first)")
    p.add_argument("--stt-fail-rate", type=float, default=0.0, metavar="P", help="STT calls fail at rate P")
    p.add_argument("--tts-fail-text", default="", metavar="WORD", help="TTS calls whose text holds WORD fail")
    p.add_argument("--tts-fail-rate", type=float, default=0.0, metavar="P", help="TTS calls fail at rate P")
    p.add_argument("--mic-fail-at", type=float, metavar="S", help="the microphone fails after S s of audio")
    p.add_argument(
        "--scripted-mic",
        metavar="WAV",
        help="the device microphone plays this 16 kHz WAV in real time (no sound card needed)",
    )
    p.add_argument(
        "--mic-outage-at", type=float, action="append", default=[], metavar="S",
        help="the scripted device microphone is unplugged at S s (repeatable)",
    )  # fmt: skip
    p.add_argument("--mic-outage-s", type=float, default=1.0, metavar="S", help="each outage lasts S s")
    return p


def _any(*conditions: FailWhen) -> FailWhen:
    return lambda n, text: any(c(n, text) for c in conditions)


def install(args: argparse.Namespace) -> None:
    """Wrap the models and the microphone when the appliance builds them."""
    from appliance.runtime import app, local_agent

    if args.scripted_mic:
        from appliance.adapters.sounddevice import microphone as sounddevice_microphone
        from appliance.testing.speech import read_wav

        audio, rate = read_wav(Path(args.scripted_mic))
        if rate != MIC_RATE_HZ:
            raise SystemExit(f"--scripted-mic: {args.scripted_mic} must be 16 kHz, not {rate} Hz")
        backend = ScriptedInputBackend(audio, args.mic_outage_at, args.mic_outage_s)
        # the microphone opens its streams through this backend (the speaker keeps PortAudio's)
        sounddevice_microphone.PortAudioBackend = lambda: backend  # type: ignore[assignment,return-value,attr-defined]

    stt_when = _any(
        on_calls(*(int(x) for x in args.stt_fail_calls.split(",") if x.strip())),
        at_rate(args.stt_fail_rate, args.seed) if args.stt_fail_rate else never,
    )
    tts_conditions = [at_rate(args.tts_fail_rate, args.seed + 1) if args.tts_fail_rate else never]
    if args.tts_fail_text:
        tts_conditions.append(on_text(args.tts_fail_text))
    tts_when = _any(*tts_conditions)
    load_local_models = local_agent.load_local_models

    def load_faulty(config: Any) -> Any:
        models = load_local_models(config)
        return with_faults(
            models,
            stt=FaultyStt(models.stt, stt_when, delay_s=args.stt_delay),
            tts=FaultyTts(models.tts, tts_when),
        )

    local_agent.load_local_models = load_faulty
    if args.mic_fail_at is not None:
        open_audio = app.open_audio
        fail_at = float(args.mic_fail_at)

        def open_faulty(config: Any, options: Any) -> Any:
            wiring = open_audio(config, options)
            wiring.microphone = FaultyMicrophone(wiring.microphone, fail_at)
            return wiring

        app.open_audio = open_faulty


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args_list:
        _parser().print_help(sys.stderr)
        return 2
    split = args_list.index("--")
    args = _parser().parse_args(args_list[:split])
    install(args)
    from appliance.cli import main as appliance_main

    return appliance_main(args_list[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())
