"""The systemd unit as systemd/install.sh would install it: `systemd-analyze verify` clean,
the directives the service relies on, and a command line the CLI accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.cli import _parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rendered = subprocess.run(
        ["bash", str(REPO / "systemd" / "install.sh"), "--print-unit"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "@APPLIANCE_HOME@" not in rendered and f"{REPO}/.venv/bin/appliance run" in rendered
    path = tmp_path_factory.mktemp("unit") / "appliance.service"
    path.write_text(rendered)
    return path


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify_is_clean(unit: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    proc = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr
    security = subprocess.run(
        [exe, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60
    )
    level = re.search(r"Overall exposure level for appliance.service: ([0-9.]+)", security.stdout)
    assert level is not None, security.stdout[-500:]
    assert float(level.group(1)) <= 2.5  # "OK" on systemd's 0 (safe) - 10 (unsafe) scale


def test_the_service_contract(unit: Path) -> None:
    d = directives(unit)
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) >= 10 and one["Restart"] == "on-failure"
    assert one["User"] == "appliance" and one["SupplementaryGroups"] == "audio"
    assert one["LoadCredential"] == "elevenlabs_api_key:/etc/appliance/elevenlabs_api_key"
    assert one["Environment"] and "APPLIANCE_MODELS_DIR=%C/appliance/models" in d["Environment"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "tmpfs",
        "PrivateTmp": "yes",
        "PrivateDevices": "no",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-alsa rw",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "StateDirectory": "appliance",
        "CacheDirectory": "appliance",
        "RuntimeDirectory": "appliance",
    }.items():
        assert one[key] == value, key
    assert "ReadWritePaths" not in d  # writable: only the unit's own state, cache and runtime folders
    assert not any("PULSE" in v or "XDG_RUNTIME_DIR" in v for v in d["Environment"])  # plain ALSA
    pre = shlex.split(one["ExecStartPre"])
    assert pre[1:] == ["check-config", "/etc/appliance/config.yaml"]
    start = shlex.split(one["ExecStart"])
    args = _parser().parse_args(start[1:])  # the CLI accepts the unit's command line
    assert args.command == "run" and args.config == "/etc/appliance/config.yaml" and args.require_devices
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_install_scripts_parse() -> None:
    for script in ("install.sh", "uninstall.sh", "bootstrap.sh"):
        subprocess.run(["bash", "-n", str(REPO / "systemd" / script)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is not None:
        proc = subprocess.run(
            [shellcheck, str(REPO / "systemd" / "install.sh"), str(REPO / "systemd" / "uninstall.sh")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout
