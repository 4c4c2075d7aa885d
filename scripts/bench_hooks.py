#!/usr/bin/env python3
"""Hook overhead: ns per call of stat, open+close and pread on a file OUTSIDE MODEL_DIR, with
and without libossc_preload.so, in interleaved rounds (the shim must cost a prefix compare).

Usage: python3 scripts/bench_hooks.py [--rounds 9] [--calls 200000]
Prints the median ns per call of each, the difference and the ratio; target within 5% or 20 ns.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from ossc.native import preload_library  # noqa: E402

CALLS = ("stat", "open+close", "pread")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=200000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "hookbench"
        src = Path(__file__).with_name("hookbench.c")
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
        target = Path(tmp) / "outside.bin"
        target.write_bytes(b"x" * 4096)
        model_dir = Path(tmp) / "model"  # set, but the file lies outside it
        model_dir.mkdir()
        plain = dict(os.environ, MODEL_DIR=str(model_dir))
        plain.pop("LD_PRELOAD", None)
        shim = dict(plain, LD_PRELOAD=str(preload_library()))
        results = {"plain": [], "shim": []}
        for r in range(a.rounds):
            order = [("plain", plain), ("shim", shim)]
            for name, env in order if r % 2 == 0 else order[::-1]:
                out = subprocess.run([str(exe), str(target), str(a.calls)], env=env,
                                     capture_output=True, text=True, check=True).stdout
                results[name].append([float(x) for x in out.split()])
    print(f"{'call':<12} {'plain ns':>9} {'shim ns':>9} {'diff ns':>8} {'ratio':>6}")
    for i, call in enumerate(CALLS):
        p = statistics.median(x[i] for x in results["plain"])
        s = statistics.median(x[i] for x in results["shim"])
        ok = "ok" if s - p <= max(20.0, 0.05 * p) else "OVER"
        print(f"{call:<12} {p:9.1f} {s:9.1f} {s - p:8.1f} {s / p:6.3f}  {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
