#!/usr/bin/env bash
# Installs what ossc needs to build and run on Debian 12 (as root), then ossc itself.
# Usage: scripts/setup.sh [test]   ("test" adds the test suite's tools)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive
packages=(build-essential cmake pkg-config libcurl4-openssl-dev libssl-dev libexpat1-dev
          libcjson-dev curl)
[ "${1:-}" = test ] && packages+=(clang)
apt-get update -qq
apt-get install -y -qq "${packages[@]}" >/dev/null
python3 -m pip install -q --upgrade pip
# The extras never pull torch; tests that need one install the CPU wheel on disk explicitly.
extras=""
[ "${1:-}" = test ] && extras="[test]"
python3 -m pip install -q "${root}${extras}"
