#!/usr/bin/env python3
"""Checkpoint benchmark (issue 13): ossc.torch against s3torchconnector on one local store.

What it does
------------
1. Starts a local S3 store (tests/support/localstore.py, SeaweedFS on 127.0.0.1) in
   --store-dir.
2. Runs --rounds interleaved rounds (the order of the contenders alternates each round) of:
     ckpt-save   torch.save of a state_dict of --size-gib (64 float32 tensors) into
                 OssCheckpoint.writer / S3Checkpoint.writer, until the object is complete
     ckpt-load   torch.load from OssCheckpoint.reader / S3Checkpoint.reader
     dcp-save    torch.distributed.checkpoint.save by 2 processes (gloo on 127.0.0.1), each
                 with half of --size-gib of its own tensors, through OssStorageWriter /
                 S3StorageWriter (thread_count 2 each), until every rank returned
     dcp-load    torch.distributed.checkpoint.load of it by the 2 processes
   Each measurement runs in fresh processes; tensors are made before the clock starts. Time
   is the slowest rank's; CPU is user+sys of every process of the measurement (interpreter,
   imports and tensor making included, the same for both contenders).
3. Checks what was loaded (every tensor's shape, the first and last tensor's values) outside
   the timing.
4. Prints per row: median seconds and GB/s of each, the median of the same-round ratios
   (s3torchconnector time / ossc time: > 1 means ossc is faster) and median CPU seconds.

s3torchconnector (PyPI, AWS CRT core) is installed without its dependencies (it would accept
the installed torch; its real dependencies are torch and s3torchconnectorclient, and tenacity
for its DCP module): pip install --no-deps s3torchconnectorclient==1.5.0
s3torchconnector==1.5.0 tenacity. Both clients use their defaults but path-style addressing
(the local store needs it); ossc's part size and concurrency are its defaults
(upload.partSize, upload.concurrency) unless --ossc-setting says otherwise.

--sweep instead measures the engine's upload defaults: `Client.upload_file` of a --size-gib
file for every upload.partSize x upload.concurrency of --part-sizes and --concurrencies, in
--rounds interleaved rounds (the order rotating), medians of GB/s and CPU seconds.

Usage
-----
  python scripts/bench_torch.py                         # 1 GiB, 3 rounds
  python scripts/bench_torch.py --sweep --size-gib 0.25 --rounds 3
  python scripts/bench_torch.py --size-gib 0.5 --rounds 2 --rows ckpt-save,ckpt-load
Results: bench-results/torch.json (--out-dir).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: the local store
sys.path.append(str(REPO / "python"))  # a checkout's package when none is installed

BUCKET = "ossc-bench-torch"
TENSORS = 64
CONTENDERS = ("ossc", "s3torchconnector")
ROWS = ("ckpt-save", "ckpt-load", "dcp-save", "dcp-load")
REGION = "us-east-1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- one process

def state_dict(size: int, seed: int, prefix: str = "") -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    per = size // TENSORS // 4
    return {f"{prefix}t{i:03d}": torch.randn(per, generator=g) for i in range(TENSORS)}


def check(expected: dict, got: dict) -> None:
    import torch

    assert sorted(got) == sorted(expected), "loaded other tensors"
    for name, tensor in expected.items():
        assert got[name].shape == tensor.shape, name
    names = sorted(expected)
    for name in (names[0], names[-1]):
        assert torch.equal(got[name], expected[name]), f"{name} differs"


def s3t_config():
    from s3torchconnector import S3ClientConfig

    return S3ClientConfig(force_path_style=True)


def worker(args) -> int:
    """One measurement in this process: prints {"seconds": ...}."""
    import torch

    endpoint, uri, size = args.endpoint, args.uri, int(args.size)
    settings = dict(s.split("=", 1) for s in args.ossc_setting)
    rank = int(os.environ.get("RANK", "-1"))
    dcp_row = args.row.startswith("dcp")
    if dcp_row:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank,
                                world_size=2)
        sd = state_dict(size // 2, seed=1 + rank, prefix=f"rank{rank}.")
    else:
        sd = state_dict(size, seed=1)
    if args.row.endswith("load"):
        target = {k: torch.zeros_like(v) for k, v in sd.items()} if dcp_row else None

    # Each imports only what its row uses (torch.distributed.checkpoint alone costs seconds).
    if args.tool == "ossc":
        if dcp_row:
            from ossc.torch import OssDCPFileSystem

            fs = OssDCPFileSystem(endpoint=endpoint, settings=settings)
        else:
            from ossc.torch import OssCheckpoint

            ckpt = OssCheckpoint(endpoint=endpoint, settings=settings)
    else:
        if dcp_row:
            from s3torchconnector._s3client import S3Client
            from s3torchconnector.dcp import S3StorageReader, S3StorageWriter
            from s3torchconnector.dcp.s3_file_system import S3FileSystem

            fs = S3FileSystem(REGION, s3_client=S3Client(REGION, endpoint=endpoint,
                                                         s3client_config=s3t_config()))
        else:
            from s3torchconnector import S3Checkpoint

            ckpt = S3Checkpoint(REGION, endpoint=endpoint, s3client_config=s3t_config())

    if dcp_row:
        import torch.distributed.checkpoint as dcp

        dist.barrier()
    start = time.perf_counter()
    if args.row == "ckpt-save":
        with ckpt.writer(uri) as writer:
            torch.save(sd, writer)
    elif args.row == "ckpt-load":
        with ckpt.reader(uri) as reader:
            loaded = torch.load(reader)
    elif args.row == "dcp-save":
        if args.tool == "ossc":
            writer = fs.writer(uri, thread_count=2)
        else:
            writer = S3StorageWriter(REGION, uri, thread_count=2)
            writer.fs = fs
        dcp.save(sd, storage_writer=writer)
    else:
        if args.tool == "ossc":
            reader = fs.reader(uri)
        else:
            reader = S3StorageReader(REGION, uri)
            reader.fs = fs
        dcp.load(target, storage_reader=reader)
    seconds = time.perf_counter() - start
    if dcp_row:
        dist.barrier()
    if args.row == "ckpt-load":
        check(sd, loaded)
    elif args.row == "dcp-load":
        check(sd, target)
    if dcp_row:
        dist.destroy_process_group()
    print(json.dumps({"seconds": seconds}))
    return 0


# --------------------------------------------------------------------------- the driver

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(tool: str, row: str, uri: str, size: int, endpoint: str, env: dict,
            ossc_settings: list) -> dict:
    """Runs one measurement in fresh processes; time is the slowest rank's, CPU all of them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    ranks = [0, 1] if row.startswith("dcp") else [-1]
    port = str(free_port())
    cmd = [sys.executable, __file__, "--worker", "--tool", tool, "--row", row, "--uri", uri,
           "--size", str(size), "--endpoint", endpoint, "--port", port]
    for s in ossc_settings:
        cmd += ["--ossc-setting", s]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ranks]
    seconds = []
    for p in procs:
        out, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{tool} {row} failed:\n{err[-3000:]}")
        seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": max(seconds), "cpu": cpu}


SWEEP_WORKER = """
import json, os, resource, sys, time
from ossc.native import Client
client = Client(sys.argv[1], {"upload.partSize": sys.argv[3], "upload.concurrency": sys.argv[4]})
start = time.perf_counter()
client.upload_file(client.bucket, "sweep/object", sys.argv[2])
seconds = time.perf_counter() - start
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu": r.ru_utime + r.ru_stime}))
"""


def sweep(args, store, env, size: int) -> dict:
    """upload_file of one file for every part size x concurrency, interleaved rounds."""
    path = Path(tempfile.mkdtemp(prefix="ossc-bench-sweep-")) / "data.bin"
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
    grid = [(p, c) for p in args.part_sizes.split(",") for c in args.concurrencies.split(",")]
    runs = {f"{p}x{c}": [] for p, c in grid}
    try:
        for rnd in range(args.rounds):
            shift = rnd % len(grid)
            for part, conc in grid[shift:] + grid[:shift]:
                out = subprocess.run([sys.executable, "-c", SWEEP_WORKER, f"s3://{BUCKET}/",
                                      str(path), part, conc], env=env, capture_output=True,
                                     text=True, timeout=1800)
                if out.returncode != 0:
                    raise RuntimeError(f"sweep {part} x {conc} failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                runs[f"{part}x{conc}"].append(r)
                log(f"round {rnd} partSize {part:6s} concurrency {conc:3s} "
                    f"{size / r['seconds'] / 1e9:5.2f} GB/s  cpu {r['cpu']:5.2f} s")
    finally:
        path.unlink()
        path.parent.rmdir()
    summary = {k: {"gbps": size / med([r["seconds"] for r in v]) / 1e9,
                   "cpu": med([r["cpu"] for r in v]), "rounds": v} for k, v in runs.items()}
    print(f"{'partSize x concurrency':24s} {'GB/s':>6s} {'cpu s':>6s}")
    for k, v in summary.items():
        print(f"{k:24s} {v['gbps']:6.3f} {v['cpu']:6.2f}")
    return summary


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--store-dir", default=None)
    ap.add_argument("--out-dir", default=str(REPO / "bench-results"))
    ap.add_argument("--ossc-setting", action="append", default=[],
                    help="an engine override for ossc, e.g. upload.partSize=32MiB")
    ap.add_argument("--sweep", action="store_true",
                    help="measure upload.partSize x upload.concurrency instead")
    ap.add_argument("--part-sizes", default="8MiB,16MiB,32MiB")
    ap.add_argument("--concurrencies", default="4,8,16")
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tool", help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--port", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    rows = [r for r in args.rows.split(",") if r]
    size = int(args.size_gib * (1 << 30))
    store_dir = args.store_dir or tempfile.mkdtemp(prefix="ossc-bench-torch-")
    try:
        return run(args, rows, size, store_dir)
    finally:
        if not args.store_dir:  # ours: gigabytes of objects
            shutil.rmtree(store_dir, ignore_errors=True)


def run(args, rows, size: int, store_dir: str) -> int:
    from support.localstore import LocalStore

    results = {"machine": {"cpus": os.cpu_count()}, "args": vars(args), "rows": {}}
    with LocalStore(store_dir) as store:
        store.create_bucket(BUCKET)
        env = {**os.environ, **store.env(), "OSSC_CONFIG": "",
               "PYTHONPATH": os.pathsep.join([str(REPO / "python"),
                                              os.environ.get("PYTHONPATH", "")])}
        if args.sweep:
            results["sweep"] = sweep(args, store, env, size)
            out = Path(args.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "torch-sweep.json").write_text(json.dumps(results, indent=2))
            return 0
        runs = {row: {tool: [] for tool in CONTENDERS} for row in rows}
        for rnd in range(args.rounds):
            order = CONTENDERS if rnd % 2 == 0 else CONTENDERS[::-1]
            for tool in order:
                for row in rows:
                    kind = "dcp" if row.startswith("dcp") else "ckpt"
                    uri = f"s3://{BUCKET}/{tool}/{kind}/round{rnd}" + \
                        ("" if kind == "dcp" else ".pt")
                    if row.endswith("load") and f"{kind}-save" not in rows:
                        measure(tool, f"{kind}-save", uri, size, store.endpoint, env,
                                args.ossc_setting)  # something to load
                    r = measure(tool, row, uri, size, store.endpoint, env, args.ossc_setting)
                    runs[row][tool].append(r)
                    log(f"round {rnd} {row:9s} {tool:16s} {r['seconds']:7.2f} s "
                        f"{size / r['seconds'] / 1e9:5.2f} GB/s  cpu {r['cpu']:6.2f} s")
        for row in rows:
            ossc_runs, s3t_runs = runs[row]["ossc"], runs[row]["s3torchconnector"]
            ratios = [b["seconds"] / a["seconds"] for a, b in zip(ossc_runs, s3t_runs)]
            summary = {
                tool: {"seconds": med([r["seconds"] for r in runs[row][tool]]),
                       "gbps": size / med([r["seconds"] for r in runs[row][tool]]) / 1e9,
                       "cpu": med([r["cpu"] for r in runs[row][tool]])}
                for tool in CONTENDERS}
            summary["ratio_s3t_over_ossc"] = med(ratios)
            summary["rounds"] = runs[row]
            results["rows"][row] = summary
    print(f"{'row':10s} {'ossc GB/s':>10s} {'s3t GB/s':>10s} {'s3t/ossc':>9s} "
          f"{'ossc cpu':>9s} {'s3t cpu':>9s}")
    for row, s in results["rows"].items():
        print(f"{row:10s} {s['ossc']['gbps']:10.3f} {s['s3torchconnector']['gbps']:10.3f} "
              f"{s['ratio_s3t_over_ossc']:9.2f} {s['ossc']['cpu']:9.2f} "
              f"{s['s3torchconnector']['cpu']:9.2f}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "torch.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
