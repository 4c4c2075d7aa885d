#!/usr/bin/env python3
"""Does the way a tmpfs file was written change how fast a process copies from it, to a GPU
above all? (issue 14; GPU machines only for `cuda`; CI never runs it.)

bench_load.py found `load_file(device="cuda")` through the shim 1.08-1.27x slower in its copy
phase than from the local copy. This probe takes ossc and the network out: it writes one FILE
of random bytes in /dev/shm in the ways that differ between the two, and times, in a fresh
process that has made its CUDA context, a pageable copy of a private writable mapping of it
(safetensors' kind) to the GPU in 256 MiB tensors, and the same copy to CPU memory (`cpu`).
Ways: write() from one thread (write1; copied: then shutil.copyfile, as bench_load's local copy
is made); the fetch engine's sink before huge pages (map16, map1: fallocate, then a shared
mapping that 16 or 1 threads write through; map16-noreserve without the fallocate); pwrite
from 16 threads (pwrite16); the sink with huge pages (map16-huge: MADV_COLLAPSE of each 2 MiB
first, as sink_map.c does now); "+read" and "+mapped" read the file once before (read(), or
another process's mapping). Per run: the child's minor faults and CPU-s, /proc/vmstat deltas,
and how physically contiguous the file's pages are (/proc/self/pagemap, root only).

  python3 scripts/probe_page_copy.py [--gib 4] [--rounds 3] [--threads 16] [--dir /dev/shm]
                                     [--ways write1,map16,...] [--where cuda,cpu] [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.hugepages import (FALLOC_FL_KEEP_SIZE, HUGE, libc, make_huge,  # noqa: E402
                               map_aligned, page_frames)

CHUNK = 32 << 20  # the engine's default transfer
BLOCK = 64 << 20  # a copy's write() size, and the reader's read() size

CHILD = r"""
import json, mmap, os, resource, sys, time, torch
path, where = sys.argv[1], sys.argv[2]
if where == "cuda":
    torch.zeros(1, device="cuda"); torch.cuda.synchronize()
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)  # MAP_PRIVATE, writable: safetensors' kind
os.close(fd)
buf = torch.frombuffer(m, dtype=torch.uint8)
step = 256 << 20
f0, t0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), os.times()
if where == "cuda":
    out = [buf[o:o + step].to("cuda") for o in range(0, size, step)]
    torch.cuda.synchronize()
else:
    dst = torch.empty(step, dtype=torch.uint8)
    for o in range(0, size, step):
        dst[:min(step, size - o)].copy_(buf[o:o + step])
t, c1 = time.perf_counter() - t0, os.times()
print(json.dumps({"s": t, "minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0,
                  "user": c1.user - c0.user, "sys": c1.system - c0.system}))
"""

VMSTAT_KEYS = ("pgfault", "pgmigrate_success", "pgactivate", "pgdeactivate", "numa_hint_faults",
               "thp_fault_alloc", "compact_migrate_scanned", "pgalloc_normal", "pgrefill",
               "workingset_activate_anon", "pglazyfree", "pgscan_kswapd")


def vmstat() -> dict:
    with open("/proc/vmstat") as f:
        return {k: int(v) for k, v in (ln.split() for ln in f) if k in VMSTAT_KEYS}


def source(size: int) -> bytearray:
    block = os.urandom(BLOCK)
    src = bytearray(size)
    for o in range(0, size, BLOCK):
        src[o:o + BLOCK] = block[:size - o]
    return src


def in_threads(n: int, size: int, work) -> None:
    """work(offset, length) on every CHUNK of the file, chunk i on thread i % n."""
    def run(i):
        for o in range(i * CHUNK, size, n * CHUNK):
            work(o, min(CHUNK, size - o))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def write1(path: str, src: bytearray, threads: int) -> None:
    with open(path, "wb", buffering=0) as f:
        view = memoryview(src)
        for o in range(0, len(src), BLOCK):
            f.write(view[o:o + BLOCK])


def copied(path: str, src: bytearray, threads: int) -> None:
    """As bench_load's local copy is made: written, then shutil.copyfile (sendfile)."""
    write1(path + ".orig", src, threads)
    shutil.copyfile(path + ".orig", path)
    os.unlink(path + ".orig")


def pwrite_n(path: str, src: bytearray, threads: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    view = memoryview(src)
    in_threads(threads, len(src), lambda o, n: os.pwrite(fd, view[o:o + n], o))
    os.close(fd)


def mapped(path: str, src: bytearray, threads: int, reserve: bool = True,
           collapse: bool = False) -> None:
    """The fetch engine's sink: the file sized, its pages reserved with one fallocate, then
    written through one shared mapping by many threads (memmove drops the GIL). collapse:
    each whole 2 MiB of it is made one huge page first (MADV_COLLAPSE of a mapping aligned to
    2 MiB, after one page of it exists; the rest is zeros), instead of the reservation."""
    size = len(src)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, size)
    if reserve and not collapse and libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")
    area, dst = map_aligned(fd, size)
    if collapse:
        t0 = time.perf_counter()
        failed = make_huge(fd, dst, size)
        libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)  # the tail, and what did not collapse
        print(f"  collapse {time.perf_counter() - t0:.3f} s, errno {failed}", flush=True)
    os.close(fd)
    s = ctypes.addressof(ctypes.c_char.from_buffer(src))
    in_threads(threads, size, lambda o, n: ctypes.memmove(dst + o, s + o, n))
    libc.munmap(area, size + HUGE)


def read_once(path: str) -> None:
    """As bench_load's complete_session reads: read() to the end, 64 MiB at a time."""
    with open(path, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass


def touch_mapped(path: str) -> None:
    """Another process maps the file privately and reads every page (a previous load)."""
    subprocess.run([sys.executable, "-c", CHILD, path, "cpu"], check=True,
                   capture_output=True)


WAYS = {
    "write1": (write1, 1, None),
    "copied": (copied, 1, None),
    "copied+mapped": (copied, 1, touch_mapped),
    "map16": (mapped, 0, None),
    "map16+read": (mapped, 0, read_once),
    "map16+mapped": (mapped, 0, touch_mapped),
    "map1": (mapped, 1, None),
    "pwrite16": (pwrite_n, 0, None),
    "map16-noreserve": (lambda p, s, t: mapped(p, s, t, reserve=False), 0, None),
    "map16-huge": (lambda p, s, t: mapped(p, s, t, collapse=True), 0, None),
}


def pfn_runs(path: str) -> dict | None:
    """How many physically contiguous runs the file's pages form (root only)."""
    if os.geteuid() != 0:
        return None
    pfns, _ = page_frames(path)
    runs = 1 + sum(1 for x, y in zip(pfns, pfns[1:]) if y != x + 1)
    return {"pages": len(pfns), "runs": runs, "pages_per_run": round(len(pfns) / runs, 1)}


def measure(path: str, where: str) -> dict:
    v0 = vmstat()
    p = subprocess.run([sys.executable, "-c", CHILD, path, where], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"child failed: {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    v1 = vmstat()
    r["vmstat"] = {k: v1[k] - v0[k] for k in v0 if v1.get(k, 0) != v0[k]}
    return r


def main() -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--gib", type=float, default=4)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--threads", type=int, default=16)
    a.add_argument("--dir", default="/dev/shm")
    a.add_argument("--ways", default=",".join(WAYS))
    a.add_argument("--where", default="cuda,cpu")
    a.add_argument("--json")
    a = a.parse_args()
    ways = a.ways.split(",")
    wheres = a.where.split(",")
    size = int(a.gib * (1 << 30))
    src = source(size)
    path = os.path.join(a.dir, f"ossc-probe-page-copy-{os.getpid()}")
    with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as f:
        shmem_thp = f.read().strip()
    print(f"{os.uname().release}; {size / 1e9:.2f} GB; threads {a.threads}; THP shmem "
          f"{shmem_thp}", flush=True)
    runs = []
    try:
        for rnd in range(a.rounds):
            k = rnd % len(ways)
            for way in ways[k:] + ways[:k]:
                write, threads, after = WAYS[way]
                for where in wheres:
                    t0 = time.perf_counter()
                    write(path, src, threads or a.threads)
                    made = time.perf_counter() - t0
                    if after:
                        after(path)
                    r = measure(path, where)
                    r.update(way=way, where=where, round=rnd, made_s=made)
                    if where == wheres[0] and rnd == 0:
                        r["pfn"] = pfn_runs(path)
                    os.unlink(path)
                    runs.append(r)
                    print(f"round {rnd + 1} {way:<16} {where:<4} {r['s']:6.3f} s "
                          f"({size / r['s'] / 1e9:5.1f} GB/s) minflt {r['minflt']:>8} "
                          f"user {r['user']:5.2f} sys {r['sys']:5.2f} "
                          f"made {made:5.2f} s {r.get('pfn') or ''} {r['vmstat']}", flush=True)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    print("\nmedian s, median same-round ratio to the first way, CPU-s, each round:")
    for where in wheres:
        for way in ways:
            mine = [r for r in runs if r["way"] == way and r["where"] == where]
            ref = {r["round"]: r["s"] for r in runs if r["way"] == ways[0] and r["where"] == where}
            ratio = statistics.median(r["s"] / ref[r["round"]] for r in mine)
            each = ", ".join(f"{r['s']:.3f}" for r in mine)
            med = {k: statistics.median(r[k] for r in mine) for k in ("s", "user", "sys")}
            print(f"{where:<4} {way:<16} {med['s']:6.3f} s {ratio:5.2f}x  user {med['user']:5.2f}"
                  f" sys {med['sys']:5.2f}  ({each})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
