#!/usr/bin/env bash
# Sets up and runs the whole test suite: the C tests under CTest (test_engine, and a test per
# hook of the shim: programs run under LD_PRELOAD) plain and under ASan/UBSan, a bounded fuzz
# run of the reply parsers, and the Python tests against a real S3 server (SeaweedFS on
# 127.0.0.1), the real loaders and the real vLLM server, the engine-heavy ones again with the
# sanitizer build of libossc. A Python test that skips fails the run unless
# tests/support/skips.py allows it (OSSC_NO_UNEXPECTED_SKIPS=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh test

echo "== the package runs on Python 3.9 to 3.13 (vermin: no newer API)"
vermin --target=3.9- --violations --no-tips --quiet python/ossc

echo "== deb and rpm: built and tested in the background (scripts/package.sh --test)"
# Mostly downloads and dpkg in minimal Debian roots: it overlaps the C stages below; its log
# is shown after them. OSSC_PACKAGE_RELEASES picks the Debian releases (default all).
package_log=$(mktemp /tmp/ossc-package-log.XXXXXX)
# shellcheck disable=SC2086
bash scripts/package.sh --test --out "$root/dist" ${OSSC_PACKAGE_RELEASES:-} \
    >"$package_log" 2>&1 &
package_pid=$!

echo "== C unit tests (plain)"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
(cd build && ctest --output-on-failure)

echo "== C unit tests (ASan/UBSan)"
cmake -S . -B build-asan -DOSSC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
(cd build-asan && ctest --output-on-failure)

echo "== fuzzing the reply parsers"
bash scripts/fuzz_listing.sh "${OSSC_FUZZ_SECONDS:-60}"

# The Python tests below time some waits: they run without the package job beside them.
echo "== deb and rpm (started at the beginning)"
package_status=0
wait "$package_pid" || package_status=$?
cat "$package_log"
[ "$package_status" = 0 ] || { echo "scripts/package.sh --test failed ($package_status)"; exit 1; }

echo "== engine, shim and connector tests against SeaweedFS with the sanitizer build"
# Python itself is not instrumented: the runtimes must come first in the process (so not
# through ossc-run, which puts the shim first in LD_PRELOAD). pycryptodome (under oss2, which
# the connector tests import) opens its modules with RTLD_DEEPBIND, which ASan refuses unless
# told not to; children that prepare_directory gives the shim first in LD_PRELOAD need
# verify_asan_link_order=0, as the shim's CTest tests do.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 PYCRYPTODOME_DISABLE_DEEPBIND=1 \
OSSC_LIBRARY="$root/build-asan/libossc.so" OSSC_NO_UNEXPECTED_SKIPS=1 \
    python3 -m pytest -q -p no:cacheprovider -rs tests/test_store.py tests/test_faults.py \
    tests/test_shim.py tests/test_security.py tests/test_connector.py \
    tests/test_connector_direct.py tests/test_upload.py \
    --deselect "tests/test_security.py::test_planted_session_and_log_paths_are_never_used[ossc-run]"

echo "== the whole Python suite against the installed package, with the real vLLM server"
# From outside the tree, so `import ossc` is the installed package, not python/ossc.
export OSSC_VLLM_PYTHON="$root/.venv-vllm/bin/python" OSSC_REQUIRE_VLLM=1 OSSC_NO_UNEXPECTED_SKIPS=1
cd /tmp && python3 -m pytest -q -p no:cacheprovider -rs --durations=8 "$root/tests"
