"""systemd/bootstrap.sh's decisions, run as shell functions with a faked machine.

`source systemd/bootstrap.sh` defines the functions without running the setup; each case
overrides `uname`, `getconf`, `nproc`, `dpkg-query` and `apt-cache` with shell functions and
points MEMINFO / BOARD_MODEL_FILE at files written here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "systemd" / "bootstrap.sh"
PI5 = "Raspberry Pi 5 Model B Rev 1.0\0"
PI4 = "Raspberry Pi 4 Model B Rev 1.4\0"
PI3 = "Raspberry Pi 3 Model B Plus Rev 1.3\0"


def call(
    tmp_path: Path,
    command: str,
    *,
    machine: str = "aarch64",
    bits: int = 64,
    cores: int = 4,
    mem_available_kb: int | None = 3_700_000,
    board: str | None = PI4,
    installed: tuple[str, ...] = (),
    in_apt: tuple[str, ...] = ("libasound2",),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    meminfo = tmp_path / "meminfo"
    lines = ["MemTotal:        3884000 kB"]
    if mem_available_kb is not None:
        lines.append(f"MemAvailable:    {mem_available_kb} kB")
    meminfo.write_text("\n".join(lines) + "\n")
    model = tmp_path / "model"
    if board is not None:
        model.write_text(board)
    fakes = f"""
uname() {{ echo {machine}; }}
getconf() {{ echo {bits}; }}
nproc() {{ echo {cores}; }}
dpkg-query() {{ case " {" ".join(installed)} " in *" ${{!#}} "*) echo "install ok installed";; esac; }}
apt-cache() {{ case " {" ".join(in_apt)} " in *" ${{!#}} "*) return 0;; *) return 100;; esac; }}
"""
    script = f"source {SCRIPT}\n{fakes}\n{command}\n"
    full_env = {
        "PATH": "/usr/bin:/bin",
        "MEMINFO": str(meminfo),
        "BOARD_MODEL_FILE": str(model),
        **(env or {}),
    }
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=full_env, timeout=30, check=False
    )


def out(tmp_path: Path, command: str, **kw: object) -> str:
    done = call(tmp_path, command, **kw)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sourcing_runs_nothing(tmp_path: Path) -> None:
    done = call(tmp_path, "echo sourced")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "sourced", "")


@pytest.mark.parametrize("machine", ["armv7l", "armv6l", "armv8l"])
def test_32_bit_arm_is_refused_with_the_reason(tmp_path: Path, machine: str) -> None:
    done = call(tmp_path, "check_platform; echo continued", machine=machine, bits=32)
    assert done.returncode == 1 and "continued" not in done.stdout
    assert f"32-bit ARM ({machine}) is not supported" in done.stderr
    assert "onnxruntime" in done.stderr and "64-bit Raspberry Pi OS" in done.stderr


def test_32_bit_userland_on_a_64_bit_kernel_is_refused(tmp_path: Path) -> None:
    done = call(tmp_path, "check_platform", machine="aarch64", bits=32)
    assert done.returncode == 1 and "32-bit (armhf) userland" in done.stderr


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_64_bit_platforms_pass(tmp_path: Path, machine: str) -> None:
    assert out(tmp_path, "check_platform; echo ok", machine=machine) == "ok"


@pytest.mark.parametrize(
    ("mem_available_kb", "cores", "jobs"),
    [
        (1_800_000, 4, "2"),  # a 2 GB Pi 4: 4 jobs would swap
        (3_700_000, 4, "4"),  # 4 GB
        (7_800_000, 4, "4"),  # 8 GB: one job per core
        (700_000, 4, "1"),  # 1 GB Pi 3
        (300_000, 4, "1"),  # at least one
        (None, 4, "4"),  # no MemAvailable: one per core
    ],
)
def test_build_jobs_fit_in_memory(
    tmp_path: Path, mem_available_kb: int | None, cores: int, jobs: str
) -> None:
    assert out(tmp_path, "build_jobs", mem_available_kb=mem_available_kb, cores=cores) == jobs


def test_llama_cmake_args(tmp_path: Path) -> None:
    native = out(tmp_path, "llama_cmake_args")
    assert native == "-DLLAVA_BUILD=OFF"  # aarch64: native CPU, no multimodal library
    portable = out(tmp_path, "llama_cmake_args", env={"APPLIANCE_PORTABLE": "1"}).split()
    assert portable == ["-DLLAVA_BUILD=OFF", "-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a"]
    x86 = out(tmp_path, "llama_cmake_args", machine="x86_64").split()
    assert x86[:2] == ["-DLLAVA_BUILD=OFF", "-DGGML_NATIVE=OFF"] and "-DGGML_AVX2=ON" in x86
    extra = out(tmp_path, "llama_cmake_args", env={"CMAKE_ARGS": "-DGGML_BLAS=OFF"})
    assert extra == "-DLLAVA_BUILD=OFF -DGGML_BLAS=OFF"  # the user's own flags come last


@pytest.mark.parametrize(
    ("machine", "board", "expected"),
    [
        ("aarch64", PI5, "about 6-10 minutes on a Raspberry Pi 5; 2 parallel job(s)"),
        ("aarch64", PI4, "about 15-25 minutes on a Raspberry Pi 4; 2 parallel job(s)"),
        (
            "aarch64",
            "Raspberry Pi 400 Rev 1.0\0",
            "about 15-25 minutes on a Raspberry Pi 4; 2 parallel job(s)",
        ),
        ("aarch64", PI3, "longer than on a Pi 4 (15-25 minutes) on a Raspberry Pi 3 Model B Plus;"),
        ("aarch64", None, "about 6-10 minutes on a Raspberry Pi 5-class board, 15-25 on a Pi 4-class one"),
        ("x86_64", None, "about 7 minutes on 2 cores; 2 parallel job(s)"),
    ],
)
def test_build_time_estimate(tmp_path: Path, machine: str, board: str | None, expected: str) -> None:
    assert expected in out(tmp_path, "llama_build_estimate 2", machine=machine, board=board)


def test_portable_hint_names_the_illegal_instruction(tmp_path: Path) -> None:
    assert "Illegal instruction" in out(tmp_path, "portable_hint")
    assert "armv8-a" in out(tmp_path, "portable_hint", env={"APPLIANCE_PORTABLE": "1"})
    assert out(tmp_path, "portable_hint", machine="x86_64") == ""


@pytest.mark.parametrize(
    ("installed", "in_apt", "expected"),
    [
        (("libasound2t64",), ("libasound2t64",), "libasound2t64"),  # Debian 13, already there
        (("libasound2",), ("libasound2",), "libasound2"),  # Debian 12 / Pi OS Bookworm
        ((), ("libasound2t64",), "libasound2t64"),  # Debian 13, to install
        ((), ("libasound2",), "libasound2"),  # Debian 12, to install
    ],
)
def test_alsa_package_either_name(
    tmp_path: Path, installed: tuple[str, ...], in_apt: tuple[str, ...], expected: str
) -> None:
    assert out(tmp_path, "alsa_package", installed=installed, in_apt=in_apt) == expected


def test_bootstrap_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
