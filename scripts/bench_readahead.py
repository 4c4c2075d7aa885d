#!/usr/bin/env python3
"""Read-ahead benchmark (issue 10): what the connector's read-ahead (python/ossc/readahead.py)
buys a sequential reader when every ranged GET pays a store's first-byte latency.

Starts a local S3 store (SeaweedFS on 127.0.0.1) with one --size-mib object and puts the
fault proxy in front of it, holding every ranged GET --latency-ms before it is answered (as a
store across a network does; the local store answers in about 2 ms). Then, in --rounds
interleaved rounds, a connector reads the object with readinto() of a 16 MiB buffer from
start to end, once with read-ahead and once without (readahead.SEGMENT_MAX = 0). Prints
each round and the median of the same-round speed ratios. A Python proxy carries every
byte, so absolute speeds are the proxy's; the ratio is the figure.

Usage: python3 scripts/bench_readahead.py [--size-mib 512] [--latency-ms 20] [--rounds 4]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tests"))
import oss2  # noqa: E402

import ossc  # noqa: E402
from ossc import readahead  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402
from support.localstore import LocalStore  # noqa: E402

MIB = 1 << 20


def read_all(endpoint, provider, url, size) -> float:
    c = ossc.OssModelConnector(endpoint, cred_provider=provider)
    view = memoryview(bytearray(16 * MIB))
    start, n = time.monotonic(), 0
    with c.open(url) as f:
        while (k := f.readinto(view)):
            n += k
    seconds = time.monotonic() - start
    c.close()
    assert n == size, (n, size)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    os.environ.update(OSSC_CONFIG="", AWS_REGION="us-east-1")
    with tempfile.TemporaryDirectory(prefix="ossc-bench-ra-") as work, \
            LocalStore(str(Path(work) / "store")) as store:
        store.create_bucket("bench-ra")
        store.s3().put_object(Bucket="bench-ra", Key="big.bin",
                              Body=os.urandom(MIB) * a.size_mib)
        proxy = FaultProxy(store.endpoint, signer=store.sign).start()
        proxy.add_fault("stall", key="big.bin", ranged_only=True, seconds=a.latency_ms / 1000,
                        times=None)
        provider = oss2.credentials.StaticCredentialsProvider(store.access_key,
                                                              store.secret_key)
        segment_max, times = readahead.SEGMENT_MAX, {"ahead": [], "none": []}
        try:
            for rnd in range(a.rounds):
                for mode in ("ahead", "none") if rnd % 2 == 0 else ("none", "ahead"):
                    readahead.SEGMENT_MAX = segment_max if mode == "ahead" else 0
                    times[mode].append(read_all(proxy.endpoint, provider,
                                                "s3://bench-ra/big.bin", a.size_mib * MIB))
                print(f"round {rnd + 1}/{a.rounds}: " + "  ".join(
                    f"{m} {a.size_mib * MIB / times[m][-1] / 1e9:.2f} GB/s" for m in times),
                    flush=True)
        finally:
            proxy.stop()
    ratios = [none / ahead for ahead, none in zip(times["ahead"], times["none"])]
    print(f"read-ahead / none, speed: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}), {a.size_mib} MiB, {a.latency_ms:g} ms "
          f"per ranged GET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
