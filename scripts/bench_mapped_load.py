#!/usr/bin/env python3
"""Mapped loads against their fetch: what serving a mapping page by page (userfaultfd,
preload/src/shim/fault.c) gains over mmap waiting for the whole file.

What it does
------------
Writes one safetensors file of --mib MiB (--tensors tensors, the shape of a LoRA adapter's)
to a local S3 store (SeaweedFS on 127.0.0.1, or nginx with --nginx BIN). In --rounds
interleaved rounds (the order rotates), each contender is a fresh process that imports torch
first and is then timed from `safe_open` to the last tensor consumed (--consume: `sum` each
tensor on the CPU, or `cuda`: copy each to the GPU and synchronize):
  local     the local copy (page cache warm): the floor
  served    a lazy mount (env-var mode, a fresh MODEL_DIR, so a fresh fetch): `safe_open`
            maps the file at once and each page is served as its chunk lands
  waiting   the same with OSSC_USERFAULTFD=no: mmap waits until the whole file is in
The owner's start and listing happen before main and are not timed. Prints medians and
same-round ratios (markdown). These machines are shared: compare ratios, not seconds.

Usage
-----
  python3 scripts/bench_mapped_load.py                          # 96 MiB, SeaweedFS, CPU
  python3 scripts/bench_mapped_load.py --nginx /usr/sbin/nginx --rounds 15
  python3 scripts/bench_mapped_load.py --nginx NGINX --consume cuda   # a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests"))
from ossc.native import preload_library  # noqa: E402
from support.localstore import LocalStore  # noqa: E402
from support.nginxstore import NginxStore  # noqa: E402
from support.session_helpers import wait_session_gone  # noqa: E402

BUCKET = "ossc-mapped-bench"
NAME = "adapter/adapter_model.safetensors"
LOADER = textwrap.dedent("""
    import json, os, sys, time
    import torch
    from safetensors import safe_open
    path, consume = sys.argv[1], sys.argv[2]
    if consume == "cuda":
        torch.cuda.init(); torch.zeros(1, device="cuda")
    t0 = time.perf_counter()
    total = 0.0
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            if consume == "cuda":
                t.to("cuda", non_blocking=False)
            else:
                total += float(t.float().sum())
    if consume == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"s": time.perf_counter() - t0, "sum": total}))
""")


def make_file(path: Path, mib: int, tensors: int) -> None:
    import torch
    from safetensors.torch import save_file
    per = mib * (1 << 20) // tensors // 2  # bf16
    rows = max(1, per // 1024)
    g = torch.Generator().manual_seed(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"layer.{i:03d}.lora_A.weight": torch.randn(rows, 1024, generator=g)
               .to(torch.bfloat16) for i in range(tensors)}, str(path))


def run_loader(path: str, consume: str, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", LOADER, path, consume], env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"loader failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=96)
    ap.add_argument("--tensors", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--consume", choices=["sum", "cuda"], default="sum")
    ap.add_argument("--nginx", help="serve the file with this nginx binary, not SeaweedFS")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ossc-mapped-bench-", dir="/dev/shm"))
    os.chmod(work, 0o755)  # nginx's workers pass through
    try:
        with contextlib.ExitStack() as stack:
            src = work / "src"
            make_file(src / NAME, a.mib, a.tensors)
            store = stack.enter_context(
                NginxStore(a.nginx, str(work / "nginx")) if a.nginx
                else LocalStore(str(work / "seaweed")))
            store.create_bucket(BUCKET)
            store.upload_dir(BUCKET, "m/", str(src))
            base = {**os.environ, **store.env(), "OSSC_CONFIG": "", "ENABLE_CONNECTOR": "1",
                    "OSS_PATH": f"s3://{BUCKET}/m/", "OSSC_PREFETCH_POLICY": "lazy",
                    "OSSC_EXPIRE_TIME_SEC": "0", "OSSC_ADDRESSING": "path",
                    "LD_PRELOAD": str(preload_library())}
            local_env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            run_loader(str(src / NAME), a.consume, local_env)  # warm imports and page cache
            contenders = ["local", "served", "waiting"]
            rounds = []
            for r in range(a.rounds):
                times = {}
                for c in contenders[r % 3:] + contenders[:r % 3]:
                    if c == "local":
                        times[c] = run_loader(str(src / NAME), a.consume, local_env)
                        continue
                    model = work / f"mnt-{r}-{c}"
                    env = {**base, "MODEL_DIR": str(model),
                           "OSSC_USERFAULTFD": "yes" if c == "served" else "no"}
                    times[c] = run_loader(str(model / NAME), a.consume, env)
                for c in ("served", "waiting"):  # their owners end 2 s after the loader
                    wait_session_gone(work / f"mnt-{r}-{c}", timeout=30)
                rounds.append(times)
                print(f"round {r + 1}/{a.rounds}: " + "  ".join(
                    f"{c} {times[c] * 1e3:.0f} ms" for c in contenders), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(x, y):
        return statistics.median(t[x] / t[y] for t in rounds)
    print(f"\n### Mapped load of one {a.mib} MiB safetensors file ({a.rounds} rounds, "
          f"{'nginx' if a.nginx else 'SeaweedFS'}, consume={a.consume})\n")
    print("| contender | median ms | vs local | vs waiting |\n|---|---|---|---|")
    for c in ["local", "served", "waiting"]:
        print(f"| {c} | {statistics.median(t[c] for t in rounds) * 1e3:.0f} | "
              f"{ratio(c, 'local'):.2f}x | {ratio(c, 'waiting'):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
