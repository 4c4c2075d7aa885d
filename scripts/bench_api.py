#!/usr/bin/env python3
"""Python API benchmark (issue 10): ossc.OssModelConnector's listing and reading.

What it does
------------
1. Starts a local S3 store (tests/support/localstore.py, SeaweedFS on 127.0.0.1) in
   --store-dir, creates --keys empty objects (64 PUTs at a time; kept with --keep-store) and
   uploads a deterministic safetensors model of --size-gib (tests/support/synth_model.py).
2. Listing, --rounds interleaved rounds, the order rotating each round:
     ossc-fast    connector.list(bucket, prefix, fast=True)   (ossc_list_fast, threads in C)
     ossc         connector.list(bucket, prefix)               (ListObjectsV2 pages in turn)
     boto3        list_objects_v2 paginator
     oss2         oss2.ObjectIteratorV2 (oss2 signs for OSS; here a SigV4 Auth stands in
                  for it, which the local store needs, and the page is made to look like OSS's
                  before oss2 parses it: the requests, iteration and parsing are oss2's)
   Each must return exactly the --keys keys. The store's own page limit (1,000 keys, and
   SeaweedFS's listing speed) is what the sequential contenders pay for each page. Then the
   same again through a proxy that delays every reply --latency-ms (30), as a store across
   a network does: on this 2-core machine the local store is CPU-bound and shares the cores,
   so listing ranges at once cannot beat one page after another there.
3. Reading, --rounds interleaved rounds, each a fresh process (interpreter start included for
   both, as a model server would pay neither twice):
     get          `ossc get s3://B/P/ /dev/shm/...`   (the CLI: parallel ranged GETs to tmpfs)
     connector    open() every object of the model in turn, readinto() a 16 MiB buffer to
                  the end of each (the prefetch of the next object starts in open order;
                  readinto of ranges it has not reached goes straight into the buffer)
   The ratio get-time / connector-time of the same round is the figure (target >= 0.9). The
   CPU seconds each process used (user + system) are recorded too: on a machine shared with
   other work they vary less than the wall times.
   The connector's bytes are checked against the manifest's sha256 in an untimed pass first.
   --baseline-python DIR adds a third contender to every round: the same reader over the
   package in DIR (e.g. `git archive COMMIT python preload/include | tar -x -C DIR/..`, an
   older commit's), over the same library; its ratio to `ossc get` is reported beside.

Usage
-----
  python scripts/bench_api.py                          # 100,000 keys, 4 GiB model, 3 rounds
  python scripts/bench_api.py --keys 20000 --size-gib 0.25 --rounds 2
Results: bench-results/api.json (--out-dir).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: model, local store
sys.path.append(str(REPO / "python"))  # a checkout's package when none is installed

BUCKET = "ossc-bench-api"
LIST_PREFIX = "list/"
MODEL_PREFIX = "model"
READ_BUFFER = 16 << 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- listing

def list_keys(n: int) -> list:
    """Names as tools write them: numbered shards in a few directories."""
    return [f"{LIST_PREFIX}d{i % 10}/part-{i:07d}.bin" for i in range(n)]


def ensure_keys(ls, n: int) -> None:
    """The keys, created 32 PUTs at a time; those already there (a kept store, a run that
    stopped half way) are not sent again."""
    s3 = ls.s3()
    have = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=LIST_PREFIX):
        have.update(o["Key"] for o in page.get("Contents", []))
    missing = [k for k in list_keys(n) if k not in have]
    if not missing:
        log(f"{n} keys already in the store")
        return
    log(f"creating {len(missing)} of {n} keys (32 PUTs at a time) ...")
    t0 = time.time()

    def put(key):
        for attempt in range(5):  # SeaweedFS stalls now and then on a busy 2-core machine
            try:
                return s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, missing))
    log(f"  created in {time.time() - t0:.0f}s")


class SigV4ForOss2:
    """An oss2 auth object that signs with AWS SigV4 (the local store speaks S3 only)."""

    def __init__(self, ls):
        self.ls = ls

    def _sign_request(self, req, bucket_name, key):
        from support.localstore import canonical_query, sigv4_headers

        parts = urlsplit(req.url)
        query = {k: ("" if v is None else str(v)) for k, v in (req.params or {}).items()}
        req.headers.update(sigv4_headers(req.method, parts.netloc, parts.path, query=query,
                                         access_key=self.ls.access_key,
                                         secret_key=self.ls.secret_key))
        if query:
            req.url = f"{req.url}?{canonical_query(query)}"
        req.params = {}


def _oss2_reads_s3_xml() -> None:
    """oss2 looks for OSS's tags without a namespace, for LastModified with milliseconds and
    for each object's Type; S3 replies declare a namespace, SeaweedFS writes whole seconds and
    S3 has no Type. The bench makes each page look like OSS's before oss2 parses it."""
    import re
    import xml.etree.ElementTree as ET

    import oss2.xml_utils

    class NoNamespace:
        def __getattr__(self, name):
            return getattr(ET, name)

        @staticmethod
        def fromstring(body):
            body = re.sub(rb' xmlns="[^"]*"', b"", body, count=1)
            # OSS writes LastModified with milliseconds, and oss2 insists on them
            body = re.sub(rb"(<LastModified>[0-9T:-]+)Z<", rb"\1.000Z<", body)
            if b"<Type>" not in body:  # OSS says Normal, Multipart or Appendable
                body = body.replace(b"</Contents>", b"<Type>Normal</Type></Contents>")
            return ET.fromstring(body)

    oss2.xml_utils.ElementTree = NoNamespace()


def bench_list(ls, connector, n: int, rounds: int, endpoint: str) -> dict:
    import boto3
    import oss2
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ls.access_key,
                      aws_secret_access_key=ls.secret_key, region_name=ls.env()["AWS_REGION"],
                      config=Config(s3={"addressing_style": "path"}))

    def ossc_fast():
        return [o.key for o in connector.list(f"s3://{BUCKET}", LIST_PREFIX, fast=True)]

    def ossc_normal():
        return [o.key for o in connector.list(f"s3://{BUCKET}", LIST_PREFIX)]

    def boto3_paginator():
        return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=LIST_PREFIX) for o in page.get("Contents", [])]

    bucket = oss2.Bucket(SigV4ForOss2(ls), endpoint, BUCKET, is_path_style=True)
    _oss2_reads_s3_xml()

    def oss2_iterator():
        return [o.key for o in oss2.ObjectIteratorV2(bucket, prefix=LIST_PREFIX, max_keys=1000)]

    tools = {"ossc-fast": ossc_fast, "ossc": ossc_normal, "boto3": boto3_paginator,
             "oss2": oss2_iterator}
    want = set(list_keys(n))
    times = {t: [] for t in tools}
    for r in range(rounds):
        names = list(tools)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            t0 = time.perf_counter()
            keys = tools[name]()
            dt = time.perf_counter() - t0
            ok = len(keys) == n and set(keys) == want
            log(f"  list round {r + 1} {name:<10} {dt:7.2f}s  {len(keys)} keys"
                f"{'' if ok else '  WRONG SET'}")
            if ok:
                times[name].append(dt)
    out = {t: {"seconds": med(v), "runs": v, "keys_per_s": n / med(v) if v else 0}
           for t, v in times.items()}
    for t in tools:
        out[t]["fast_speedup"] = med(times[t]) / med(times["ossc-fast"])
    return out


# --------------------------------------------------------------------------- reading

READER = r"""
import hashlib, json, os, sys, time
import ossc
endpoint, ak, sk, uri_prefix, keys, verify = sys.argv[1:7]
keys = json.loads(keys)
t0 = time.perf_counter()


class Provider:  # as oss2's StaticCredentialsProvider, without importing oss2 (~0.3 s)
    def get_credentials(self):
        return self

    def get_access_key_id(self):
        return ak

    def get_access_key_secret(self):
        return sk

    def get_security_token(self):
        return ""


if os.environ.get("BENCH_PREFETCH_STREAMS"):  # to try other values
    ossc.connector.PREFETCH_STREAMS = int(os.environ["BENCH_PREFETCH_STREAMS"])
c = ossc.OssModelConnector(endpoint, cred_provider=Provider())
buf = bytearray(%d)
view = memoryview(buf)
total, sums = 0, {}
streams = [c.open(uri_prefix + k) for k in keys]   # prefetch starts in open order
for k, f in zip(keys, streams):
    h = hashlib.sha256() if verify == "1" else None
    while True:
        n = f.readinto(view)
        if not n:
            break
        total += n
        if h:
            h.update(view[:n])
    f.close()
    if h:
        sums[k] = h.hexdigest()
c.close()
print(json.dumps({"bytes": total, "seconds": time.perf_counter() - t0, "sha256": sums}))
""" % READ_BUFFER


def run_timed(cmd, env) -> tuple:
    """(wall seconds, stdout, CPU seconds of the child)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"{cmd[:3]} failed ({r.returncode}): {r.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, r.stdout, cpu


def bench_read(ls, man: dict, rounds: int, env: dict, baseline: str = "") -> dict:
    files = sorted(man["files"])
    keys = [f"{MODEL_PREFIX}/{f}" for f in files]
    total = sum(m["size"] for m in man["files"].values())
    reader = [sys.executable, "-c", READER, ls.endpoint, ls.access_key, ls.secret_key,
              f"s3://{BUCKET}/", json.dumps(keys)]
    log("verifying the connector's bytes (untimed) ...")
    _, out, _ = run_timed(reader + ["1"], env)
    got = json.loads(out)
    bad = [f for f, k in zip(files, keys) if got["sha256"].get(k) != man["files"][f]["sha256"]]
    if bad or got["bytes"] != total:
        raise SystemExit(f"connector read wrong bytes: {bad or got['bytes']}")
    target = Path(tempfile.mkdtemp(prefix="ossc-bench-api-", dir="/dev/shm"))
    names = ["get", "connector"] + (["baseline"] if baseline else [])
    # the baseline: the same reader over another copy of the package (an older commit's)
    base_env = dict(env, PYTHONPATH=os.pathsep.join(
        [baseline] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    ratios, base_ratios = [], []
    try:
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            this = {}
            for name in order:
                shutil.rmtree(target / "out", ignore_errors=True)
                if name == "get":
                    wall, _, cpu = run_timed([sys.executable, "-m", "ossc", "get",
                                              f"s3://{BUCKET}/{MODEL_PREFIX}/",
                                              str(target / "out")], env)
                    inside = ""
                else:
                    wall, out, cpu = run_timed(reader + ["0"],
                                               base_env if name == "baseline" else env)
                    inside = f"  ({json.loads(out)['seconds']:.2f}s after imports)"
                this[name] = wall
                times[name].append(wall)
                cpus[name].append(cpu)
                log(f"  read round {r + 1} {name:<10} {wall:7.2f}s  "
                    f"{total / wall / 1e9:.2f} GB/s  {cpu:.2f} CPU s{inside}")
            ratios.append(this["get"] / this["connector"])
            if baseline:
                base_ratios.append(this["get"] / this["baseline"])
    finally:
        shutil.rmtree(target, ignore_errors=True)
    extra = {}
    if baseline:
        extra = {"baseline": {"python": baseline, "seconds": med(times["baseline"]),
                              "runs": times["baseline"], "cpu_seconds": med(cpus["baseline"]),
                              "cpu_runs": cpus["baseline"]},
                 "ratio_get_over_baseline": {"median": med(base_ratios), "runs": base_ratios}}
    return {**extra, "bytes": total, "files": len(files),
            "get": {"seconds": med(times["get"]), "runs": times["get"],
                    "GBps": total / med(times["get"]) / 1e9,
                    "cpu_seconds": med(cpus["get"]), "cpu_runs": cpus["get"]},
            "connector": {"seconds": med(times["connector"]), "runs": times["connector"],
                          "GBps": total / med(times["connector"]) / 1e9,
                          "cpu_seconds": med(cpus["connector"]), "cpu_runs": cpus["connector"]},
            "ratio_get_over_connector": {"median": med(ratios), "runs": ratios}}


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--size-gib", type=float, default=4.0, help="the model (issue 10 names 4 GiB)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", choices=["list", "read"], action="append", default=[])
    p.add_argument("--latency-ms", type=float, default=30.0, help="list again through a proxy "
                   "that delays every reply this long, as a store across a network would "
                   "(0: not)")
    p.add_argument("--store-dir", default=os.path.expanduser("~/.cache/ossc-bench-api/store"))
    p.add_argument("--model-dir", default=os.path.expanduser("~/.cache/ossc-bench"))
    p.add_argument("--keep-store", action="store_true", help="leave the store's data for the "
                   "next run (100,000 PUTs take minutes)")
    p.add_argument("--out-dir", default="bench-results")
    p.add_argument("--baseline-python", default="", help="also read with the package in this "
                   "directory (e.g. an older commit's python/ from git archive), same rounds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from support.localstore import LocalStore
    from support.synth_model import ensure_model

    import ossc

    Path(args.store_dir).mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count()}, "args": vars(args)}
    try:
        with LocalStore(args.store_dir, access_key="osscbench",
                        secret_key="osscbench-secret") as ls:
            try:
                ls.create_bucket(BUCKET)
            except Exception:
                pass  # there from a kept store
            env = dict(os.environ, **ls.env(), OSSC_CONFIG="", OSSC_LOG_LEVEL="warn")
            os.environ.update(OSSC_CONFIG="", AWS_REGION=ls.env()["AWS_REGION"])
            provider = __import__("oss2").credentials.StaticCredentialsProvider(
                ls.access_key, ls.secret_key)
            if "list" not in args.skip:
                ensure_keys(ls, args.keys)
                with ossc.OssModelConnector(ls.endpoint, cred_provider=provider) as c:
                    results["list"] = bench_list(ls, c, args.keys, args.rounds, ls.endpoint)
                if args.latency_ms:
                    from support.faultproxy import FaultProxy

                    # A store farther away: every request waits latency-ms before its reply
                    # (the proxy forwards Host unchanged, so signatures hold).
                    proxy = FaultProxy(ls.endpoint, signer=ls.sign).start()
                    proxy.add_fault("stall", times=None, seconds=args.latency_ms / 1000)
                    try:
                        log(f"listing through a proxy adding {args.latency_ms} ms per request")
                        with ossc.OssModelConnector(proxy.endpoint, cred_provider=provider) as c:
                            results["list_latency"] = bench_list(ls, c, args.keys, args.rounds,
                                                                 proxy.endpoint)
                    finally:
                        proxy.stop()
            if "read" not in args.skip:
                mdir, man = ensure_model(Path(args.model_dir), args.size_gib)
                have = {}
                for page in ls.s3().get_paginator("list_objects_v2").paginate(
                        Bucket=BUCKET, Prefix=MODEL_PREFIX + "/"):
                    have.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
                if any(have.get(f"{MODEL_PREFIX}/{f}") != m["size"]
                       for f, m in man["files"].items()):
                    log("uploading the model ...")
                    ls.upload_dir(BUCKET, MODEL_PREFIX + "/", str(mdir))
                results["read"] = bench_read(ls, man, args.rounds, env, args.baseline_python)
    finally:
        if not args.keep_store:
            shutil.rmtree(args.store_dir, ignore_errors=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps(results, indent=2) + "\n")
    for part, what in (("list", ""), ("list_latency", f", {args.latency_ms:g} ms per request")):
        if part not in results:
            continue
        print(f"listing {args.keys} keys (median of {args.rounds}{what}):")
        for t, v in results[part].items():
            print(f"  {t:<10} {v['seconds']:7.2f}s  {v['keys_per_s']:9.0f} keys/s  "
                  f"ossc-fast takes {1 / v['fast_speedup']:.2f}x its time")
    if "read" in results:
        r = results["read"]
        print(f"reading {r['bytes'] / 2**30:.2f} GiB in {r['files']} files (median of "
              f"{args.rounds}):")
        for name, label in (("get", "ossc get"), ("connector", "connector")):
            print(f"  {label:<10} {r[name]['seconds']:7.2f}s  {r[name]['GBps']:.2f} GB/s  "
                  f"{r[name]['cpu_seconds']:.2f} CPU s")
        print(f"  connector / get speed: {r['ratio_get_over_connector']['median']:.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}' for x in r['ratio_get_over_connector']['runs'])};"
              f" target >= 0.9)")
        if "baseline" in r:
            b = r["ratio_get_over_baseline"]
            print(f"  baseline   {r['baseline']['seconds']:7.2f}s  "
                  f"{r['baseline']['cpu_seconds']:.2f} CPU s; baseline / get speed: "
                  f"{b['median']:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in b['runs'])})")
    print(f"results: {out / 'api.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
