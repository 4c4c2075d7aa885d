#!/bin/bash
# The GPU rows of docs/BENCHMARKS.md on a lent GPU machine (no network there): the model
# generated in /dev/shm, nginx serving it (nginx-s3-store.sh), scripts/probe_gpu_pin.py under
# the shim, then scripts/bench_load.py --device cuda. Output and JSON go to $OUT.
#
# usage: scripts/bench_gpu.sh CARRY      (run from the repository root on the device)
# CARRY holds what the machine lacks, built or fetched on an x86-64 Linux box beforehand:
#   build/   libossc.so, libossc.so.0, libossc_preload.so, ossc-owner (a Release build)
#   lib/     libcjson.so.1
#   wheels/  cffi and pycparser (cp312), runai-model-streamer
#   debs/    Debian 12's nginx_*.deb (apt-get download nginx)
#   nginx-s3-store.sh (../shared/reference/)
# Knobs: SIZE (GiB, 8), ROUNDS (3), TOOLS (bench_load's --device cuda default), PROBE (1),
# BENCH_S (420), CACHE_DIR (the shim's cacheDir and the local copy, e.g. a huge=always tmpfs),
# EXTRA (more bench_load.py options, e.g. --variant old:LD_PRELOAD=/old/libossc_preload.so).
set -u
C=$(cd "$1" && pwd)
R=$(cd "$(dirname "$0")/.." && pwd)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
uname -r; nproc; echo "ulimit -l: $(ulimit -l)"
python3 -c "import torch, safetensors; print('torch', torch.__version__, 'safetensors', safetensors.__version__)"
python3 -m pip install -q --no-index --no-deps --target /tmp/pydeps "$C"/wheels/*.whl 2>&1 |
  grep -v "WARNING: Running pip as" | tail -3
mkdir -p /tmp/ngx && dpkg -x "$C"/debs/nginx_*.deb /tmp/ngx
export LD_LIBRARY_PATH=$C/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OSSC_LIBRARY=$C/build/libossc.so PYTHONPATH=$R/python:/tmp/pydeps
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench OSSC_ADDRESSING=path
SIZE=${SIZE:-8}; ROOT=/dev/shm/ngroot; mkdir -p $ROOT/ossc-load
PYTHONPATH=$R/tests:$PYTHONPATH python3 -c "from pathlib import Path; from support.synth_model import ensure_model; ensure_model(Path('$ROOT/ossc-load'), $SIZE)"
TAG=$(ls $ROOT/ossc-load | grep -v manifest | head -1)
NGINX_STORE_DIR=/tmp/ngstore bash "$C/nginx-s3-store.sh" /tmp/ngx/usr/sbin/nginx $ROOT ossc-load 9000 8
if [ "${PROBE:-1}" = 1 ]; then
  MD=/dev/shm/probe-model
  LD_PRELOAD=$C/build/libossc_preload.so ENABLE_CONNECTOR=1 OSS_PATH=s3://ossc-load/$TAG/ \
    MODEL_DIR=$MD AWS_ENDPOINT_URL=http://127.0.0.1:9000 OSSC_PIN_GPU=yes \
    OSSC_LOG_PATH="$OUT/probe-shim.log" OSSC_EXPIRE_TIME_SEC=0 OSSC_CONFIG= \
    timeout 200 python3 "$R/scripts/probe_gpu_pin.py" $MD $ROOT/ossc-load/$TAG \
    "$OUT/probe-shim.log" "$OUT/probe.json"
  echo "probe rc=$?"; sleep 3
fi
timeout "${BENCH_S:-420}" python3 "$R/scripts/bench_load.py" --device cuda --size-gib "$SIZE" \
  --rounds "${ROUNDS:-3}" --model-dir $ROOT/ossc-load --endpoint http://127.0.0.1:9000 \
  ${TOOLS:+--tools $TOOLS} ${CACHE_DIR:+--cache-dir $CACHE_DIR} ${EXTRA:-} --json "$OUT/bench.json"
echo "bench rc=$?"
kill "$(cat /tmp/ngstore/nginx.pid)"
date -u
