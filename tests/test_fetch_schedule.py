"""The fetch schedule (preload/src/engine/fetch.c, sink_map.c, tuning.c) against a real S3 server
(SeaweedFS on 127.0.0.1, through the fault proxy where the order of requests matters): chunks go
out in the items' order, a reader's wait jumps the queue, one large object split over many
transfers lands byte for byte through a shared mapping of its tmpfs file (and through pwrite
elsewhere), and the defaults are derived from the machine."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ossc
from ossc.errors import EXIT_NO_SPACE, status_exit_code
from ossc.native import ffi, lib
from ossc.settings import resolve
from support.hugepages import pages_in_huge_pages, tmpfs_gives_huge_pages
from support.patterns import pattern
from support.session_helpers import launcher_env, wait_session_gone

CHUNK = 64 << 10  # the smallest chunk size: many chunks from a small object
PREFIX = "schedule/"
SHM = "/dev/shm"


OBJECTS = {
    "big.bin": pattern(96 * CHUNK + 4321, 1),   # 97 chunks: one object, many transfers
    "a.bin": pattern(6 * CHUNK, 2),
    "b.bin": pattern(CHUNK // 2, 3),
    "c.bin": pattern(3 * CHUNK + 1, 4),
}


@pytest.fixture(scope="module")
def objects(store, bucket):
    s3 = store.s3()
    for name, data in OBJECTS.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=data)
    return OBJECTS


@pytest.fixture
def client_for(store, bucket, monkeypatch):
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OSSC_CONFIG", "")

    def make(endpoint=None, **settings):
        base = {"chunkSize": str(CHUNK)}
        if endpoint:
            base["endpoint"] = endpoint
        base.update({k: str(v) for k, v in settings.items()})
        return ossc.Client(f"s3://{bucket}/{PREFIX}", base)
    return make


@pytest.fixture
def shm_file():
    """A path in /dev/shm (tmpfs: the mapped sink), removed afterwards."""
    path = os.path.join(SHM, f"ossc-test-schedule-{os.getpid()}")
    yield path
    if os.path.exists(path):
        os.unlink(path)


def gets(proxy) -> list:
    """(object name, Range) of the GETs the proxy saw so far, in order (its keys are
    bucket/key)."""
    return [(k.partition(PREFIX)[2], r) for m, k, r in proxy.request_order()
            if m == "GET" and PREFIX in k]


def fetch_into_fd(client, name, fd, fd_offset=0, offset=0, length=None):
    size = len(OBJECTS[name])
    item = ossc.FetchItem(PREFIX + name, size, offset, length, fd=fd, fd_offset=fd_offset)
    with client.fetch([item]) as f:
        assert f.wait(60), "fetch did not end in time"
        st = f.stats()
    return st


def test_one_large_object_over_many_transfers_lands_byte_for_byte(objects, client_for, shm_file,
                                                                  capfd):
    """97 chunks of one object, 4 threads x 8 transfers at once, into a tmpfs file open for
    reading and writing (written through mappings), at an offset that is no page boundary."""
    data = objects["big.bin"]
    client = client_for(**{"prefetch.vcpus": 4, "prefetch.workers": 8, "logLevel": "debug"})
    fd = os.open(shm_file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, 4097 + len(data))
        st = fetch_into_fd(client, "big.bin", fd, fd_offset=4097)
        assert st.requests >= 97 and st.bytes_done == len(data)
        assert os.pread(fd, 4097, 0) == bytes(4097)  # nothing before the item's place
        assert os.pread(fd, len(data), 4097) == data
        # a range of it, starting and ending inside chunks: 3 chunks, one thread, pwrite
        os.ftruncate(fd, 0)
        os.ftruncate(fd, 3 * CHUNK)
        fetch_into_fd(client, "big.bin", fd, offset=5 * CHUNK + 7, length=2 * CHUNK + 11)
        assert os.pread(fd, 2 * CHUNK + 11, 0) == data[5 * CHUNK + 7:7 * CHUNK + 18]
    finally:
        os.close(fd)
    assert capfd.readouterr().err.count("written through a shared mapping") == 1


def test_a_tmpfs_file_is_reserved_span_by_span_in_huge_pages(store, bucket, client_for,
                                                             shm_file, capfd):
    """An object of five reservation spans (32 MiB each), 1 MiB chunks on 4 threads, into a
    tmpfs file: byte for byte, and, where the kernel makes huge tmpfs pages, every whole 2 MiB
    of it in one (unless a span took so long that the sink went on in small pages, and said
    so)."""
    data = pattern((130 << 20) + 4321, 7)
    store.s3().put_object(Bucket=bucket, Key=PREFIX + "spans.bin", Body=data)
    client = client_for(**{"prefetch.vcpus": 4, "prefetch.workers": 8, "chunkSize": "1MiB",
                           "logLevel": "debug"})
    fd = os.open(shm_file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, len(data))
        item = ossc.FetchItem(PREFIX + "spans.bin", len(data), fd=fd)
        with client.fetch([item]) as f:
            assert f.wait(60), "fetch did not end in time"
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    log = capfd.readouterr().err
    assert log.count("written through a shared mapping") == 1
    if tmpfs_gives_huge_pages():
        huge, pages = pages_in_huge_pages(shm_file)
        assert pages == len(data) // 4096 + 1
        if "for a tmpfs file" in log:  # it gave up (a slow span on a loaded machine), and said so
            assert huge and huge % 512 == 0
        else:
            assert huge == 65 * 512


def test_a_failed_fetch_ends_only_after_its_last_transfer(objects, client_for, proxy, tmp_path):
    """One chunk of a.bin is refused for good (403) while another is held 3 s before its
    headers: wait() and stats().finished say the fetch ended only once that transfer ended
    too (it still writes into the item's fd; a session closes that fd once the fetch ends)."""
    proxy.add_fault("stall", key="a.bin", ranged_only=True, range_from=CHUNK, seconds=3)
    proxy.add_fault("status", key="a.bin", ranged_only=True, status=403)
    client = client_for(proxy.endpoint, **{"prefetch.vcpus": 1, "prefetch.workers": 8})
    fd = os.open(tmp_path / "a.bin", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        item = ossc.FetchItem(PREFIX + "a.bin", len(OBJECTS["a.bin"]), fd=fd)
        t0 = time.monotonic()
        with client.fetch([item]) as f:
            with pytest.raises(ossc.OsscError, match="403|AccessDenied|denied"):
                f.wait(30)
            waited = time.monotonic() - t0
            assert f.stats().finished
    finally:
        os.close(fd)
    assert waited >= 2.5, f"wait() returned after {waited:.2f} s, with a transfer in flight"


def test_items_are_reserved_ahead_of_their_transfers(store, bucket, client_for, proxy):
    """With 4 threads the items' tmpfs pages are reserved (and the files mapped) in the items'
    order ahead of the transfers, up to two windows of transfers in flight (4 x 8 x 64 KiB,
    twice: 4 MiB) past the bytes landed: while every reply is held back, the transfers cover
    the first two files, the third file already has all its pages and the fourth, further
    ahead, none. The bytes then land whole."""
    sizes = [3 << 19, 3 << 19, 3 << 19, 1 << 20]  # the 4th starts at 4.5 MiB
    blobs = {f"ahead-{os.getpid()}-{i}.bin": pattern(n, 10 + i) for i, n in enumerate(sizes)}
    s3 = store.s3()
    for name, data in blobs.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=data)
    client = client_for(proxy.endpoint, **{"prefetch.vcpus": 4, "prefetch.workers": 8})
    proxy.add_fault("stall", seconds=1.5, times=32)  # the first transfers, all in flight
    fds = {}
    try:
        items = []
        for name, data in blobs.items():
            fd = os.open(os.path.join(SHM, f"ossc-test-{name}"), os.O_RDWR | os.O_CREAT, 0o600)
            fds[name] = fd
            os.ftruncate(fd, len(data))
            items.append(ossc.FetchItem(PREFIX + name, len(data), fd=fd))
        names = list(blobs)

        def allocated(name):
            return os.fstat(fds[name]).st_blocks * 512

        with client.fetch(items) as f:
            deadline = time.monotonic() + 1.0
            while allocated(names[2]) < len(blobs[names[2]]):
                assert time.monotonic() < deadline, "the third item was not reserved ahead"
                time.sleep(0.01)
            assert allocated(names[3]) == 0, "reserved further ahead than two windows"
            assert f.stats().bytes_done == 0, "the check came too late: bytes had landed"
            assert f.wait(60), "fetch did not end in time"
        for name, fd in fds.items():
            assert os.pread(fd, len(blobs[name]), 0) == blobs[name], name
    finally:
        for name, fd in fds.items():
            os.close(fd)
            os.unlink(os.path.join(SHM, f"ossc-test-{name}"))


def test_write_only_or_short_files_are_written_with_pwrite(objects, client_for, tmp_path,
                                                           shm_file, capfd):
    """No mapping where one cannot be had (a write-only fd, a file shorter than the object, a
    file system other than tmpfs) or is not worth it (fewer than 4 threads): the same bytes
    arrive through pwrite."""
    data = objects["big.bin"]
    client = client_for(**{"prefetch.vcpus": 4, "prefetch.workers": 4, "logLevel": "debug"})
    for path, flags, presize in [(shm_file, os.O_WRONLY, True), (shm_file, os.O_RDWR, False),
                                 (str(tmp_path / "big.bin"), os.O_RDWR, True)]:
        fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if presize:
                os.ftruncate(fd, len(data))
            fetch_into_fd(client, "big.bin", fd)
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            assert f.read() == data, (path, flags, presize)
    fd = os.open(shm_file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, len(data))
        fetch_into_fd(client_for(**{"prefetch.vcpus": 2, "logLevel": "debug"}), "big.bin", fd)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert "written through a shared mapping" not in capfd.readouterr().err


def test_chunks_go_out_in_item_order_and_a_wait_jumps_the_queue(objects, client_for, proxy):
    """One thread, one transfer: the GETs follow the items' order (the owner's order, the
    safetensors index's), chunk by chunk. A reader waiting for c.bin while big.bin is being
    fetched gets c.bin's chunk next, not after big.bin's 96 others."""
    proxy.add_fault("stall", key=PREFIX + "big.bin", ranged_only=True, times=None, seconds=0.02)
    client = client_for(proxy.endpoint, **{"prefetch.vcpus": 1, "prefetch.workers": 1})
    order = ["a.bin", "b.bin", "big.bin", "c.bin"]
    bufs = {n: bytearray(len(OBJECTS[n])) for n in order}
    items = [ossc.FetchItem(PREFIX + n, len(OBJECTS[n]), buffer=bufs[n]) for n in order]
    with client.fetch(items) as f:
        deadline = time.monotonic() + 30
        while "big.bin" not in [n for n, _ in gets(proxy)]:
            assert time.monotonic() < deadline, "big.bin never started"
            time.sleep(0.005)
        err = ffi.new("ossc_error *")
        assert lib.ossc_fetch_wait_range(f._handle, 3, 0, 1, 30000, err) == 0
        big_before_c = [n for n, _ in gets(proxy)].count("big.bin")
        assert f.wait(60)
    names = [n for n, _ in gets(proxy)]
    # a, b and big in order, chunk by chunk; c once, well before big.bin's last chunk
    assert names[:7] == ["a.bin"] * 6 + ["b.bin"]
    assert names.index("c.bin") < len(names) - 10, names
    assert big_before_c < 20, f"c.bin waited behind {big_before_c} of big.bin's chunks"
    starts = [int(r.split("=")[1].split("-")[0]) for n, r in gets(proxy) if n == "big.bin"]
    assert starts == sorted(starts) and len(starts) == 97
    for n in order:
        assert bytes(bufs[n]) == OBJECTS[n], n


def fetch_threads() -> int:
    """This process's fetch threads (fetch.c names them)."""
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n += f.read().strip() == "ossc-fetch"
        except FileNotFoundError:
            pass  # ended meanwhile
    return n


def test_a_fetch_starts_a_thread_per_workers_chunks_up_to_vcpus(objects, client_for, proxy):
    """prefetch.vcpus is a ceiling: 6 chunks over 8 transfers a thread start one thread, 97
    over 32 start 4 (counted in /proc while the store holds the first replies)."""
    assert fetch_threads() == 0
    proxy.add_fault("stall", seconds=1.0, times=None)

    def threads_while_fetching(name, workers):
        client = client_for(proxy.endpoint, **{"prefetch.vcpus": 16, "prefetch.workers": workers})
        buf = bytearray(len(OBJECTS[name]))
        with client.fetch([ossc.FetchItem(PREFIX + name, len(buf), buffer=buf)]) as f:
            time.sleep(0.3)
            during = fetch_threads()
            assert f.wait(60), "fetch did not end in time"
        assert bytes(buf) == OBJECTS[name]
        return during

    assert threads_while_fetching("a.bin", 8) == 1
    assert threads_while_fetching("big.bin", 32) == 4


def test_a_clients_fetches_reuse_its_connections(objects, client_for, proxy):
    """Four fetches of one client in turn, each 6 transfers on one thread: the connections
    of the first serve the others (multi_pool.c); without the pool each opened its own. A
    forked child opens its own and leaves the parent's alone."""
    client = client_for(proxy.endpoint, **{"prefetch.vcpus": 4, "prefetch.workers": 8})

    def fetch_a() -> bool:
        buf = bytearray(len(OBJECTS["a.bin"]))
        with client.fetch([ossc.FetchItem(PREFIX + "a.bin", len(buf), buffer=buf)]) as f:
            assert f.wait(60), "fetch did not end in time"
        return bytes(buf) == OBJECTS["a.bin"]

    for _ in range(4):
        assert fetch_a()
    assert proxy.request_count("GET") == 24
    assert proxy.connections_accepted <= 8, proxy.connections_accepted
    # A forked child opens its own: two processes on one socket would mix their replies.
    before = proxy.connections_accepted
    pid = os.fork()
    if pid == 0:
        os._exit(0 if fetch_a() else 1)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's fetch did not end in time")
        time.sleep(0.05)
    assert status == 0, "the forked child's fetch failed or got wrong bytes"
    assert fetch_a()
    assert proxy.connections_accepted == before + 6, (before, proxy.connections_accepted)


class BesideApp:
    """ossc-run with 4 fetch threads of 1 transfer each, whose command reads model.bin (24
    chunks) once the test creates `go`; the store holds the first `held` ranged GETs for
    `seconds`."""

    def __init__(self, store, bucket, proxy, tmp_path, held: int, seconds: float):
        self.proxy, self.prefix = proxy, f"beside-{os.getpid()}-{held}/"
        self.data = pattern(24 * (256 << 10), 21)  # above smallFileSize (4 MiB)
        s3 = store.s3()
        s3.put_object(Bucket=bucket, Key=self.prefix + "config.json", Body=b"{}")
        s3.put_object(Bucket=bucket, Key=self.prefix + "model.bin", Body=self.data)
        self.model_dir, self.go = tmp_path / "model", tmp_path / "go"
        env = launcher_env()
        env.update(store.env(), OSSC_EXPIRE_TIME_SEC="1", AWS_ENDPOINT_URL=proxy.endpoint)
        proxy.add_fault("stall", key=self.prefix + "model.bin", ranged_only=True, times=held,
                        seconds=seconds)
        reader = textwrap.dedent(f"""
            import hashlib, os, time
            deadline = time.monotonic() + 60
            while not os.path.exists({str(self.go)!r}) and time.monotonic() < deadline:
                time.sleep(0.01)
            with open(os.path.join({str(self.model_dir)!r}, "model.bin"), "rb") as f:
                print(hashlib.sha256(f.read()).hexdigest())
        """)
        cmd = [sys.executable, "-m", "ossc.launcher", "--config", "", "--oss-path",
               f"s3://{bucket}/{self.prefix}", "--model-dir", str(self.model_dir), "--vcpus",
               "4", "--workers", "1", "--chunk-size", "256KiB", "--", sys.executable, "-c",
               reader]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)

    def gets(self) -> int:
        """Ranged GETs of model.bin so far: with every reply held, those in flight."""
        return sum(1 for m, k, r in self.proxy.request_order()
                   if m == "GET" and k.endswith(self.prefix + "model.bin") and r)

    def wait_for_gets(self, n: int, until: float, why: str) -> None:
        while self.gets() < n:
            assert time.monotonic() < until and self.proc.poll() is None, why
            time.sleep(0.005)

    def finish(self) -> None:
        """Lets the reader read; its bytes must be the object's."""
        self.go.touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        assert out.strip() == hashlib.sha256(self.data).hexdigest()
        assert wait_session_gone(self.model_dir)

    def began(self) -> float:
        """When the prefetch's first 2 GETs were in flight."""
        self.wait_for_gets(2, time.monotonic() + 60, "the prefetch never began")
        return time.monotonic()

    def __enter__(self) -> "BesideApp":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:  # ossc-run and the reader it started
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()


def test_a_sessions_prefetch_runs_on_every_thread_before_anyone_reads(store, bucket, proxy,
                                                                     tmp_path):
    """A session's prefetch runs beside the application's start-up (imports, CUDA) on all its
    threads, so that it ends before the application reads: with nobody reading, all 4 threads
    have a GET in flight while the store holds the first 4 replies 4 s."""
    with BesideApp(store, bucket, proxy, tmp_path, held=4, seconds=4.0) as app:
        began = app.began()
        app.wait_for_gets(4, began + 2.5, "the prefetch waited for a reader to use every thread")
        app.finish()


def test_defaults_are_derived_from_the_machine_and_numbers_override_them(monkeypatch):
    """prefetch.vcpus: the CPUs this process may use (2 to 64); workers 8 per thread, at most
    64 over the threads (derived or given; 2 per thread at least); chunkSize auto
    (32 MiB until a fetch sizes it). Resolved settings keep "auto" (a config file or the
    owner's options never pin this machine's numbers); a client runs with the numbers.
    Numbers, "auto" and Aliyun's config.json keys still set them."""
    monkeypatch.setenv("OSSC_CONFIG", "")
    for k in ("OSSC_PREFETCH_VCPUS", "OSSC_PREFETCH_WORKERS", "OSSC_CHUNK_SIZE"):
        monkeypatch.delenv(k, raising=False)
    cores = len(os.sched_getaffinity(0))
    s = resolve("s3://bucket/p/", {}, os.environ)
    assert (s["prefetch"]["vcpus"], s["prefetch"]["workers"], s["chunkSize"]) == ("auto",) * 3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    s = ossc.Client("s3://bucket/p/", {"endpoint": "http://127.0.0.1:9"}).settings()
    threads = min(64, max(2, cores))
    assert s["prefetch"]["vcpus"] == threads
    assert s["prefetch"]["workers"] == min(8, max(2, 64 // threads))
    assert s["chunkSize"] == 32 << 20
    s = ossc.Client("s3://bucket/p/", {"endpoint": "http://127.0.0.1:9", "prefetch.vcpus": 16,
                                       "prefetch.workers": "auto"}).settings()
    assert s["prefetch"]["workers"] == 4, "auto transfers do not follow the threads given"
    s = resolve("s3://bucket/p/", {"prefetch.vcpus": "5", "chunkSize": "4MiB"}, os.environ)
    assert s["prefetch"]["vcpus"] == 5 and s["chunkSize"] == 4 << 20
    monkeypatch.setenv("OSSC_PREFETCH_WORKERS", "3")
    s = resolve("s3://bucket/p/", {"prefetch.vcpus": "auto"}, os.environ)
    assert s["prefetch"]["vcpus"] == "auto" and s["prefetch"]["workers"] == 3


def test_a_full_tmpfs_fails_the_fetch_cleanly(store, bucket, small_tmpfs, tmp_path):
    """Three 24 MiB objects into a 64 MiB tmpfs over 4 threads: the items that fit are
    reserved and mapped, the last one cannot be and fails with ENOSPC through pwrite. One
    message, exit 10, no SIGBUS, and no file under its final name that is not whole."""
    prefix = f"full-{os.getpid()}/"
    blobs = {f"shard-{i}.bin": os.urandom(24 << 20) for i in range(3)}
    s3 = store.s3()
    for name, data in blobs.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    r = subprocess.run([sys.executable, "-m", "ossc", "get", f"s3://{bucket}/{prefix}",
                        str(small_tmpfs), "--vcpus", "4", "--chunk-size", "1MiB"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == status_exit_code(lib.OSSC_E_IO) == 10, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], r.stderr
    left = {p.name: p.read_bytes() for p in small_tmpfs.iterdir()}
    assert left, "nothing fitted: the test did not fill the tmpfs"
    for name, data in left.items():
        assert blobs.get(name) == data, f"{name} is left but not whole"


def test_a_full_cache_dir_gives_readers_eio_and_the_owner_survives(store, bucket, proxy,
                                                                   small_tmpfs, tmp_path):
    """ossc-run with a 64 MiB tmpfs as cacheDir, lazy, 4 threads: three 24 MiB files opened
    at once do not fit (the store answers late, so all three fetches start before a byte
    lands). Those that fetch read right, the others fail with EIO; the owner lives on (a
    file read before reads again). A cacheLimit above the free space is refused at start
    in one line."""
    prefix = f"fullrun-{os.getpid()}/"
    blobs = {f"shard-{i}.bin": os.urandom(24 << 20) for i in range(3)}
    s3 = store.s3()
    s3.put_object(Bucket=bucket, Key=prefix + "config.json", Body=b"{}")
    for name, data in blobs.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
    model_dir = tmp_path / "model"
    env = launcher_env()
    env.update(store.env(), OSSC_EXPIRE_TIME_SEC="1", AWS_ENDPOINT_URL=proxy.endpoint)
    proxy.add_fault("stall", seconds=0.3, times=None)
    reader = textwrap.dedent(f"""
        import hashlib, json, os, sys, threading
        names = {sorted(blobs)!r}
        out = {{}}
        def read(name):
            try:
                with open(os.path.join({str(model_dir)!r}, name), "rb") as f:
                    out[name] = hashlib.sha256(f.read()).hexdigest()
            except OSError as e:
                out[name] = e.errno
        threads = [threading.Thread(target=read, args=(n,)) for n in names]
        [t.start() for t in threads]
        [t.join() for t in threads]
        first = out.copy()
        for n in names:  # the owner still answers
            if isinstance(first[n], str):
                read(n)
                out[n + " again"] = out[n]
        print(json.dumps([first, out]))
    """)
    base = [sys.executable, "-m", "ossc.launcher", "--config", "", "--oss-path",
            f"s3://{bucket}/{prefix}", "--model-dir", str(model_dir), "--cache-dir",
            str(small_tmpfs), "--vcpus", "4", "--chunk-size", "512KiB"]
    r = subprocess.run(base + ["--policy", "lazy", "--", sys.executable, "-c", reader],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "died" not in r.stderr, r.stderr
    first, out = json.loads(r.stdout.strip().splitlines()[-1])
    want = {n: hashlib.sha256(d).hexdigest() for n, d in blobs.items()}
    assert errno.EIO in first.values(), first
    assert any(v == want[n] for n, v in first.items()), first
    for name, got in first.items():
        assert got in (want[name], errno.EIO), first
    for name, got in out.items():  # read again: the same answer, or whole bytes
        assert got == first.get(name, want[name.split()[0]]), out
    assert wait_session_gone(model_dir)

    proxy.clear_faults()
    r = subprocess.run(base + ["--cache-limit", "200MiB", "--", sys.executable, "-c", "pass"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_NO_SPACE == 14, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cacheLimit" in lines[0], r.stderr
    assert wait_session_gone(model_dir)
