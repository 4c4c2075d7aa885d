"""A mapping of a file that is not all fetched yet is served page by page (preload/src/shim/
fault.c, userfaultfd): the first bytes read while the rest is still held back by the fault
proxy, each page equals the store's once it is read, a fork waits until its mappings are
whole, and a chunk that cannot be fetched ends the access with SIGBUS, never zeros.

Where this process cannot have a userfaultfd (no privilege, a seccomp profile), the shim
waits in mmap for the whole range instead; the tests then check that fallback."""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

from ossc.native import session_dir
from support.session_helpers import wait_session_gone
from test_lazy import env_mode

MIB = 1 << 20
NAME = "big/weights.bin"
SIZE = 8 * MIB + 12345  # 1 MiB chunks; the last page partly past the end


def userfaultfd_here() -> bool:
    """Whether this process may open a full userfaultfd (the shim's condition)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(323 if os.uname().machine == "x86_64" else 282, os.O_CLOEXEC)
    if fd >= 0:
        os.close(fd)
        return True
    try:
        os.close(os.open("/dev/userfaultfd", os.O_RDWR))
        return True
    except OSError:
        return False


SERVED = userfaultfd_here()


@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    local = tmp_path_factory.mktemp("faults-model")
    (local / "big").mkdir()
    (local / NAME).write_bytes(
        np.random.default_rng(7).integers(0, 256, SIZE, dtype=np.uint8).tobytes())
    prefix = f"faults-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    return {"url": f"s3://{bucket}/{prefix}", "prefix": f"{bucket}/{prefix}", "local": local}


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    yield path
    wait_session_gone(path, timeout=10)
    shutil.rmtree(session_dir(str(path)), ignore_errors=True)


# Maps the file (shared or private, argv[1]) and answers the test's commands on stdin:
#   head -> sha256 of its first MiB     all  -> sha256 of it whole
#   fork -> sha256 of it whole, as a child forked now reads it
#   last -> sha256 of its last page, read through write(2): the kernel reads the mapping
READER = textwrap.dedent("""
    import hashlib, mmap, os, sys
    fd = os.open(os.path.join(os.environ["MODEL_DIR"], sys.argv[2]), os.O_RDONLY)
    flags = mmap.MAP_SHARED if sys.argv[1] == "shared" else mmap.MAP_PRIVATE
    m = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ)
    print("mapped", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "head":
            out = hashlib.sha256(m[:1 << 20]).hexdigest()
        elif cmd == "all":
            out = hashlib.sha256(m).hexdigest()
        elif cmd == "fork":
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(w, hashlib.sha256(m).hexdigest().encode())
                os._exit(0)
            os.close(w)
            out = os.read(r, 64).decode()
            os.waitpid(pid, 0)
        elif cmd == "last":
            r, w = os.pipe()
            os.write(w, memoryview(m)[len(m) - 4096:])
            out = hashlib.sha256(os.read(r, 4096)).hexdigest()
        print(out, flush=True)
""")


class Reader:
    def __init__(self, env, kind):
        self.proc = subprocess.Popen([sys.executable, "-c", READER, kind, NAME], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd: str | None, timeout: float) -> str | None:
        """The answer to cmd (None: the next line), or None if none came within timeout."""
        if cmd:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hold_back_after_first_mib(proxy, remote) -> threading.Event:
    """Every ranged GET of the file past its first MiB waits until the event is set."""
    gate = threading.Event()
    proxy.add_fault("stall", key=remote["prefix"] + NAME, range_from=MIB, times=None,
                    seconds=120, gate=gate)
    return gate


@pytest.mark.parametrize("kind", ["shared", "private"])
def test_first_pages_read_before_the_rest_lands(store, remote, model_dir, proxy, tmp_path,
                                                kind):
    data = (remote["local"] / NAME).read_bytes()
    gate = hold_back_after_first_mib(proxy, remote)
    reader = Reader(env_mode(store, remote, model_dir, proxy, tmp_path,
                             OSSC_PREFETCH_POLICY="lazy", OSSC_READ_TIMEOUT_SEC="120"), kind)
    try:
        # The mapping returns while most of the file is held back, or (no userfaultfd)
        # only once it is whole.
        mapped = reader.ask(None, 20)
        head = reader.ask("head", 20) if mapped else None
        if SERVED:
            assert mapped == "mapped" and head == sha(data[:MIB])
            assert proxy.bytes_served(remote["prefix"] + NAME) < SIZE / 2
        else:
            assert mapped is None
        gate.set()
        if not SERVED:
            assert reader.ask(None, 60) == "mapped"
            assert reader.ask("head", 60) == sha(data[:MIB])
        assert reader.ask("all", 60) == sha(data)
        assert reader.ask("last", 60) == sha(data[-4096:])
    finally:
        gate.set()
        reader.close()


def test_a_fork_gets_whole_mappings(store, remote, model_dir, proxy, tmp_path):
    """fork copies a mapping without its service: the child must not read unlanded pages
    as zeros. The fork waits until the mapping is whole (the gate opens meanwhile)."""
    data = (remote["local"] / NAME).read_bytes()
    gate = hold_back_after_first_mib(proxy, remote)
    reader = Reader(env_mode(store, remote, model_dir, proxy, tmp_path,
                             OSSC_PREFETCH_POLICY="lazy", OSSC_READ_TIMEOUT_SEC="120"), "shared")
    try:
        if not SERVED:
            gate.set()
        assert reader.ask(None, 60) == "mapped"
        assert reader.ask("head", 20) == sha(data[:MIB])
        threading.Timer(1.0, gate.set).start()  # while the fork waits
        assert reader.ask("fork", 60) == sha(data)
    finally:
        gate.set()
        reader.close()


def test_a_chunk_that_cannot_be_fetched_is_sigbus(store, remote, model_dir, proxy, tmp_path):
    """Past the first MiB every request for the file is cut (until the retries run out): the
    first MiB reads, the rest ends the reader with SIGBUS (a mapped file's I/O error), never
    zeros; the log says why."""
    data = (remote["local"] / NAME).read_bytes()
    proxy.add_fault("reset", after_bytes=0, key=remote["prefix"] + NAME, range_from=MIB,
                    times=None)
    reader = Reader(env_mode(store, remote, model_dir, proxy, tmp_path,
                             OSSC_PREFETCH_POLICY="lazy", OSSC_RETRIES="2"), "shared")
    try:
        mapped = reader.ask(None, 60)
        if not SERVED:  # the mapping itself fails
            assert mapped is None or mapped == ""
            assert reader.proc.wait(timeout=30) != 0
            return
        assert mapped == "mapped"
        assert reader.ask("head", 20) == sha(data[:MIB])
        assert reader.ask("all", 60) in (None, "")
        assert reader.proc.wait(timeout=30) == -signal.SIGBUS
    finally:
        reader.close()
    log = (tmp_path / "ossc.log").read_text()
    assert "weights.bin: bytes" in log and "could not be fetched" in log, log
