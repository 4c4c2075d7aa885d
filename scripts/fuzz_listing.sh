#!/usr/bin/env bash
# Fuzzes the parsers of server replies (listing pages, error bodies) with libFuzzer for a
# bounded time. Usage: scripts/fuzz_listing.sh [SECONDS]   (default 60; needs clang)
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
CC=clang cmake -S "$root" -B "$build" -DOSSC_FUZZ=ON -DOSSC_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" --target fuzz_listing -j"$(nproc)" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$root"/preload/fuzz/corpus/* "$work/"
# -close_fd_mask=1 keeps libFuzzer's stdout quiet; a crash still prints and exits non-zero.
"$build/fuzz_listing" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -artifact_prefix="$root/build-fuzz/" "$work" 2>&1 | tail -n 3
echo "fuzz_listing: no crash in ${seconds}s"
