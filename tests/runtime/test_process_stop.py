"""SIGTERM / SIGINT for a run that owns its process: the first stops the service; a second one,
or a stop that outlives its guard, exits at once with the events file and out.wav complete."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.adapters.wav_audio import WavFileSpeaker
from appliance.runtime import app
from appliance.runtime.app import ProcessStop, Wiring
from appliance.runtime.clock import MonotonicClock
from appliance.runtime.event_log import EventLog
from appliance.runtime.playback_monitor import MonitoredSpeaker
from appliance.runtime.timers import Timers


class Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def wiring(tmp_path: Path) -> tuple[Wiring, WavFileSpeaker]:
    clock = MonotonicClock()
    speaker = WavFileSpeaker(tmp_path / "out.wav")
    events = EventLog(clock, tmp_path / "ev.jsonl")
    events.emit("appliance_started")
    events.emit("audio", text="half a sentence")
    return (
        Wiring(
            microphone=None,  # type: ignore[arg-type]
            speaker=MonitoredSpeaker(speaker, clock),
            clock=clock,
            events=events,
            timers=Timers(clock),
        ),
        speaker,
    )


def assert_complete(tmp_path: Path, frames: int) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert lines[-1] == {**lines[-1], "type": "appliance_stopped", "reason": "forced_exit"}
    with wave.open(str(tmp_path / "out.wav"), "rb") as w:
        assert w.getnframes() == frames and w.getframerate() == 16000
    return lines


def test_a_second_signal_exits_at_once_with_the_files_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(app, "STOP_GUARD_S", 1e6)  # this test is about the second signal
    w, speaker = wiring(tmp_path)
    speaker._write(np.ones(800, np.int16))  # what had been played so far
    stops: list[str] = []
    stopper = ProcessStop(w, own_process=True)
    stopper.on_signal(stops.append, "signal_sigterm")
    assert stops == ["signal_sigterm"]
    with pytest.raises(Exited) as exited:
        stopper.on_signal(stops.append, "signal_sigterm")
    assert exited.value.code == 0 and stops == ["signal_sigterm"]
    assert_complete(tmp_path, frames=800)
    assert "appliance: second SIGTERM: exiting now" in capsys.readouterr().err


def test_a_stop_that_outlives_its_guard_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exited: list[int] = []
    done = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        done.set()

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(app, "STOP_GUARD_S", 0.2)
    w, _ = wiring(tmp_path)
    ProcessStop(w, own_process=True).on_signal(lambda reason: None, "signal_sigint")  # the stop hangs
    assert done.wait(5)
    assert exited == [0]
    assert_complete(tmp_path, frames=0)


def test_without_its_own_process_a_second_signal_only_stops_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_exit(code: int) -> None:
        raise AssertionError("must not exit")

    monkeypatch.setattr(os, "_exit", fake_exit)
    w, _ = wiring(tmp_path)
    stops: list[str] = []
    stopper = ProcessStop(w, own_process=False)
    stopper.on_signal(stops.append, "signal_sigterm")
    stopper.on_signal(stops.append, "signal_sigterm")
    assert stops == ["signal_sigterm", "signal_sigterm"]
    w.events.close()


def test_the_output_wav_is_valid_at_every_moment(tmp_path: Path) -> None:
    """Even a run killed with SIGKILL leaves a WAV that opens: the header is written when the
    file is created and its sizes are patched after every write."""
    speaker = WavFileSpeaker(tmp_path / "out.wav")
    for frames in (0, 320, 640):
        with wave.open(str(tmp_path / "out.wav"), "rb") as w:
            assert w.getnframes() == frames
        speaker._write(np.ones(320, np.int16))
    speaker.close_now()
    speaker.close_now()  # idempotent
    speaker._write(np.ones(320, np.int16))  # dropped after the close
    with wave.open(str(tmp_path / "out.wav"), "rb") as w:
        assert w.getnframes() == 960


def _run_handlers(loop: asyncio.AbstractEventLoop) -> None:
    """As `run_async` does: the stop signals and SIGHUP on the loop."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, lambda: None)


@pytest.mark.parametrize("own_process", [False, True])
def test_the_run_takes_its_signal_handlers_off_the_loop_before_it_closes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own_process: bool,
) -> None:
    """asyncio closes its self-pipe before it removes its signal handlers: a signal in between
    (a second SIGTERM as the run ends) went to the closed pipe and printed "Exception ignored
    when trying to write to the signal wakeup fd" with a traceback. The run releases them while
    the loop is open: no wakeup fd is left; the handlers from before come back, except that a
    run owning its process exits at once on SIGTERM / SIGINT."""
    assert threading.current_thread() is threading.main_thread()  # signal handlers need it

    def fake_exit(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    w, _ = wiring(tmp_path)
    stopper = ProcessStop(w, own_process=own_process)

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    saved = app._signal_handlers()
    try:
        for sig in saved:
            signal.signal(sig, mine)
        before = app._signal_handlers()

        async def run() -> int:
            loop = asyncio.get_running_loop()
            _run_handlers(loop)
            app._release_signals(loop, stopper, before)
            return signal.set_wakeup_fd(-1)  # the fd asyncio had set, if it were still set

        assert asyncio.run(run()) == -1
        term, hup = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
        assert hup is mine
        if not own_process:
            assert term is mine and signal.getsignal(signal.SIGINT) is mine
            return
        assert term == stopper.exit_after_the_run and signal.getsignal(signal.SIGINT) == term
        with pytest.raises(Exited) as exited:
            stopper.exit_after_the_run(signal.SIGTERM)
        assert exited.value.code == 0
        assert "appliance: SIGTERM as the run ended: exiting now" in capsys.readouterr().err
        assert_complete(tmp_path, frames=0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        w.events.close()
