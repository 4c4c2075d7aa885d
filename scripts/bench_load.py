#!/usr/bin/env python3
"""End-to-end load benchmark: from start until every tensor of the benchmark model is in a
process that reads it, in interleaved rounds.

Contenders (each a fresh process, timed from spawn to exit, `import torch` included alike):
  local      the model already on /dev/shm (the floor: no transfer at all)
  shim       env-var mode: the shim preloaded with ENABLE_CONNECTOR=1, so the owner starts the
             prefetch at t=0 and the same process loads from MODEL_DIR at once
  shim-x4    sharing: the owner process starts 4 loaders at once, which attach to its session
             (goal: within 1.2x of one loader, one download, one copy in memory)
  s5cmd      `s5cmd cp` to /dev/shm, then the same load
Each loader sums every tensor, so every byte is really read; sums are compared with local.

Usage: python3 scripts/bench_load.py [--size-gib 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))
from synth_model import ensure_model  # noqa: E402

from ossc.localstore import LocalStore  # noqa: E402
from ossc.native import preload_library, session_dir  # noqa: E402

FOUR = """
import subprocess, sys
procs = [subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE,
                          text=True) for _ in range(4)]
outs = [p.communicate()[0] for p in procs]
assert all(p.returncode == 0 for p in procs) and len(set(outs)) == 1
print(outs[0].strip().splitlines()[-1])
"""

LOADER = """
import json, os, sys, torch
from safetensors.torch import load_file
root = sys.argv[1]
shards = sorted(f for f in os.listdir(root) if f.endswith(".safetensors"))
sums = {}
for shard in shards:
    for name, t in load_file(os.path.join(root, shard)).items():
        sums[name] = t.float().sum().item()
print(json.dumps(sums))
"""


def timed(cmd, env) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {r.stderr[-800:]}")
    return wall, json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-dir", default="/var/tmp/ossc-bench/model")
    a = ap.parse_args()
    model, _ = ensure_model(Path(a.model_dir), a.size_gib)
    local = Path("/dev/shm/ossc-load-local")
    s5 = Path("/dev/shm/ossc-load-s5cmd")
    mdir = Path("/dev/shm/ossc-load-model")  # MODEL_DIR: on tmpfs, as a container would have it
    store_dir = tempfile.mkdtemp(prefix="ossc-load-store-")
    bucket, prefix = "ossc-load", "model/"
    py = sys.executable
    results: dict[str, list[float]] = {"local": [], "shim": [], "shim-x4": [], "s5cmd": []}
    try:
        shutil.copytree(model, local, dirs_exist_ok=True)
        with LocalStore(store_dir) as store:
            store.create_bucket(bucket)
            store.upload_dir(bucket, prefix, str(model))
            env = dict(os.environ, **store.env(), OSSC_CONFIG="")
            # An untimed pass, so no contender pays for the store's first reads after upload.
            subprocess.run(["s5cmd", "--endpoint-url", store.endpoint, "cp",
                            f"s3://{bucket}/{prefix}*", f"{s5}/"], env=env, check=True,
                           capture_output=True)
            want = None
            for r in range(a.rounds):
                order = list(results)
                order = order[r % len(order):] + order[:r % len(order)]
                for tool in order:
                    shutil.rmtree(s5, ignore_errors=True)
                    shutil.rmtree(mdir, ignore_errors=True)
                    shutil.rmtree(session_dir(str(mdir)) if mdir.exists() else
                                  "/nonexistent", ignore_errors=True)
                    if tool == "local":
                        wall, sums = timed([py, "-c", LOADER, str(local)], env)
                    elif tool.startswith("shim"):
                        e = dict(env, LD_PRELOAD=str(preload_library()), ENABLE_CONNECTOR="1",
                                 OSS_PATH=f"s3://{bucket}/{prefix}", MODEL_DIR=str(mdir))
                        cmd = [py, "-c", LOADER, str(mdir)] if tool == "shim" else \
                            [py, "-c", FOUR, LOADER, str(mdir)]
                        wall, sums = timed(cmd, e)
                        shutil.rmtree(session_dir(str(mdir)), ignore_errors=True)
                    else:
                        script = (f"s5cmd --endpoint-url {store.endpoint} cp "
                                  f"'s3://{bucket}/{prefix}*' {s5}/ >/dev/null && "
                                  f"{py} -c '{LOADER}' {s5}")
                        wall, sums = timed(["sh", "-c", script], env)
                    want = want or sums
                    assert sums == want, f"{tool} loaded different tensors"
                    results[tool].append(wall)
                    print(f"round {r + 1}/{a.rounds} {tool:<8} {wall:6.2f} s", flush=True)
    finally:
        for d in (local, s5, mdir):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(session_dir(str(mdir)), ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    med = {t: statistics.median(v) for t, v in results.items()}
    print(f"\nmedian seconds to every tensor loaded ({a.size_gib:g} GiB model)")
    for t, m in med.items():
        print(f"  {t:<8} {m:6.2f} s   {m / med['local']:.2f}x local   "
              f"{m / med['s5cmd']:.2f}x s5cmd+load   {m / med['shim']:.2f}x shim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
