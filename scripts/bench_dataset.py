#!/usr/bin/env python3
"""Dataset read throughput (issue 13): ossc.torch against s3torchconnector on the same store.

What it does
------------
1. Starts a local S3 store (tests/support/localstore.py, SeaweedFS on 127.0.0.1) and uploads
   two data sets of random bytes: --small-count objects of 100 KiB and --large-count of 4 MiB.
2. For each data set, --rounds interleaved rounds (the order rotating each round), each
   contender in a fresh process that builds its dataset (the listing, timed apart) and reads
   one epoch through torch.utils.data.DataLoader (--workers worker processes, batch
   --batch-size; the transform reads every byte of the item and returns its length):
     ossc-map    ossc.torch.OssMapDataset.from_prefix          (a batch fetched at once)
     ossc-iter   ossc.torch.OssIterableDataset.from_prefix     (next batch in flight)
     s3-map      s3torchconnector.S3MapDataset.from_prefix     (S3ClientConfig(
     s3-iter     s3torchconnector.S3IterableDataset.from_prefix  force_path_style=True))
   Every epoch must return every object once with its size (checked in the child).
3. Reports per contender the median objects/s and MB/s of the epoch (1e6 bytes / wall s), the
   median client CPU seconds of the epoch (user + sys of the child and its DataLoader
   workers: getrusage SELF + CHILDREN around it; interpreter start and imports left out), and
   the same-round ratios ossc / s3torchconnector (throughput, and CPU).

s3torchconnector is not a dependency of ossc: `pip install --no-deps s3torchconnector==1.5.0
s3torchconnectorclient==1.5.0` (its only requirement besides its client is torch, which must
stay the installed one). Without it only the ossc contenders run.

Usage
-----
  python scripts/bench_dataset.py                           # 2000 x 100 KiB, 100 x 4 MiB
  python scripts/bench_dataset.py --small-count 500 --large-count 32 --rounds 3
Results: bench-results/dataset.json (--out-dir).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: the local store
sys.path.append(str(REPO / "python"))  # a checkout's package when none is installed

BUCKET = "ossc-bench-dataset"
SETS = {"100KiB": 100 << 10, "4MiB": 4 << 20}
CONTENDERS = ["ossc-map", "ossc-iter", "s3-map", "s3-iter"]


def log(msg: str) -> None:
    print(f"bench_dataset: {msg}", file=sys.stderr, flush=True)


# --- the child: one epoch of one contender ---------------------------------------------------


def item_length(item) -> int:
    return len(item.read())


def as_list(batch):
    return batch


def run_one(args) -> None:
    import torch.utils.data

    uri = f"s3://{BUCKET}/{args.prefix}"
    if args.contender.startswith("ossc"):
        from ossc.torch import OssIterableDataset, OssMapDataset

        cls = OssMapDataset if args.contender == "ossc-map" else OssIterableDataset
        start = time.monotonic()
        dataset = cls.from_prefix(uri, endpoint=args.endpoint, cred_path=args.cred_path,
                                  transform=item_length, region="us-east-1")
    else:
        from s3torchconnector import S3ClientConfig, S3IterableDataset, S3MapDataset

        cls = S3MapDataset if args.contender == "s3-map" else S3IterableDataset
        config = S3ClientConfig(force_path_style=True)
        more = {} if cls is S3MapDataset else {"enable_sharding": True}  # one share a worker
        start = time.monotonic()
        dataset = cls.from_prefix(uri, region="us-east-1", endpoint=args.endpoint,
                                  transform=item_length, s3client_config=config, **more)
        if cls is S3MapDataset:
            len(dataset)  # s3torchconnector lists on first use: count it as listing
    listed = time.monotonic()
    cpu_before = cpu_seconds()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                         num_workers=args.workers, collate_fn=as_list)
    sizes = [n for batch in loader for n in batch]
    end = time.monotonic()
    cpu = cpu_seconds() - cpu_before  # the workers are joined once the epoch ends
    if len(sizes) != args.count or any(n != args.size for n in sizes):
        raise SystemExit(f"{args.contender}: {len(sizes)} items (expected {args.count}), "
                         f"sizes {sorted(set(sizes))[:5]}")
    print(json.dumps({"list_s": listed - start, "epoch_s": end - listed, "cpu_s": cpu,
                      "bytes": sum(sizes), "objects": len(sizes)}))


def cpu_seconds() -> float:
    """User + system CPU of this process and its joined children (DataLoader workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# --- the parent -----------------------------------------------------------------------------


def upload(store, prefix: str, count: int, size: int) -> None:
    s3 = store.s3()
    blob = os.urandom(size)

    def put(i: int) -> None:  # distinct bytes per object: the index at the front
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:06d}.bin",
                      Body=i.to_bytes(8, "little") + blob[8:])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


def child(contender: str, prefix: str, count: int, size: int, args, env) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", contender, "--prefix", prefix,
                        "--count", str(count), "--size", str(size), "--endpoint",
                        args.endpoint, "--cred-path", args.cred_path, "--workers",
                        str(args.workers), "--batch-size", str(args.batch_size)],
                       env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{contender} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small-count", type=int, default=2000)
    p.add_argument("--large-count", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--store-dir", default="")
    p.add_argument("--out-dir", default=str(REPO / "bench-results"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--cred-path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.contender = args.one
        run_one(args)
        return 0

    from support.localstore import REGION, LocalStore

    contenders = list(CONTENDERS)
    if importlib.util.find_spec("s3torchconnector") is None:
        log("s3torchconnector is not installed: only ossc runs (see the docstring)")
        contenders = [c for c in contenders if c.startswith("ossc")]
    own_dir = not args.store_dir
    store_dir = args.store_dir or tempfile.mkdtemp(prefix="ossc-bench-dataset-")
    results = {"setup": {"workers": args.workers, "batch_size": args.batch_size,
                         "rounds": args.rounds, "cpus": os.cpu_count()}, "sets": {}}
    try:
        with LocalStore(os.path.join(store_dir, "store")) as store:
            store.create_bucket(BUCKET)
            args.endpoint = store.endpoint
            args.cred_path = os.path.join(store_dir, "credentials.json")
            with open(args.cred_path, "w") as f:
                json.dump({"AccessKeyId": store.access_key,
                           "AccessKeySecret": store.secret_key}, f)
            env = {**os.environ, **store.env(), "OSSC_CONFIG": "", "AWS_REGION": REGION,
                   "PYTHONPATH": os.pathsep.join([str(REPO / "python"),
                                                  os.environ.get("PYTHONPATH", "")])}
            counts = {"100KiB": args.small_count, "4MiB": args.large_count}
            for name, size in SETS.items():
                prefix = f"{name}/"
                log(f"uploading {counts[name]} x {name}")
                upload(store, prefix, counts[name], size)
                runs = {c: [] for c in contenders}
                for rnd in range(args.rounds):
                    order = contenders[rnd % len(contenders):] + \
                        contenders[:rnd % len(contenders)]
                    for c in order:
                        runs[c].append(child(c, prefix, counts[name], size, args, env))
                        r = runs[c][-1]
                        log(f"{name} round {rnd + 1} {c}: {r['objects'] / r['epoch_s']:.0f} "
                            f"obj/s, {r['bytes'] / r['epoch_s'] / 1e6:.0f} MB/s, "
                            f"cpu {r['cpu_s']:.1f} s, list {r['list_s']:.2f} s")
                results["sets"][name] = summarize(runs, args.rounds)
    finally:
        if own_dir:
            shutil.rmtree(store_dir, ignore_errors=True)  # ours: made by mkdtemp above
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "dataset.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)
    return 0


def summarize(runs: dict, rounds: int) -> dict:
    out = {}
    for c, rs in runs.items():
        out[c] = {"objects_per_s": statistics.median(r["objects"] / r["epoch_s"] for r in rs),
                  "mb_per_s": statistics.median(r["bytes"] / r["epoch_s"] / 1e6 for r in rs),
                  "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                  "list_s": statistics.median(r["list_s"] for r in rs)}
    for kind in ("map", "iter"):
        ours, theirs = runs.get(f"ossc-{kind}"), runs.get(f"s3-{kind}")
        if ours and theirs:
            out[f"ratio-{kind}"] = {
                "throughput": statistics.median(t["epoch_s"] / o["epoch_s"]
                                                for o, t in zip(ours, theirs)),
                "cpu": statistics.median(o["cpu_s"] / t["cpu_s"] for o, t in zip(ours, theirs))}
    return out


def print_table(results: dict) -> None:
    s = results["setup"]
    print(f"DataLoader: {s['workers']} workers, batch {s['batch_size']}, {s['rounds']} rounds, "
          f"{s['cpus']} CPUs; medians")
    print(f"{'set':<8} {'contender':<10} {'obj/s':>9} {'MB/s':>8} {'cpu s':>7} {'list s':>7}")
    for name, res in results["sets"].items():
        for c, r in res.items():
            if c.startswith("ratio"):
                print(f"{name:<8} {c:<10} throughput x{r['throughput']:.2f} (ossc / s3, same "
                      f"round), cpu x{r['cpu']:.2f}")
            else:
                print(f"{name:<8} {c:<10} {r['objects_per_s']:>9.0f} {r['mb_per_s']:>8.0f} "
                      f"{r['cpu_s']:>7.1f} {r['list_s']:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
