"""The appliance as a service, end to end: `python -m appliance run --input -` as a subprocess with
stdin kept open, a fake NOTIFY_SOCKET, the status feed, SIGHUP reloads and SIGTERM."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.adapters.resample import resample
from appliance.testing.faults import STOP_BOUND_S, STOP_MARGIN_S
from appliance.testing.speech import read_wav
from appliance.testing.systemd import FakeNotifySocket

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "appliance" / "assets" / "example-hey-jarvis.wav"


class Feed:
    """A status feed client reading on a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self._lock:
                    self.messages.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["type"] == kind]

    def states(self) -> list[str]:
        return [m["state"] for m in self.of("state")]

    def send(self, command: str, timeout: float = 5.0) -> dict[str, Any]:
        before = len(self.of("reply"))
        self.sock.sendall(command.encode() + b"\n")
        wait(lambda: len(self.of("reply")) > before, timeout, f"a reply to {command}")
        return self.of("reply")[before]

    def close(self) -> None:
        self.sock.close()


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def types(path: Path) -> list[str]:
    return [e["type"] for e in events(path)]


def _listening_after(path: Path, wake_word: str) -> bool:
    """The events file has a `listening_started` after the last `wake_word_detected` of `wake_word`."""
    evs = events(path)
    wakes = [i for i, e in enumerate(evs) if e["type"] == "wake_word_detected" and e["name"] == wake_word]
    return bool(wakes) and any(e["type"] == "listening_started" for e in evs[wakes[-1] :])


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="svc", dir="/tmp") as tmp:  # Unix socket paths are short
        yield Path(tmp)


def write_config(path: Path, socket_path: Path, **agent: Any) -> None:
    doc = {
        "conversation_config": {"agent": {"first_message": "", **agent}},
        "platform_settings": {"privacy": {"record_voice": True, "retention_days": 1}},
        "appliance": {
            "status": {"socket": str(socket_path)},
            "recording": {"enabled": True, "dir": str(path.parent / "recordings")},
        },
    }
    path.write_text(yaml.safe_dump(doc))


def test_service_lifecycle(tmp_path: Path, short_dir: Path, models_dir: Path) -> None:
    notify = FakeNotifySocket(str(short_dir / "notify"))
    feed_path = short_dir / "appliance.sock"
    config = tmp_path / "config.yaml"
    write_config(config, feed_path)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    expired = recordings / "20200101T000000-old-t1.json"  # from a run long ago, kept one day
    expired.write_text(json.dumps({"recorded_at": 1577836800.0, "expires_at": 1577923200.0, "audio": None}))
    events_path = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify.address,
        "WATCHDOG_USEC": "200000",
        "APPLIANCE_MODELS_DIR": str(models_dir),
    }
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "appliance", "run", "--config", str(config), "--input", "-"),
            *("--events", str(events_path), "--output", str(tmp_path / "out.wav")),
        ],
        stdin=subprocess.PIPE,
        stderr=stderr,
        env=env,
    )
    assert proc.stdin is not None
    feed: Feed | None = None
    try:
        # ---- READY=1 once the models are loaded and the input delivers
        notify.wait_for("READY=1", timeout=120)
        assert "appliance_started" in types(events_path)
        feed = Feed(feed_path)
        wait(lambda: bool(feed and feed.of("hello")), 5, "hello")
        hello = feed.of("hello")[0]
        assert hello["state"] == "idle" and hello["protocol"] == 1 and hello["wake_words"] == ["hey_jarvis"]

        # ---- a wake word and a question: idle → listening → thinking → speaking → listening
        audio, rate = read_wav(EXAMPLE)
        proc.stdin.write(resample(audio, rate, 16000).astype("<i2").tobytes())
        proc.stdin.flush()
        wait(lambda: feed is not None and feed.states()[-2:] == ["speaking", "listening"], 60, "the reply")
        assert feed.states() == ["listening", "thinking", "speaking", "listening"]
        assert feed.of("state")[0]["previous"] == "idle"
        assert feed.send("stop") == {"type": "reply", "cmd": "stop", "ok": True, "stopped": True}
        wait(lambda: feed is not None and feed.states()[-1] == "idle", 5, "idle")
        by_type = {e["type"]: e for e in events(events_path)}
        assert by_type["user_transcript"]["user_transcript"].lower().startswith("what is the capital")
        assert by_type["session_ended"]["reason"] == "stopped"

        # ---- the turn was recorded as the privacy settings allow; the expired one was swept at start
        assert not expired.exists()
        wait(lambda: len(list(recordings.glob("*.json"))) == 1, 5, "the recording")
        meta = json.loads(next(recordings.glob("*.json")).read_text())
        assert meta["transcript"] == by_type["user_transcript"]["user_transcript"]
        assert meta["reply"] == by_type["agent_response"]["agent_response"]
        assert (recordings / meta["audio"]).stat().st_size > 16000  # over half a second of speech

        # ---- commands: mute, unmute, push_to_talk
        assert feed.send("mute")["ok"]
        wait(lambda: feed is not None and feed.states()[-1] == "muted", 5, "muted")
        refused = feed.send('{"cmd": "push_to_talk", "id": 1}')
        assert refused == {
            "type": "reply",
            "cmd": "push_to_talk",
            "id": 1,
            "ok": False,
            "error": "muted: unmute first",
        }
        assert feed.send("unmute")["ok"]
        wait(lambda: feed is not None and feed.states()[-1] == "idle", 5, "unmuted")
        assert feed.send("push_to_talk")["ok"]
        wait(lambda: feed is not None and feed.states()[-1] == "listening", 5, "push to talk")
        # the feed's state can arrive before the process has written the events behind it: wait
        # (bounded) for listening_started after the push-to-talk wake, then check nothing else followed
        wait(lambda: _listening_after(events_path, "push_to_talk"), 5, "listening_started in the events file")
        assert events(events_path)[-1]["type"] in ("listening_started", "conversation_initiation_metadata")
        assert [e for e in events(events_path) if e["type"] == "wake_word_detected"][-1][
            "name"
        ] == "push_to_talk"

        # ---- SIGHUP with a valid config during a conversation: applied once it is over
        write_config(config, feed_path, first_message="Hello there.")
        reloads = notify.count("RELOADING=1")
        proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1", count=reloads + 1)
        log = tmp_path / "stderr.log"
        wait(
            lambda: "applies when the current conversation ends" in log.read_text(), 10, "the deferred reload"
        )
        assert "config_reloaded" not in types(events_path)
        readies = notify.count("READY=1")
        # the CLI client: `appliance send` and `appliance status --once`
        cli = [sys.executable, "-m", "appliance"]
        sent = subprocess.run(
            [*cli, "send", "--socket", str(feed_path), "stop"], capture_output=True, text=True
        )
        assert sent.returncode == 0 and json.loads(sent.stdout)["stopped"] is True
        wait(lambda: "config_reloaded" in types(events_path), 10, "config_reloaded")
        reloaded = next(e for e in events(events_path) if e["type"] == "config_reloaded")
        assert reloaded["changed"] == ["conversation_config"] and reloaded["needs_restart"] == []
        notify.wait_for("READY=1", count=readies + 1)
        wait(lambda: types(events_path)[-1] == "appliance_started", 5, "the new loop")
        once = subprocess.run(
            [*cli, "status", "--socket", str(feed_path), "--once"], capture_output=True, text=True
        )
        assert once.returncode == 0 and " idle (mode local, hey_jarvis)" in once.stdout
        assert feed.send("push_to_talk")["ok"]
        wait(
            lambda: any(e.get("kind") == "first_message" for e in events(events_path)),
            20,
            "the first message",
        )
        greeting = next(e for e in events(events_path) if e.get("kind") == "first_message")
        assert greeting["agent_response"] == "Hello there."  # the new config is in force
        assert feed.send("stop")["ok"]
        wait(lambda: feed is not None and feed.states()[-1] == "idle", 5, "idle after the greeting")

        # ---- SIGHUP with an invalid config: refused, the running one stays, and it says why
        config.write_text(config.read_text().replace("appliance:", "appliance:\n  vad: {threshold: 2}", 1))
        readies = notify.count("READY=1")
        proc.send_signal(signal.SIGHUP)
        wait(lambda: any(e.get("code") == "config_reload_failed" for e in events(events_path)), 10, "refusal")
        failure = next(e for e in events(events_path) if e.get("code") == "config_reload_failed")
        assert "appliance.vad.threshold" in failure["message"] and failure["stage"] == "config"
        notify.wait_for("READY=1", count=readies + 1)  # back from RELOADING
        assert "configuration reload failed; the running configuration stays" in log.read_text()
        assert proc.poll() is None
        assert feed.send("push_to_talk")["ok"]
        wait(lambda: feed is not None and feed.states()[-1] == "listening", 5, "still working")

        # ---- SIGTERM mid-conversation: the session is closed, devices released, exit 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        notify.wait_for("STOPPING=1")
        tail = [e for e in events(events_path) if e["type"] in ("session_ended", "appliance_stopped")][-2:]
        assert tail[0] == {**tail[0], "type": "session_ended", "reason": "signal_sigterm"}
        assert tail[1]["type"] == "appliance_stopped" and tail[1]["reason"] == "signal_sigterm"
        assert not feed_path.exists()

        # ---- the watchdog pinged all along at WATCHDOG_USEC / 2
        pings = notify.times("WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) >= 5, pings
        assert 0.09 <= statistics.median(gaps) <= 0.15, gaps
        statuses = [m for m in notify.texts() if m.startswith("STATUS=")]
        assert "STATUS=muted" in statuses and "STATUS=speaking" in statuses
    finally:
        if feed is not None:
            feed.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
        notify.close()


# ---------------------------------------------------------------------- stop means stop
_WORDS = [
    "amber",
    "bridge",
    "candle",
    "dragon",
    "ember",
    "forest",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lantern",
    "meadow",
]
_WORDS += [
    "needle",
    "orchard",
    "pepper",
    "quarry",
    "river",
    "saddle",
    "timber",
    "umbrella",
    "valley",
    "willow",
    "yarn",
    "zephyr",
]
_RNG = random.Random(7)
STORY = tuple(" ".join(_RNG.choice(_WORDS) for _ in range(9)).capitalize() + ". " for _ in range(300))
"""An answer that never ends and never repeats itself (no repetition guard ends it)."""


def _endless_run(
    tmp_path: Path, models_dir: Path, url: str
) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    """`appliance run --input <wav> --output out.wav --events ev.jsonl` (fast headless) whose LLM
    streams forever; returns once the reply is being spoken."""
    config = tmp_path / "config.yaml"
    doc = {
        "conversation_config": {
            "agent": {
                "first_message": "",
                "prompt": {
                    "prompt": "You are a test agent.",
                    "llm": "custom-llm",
                    "custom_llm": {"url": url, "model_id": "scripted-model"},
                },
            }
        },
        "appliance": {"local": {"llm": {"backend": "openai"}}, "status": {"enabled": False}},
    }
    config.write_text(yaml.safe_dump(doc))
    events_path, out, log = tmp_path / "ev.jsonl", tmp_path / "out.wav", tmp_path / "stderr.log"
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance", "run", "--config", str(config)),
                *("--input", str(EXAMPLE), "--output", str(out), "--events", str(events_path)),
            ],
            stderr=stderr,
            env=env,
        )
    try:
        wait(lambda: "audio" in types(events_path) or proc.poll() is not None, 240, "the reply's audio")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc, events_path, out, log


def _assert_complete_files(events_path: Path, out: Path) -> list[dict[str, Any]]:
    lines = events_path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is complete JSON
    assert parsed[-1]["type"] == "appliance_stopped", parsed[-3:]
    with wave.open(str(out), "rb") as w:  # a valid header, whatever was playing
        assert w.getnchannels() == 1 and w.getframerate() == 16000 and w.getnframes() > 0
        assert len(w.readframes(w.getnframes())) == 2 * w.getnframes()
    return parsed


def test_sigterm_mid_reply_stops_the_run_within_2_s(tmp_path: Path, models_dir: Path) -> None:
    """The LLM streams forever and the agent is speaking: SIGTERM ends the process in under
    2 s with exit 0, the events file complete and out.wav valid; the LLM request is closed."""
    from appliance.testing.openai_server import ScriptedOpenAiServer, endless_reply

    with ScriptedOpenAiServer([endless_reply(*STORY, chunk_delay_s=0.1)]) as server:
        proc, events_path, out, log = _endless_run(tmp_path, models_dir, server.url)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - start
        (request,) = server.chat_requests
        assert request.disconnected.wait(5)
    print(f"SIGTERM mid-reply: exit {code} after {took * 1000:.0f} ms")
    assert code == 0, log.read_text()[-2000:]
    assert took < STOP_BOUND_S + STOP_MARGIN_S, f"the stop took {took:.2f} s"
    parsed = _assert_complete_files(events_path, out)
    assert parsed[-1]["reason"] == "signal_sigterm"
    assert [e["reason"] for e in parsed if e["type"] == "session_ended"] == ["signal_sigterm"]
    assert "Traceback" not in log.read_text()


def test_a_second_sigterm_exits_at_once(tmp_path: Path, models_dir: Path) -> None:
    from appliance.testing.openai_server import ScriptedOpenAiServer, endless_reply

    with ScriptedOpenAiServer([endless_reply(*STORY, chunk_delay_s=0.1)]) as server:
        proc, events_path, out, log = _endless_run(tmp_path, models_dir, server.url)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - start
    print(f"two SIGTERMs: exit {code} after {took * 1000:.0f} ms")
    assert code == 0, log.read_text()[-2000:]
    assert took < STOP_BOUND_S + STOP_MARGIN_S, f"the stop took {took:.2f} s"
    _assert_complete_files(events_path, out)
    assert "Traceback" not in log.read_text()
