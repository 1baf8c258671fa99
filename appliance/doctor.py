"""`appliance doctor`: is this device ready to run the appliance, and if not, what to fix.

Checks, in order: the sound card; the microphone (2 s of audio: level and clipping); the
speaker (a short test tone); the models the configuration needs (full sha256); the remote
agent when the mode is remote or auto (DNS, TLS handshake, agent id and signed URL with the
API key, each with a timeout); the LLM the local agent uses (a custom LLM must answer a
1-token chat request within the timeout); CPU and memory headroom. Every failure says what to fix.
Nothing secret is printed: the API key and signed URLs are redacted. Exit 0 when nothing
failed (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import platform
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from appliance.config import Config, custom_llm_access, display_url, read_secret, resolve_models_dir
from appliance.core.elevenlabs_protocol import agent_endpoint, signed_url_endpoint, signed_url_of
from appliance.logs import redact, register_secret
from appliance.ports import MIC_RATE_HZ
from appliance.system_memory import read_meminfo

API_KEY = "ELEVENLABS_API_KEY"
SYSTEM_KEY_FILE = Path("/etc/appliance/elevenlabs_api_key")
MIC_SECONDS = 2.0
TONE_SECONDS = 0.6
CLIP_LEVEL = 32700
RUNTIME_BASE_MB = 250
"""Python, numpy, onnxruntime and the audio buffers, before any model."""


class Outcome(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None

    def line(self) -> str:
        label = {"ok": " OK ", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}[self.outcome.value]
        text = f"[{label}] {self.name}: {self.detail}"
        if self.fix:
            text += f"\n       fix: {self.fix}"
        return redact(text)


# ---------------------------------------------------------------- audio


@dataclass(frozen=True)
class Levels:
    rms_dbfs: float
    peak_dbfs: float
    clipped_fraction: float
    seconds: float


def _dbfs(value: float) -> float:
    return 20 * math.log10(value / 32768.0) if value > 0 else -120.0


def measure_levels(samples: npt.NDArray[np.int16], rate_hz: int = MIC_RATE_HZ) -> Levels:
    x = samples.astype(np.float64)
    if x.size == 0:
        return Levels(-120.0, -120.0, 0.0, 0.0)
    rms = float(np.sqrt(np.mean(x * x)))
    peak = float(np.max(np.abs(x)))
    clipped = float(np.mean(np.abs(x) >= CLIP_LEVEL))
    return Levels(round(_dbfs(rms), 1), round(_dbfs(peak), 1), clipped, x.size / rate_hz)


def judge_levels(levels: Levels) -> Check:
    what = (
        f"{levels.seconds:.1f} s read, level {levels.rms_dbfs:.0f} dBFS, peak {levels.peak_dbfs:.0f} dBFS, "
        f"{levels.clipped_fraction * 100:.2f}% clipped"
    )
    if levels.peak_dbfs <= -90:
        return Check(
            "microphone",
            Outcome.FAIL,
            what + ": digital silence",
            "the capture is muted or at zero gain: run `alsamixer` (F4 capture), unmute and raise it; "
            "or set appliance.audio.input_device to the right device (`appliance devices`)",
        )
    if levels.clipped_fraction > 0.001:
        return Check(
            "microphone",
            Outcome.FAIL,
            what + ": clipping",
            "the capture gain is too high: lower it in `alsamixer` (F4) until the peaks stay below 0 dBFS",
        )
    if levels.rms_dbfs < -70:
        return Check(
            "microphone",
            Outcome.WARN,
            what + ": very quiet (fine in a silent room)",
            "speak during the test; if speech stays below about -40 dBFS, raise the capture gain "
            "in `alsamixer`",
        )
    return Check("microphone", Outcome.OK, what)


def make_tone(rate_hz: int = MIC_RATE_HZ, seconds: float = TONE_SECONDS, freq_hz: float = 660.0) -> Any:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
    return (0.25 * 32767 * np.sin(2 * np.pi * freq_hz * t) * fade).astype(np.int16)


def _sound_card(devices: list[Any]) -> Check:
    inputs = [d for d in devices if d.max_input_channels > 0]
    outputs = [d for d in devices if d.max_output_channels > 0]
    if not inputs and not outputs:
        snd = (
            "/dev/snd does not exist: the system has no ALSA sound card"
            if not Path("/dev/snd").exists()
            else (
                "/dev/snd exists but PortAudio sees no device (permissions? the user must be in group audio)"
            )
        )
        return Check(
            "sound card",
            Outcome.FAIL,
            f"no sound card found ({snd})",
            "plug in a USB microphone/speaker or fit a sound HAT (and its dtoverlay in "
            "/boot/firmware/config.txt), "
            "then check `arecord -l` and `aplay -l`",
        )
    names = "; ".join(d.name for d in devices[:4])
    detail = f"{len(inputs)} input(s), {len(outputs)} output(s): {names}"
    if not inputs:
        return Check("sound card", Outcome.FAIL, detail + "; no microphone", "plug in a microphone")
    if not outputs:
        return Check("sound card", Outcome.FAIL, detail + "; no speaker", "plug in a speaker or headphones")
    return Check("sound card", Outcome.OK, detail)


async def _microphone(config: Config, backend: Any, seconds: float, timeout_s: float) -> Check:
    from appliance.adapters.sounddevice import SounddeviceMicrophone
    from appliance.errors import AudioDeviceError

    audio = config.appliance.audio
    try:
        mic = SounddeviceMicrophone(audio.input_device, input_block_ms=audio.input_block_ms, backend=backend)
    except AudioDeviceError as err:
        return Check(
            "microphone", Outcome.FAIL, str(err), "set appliance.audio.input_device (`appliance devices`)"
        )
    blocks: list[npt.NDArray[np.int16]] = []

    async def read() -> None:
        got = 0
        async for block in mic.frames():
            blocks.append(block)
            got += block.size
            if got >= seconds * MIC_RATE_HZ:
                return

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        return Check(
            "microphone",
            Outcome.FAIL,
            f"{mic.device_info.name}: no audio within {timeout_s:.0f} s",
            "the device is busy or failing: stop the service first (`sudo systemctl stop appliance`), "
            "then check `arecord -D <device> -d 2 test.wav`",
        )
    finally:
        await mic.close()
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.int16)
    check = judge_levels(measure_levels(samples))
    return Check(check.name, check.outcome, f"{mic.device_info.name}: {check.detail}", check.fix)


async def _speaker(config: Config, backend: Any, timeout_s: float) -> Check:
    from appliance.adapters.sounddevice import SounddeviceSpeaker
    from appliance.errors import AudioDeviceError

    audio = config.appliance.audio
    try:
        speaker = SounddeviceSpeaker(
            audio.output_device,
            output_block_ms=audio.output_block_ms,
            volume=audio.output_volume,
            backend=backend,
        )
    except AudioDeviceError as err:
        return Check(
            "speaker", Outcome.FAIL, str(err), "set appliance.audio.output_device (`appliance devices`)"
        )
    name = speaker.device_info.name
    try:
        played = await asyncio.wait_for(speaker.play(make_tone(), MIC_RATE_HZ), timeout_s)
    except TimeoutError:
        played = False
    finally:
        await speaker.close()
    if not played:
        return Check(
            "speaker",
            Outcome.FAIL,
            f"{name}: the test tone did not play to the end",
            "the device is busy or failing: stop the service first, then check `speaker-test -c 2 -t sine`",
        )
    return Check(
        "speaker",
        Outcome.OK,
        f"{name}: played a {TONE_SECONDS:.1f} s test tone at volume {audio.output_volume:g} "
        "(did you hear it?)",
    )


def audio_checks(
    config: Config, *, backend: Any = None, devices: list[Any] | None = None, timeout_s: float = 6.0
) -> list[Check]:
    try:
        from appliance.adapters.sounddevice import list_devices

        found = list_devices() if devices is None else devices
    except OSError as err:
        return [
            Check(
                "sound card",
                Outcome.FAIL,
                f"PortAudio is not available ({err})",
                "install libportaudio2 (sudo apt-get install libportaudio2)",
            )
        ]
    card = _sound_card(found)
    checks = [card]
    if not any(d.max_input_channels for d in found):
        checks.append(Check("microphone", Outcome.SKIP, "no sound card with an input"))
    else:
        checks.append(asyncio.run(_microphone(config, backend, MIC_SECONDS, timeout_s)))
    if not any(d.max_output_channels for d in found):
        checks.append(Check("speaker", Outcome.SKIP, "no sound card with an output"))
    else:
        checks.append(asyncio.run(_speaker(config, backend, timeout_s)))
    return checks


# ---------------------------------------------------------------- models


def needed_models(config: Config) -> list[str]:
    """Manifest models the configuration uses (paths and custom wake words are checked apart)."""
    from appliance.models.manifest import load_manifest
    from appliance.runtime.wake_words import MICRO_PREFIX

    known = set(load_manifest().names)
    names = ["oww-features", "silero-vad"]
    for w in config.appliance.wake_words.words:
        if not w.path:
            oww = w.name in known and w.engine != "microwakeword"
            names.append(w.name if oww else MICRO_PREFIX + w.name)
    if config.uses_local_agent:  # the main agent's mode, or a wake word's own agent
        local = config.appliance.local
        names.append(local.stt.model)
        if config.llm_backend == "llama_cpp":
            names.append(local.llm.model)
        names += [v.model for v in local.voices.values()]
    out: list[str] = []
    for name in names:
        if name in known and name not in out:
            out.append(name)
    return out


def model_checks(config: Config, env: Mapping[str, str]) -> tuple[list[Check], int]:
    """The checks, and the bytes of model files the configuration loads (for the memory check)."""
    from appliance.models.manifest import load_manifest
    from appliance.models.store import ModelStore, find_custom_wakewords
    from appliance.runtime.wake_words import MICRO_PREFIX

    store = ModelStore(resolve_models_dir(config, env), load_manifest())
    checks: list[Check] = []
    total = 0
    for name in needed_models(config):
        spec = store.manifest.get(name)
        total += spec.size
        started = time.monotonic()
        problems = store.verify(name)
        if not problems:
            took = time.monotonic() - started
            checks.append(
                Check(
                    f"model {name}", Outcome.OK, f"{spec.size / 1e6:.0f} MB, sha256 verified in {took:.1f} s"
                )
            )
            continue
        missing = all(p.is_missing for p in problems)
        checks.append(
            Check(
                f"model {name}",
                Outcome.FAIL,
                "; ".join(str(p) for p in problems[:3]),
                f"appliance models provision {name}   (offline; or: appliance models fetch {name})"
                if missing
                else f"the files are damaged: appliance models fetch {name} (re-downloads and verifies them)",
            )
        )
    custom_dir = config.appliance.wake_words.custom_dir
    custom = find_custom_wakewords(config.resolve_path(custom_dir)) if custom_dir else {}
    for word in config.appliance.wake_words.words:
        if word.path:
            path = config.resolve_path(word.path)
            ok = path.is_file()
            checks.append(
                Check(
                    f"wake word {word.name}",
                    Outcome.OK if ok else Outcome.FAIL,
                    str(path) + ("" if ok else " does not exist"),
                    None if ok else "fix appliance.wake_words.words[].path",
                )
            )
        elif (
            word.name not in store.manifest.names
            and MICRO_PREFIX + word.name not in store.manifest.names
            and word.name not in custom
        ):
            checks.append(
                Check(
                    f"wake word {word.name}",
                    Outcome.FAIL,
                    "neither a bundled model nor in the custom folder",
                    f"put {word.name}.onnx into appliance.wake_words.custom_dir ({custom_dir or 'not set'})",
                )
            )
    return checks, total


# ---------------------------------------------------------------- agent reachability


def _api_key(env: Mapping[str, str]) -> tuple[str | None, str]:
    key = read_secret(API_KEY, env)
    if key:
        return key, "from the environment" if env.get(API_KEY) else "from the systemd credential"
    if SYSTEM_KEY_FILE.exists():
        try:
            key = SYSTEM_KEY_FILE.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None, f"{SYSTEM_KEY_FILE} exists but is not readable (run the doctor with sudo)"
        return key, f"from {SYSTEM_KEY_FILE}"
    return None, f"not set ({API_KEY} or {SYSTEM_KEY_FILE})"


def _in_thread(fn: Callable[[], Any], timeout_s: float) -> Any:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=timeout_s)
    finally:
        pool.shutdown(wait=False)


def _http_get(url: str, headers: dict[str, str], timeout_s: float) -> tuple[int, Any]:
    import httpx

    response = httpx.get(url, headers=headers, timeout=timeout_s, follow_redirects=False)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:200]
    return response.status_code, body


def agent_checks(config: Config, env: Mapping[str, str], timeout_s: float = 5.0) -> list[Check]:
    remote = config.appliance.remote
    if config.appliance.mode == "local":
        return [Check("agent", Outcome.SKIP, "appliance.mode is local: no remote agent to reach")]
    url = urlsplit(remote.base_url)
    host = url.hostname or ""
    secure = url.scheme == "wss"
    port = url.port or (443 if secure else 80)
    checks: list[Check] = []
    try:
        infos = _in_thread(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except concurrent.futures.TimeoutError:
        return [
            Check(
                "DNS",
                Outcome.FAIL,
                f"{host}: no answer within {timeout_s:.0f} s",
                "check the DNS server (/etc/resolv.conf)",
            )
        ]
    except OSError as err:
        return [
            Check(
                "DNS",
                Outcome.FAIL,
                f"{host} does not resolve ({err})",
                "check the network connection and the DNS server (/etc/resolv.conf), "
                "and appliance.remote.base_url",
            )
        ]
    addresses = sorted({str(info[4][0]) for info in infos})
    checks.append(Check("DNS", Outcome.OK, f"{host} → {', '.join(addresses[:3])}"))
    if secure:
        checks.append(_tls_check(host, port, timeout_s))
        if checks[-1].outcome is Outcome.FAIL:
            return checks
    else:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as err:
            return [
                *checks,
                Check("connection", Outcome.FAIL, f"{host}:{port}: {err}", "is the server running?"),
            ]
        checks.append(Check("TLS", Outcome.SKIP, f"{remote.base_url} is not encrypted (ws://)"))
    key, where = _api_key(env)
    register_secret(key)
    agent_id = remote.agent_id
    if not agent_id:
        return [*checks, Check("agent id", Outcome.FAIL, "not set", "set appliance.remote.agent_id")]
    if key is None:
        checks.append(
            Check(
                "agent id",
                Outcome.SKIP,
                f"cannot be checked without an API key (key {where}); a public agent is checked when a "
                "conversation starts",
            )
        )
        if remote.requires_auth:
            checks.append(
                Check(
                    "signed URL",
                    Outcome.FAIL,
                    f"appliance.remote.requires_auth is true but there is no API key ({where})",
                    f"put the key into {SYSTEM_KEY_FILE} (mode 0600; the service reads it with "
                    "LoadCredential) "
                    f"or set {API_KEY}",
                )
            )
        return checks
    headers = {"xi-api-key": key}
    checks.append(
        _rest_check(
            "agent id",
            agent_endpoint(remote.base_url, agent_id),
            headers,
            timeout_s,
            ok=lambda body: f"{agent_id} exists ({body.get('name') or 'unnamed'}), key {where}",
            not_found=f"no agent {agent_id!r} in this account: check appliance.remote.agent_id",
        )
    )
    checks.append(
        _rest_check(
            "signed URL",
            signed_url_endpoint(remote.base_url, agent_id),
            headers,
            timeout_s,
            ok=_signed_url_ok,
            not_found=f"no agent {agent_id!r}: check appliance.remote.agent_id",
        )
    )
    return checks


def _signed_url_ok(body: Any) -> str:
    signed = signed_url_of(body)  # ValueError: the check fails with its message
    register_secret(signed)
    return "issued (valid 15 minutes; not shown)"


def _rest_check(
    name: str,
    url: str,
    headers: dict[str, str],
    timeout_s: float,
    *,
    ok: Callable[[Any], str],
    not_found: str,
) -> Check:
    import httpx

    try:
        status, body = _http_get(url, headers, timeout_s)
    except httpx.TimeoutException:
        return Check(
            name, Outcome.FAIL, f"no answer within {timeout_s:.0f} s", "check the network; try again"
        )
    except httpx.HTTPError as err:
        return Check(name, Outcome.FAIL, f"request failed ({type(err).__name__}: {err})", "check the network")
    if status == 200 and isinstance(body, dict):
        try:
            return Check(name, Outcome.OK, ok(body))
        except ValueError as err:
            return Check(name, Outcome.FAIL, str(err), "is appliance.remote.base_url an ElevenLabs endpoint?")
    if status in (401, 403):
        detail = body.get("detail") if isinstance(body, dict) else None
        why = json.dumps(detail)[:160] if detail else f"HTTP {status}"
        return Check(
            name,
            Outcome.FAIL,
            f"the API key was refused ({why})",
            f"check the key in {SYSTEM_KEY_FILE} / {API_KEY} and that it may use Conversational AI "
            "(agents read)",
        )
    if status == 404:
        return Check(name, Outcome.FAIL, "HTTP 404", not_found)
    return Check(name, Outcome.FAIL, f"HTTP {status}", "the service may be down; try again later")


def _tls_check(host: str, port: int, timeout_s: float) -> Check:
    context = ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as err:
        hint = "install ca-certificates"
        if "not yet valid" in str(err) or "expired" in str(err):
            hint = "the system clock is wrong (no RTC?): enable time sync (timedatectl set-ntp true)"
        return Check("TLS", Outcome.FAIL, f"{host}: certificate not trusted ({err.verify_message})", hint)
    except TimeoutError:
        return Check(
            "TLS", Outcome.FAIL, f"{host}:{port}: no handshake within {timeout_s:.0f} s", "check the firewall"
        )
    except OSError as err:
        return Check(
            "TLS", Outcome.FAIL, f"{host}:{port}: {err}", "check the network and firewall (port 443 out)"
        )
    days = ""
    if "notAfter" in cert:
        left = (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400
        days = f", certificate valid {left:.0f} more day(s)"
    return Check("TLS", Outcome.OK, f"{host}:{port} {version}{days}")


# ---------------------------------------------------------------- the local agent's LLM


def llm_checks(
    config: Config, env: Mapping[str, str], *, network: bool = True, timeout_s: float = 5.0
) -> list[Check]:
    """Which LLM the local agent uses and, for a custom LLM, whether it answers a 1-token chat."""
    if config.appliance.mode == "remote":
        return [Check("LLM", Outcome.SKIP, "appliance.mode is remote: the agent's LLM runs in the cloud")]
    if config.llm_backend == "llama_cpp":
        model = config.appliance.local.llm.model
        return [Check("LLM", Outcome.OK, f"local llama.cpp {model} (its file is checked with the models)")]
    access = custom_llm_access(config, env)
    if access is None:
        return [
            Check(
                "LLM",
                Outcome.FAIL,
                "custom LLM without a URL",
                "set conversation_config.agent.prompt.custom_llm.url",
            )
        ]
    for secret in access.secrets:
        register_secret(secret)
    checks = [Check("LLM access", Outcome.WARN, note) for note in access.notes]
    where = display_url(access.url)
    if not network:
        return [*checks, Check("LLM", Outcome.SKIP, f"custom LLM at {where}: --no-network")]
    from appliance.adapters.openai_llm import probe_llm

    probe = probe_llm(
        access.url,
        access.model_id,
        access.api_key,
        access.headers,
        timeout_s=timeout_s,
        chat=True,
        api_version=access.api_version,
    )
    model = f"model {access.model_id}" if access.model_id else "the server's default model"
    key = f"key from {access.api_key_source}" if access.api_key else "no API key"
    if probe.ok:
        return [*checks, Check("LLM", Outcome.OK, f"custom LLM ({model}, {key}): {probe.detail}")]
    return [*checks, Check("LLM", Outcome.FAIL, f"custom LLM ({model}, {key}): {probe.detail}", probe.fix)]


# ---------------------------------------------------------------- CPU and memory


def headroom_checks(
    model_bytes: int,
    *,
    load: tuple[float, float, float] | None = None,
    cpus: int | None = None,
    meminfo: Mapping[str, int] | None = None,
    machine: str | None = None,
) -> list[Check]:
    checks: list[Check] = []
    load = os.getloadavg() if load is None else load
    cpus = cpus or os.cpu_count() or 1
    per_core = load[1] / cpus  # the 5-minute average: sustained load, not a passing burst
    detail = f"load {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) on {cpus} core(s)"
    if per_core >= 1.0:
        checks.append(
            Check(
                "CPU",
                Outcome.FAIL,
                detail + ": saturated",
                "other programs use the CPU (see `top`); the wake word and speech would lag: stop them",
            )
        )
    elif per_core >= 0.7:
        checks.append(Check("CPU", Outcome.WARN, detail + ": little headroom", "see `top` for what runs"))
    else:
        checks.append(Check("CPU", Outcome.OK, detail))
    machine = machine or platform.machine()
    if machine in ("armv7l", "armv6l", "i686"):
        checks.append(
            Check(
                "architecture",
                Outcome.WARN,
                f"{machine} is a 32-bit system",
                "use the 64-bit Raspberry Pi OS: several model runtimes ship 64-bit wheels only",
            )
        )
    info = read_meminfo() if meminfo is None else meminfo
    available = info.get("MemAvailable")
    if available is None:
        checks.append(Check("memory", Outcome.SKIP, "/proc/meminfo not readable"))
        return checks
    need = int(model_bytes * 1.3) + RUNTIME_BASE_MB * 1024 * 1024
    detail = (
        f"{available / 2**20:.0f} MB available, about {need / 2**20:.0f} MB needed by the configured models"
    )
    if available < need:
        checks.append(
            Check(
                "memory",
                Outcome.FAIL,
                detail,
                "stop other programs, add swap (sudo dphys-swapfile), or choose smaller models "
                "(appliance.local.stt.model / llm.model)",
            )
        )
    elif available < need * 1.5:
        checks.append(Check("memory", Outcome.WARN, detail + ": little headroom"))
    else:
        checks.append(Check("memory", Outcome.OK, detail))
    return checks


# ---------------------------------------------------------------- entry point


def run_doctor(
    config: Config,
    *,
    env: Mapping[str, str] | None = None,
    audio: bool = True,
    network: bool = True,
    timeout_s: float = 5.0,
    out: Callable[[str], None] = print,
) -> int:
    env = os.environ if env is None else env
    checks: list[Check] = [
        Check("configuration", Outcome.OK, f"{config.source} (mode {config.appliance.mode})")
    ]

    def report(new: Iterable[Check]) -> None:
        for check in new:
            checks.append(check)
            out(check.line())

    out(checks[0].line())
    if audio:
        report(audio_checks(config, timeout_s=timeout_s + 1))
    else:
        report([Check("audio", Outcome.SKIP, "--no-audio")])
    model_list, model_bytes = model_checks(config, env)
    report(model_list)
    if network:
        report(agent_checks(config, env, timeout_s))
    else:
        report([Check("agent", Outcome.SKIP, "--no-network")])
    report(llm_checks(config, env, network=network, timeout_s=timeout_s))
    report(headroom_checks(model_bytes))
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    warned = [c for c in checks if c.outcome is Outcome.WARN]
    if failed:
        out(
            f"\n{len(failed)} problem(s): {', '.join(c.name for c in failed)}. "
            "Fix them, then run `appliance doctor` again."
        )
        return 1
    out(f"\nall good ({len(warned)} warning(s))" if warned else "\nall good")
    return 0
