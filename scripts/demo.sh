#!/usr/bin/env bash
# Sets up ossc and the real vLLM server, then runs the demo: a local object store, a generated
# tiny model, ossc-run wrapping vLLM's OpenAI server, one completion.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" demo
cd /tmp && OSSC_VLLM_PYTHON="$root/.venv-vllm/bin/python" python3 "$root/scripts/demo.py" "$@"
