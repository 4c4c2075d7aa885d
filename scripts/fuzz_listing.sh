#!/usr/bin/env bash
# Fuzzes what ossc reads from outside with libFuzzer for a bounded time: the parsers of server
# replies (listing pages, error bodies) and the check of a session's control file, each for
# half of the time. Usage: scripts/fuzz_listing.sh [SECONDS]   (default 60 in all; needs clang)
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-fuzz"
CC=clang cmake -S "$root" -B "$build" -DOSSC_FUZZ=ON -DOSSC_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" --target fuzz_listing fuzz_control control_seed -j"$(nproc)" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fuzz TARGET SECONDS MAX_LEN: runs over the seeds in $work/TARGET (0 seconds would mean forever).
fuzz() {
    local secs=$(($2 > 0 ? $2 : 1))
    # -close_fd_mask=1 keeps libFuzzer's stdout quiet; a crash still prints and exits non-zero.
    "$build/$1" -max_total_time="$secs" -max_len="$3" -timeout=10 -close_fd_mask=1 \
        -artifact_prefix="$build/" "$work/$1" 2>&1 | tail -n 3
    echo "$1: no crash in ${secs}s"
}
mkdir "$work/fuzz_listing" "$work/fuzz_control"
cp "$root"/preload/fuzz/corpus/* "$work/fuzz_listing/"
"$build/control_seed" "$work/fuzz_control"
fuzz fuzz_listing $((seconds / 2)) 65536
fuzz fuzz_control $((seconds - seconds / 2)) 16384
