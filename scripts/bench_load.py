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

With --device cuda (a GPU machine) every loader makes its CUDA context first, as a framework
does before it loads weights, then loads every shard to the GPU; it prints when the context
was ready, so the copy phase (context ready to every tensor on the GPU) is reported beside
spawn-to-loaded. The GPU contenders:
  local, shim   as above, `load_file(shard, device="cuda")`
  shim-pin      the same with OSSC_PIN_GPU=yes: safetensors maps privately, which the shim
                leaves alone (the evidence that the setting costs it nothing)
  local-mmap, shim-pin-mmap
                a loader that maps each shard shared and read-only (as llama.cpp and
                numpy.memmap do) and copies each tensor's view to cuda: from the local copy
                (pageable), and through the shim with OSSC_PIN_GPU=yes (registered: pinned)
  shim-warm, shim-pin-mmap-warm
                shim and shim-pin-mmap once the session is complete (an untimed reader went
                first): the copy phase alone, without the download behind it
  shim-done     shim once the session is complete, its pages never read (an untimed process
                mapped each file whole, which waits for it, and touched nothing)
  local-shim, cache-direct
                where a copy phase through the shim loses time, after the same untimed
                process: the local copy loaded with the shim in the process, and the session's
                data files loaded without it
  runai         Run:ai Model Streamer from the local copy, each tensor then .to("cuda")
                (vLLM's use of it)
  runai-s3      the same streaming every shard from the store (s3://; needs the streamer's
                s3 package and boto3)
--variant NAME:VAR=VALUE,... adds shim-NAME (CPU or cuda): shim with that environment, in the
same rounds, e.g. another build's shim (LD_PRELOAD=/old/build/libossc_preload.so; its
ossc-owner is the one next to it), a setting (OSSC_PREFETCH_VCPUS=8), or, with --device cuda,
BENCH_DELAY_S=4: the loader waits that long between its CUDA context and its first shard (the
copy phase then starts long after the prefetch ended).
--endpoint URL uses a running store that serves the model of --model-dir (e.g. nginx,
../shared/reference/nginx-s3-store.sh) instead of starting SeaweedFS.
Each loader sums every tensor, so every byte is really read; the sums must equal those of an
untimed load of the local copy. Before that, one untimed curl pass warms the store. Ratios are
medians of same-round ratios; CPU-s is user+sys of the contender's processes (wait4 rusage),
plus, for the shim, that of the detached ossc-owner, read from /proc until SIGTERM has ended it
after each run (else it would outlive the run by expireTimeSec, holding the session's memory).
With --device cuda the report also gives, per contender, the median change per run of the
machine's direct compaction stalls, migrated pages and collapsed huge pages (/proc/vmstat).
The shim is the build ossc.native finds (OSSC_LIBRARY, else python/ossc/, else build/).

Usage: python3 scripts/bench_load.py [--size-gib 4] [--rounds 3] [--tools shim,curl-shm]
                                     [--old-build DIR] [--device cuda] [--endpoint URL ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
    Bench, Run, Store, _cleanup_children, _f, _on_sigterm, med, parse_variants, parse_worker,
    run_child, settle, tail)
from support.synth_model import ensure_model  # noqa: E402

from support.localstore import LocalStore  # noqa: E402
from ossc.native import preload_library, session_dir, sessions  # noqa: E402

ALL_TOOLS = ["local", "shim", "shim-x4", "local-x4", "shim-inproc", "shim-inproc-x4", "s5cmd",
             "runai", "curl-shm"]
GPU_TOOLS = ["local", "shim", "shim-pin", "shim-warm", "shim-done", "local-shim", "cache-direct",
             "local-mmap", "shim-pin-mmap", "shim-pin-mmap-warm", "runai", "runai-s3"]
WARM = ("shim-warm", "shim-pin-mmap-warm")  # an untimed reader completes the session first
DONE = ("shim-done", "local-shim", "cache-direct")  # ... maps every file, reads no page
OLD = ("shim-inproc", "shim-inproc-x4")  # these need --old-build
RUNAI_ENV = {"RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0"}  # SeaweedFS: path-style URLs
# Machine-wide kernel counters a run moves (/proc/vmstat): direct compaction stalls and
# migrated pages say whether making the cache's huge pages slowed the application's start-up.
VMSTAT = ("compact_stall", "pgmigrate_success", "thp_collapse_alloc")
TARGETS = [("shim", "curl-shm", 1.1), ("shim-x4", "shim", 1.2),  # (tool, reference, at most)
           ("shim", "shim-inproc", 1.0), ("shim-x4", "shim-inproc-x4", 1.0)]
# To cuda (issue 14): the shim as fast as a local copy; pinned copies >= 3x faster (copy phase).
GPU_TARGETS = [("shim", "local", 1.0, "wall"), ("shim-pin-mmap-warm", "local-mmap", 1 / 3, "copy"),
               ("shim-pin-mmap-warm", "local", 1 / 3, "copy")]

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


GPU_LOADER = """
import json, os, sys, time, torch
from safetensors.torch import load_file
torch.zeros(1, device="cuda")  # the context first, as a framework makes it before its weights
torch.cuda.synchronize()
time.sleep(float(os.environ.get("BENCH_DELAY_S", "0")))  # e.g. a --variant that starts late
ready = time.time()
root = sys.argv[1]
shards = sorted(f for f in os.listdir(root) if f.endswith(".safetensors"))
tensors = {}
for shard in shards:
    tensors.update(load_file(os.path.join(root, shard), device="cuda"))
torch.cuda.synchronize()
loaded = time.time()
sums = {name: t.float().sum().item() for name, t in tensors.items()}
print(json.dumps({"sums": sums, "ready": ready, "loaded": loaded}))
"""

GPU_MMAP_LOADER = """
import json, mmap, os, struct, sys, time, warnings, torch
warnings.filterwarnings("ignore")  # frombuffer of a read-only mapping: never written here
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
ready = time.time()
DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
root = sys.argv[1]
tensors, maps = {}, []
for shard in sorted(f for f in os.listdir(root) if f.endswith(".safetensors")):
    with open(os.path.join(root, shard), "rb") as f:  # shared and read-only, as llama.cpp maps
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    n = struct.unpack("<Q", m[:8])[0]
    header, base = json.loads(m[8:8 + n]), 8 + n
    buf = torch.frombuffer(m, dtype=torch.uint8)
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            view = buf[base + a:base + b].view(DTYPES[info["dtype"]]).reshape(info["shape"])
            tensors[name] = view.to("cuda")
    maps.append((m, buf))
torch.cuda.synchronize()
loaded = time.time()
sums = {name: t.float().sum().item() for name, t in tensors.items()}
print(json.dumps({"sums": sums, "ready": ready, "loaded": loaded}))
"""

GPU_RUNAI_LOADER = """
import json, os, sys, time, torch
from runai_model_streamer import SafetensorsStreamer, list_safetensors
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
ready = time.time()
root = sys.argv[1]  # the local copy, or the store's s3:// URL
tensors = {}
with SafetensorsStreamer() as s:
    s.stream_files(sorted(list_safetensors(root)) if "://" in root else
                   sorted(os.path.join(root, f) for f in os.listdir(root)
                          if f.endswith(".safetensors")))
    for name, t in s.get_tensors():  # a view of the streamer's buffer: copied at once
        tensors[name] = t.to("cuda")
torch.cuda.synchronize()
loaded = time.time()
sums = {name: t.float().sum().item() for name, t in tensors.items()}
print(json.dumps({"sums": sums, "ready": ready, "loaded": loaded}))
"""


def tool_list(arg: str) -> list[str]:
    tools = [t.strip() for t in arg.split(",") if t.strip()]
    known = ALL_TOOLS + [t for t in GPU_TOOLS if t not in ALL_TOOLS]
    if not tools or not set(tools) <= set(known):
        raise argparse.ArgumentTypeError(f"a comma-separated subset of {','.join(known)}")
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
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: every loader loads to the GPU (load_file(device='cuda')), and "
                    f"the contenders are {','.join(GPU_TOOLS)} (default)")
    ap.add_argument("--endpoint", help="a running S3 store serving the model generated under "
                    "--model-dir (ROOT/BUCKET of nginx-s3-store.sh), instead of SeaweedFS")
    ap.add_argument("--bucket", default="ossc-load", help="with --endpoint")
    ap.add_argument("--json", help="--device cuda: write the figures to this file")
    ap.add_argument("--cache-dir", help="the shim's cacheDir (OSSC_CACHE_DIR), e.g. a tmpfs "
                    "mounted with huge=always, where registration with CUDA is cheaper; the "
                    "local copy goes there too")
    ap.add_argument("--prefix", help="with --endpoint (default: the model's directory name, "
                    "e.g. 4gib)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE,...",
                    help="one more contender, shim-NAME: shim with this environment added "
                    "(e.g. old:LD_PRELOAD=/path/to/old/libossc_preload.so); repeatable")
    a = ap.parse_args(argv)
    a.variants = parse_variants(ap, a.variant, "shim-")
    a = _check_tools(ap, a)
    a.tools += [t for t in a.variants if t not in a.tools]
    return a


def _check_tools(ap: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.Namespace:
    """--tools checked against --device and --old-build, or their defaults."""
    if a.device == "cuda":
        a.tools = a.tools or GPU_TOOLS
        wrong = sorted(set(a.tools) - set(GPU_TOOLS))
        if wrong:
            ap.error(f"--device cuda: {','.join(wrong)} load to the CPU only; choose from "
                     f"{','.join(GPU_TOOLS)}")
        return a
    if set(a.tools or ()) - set(ALL_TOOLS):
        ap.error(f"{','.join(sorted(set(a.tools) - set(ALL_TOOLS)))}: only with --device cuda")
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
    LINKS = Path("/dev/shm/ossc-load-cache-links")  # cache-direct: the session's data files

    def __init__(self, st: Store, man: dict, old_build: Path | None = None,
                 device: str = "cpu"):
        self.st, self.man = st, man
        self.old_build = old_build
        self.env = {**os.environ, **st.env(), "OSSC_CONFIG": ""}
        self.url = f"s3://{st.bucket}/{st.prefix}/"
        self.loader = GPU_LOADER if device == "cuda" else LOADER
        self.runai_loader = GPU_RUNAI_LOADER if device == "cuda" else RUNAI_LOADER
        self.want: dict | None = None  # tensor sums of the local copy
        self.variants: dict = {}  # shim-NAME: the environment it adds (--variant)
        self._fetch = None
        self.cache_dir = None

    @property
    def fetch(self) -> Bench:
        """bench_fetch's runner, for its curl ceiling (and its sha256 check of what curl wrote);
        made when first needed (it lists the store with boto3)."""
        if self._fetch is None:
            self._fetch = Bench(argparse.Namespace(ossc_cmd=None, verify="first"), self.st,
                                self.man)
        return self._fetch

    @classmethod
    def clean(cls) -> None:
        for d in (cls.S5, cls.MDIR, cls.LINKS, Path(session_dir(str(cls.MDIR)))):
            shutil.rmtree(d, ignore_errors=True)

    def _load(self, tool, rnd, cmd, env) -> tuple[Run, dict]:
        spawned = time.time()
        p = run_child(cmd, env)
        out = parse_worker(p)  # the last JSON line
        sums = out.get("sums", {})
        wall = out["loaded"] - spawned if "loaded" in out else p.wall
        r = Run(tool, rnd, p.rc == 0 and bool(sums), wall, 0, p.cpu, proc_wall=p.wall)
        # --device cuda: the copy phase, from the CUDA context to every tensor on the GPU
        r.copy = out["loaded"] - out["ready"] if "ready" in out else float("nan")
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
            if tool in WARM + DONE:
                self.complete_session(read=tool in WARM)
            before = vmstat()
            if tool in self.variants:
                cmd, env = self.c_shim()
                r = self._load(tool, rnd, cmd, dict(env, **self.variants[tool]))[0]
            else:
                r = self._load(tool, rnd, *getattr(self, "c_" + tool.replace("-", "_"))())[0]
            after = vmstat()
            r.kernel = {k: after[k] - before[k] for k in before if k in after}
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

    def complete_session(self, read: bool = True) -> None:
        """Untimed: one reader through the shim, to the end of every file (or, not read,
        mapping each file whole, which waits until it is, without touching a page); the
        session and its data files stay (expireTimeSec) for the timed process, which attaches
        to it."""
        script = ("import mmap, os, sys\nfor f in sorted(os.listdir(sys.argv[1])):\n"
                  "    with open(os.path.join(sys.argv[1], f), 'rb') as fh:\n" +
                  ("        while fh.read(64 << 20): pass\n" if read else
                   "        if os.fstat(fh.fileno()).st_size:\n"
                   "            mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ).close()\n"))
        p = run_child([sys.executable, "-c", script, str(self.MDIR)], self._shim_env())
        if p.rc != 0:
            raise SystemExit(f"completing the session failed: {tail(p.out)}")

    def c_local(self):
        return [sys.executable, "-c", self.loader, str(self.LOCAL)], self.env

    def _shim_env(self, old=False):
        # The old shim loads libossc (next to it, or OSSC_LIBOSSC) into this process and owns
        # the session there; the new one starts ossc-owner (next to it, or OSSC_OWNER).
        lib = (dict(LD_PRELOAD=str(self.old_build / "libossc_preload.so"),
                    OSSC_LIBOSSC=str(self.old_build / "libossc.so")) if old
               else dict(LD_PRELOAD=str(preload_library())))
        cache = {"OSSC_CACHE_DIR": self.cache_dir} if self.cache_dir and not old else {}
        return dict(self.env, **lib, **cache, ENABLE_CONNECTOR="1", OSS_PATH=self.url,
                    MODEL_DIR=str(self.MDIR))

    def c_shim(self, old=False):
        return [sys.executable, "-c", self.loader, str(self.MDIR)], self._shim_env(old)

    def c_shim_pin(self, loader=None):
        return ([sys.executable, "-c", loader or self.loader, str(self.MDIR)],
                dict(self._shim_env(), OSSC_PIN_GPU="yes"))

    def c_local_mmap(self):
        return [sys.executable, "-c", GPU_MMAP_LOADER, str(self.LOCAL)], self.env

    def c_shim_pin_mmap(self):
        return self.c_shim_pin(GPU_MMAP_LOADER)

    c_shim_warm, c_shim_done, c_shim_pin_mmap_warm = c_shim, c_shim, c_shim_pin_mmap

    def c_local_shim(self):
        """The local copy with the shim in the process (attached to a complete session)."""
        return [sys.executable, "-c", self.loader, str(self.LOCAL)], self._shim_env()

    def c_cache_direct(self):
        """The session's data files themselves, without the shim: the cache's pages."""
        self.LINKS.mkdir()
        data = Path(sessions(str(self.MDIR))[0]["dataDir"])
        for f in data.iterdir():
            (self.LINKS / f"{f.name}.safetensors").symlink_to(f)
        return [sys.executable, "-c", self.loader, str(self.LINKS)], self.env

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
        if self.runai_loader is GPU_RUNAI_LOADER:  # from the local copy: no S3 extra there
            return [sys.executable, "-c", self.runai_loader, str(self.LOCAL)], self.env
        return [sys.executable, "-c", RUNAI_LOADER, self.url], {**self.env, **RUNAI_ENV}

    def c_runai_s3(self):  # --device cuda only: from the store
        return [sys.executable, "-c", self.runai_loader, self.url], {**self.env, **RUNAI_ENV}


def same_round_ratio(runs: list[Run], tool: str, ref: str, what: str = "wall") -> float:
    val = {(r.tool, r.round): getattr(r, what) for r in runs if r.ok}
    return med([v / val[ref, n] for (t, n), v in val.items() if t == tool and (ref, n) in val])


def vmstat() -> dict[str, int]:
    try:
        lines = Path("/proc/vmstat").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split() for line in lines) if k in VMSTAT}


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


def gpu_report(runs: list[Run], tools: list[str], size_gib: float, card: str) -> dict:
    """The --device cuda table: spawn to loaded and the copy phase, each against local in the
    same round. Returns the figures (for --json)."""
    print(f"\nto every tensor on {card} ({size_gib:g} GiB model): spawn to loaded, and the copy "
          "phase (CUDA context ready to loaded)\nvs local = median over rounds of (tool / local "
          "in the same round); below 1 is faster")
    hdr = (f"{'tool':<14} {'median s':>8} {'vs local':>9} {'copy s':>7} {'copy GB/s':>9} "
           f"{'vs local':>9} {'CPU-s':>6} {'ok':>5}")
    print(hdr)
    print("-" * len(hdr))
    out: dict = {"card": card, "size_gib": size_gib, "tools": {}, "targets": []}
    for t in tools:
        ok = [r for r in runs if r.tool == t and r.ok]
        n = sum(r.tool == t for r in runs)
        if not ok:
            print(f"{t:<14} {'failed':>8}  (0/{n} runs ok)")
            out["tools"][t] = {"ok": 0, "runs": n}
            continue
        wall, copy = med([r.wall for r in ok]), med([r.copy for r in ok])
        row = {"ok": len(ok), "runs": n, "wall_s": wall, "copy_s": copy,
               "copy_gbps": size_gib * 2**30 / copy / 1e9 if copy == copy and copy else None,
               "wall_vs_local": same_round_ratio(runs, t, "local"),
               "copy_vs_local": same_round_ratio(runs, t, "local", "copy"),
               "cpu_s": med([r.cpu for r in ok]), "walls": [r.wall for r in ok],
               "copies": [r.copy for r in ok],
               "kernel": {k: med([(r.kernel or {}).get(k, 0) for r in ok]) for k in VMSTAT}}
        out["tools"][t] = row
        print(f"{t:<14} {_f(wall, 8)} {_f(row['wall_vs_local'], 8)}x {_f(copy, 7)} "
              f"{_f(row['copy_gbps'] or float('nan'), 9)} {_f(row['copy_vs_local'], 8)}x "
              f"{_f(row['cpu_s'], 6)} {len(ok):>2}/{n}")
    print("kernel, median per run (/proc/vmstat, the whole machine): " + "; ".join(
        f"{t} " + " ".join(f"{k} {v:g}" for k, v in row["kernel"].items())
        for t, row in out["tools"].items() if row["ok"]))
    for t, ref, goal, what in GPU_TARGETS:
        if t in tools and ref in tools:
            x = same_round_ratio(runs, t, ref, what)
            verdict = "n/a" if x != x else "met" if x <= goal else "NOT met"
            print(f"target {t} {what} <= {goal:.3g}x {ref}: {_f(x, 4).strip()}x "
                  f"({_f(1 / x if x else float('nan'), 4).strip()}x as fast), {verdict}")
            out["targets"].append({"tool": t, "ref": ref, "what": what, "ratio": x,
                                   "goal": goal, "met": x == x and x <= goal})
    return out


def open_store(a, stack: contextlib.ExitStack) -> tuple[Store, Path, dict]:
    """The store and the model it serves: a running one (--endpoint; the model generated
    under --model-dir, which it serves as BUCKET/PREFIX), else SeaweedFS with the model
    uploaded."""
    model, man = ensure_model(Path(a.model_dir), a.size_gib)
    if a.endpoint:
        return (Store(a.endpoint, os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
                      os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"), a.bucket,
                      a.prefix or model.name), model, man)
    store_dir = tempfile.mkdtemp(prefix="ossc-load-store-")
    stack.callback(shutil.rmtree, store_dir, ignore_errors=True)
    ls = stack.enter_context(LocalStore(store_dir))
    ls.create_bucket("ossc-load")
    ls.upload_dir("ossc-load", "model/", str(model))
    return (Store(ls.endpoint, ls.access_key, ls.secret_key, "ossc-load", "model",
                  region=ls.env()["AWS_REGION"]), model, man)


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if {"shim", "shim-x4"} & set(a.tools):
        print(f"shim: {preload_library()}", flush=True)
    if a.old_build:
        print(f"in-process owner's shim: {a.old_build / 'libossc_preload.so'}", flush=True)
    runs: list[Run] = []
    interrupted = False
    try:
        with contextlib.ExitStack() as stack:
            st, model, man = open_store(a, stack)
            if a.cache_dir:  # the local copy on the same file system as the shim's data
                Loads.LOCAL = Path(a.cache_dir) / Loads.LOCAL.name
            shutil.copytree(model, Loads.LOCAL, dirs_exist_ok=True)
            b = Loads(st, man, a.old_build, a.device)
            b.cache_dir = a.cache_dir
            b.variants = a.variants
            # Untimed: every object once through the store (its first reads after the upload)
            # and into /dev/shm; then the local reference sums.
            curl = b.fetch.warm_up() if a.device == "cpu" else None
            local = b.reference()
            print(f"warm-up: {'' if curl is None else f'curl {curl.wall:.2f} s, '}"
                  f"{'' if curl is None or curl.ok else 'FAILED ' + curl.note}"
                  f"local load {local.wall:.2f} s", flush=True)
            for rnd in range(a.rounds):
                k = rnd % len(a.tools)
                for tool in a.tools[k:] + a.tools[:k]:  # rotate the order each round
                    r = b.measure(tool, rnd)
                    runs.append(r)
                    done = r.verified if r.ok else f"FAILED {r.verified} {r.note}"
                    c = getattr(r, "copy", float("nan"))  # curl-shm's runs have none
                    copy = f" copy {c:6.2f} s" if c == c else ""
                    kernel = "".join(f" {n} {v}" for n, v in (r.kernel or {}).items() if v)
                    print(f"round {rnd + 1}/{a.rounds} {tool:<14} {r.wall:6.2f} s{copy} "
                          f"CPU {r.cpu:6.2f} s {done}{kernel}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C or a timeout: report the rounds that finished
        print("interrupted", file=sys.stderr)
        interrupted = True
        del runs[len(runs) // len(a.tools) * len(a.tools):]
        if not runs:
            return 130
    finally:
        _cleanup_children()
        Loads.clean()
        shutil.rmtree(Loads.LOCAL, ignore_errors=True)
    if a.device == "cuda":
        import torch  # only here: the CPU benchmark never needs it in this process
        out = gpu_report(runs, a.tools, a.size_gib, torch.cuda.get_device_name(0))
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1))
    else:
        report(runs, a.tools, a.size_gib)
    return 130 if interrupted else 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
