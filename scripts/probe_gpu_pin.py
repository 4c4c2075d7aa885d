#!/usr/bin/env python3
"""What OSSC_PIN_GPU does in a real CUDA process: the facts docs/SEMANTICS.md and
docs/BENCHMARKS.md quote (GPU machines only; CI never runs it).

Run it under the shim, attached to a session that serves the model, with the setting on and
the shim's log in a file:
  LD_PRELOAD=.../libossc_preload.so ENABLE_CONNECTOR=1 OSS_PATH=s3://b/p/ MODEL_DIR=/m \\
  OSSC_PIN_GPU=all OSSC_LOG_PATH=/tmp/shim.log \\
      python3 scripts/probe_gpu_pin.py /m /local/copy/of/the/model /tmp/shim.log out.json
It measures, in one process, on the first shard (against the same shard's local copy, which
is outside MODEL_DIR and so never registered):
  - the copy to the GPU from a pageable mapping and from a registered one (shared read-only),
    is_pinned() of the tensor and of views into it, pin_memory() on it, whether a
    non_blocking copy returns before it is done;
  - a private writable mapping (torch.UntypedStorage.from_file(shared=False), which is what
    safetensors makes): registration time, the anonymous memory it adds (the kernel copies
    the pages of a private mapping it pins for long), and whether a write through the
    mapping after registration reaches the GPU copy (stale pins would be wrong bytes);
  - fork() with a registered private mapping, and the child's view of it;
  - safetensors: which mappings load_file makes, and its time to cuda here and locally;
  - many mappings at once, munmap (unregistration) time, RLIMIT_MEMLOCK, VmPin/VmLck.

  probe_gpu_pin.py --ranges FILE OUT.json   (no shim; run it as another user with a small
                                             RLIMIT_MEMLOCK too)
registers a shared read-only mapping of FILE with the driver (cuMemHostRegister, as the shim
does) whole, then as two adjacent halves, then half of it, each time copying the whole
mapping to the GPU (a copy across a registration's edge), and times 4 threads registering
quarters at once against one thread registering all.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import resource
import sys
import time


def status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmLck", "VmPin", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
    return out


def log_lines(path: str, start: int) -> list[str]:
    with open(path, errors="replace") as f:
        f.seek(start)
        return [ln.strip() for ln in f if "OSSC_PIN_GPU" in ln]


def ranges(path: str, out_path: str) -> int:
    import ctypes
    import threading

    import torch
    torch.zeros(1, device="cuda")
    cu = ctypes.CDLL("libcuda.so.1")
    cu.cuMemHostRegister_v2.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
    cu.cuMemHostUnregister.argtypes = [ctypes.c_void_p]
    cu.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
    ctx = ctypes.c_void_p()
    cu.cuCtxGetCurrent(ctypes.byref(ctx))
    size = os.path.getsize(path) & ~((2 << 20) - 1)  # whole 2 MiB pages: halves stay aligned
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
    x = torch.frombuffer(m, dtype=torch.uint8)
    base, half = x.data_ptr(), size // 2
    ref = x[:1 << 20].clone()
    res: dict = {"uid": os.getuid(), "memlock": resource.getrlimit(resource.RLIMIT_MEMLOCK),
                 "bytes": size, "card": torch.cuda.get_device_name(0)}

    def attempt(name: str, parts: list, threads: bool = False) -> None:
        row: dict = {}
        rcs: list = [None] * len(parts)

        def reg(i: int) -> None:
            cu.cuCtxSetCurrent(ctx)
            rcs[i] = cu.cuMemHostRegister_v2(base + parts[i][0], parts[i][1], 9)

        t = time.perf_counter()
        if threads:
            ts = [threading.Thread(target=reg, args=(i,)) for i in range(len(parts))]
            for th in ts:
                th.start()
            for th in ts:
                th.join()
        else:
            for i in range(len(parts)):
                reg(i)
        row["register_s"], row["rcs"] = time.perf_counter() - t, rcs
        try:
            torch.cuda.synchronize()
            t = time.perf_counter()
            g = x.to("cuda")
            torch.cuda.synchronize()
            row["copy_gbps"] = size / (time.perf_counter() - t) / 1e9
            row["bytes_equal"] = bool(torch.equal(g[:1 << 20].cpu(), ref))
            del g
        except Exception as e:  # what a copy across a registration's edge does is the question
            row["copy_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        for (off, _), rc in zip(parts, rcs):
            if rc == 0:
                cu.cuMemHostUnregister(base + off)
        res[name] = row
        print(name, row, flush=True)

    attempt("whole", [(0, size)])
    attempt("halves", [(0, half), (half, size - half)])
    attempt("first_half_only", [(0, half)])
    q = size // 4
    attempt("quarters_1_thread", [(i * q, q) for i in range(4)])
    attempt("quarters_4_threads", [(i * q, q) for i in range(4)], threads=True)
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    return 0


def main() -> int:
    if sys.argv[1] == "--ranges":
        return ranges(sys.argv[2], sys.argv[3])
    model_dir, local_dir, shim_log, out_path = sys.argv[1:5]
    shards = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    path, local = os.path.join(model_dir, shards[0]), os.path.join(local_dir, shards[0])
    size = os.path.getsize(path)
    res: dict = {"shard": shards[0], "bytes": size, "memlock": resource.getrlimit(
        resource.RLIMIT_MEMLOCK), "uid": os.getuid()}
    with open(path, "rb") as f:  # the whole object present first (the shim waits here)
        while f.read(64 << 20):
            pass
    t = time.perf_counter()
    import torch
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    res["cuda_ready_s"] = time.perf_counter() - t
    res["card"] = torch.cuda.get_device_name(0)

    def to_gpu(x, reps=3) -> list[float]:
        speeds = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            g = x.to("cuda")
            torch.cuda.synchronize()
            speeds.append(x.numel() * x.element_size() / (time.perf_counter() - t) / 1e9)
            del g
        return speeds

    def mark() -> int:
        return os.path.getsize(shim_log) if os.path.exists(shim_log) else 0

    # 1. pageable: the local copy, a shared read-only mapping (never registered)
    with open(local, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    x = torch.frombuffer(m, dtype=torch.uint8)
    res["pageable_shared"] = {"is_pinned": x.is_pinned(), "gbps": to_gpu(x)}
    del x
    m.close()

    # 2. through the shim: a shared read-only mapping, registered at mmap
    at, before = mark(), status()
    fd = os.open(path, os.O_RDONLY)
    t = time.perf_counter()
    m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    map_s = time.perf_counter() - t
    x = torch.frombuffer(m, dtype=torch.uint8)
    view = x[4096:4096 + (64 << 20)]
    torch.cuda.synchronize()
    t = time.perf_counter()
    g = x.to("cuda", non_blocking=True)
    returned = time.perf_counter() - t
    torch.cuda.synchronize()
    done = time.perf_counter() - t
    ok = bool(torch.equal(g[:1 << 20].cpu(), x[:1 << 20]))
    del g
    after = status()
    res["registered_shared"] = {
        "mmap_s": map_s, "is_pinned": x.is_pinned(), "view_is_pinned": view.is_pinned(),
        "pin_memory_same": x.pin_memory().data_ptr() == x.data_ptr(), "gbps": to_gpu(x),
        "non_blocking_returned_s": returned, "non_blocking_done_s": done, "bytes_equal": ok,
        "status_delta": {k: after.get(k, 0) - before.get(k, 0) for k in after},
        "log": log_lines(shim_log, at)}
    t = time.perf_counter()
    del x, view
    m.close()
    res["registered_shared"]["munmap_s"] = time.perf_counter() - t

    # 3. private and writable, as safetensors maps (torch's from_file, shared=False)
    at, before = mark(), status()
    t = time.perf_counter()
    st = torch.UntypedStorage.from_file(path, shared=False, nbytes=size)
    map_s = time.perf_counter() - t
    after = status()
    x = torch.empty(0, dtype=torch.uint8).set_(st)
    priv = {"from_file_s": map_s, "is_pinned": x.is_pinned(), "gbps": to_gpu(x),
            "status_delta": {k: after.get(k, 0) - before.get(k, 0) for k in after},
            "log": log_lines(shim_log, at)}
    # a write through the mapping after registration: does the GPU copy see it?
    head = x[:1 << 20]
    head.copy_(255 - head)
    whole = x.to("cuda")
    torch.cuda.synchronize()
    priv["write_after_register_reaches_gpu"] = bool(torch.equal(whole[:1 << 20].cpu(), head))
    priv["write_after_register_reaches_gpu_slice"] = bool(torch.equal(head.to("cuda").cpu(),
                                                                      head))
    del whole
    # fork with it registered: the time fork takes, the child's view
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if bool(torch.equal(x[:1 << 20], head)) else 1)
    priv["fork_s"] = time.perf_counter() - t
    _, st_child = os.waitpid(pid, 0)
    priv["fork_child_ok"] = os.WIFEXITED(st_child) and os.WEXITSTATUS(st_child) == 0
    t = time.perf_counter()
    del x, head, st
    priv["free_s"] = time.perf_counter() - t
    res["registered_private"] = priv
    os.close(fd)

    # 4. safetensors' own pattern, here and from the local copy
    from safetensors import safe_open
    from safetensors.torch import load_file
    at = mark()
    with safe_open(path, framework="pt", device="cpu") as f:
        k = next(iter(f.keys()))
        v = f.get_tensor(k)
        res["safetensors_cpu_view_is_pinned"] = v.is_pinned()
        del v
    res["safetensors_safe_open_log"] = log_lines(shim_log, at)
    for name, p in (("local", local), ("shim", path)):
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            d = load_file(p, device="cuda")
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            del d
        res[f"load_file_cuda_{name}_s"] = times
        res[f"load_file_cuda_{name}_gbps"] = [size / s / 1e9 for s in times]

    # 5. many mappings at once: every shard 8 times, shared (nothing copied)
    at, maps, fds = mark(), [], []
    t = time.perf_counter()
    for s in shards:
        fd = os.open(os.path.join(model_dir, s), os.O_RDONLY)
        fds.append(fd)
        for _ in range(8):
            maps.append(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
    many = {"mappings": len(maps), "bytes": sum(len(mm) for mm in maps),
            "map_s": time.perf_counter() - t, "status": status()}
    lines = log_lines(shim_log, at)
    many["registered"] = sum("registered" in ln for ln in lines)
    many["failed"] = [ln for ln in lines if "cannot" in ln][:3]
    t = time.perf_counter()
    for mm in maps:
        mm.close()
    many["munmap_s"] = time.perf_counter() - t
    for fd in fds:
        os.close(fd)
    res["many"] = many
    ms = [float(x) for x in re.findall(r"in ([0-9.]+) ms", "\n".join(lines))]
    many["register_ms_median"] = sorted(ms)[len(ms) // 2] if ms else None
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
