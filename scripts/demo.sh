#!/usr/bin/env bash
# Sets up ossc and runs the demo: a local object store, a generated model, `ossc get`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" demo
cd /tmp && python3 "$root/scripts/demo.py" "$@"
