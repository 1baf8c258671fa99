"""`appliance doctor`: the real run on this machine (no sound card), and each check with fakes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from appliance.adapters.sounddevice import DeviceInfo, StreamRequest
from appliance.config import Config, load_config_text
from appliance.doctor import (
    Outcome,
    agent_checks,
    audio_checks,
    headroom_checks,
    judge_levels,
    make_tone,
    measure_levels,
    needed_models,
)
from appliance.testing.fakes import refused_port

KEY = "sk_test_doctor_0123456789"
SIGNED = "wss://example.invalid/v1/convai/conversation?agent_id=agent_1&conversation_signature=SECRETSIG123"


def test_doctor_on_a_machine_without_a_sound_card(models_dir: Path) -> None:
    from appliance.adapters.sounddevice import list_devices

    if list_devices():
        pytest.skip("this machine has a sound card")  # the fake-backend tests below cover that case
    env = {**os.environ, "APPLIANCE_MODELS_DIR": str(models_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor", "--no-network"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("[FAIL] sound card: no sound card found (")
    assert "fix: plug in a USB microphone/speaker or fit a sound HAT" in proc.stdout
    assert "[SKIP] microphone: no sound card with an input" in lines
    assert "[SKIP] speaker: no sound card with an output" in lines
    assert "[ OK ] model hey_jarvis:" in proc.stdout and "sha256 verified" in proc.stdout
    assert "sound card" in lines[-1] and "Fix them" in lines[-1]


def test_no_sound_card_is_said_clearly() -> None:
    card, microphone, speaker = audio_checks(default_config(), devices=[])
    assert card.outcome is Outcome.FAIL and card.detail.startswith("no sound card found (")
    assert "arecord -l" in (card.fix or "")
    assert (microphone.outcome, speaker.outcome) == (Outcome.SKIP, Outcome.SKIP)


# ----------------------------------------------------------------- levels


def test_levels_and_verdicts() -> None:
    t = np.arange(32000) / 16000
    speech = (0.1 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    levels = measure_levels(speech)
    assert levels.seconds == 2.0 and -24 < levels.rms_dbfs < -22 and -21 < levels.peak_dbfs < -19
    assert judge_levels(levels).outcome is Outcome.OK
    silent = judge_levels(measure_levels(np.zeros(32000, np.int16)))
    assert (
        silent.outcome is Outcome.FAIL
        and "digital silence" in silent.detail
        and "alsamixer" in (silent.fix or "")
    )
    clipped = np.clip(speech.astype(np.int32) * 20, -32768, 32767).astype(np.int16)
    verdict = judge_levels(measure_levels(clipped))
    assert (
        verdict.outcome is Outcome.FAIL and "clipping" in verdict.detail and "lower it" in (verdict.fix or "")
    )
    quiet = (speech // 2000).astype(np.int16)
    assert judge_levels(measure_levels(quiet)).outcome is Outcome.WARN


# ----------------------------------------------------------------- audio with a fake backend


class FakeStream:
    def __init__(self, request: StreamRequest, source: np.ndarray | None) -> None:
        self.request = request
        self.source = source
        self.played: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n, channels = self.request.block_frames, self.request.channels
        pos = 0
        while not self._stop.is_set():
            if self.source is not None:
                block = self.source[pos : pos + n]
                if block.size < n:
                    block = np.concatenate([block, np.zeros(n - block.size, np.int16)])
                pos += n
                self.request.callback(np.repeat(block[:, None], channels, axis=1), n, None, None)
            else:
                out = np.zeros((n, channels), np.int16)
                self.request.callback(out, n, None, None)
                self.played.append(out[:, 0].copy())
            time.sleep(n / self.request.sample_rate_hz / 8)  # 8x real time

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()


class FakeBackend:
    def __init__(self, mic: np.ndarray) -> None:
        self.mic = mic
        self.outputs: list[FakeStream] = []
        self.device = DeviceInfo(1, "Fake USB Audio (hw:1,0)", 1, 2, 16000.0, "ALSA")

    def lookup(self, spec: Any, kind: str) -> DeviceInfo:
        return self.device

    def open_input(self, request: StreamRequest) -> FakeStream:
        return FakeStream(request, self.mic)

    def open_output(self, request: StreamRequest) -> FakeStream:
        stream = FakeStream(request, None)
        self.outputs.append(stream)
        return stream

    def refresh(self) -> None:
        return None


def default_config(**appliance: Any) -> Config:
    return load_config_text(yaml.safe_dump({"appliance": appliance}), "test.yaml")


def test_audio_checks_report_level_and_play_the_tone() -> None:
    t = np.arange(16000 * 3) / 16000
    mic = (0.05 * 32767 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    backend = FakeBackend(mic)
    checks = audio_checks(default_config(), backend=backend, devices=[backend.device])
    card, microphone, speaker = checks
    assert card.outcome is Outcome.OK and "1 input(s), 1 output(s)" in card.detail
    assert microphone.outcome is Outcome.OK, microphone
    assert microphone.detail.startswith("Fake USB Audio (hw:1,0): 2.0 s read, level -29 dBFS, peak -26 dBFS")
    assert speaker.outcome is Outcome.OK and "test tone" in speaker.detail
    played = np.concatenate(backend.outputs[0].played)
    assert np.abs(played).max() > 0.2 * 32767 and np.count_nonzero(played) >= make_tone().size * 0.9


def test_audio_checks_catch_a_clipping_microphone() -> None:
    mic = np.where(np.arange(48000) % 20 < 10, 32767, -32768).astype(np.int16)
    backend = FakeBackend(mic)
    microphone = audio_checks(default_config(), backend=backend, devices=[backend.device])[1]
    assert microphone.outcome is Outcome.FAIL and "clipping" in microphone.detail


def test_a_machine_with_only_a_speaker() -> None:
    speaker_only = DeviceInfo(0, "HDMI", 0, 2, 48000.0, "ALSA")
    card, microphone, _ = audio_checks(
        default_config(), backend=FakeBackend(np.zeros(1, np.int16)), devices=[speaker_only]
    )
    assert card.outcome is Outcome.FAIL and card.fix == "plug in a microphone"
    assert microphone.outcome is Outcome.SKIP


# ----------------------------------------------------------------- agent reachability


class FakeElevenLabs(BaseHTTPRequestHandler):
    delay_s = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        if self.headers.get("xi-api-key") != KEY:
            return self._send(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        if self.path == "/v1/convai/agents/agent_1":
            return self._send(200, {"agent_id": "agent_1", "name": "Kitchen helper"})
        if self.path == "/v1/convai/conversation/get-signed-url?agent_id=agent_1":
            return self._send(200, {"signed_url": SIGNED})
        return self._send(404, {"detail": "not found"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the timeout test gives up
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeElevenLabs)
    httpd.block_on_close = False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    FakeElevenLabs.delay_s = 0.0
    httpd.shutdown()
    httpd.server_close()


def remote(base_url: str, agent_id: str = "agent_1", **extra: Any) -> Config:
    return default_config(mode="remote", remote={"base_url": base_url, "agent_id": agent_id, **extra})


def lines(checks: list[Any]) -> str:
    return "\n".join(c.line() for c in checks)


def test_agent_reachable_with_the_key(server: ThreadingHTTPServer) -> None:
    url = f"ws://127.0.0.1:{server.server_address[1]}"
    checks = agent_checks(remote(url, requires_auth=True), {"ELEVENLABS_API_KEY": KEY}, timeout_s=3)
    assert [(c.name, c.outcome) for c in checks] == [
        ("DNS", Outcome.OK),
        ("TLS", Outcome.SKIP),
        ("agent id", Outcome.OK),
        ("signed URL", Outcome.OK),
    ]
    text = lines(checks)
    assert "agent_1 exists (Kitchen helper), key from the environment" in text
    assert KEY not in text and "SECRETSIG123" not in text and SIGNED not in text


def test_agent_failures_say_what_to_fix(server: ThreadingHTTPServer) -> None:
    url = f"ws://127.0.0.1:{server.server_address[1]}"
    wrong_key = agent_checks(remote(url), {"ELEVENLABS_API_KEY": "sk_wrong_key_9876"}, timeout_s=3)
    assert wrong_key[2].outcome is Outcome.FAIL and "the API key was refused" in wrong_key[2].detail
    assert "sk_wrong_key_9876" not in lines(wrong_key)
    unknown = agent_checks(remote(url, agent_id="agent_404"), {"ELEVENLABS_API_KEY": KEY}, timeout_s=3)
    assert unknown[2].outcome is Outcome.FAIL and "check appliance.remote.agent_id" in (unknown[2].fix or "")
    no_key = agent_checks(remote(url, requires_auth=True), {}, timeout_s=3)
    assert no_key[2].outcome is Outcome.SKIP
    assert no_key[3].name == "signed URL" and no_key[3].outcome is Outcome.FAIL
    assert "LoadCredential" in (no_key[3].fix or "")
    FakeElevenLabs.delay_s = 2.0
    slow = agent_checks(remote(url), {"ELEVENLABS_API_KEY": KEY}, timeout_s=0.5)
    assert slow[2].outcome is Outcome.FAIL and "no answer within" in slow[2].detail


def test_dns_failure_and_a_closed_port() -> None:
    dns = agent_checks(remote("wss://agents.example.invalid"), {}, timeout_s=3)
    assert [c.name for c in dns] == ["DNS"] and dns[0].outcome is Outcome.FAIL
    assert "does not resolve" in dns[0].detail and "resolv.conf" in (dns[0].fix or "")
    with refused_port() as port:  # nothing listens there
        closed = agent_checks(remote(f"ws://127.0.0.1:{port}"), {}, timeout_s=2)
    assert closed[-1].name == "connection" and closed[-1].outcome is Outcome.FAIL


def test_local_mode_skips_the_agent_and_needs_the_local_models() -> None:
    local = default_config()
    assert agent_checks(local, {})[0].outcome is Outcome.SKIP
    assert needed_models(local) == [
        "oww-features",
        "silero-vad",
        "hey_jarvis",
        "whisper-tiny.en",
        "smollm2-135m-instruct",
        "piper-en_US-joe-medium",
    ]
    assert needed_models(remote("wss://api.elevenlabs.io")) == ["oww-features", "silero-vad", "hey_jarvis"]


# ----------------------------------------------------------------- the local agent's LLM


def custom_llm_config(url: str, **appliance: Any) -> Config:
    prompt = {"llm": "custom-llm", "custom_llm": {"url": url, "model_id": "scripted-model"}}
    doc = {"conversation_config": {"agent": {"prompt": prompt}}, "appliance": appliance}
    return load_config_text(yaml.safe_dump(doc), "test.yaml", log_warnings=False)


def test_llm_check_names_the_llm_and_asks_a_custom_llm_for_one_token() -> None:
    from appliance.doctor import llm_checks
    from appliance.testing.openai_server import ScriptedOpenAiServer, error_reply, text_reply

    [local] = llm_checks(default_config(), {})
    assert (local.outcome, local.detail) == (
        Outcome.OK,
        "local llama.cpp smollm2-135m-instruct (its file is checked with the models)",
    )
    with ScriptedOpenAiServer([text_reply("OK"), error_reply(500, "model crashed")]) as server:
        config = custom_llm_config(server.url)
        [up] = llm_checks(config, {"APPLIANCE_LLM_API_KEY": KEY}, timeout_s=3)
        [failing] = llm_checks(config, {}, timeout_s=3)
        [offline] = llm_checks(config, {}, network=False)
        requests = server.requests
    assert up.outcome is Outcome.OK and up.detail.startswith(
        "custom LLM (model scripted-model, key from APPLIANCE_LLM_API_KEY): "
    )
    assert "answers a 1-token chat request" in up.detail
    assert requests[1].headers["authorization"] == f"Bearer {KEY}" and KEY not in up.line()
    assert failing.outcome is Outcome.FAIL
    assert failing.detail == (
        "custom LLM (model scripted-model, no API key): the LLM at "
        f"{server.url} answered POST /chat/completions with HTTP 500: model crashed"
    )
    assert failing.fix == "the LLM server is failing or overloaded: see its log"
    assert offline.outcome is Outcome.SKIP and offline.detail.endswith(": --no-network")
    remote_mode = custom_llm_config(server.url, mode="remote", remote={"agent_id": "agent_1"})
    assert llm_checks(remote_mode, {})[0].outcome is Outcome.SKIP


def test_doctor_fails_when_the_custom_llm_is_down_or_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """`appliance doctor` used to say "all good" with the LLM server down (issue 9 point 13)."""

    import appliance.doctor as doctor
    from appliance.testing.openai_server import ScriptedOpenAiServer, error_reply, text_reply

    monkeypatch.setattr(doctor, "model_checks", lambda config, env: ([], 0))
    monkeypatch.setattr(doctor, "headroom_checks", lambda model_bytes: [])

    def run(config: Config) -> tuple[int, list[str]]:
        out: list[str] = []
        code = doctor.run_doctor(config, env={}, audio=False, network=True, timeout_s=3, out=out.append)
        return code, out

    with ScriptedOpenAiServer([text_reply("OK"), error_reply(500)]) as server:
        config = custom_llm_config(server.url)
        up_code, up_out = run(config)
        broken_code, broken_out = run(config)
    with refused_port() as port:
        down_code, down_out = run(custom_llm_config(f"http://127.0.0.1:{port}/v1"))
    assert up_code == 0 and up_out[-1] == "\nall good", up_out
    assert broken_code == 1 and any(line.startswith("[FAIL] LLM: ") for line in broken_out)
    assert "problem(s): LLM." in broken_out[-1]
    assert down_code == 1
    [down] = [line for line in down_out if line.startswith("[FAIL] LLM: ")]
    assert f"cannot reach the LLM at http://127.0.0.1:{port}/v1" in down


def test_microwakeword_words_need_their_own_models() -> None:
    words = [{"name": "hey_jarvis", "engine": "microwakeword"}, {"name": "okay_nabu"}, {"name": "alexa"}]
    cfg = default_config(mode="remote", remote={"agent_id": "a"}, wake_words={"words": words})
    assert needed_models(cfg) == ["oww-features", "silero-vad", "mww-hey_jarvis", "mww-okay_nabu", "alexa"]


# ----------------------------------------------------------------- headroom


def test_cpu_and_memory_headroom() -> None:
    gib = 2**30
    fine = headroom_checks(200 * 2**20, load=(0.3, 0.2, 0.1), cpus=4, meminfo={"MemAvailable": 2 * gib})
    assert [c.outcome for c in fine] == [Outcome.OK, Outcome.OK]
    busy = headroom_checks(0, load=(9.0, 4.5, 1.0), cpus=4, meminfo={"MemAvailable": 2 * gib})
    assert busy[0].outcome is Outcome.FAIL and "saturated" in busy[0].detail
    small = headroom_checks(400 * 2**20, load=(0.1, 0.1, 0.1), cpus=4, meminfo={"MemAvailable": 300 * 2**20})
    assert small[1].outcome is Outcome.FAIL and "smaller models" in (small[1].fix or "")
    old_pi = headroom_checks(0, load=(0, 0, 0), cpus=4, meminfo={"MemAvailable": gib}, machine="armv7l")
    assert old_pi[1].name == "architecture" and old_pi[1].outcome is Outcome.WARN


def test_the_agent_checks_keep_a_base_path(server: ThreadingHTTPServer) -> None:
    """A base URL behind a path prefix (a proxy) is asked under that prefix, as the session does."""
    from appliance.core.elevenlabs_protocol import signed_url_endpoint

    seen: list[str] = []
    original = FakeElevenLabs.do_GET

    def do_get(handler: FakeElevenLabs) -> None:
        seen.append(handler.path)
        handler.path = handler.path.removeprefix("/eleven")
        original(handler)

    FakeElevenLabs.do_GET = do_get  # type: ignore[method-assign]
    try:
        base = f"ws://127.0.0.1:{server.server_address[1]}/eleven"
        checks = agent_checks(remote(base), {"ELEVENLABS_API_KEY": KEY}, timeout_s=3)
    finally:
        FakeElevenLabs.do_GET = original  # type: ignore[method-assign]
    assert [c.outcome for c in checks[2:]] == [Outcome.OK, Outcome.OK], lines(checks)
    assert seen == [
        "/eleven/v1/convai/agents/agent_1",
        "/eleven/v1/convai/conversation/get-signed-url?agent_id=agent_1",
    ]
    assert signed_url_endpoint(base, "agent_1").endswith(seen[1])
