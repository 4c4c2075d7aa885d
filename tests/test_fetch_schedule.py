"""The fetch schedule (preload/src/engine/fetch.c, sink_map.c, tuning.c) against a real S3 server
(SeaweedFS on 127.0.0.1, through the fault proxy where the order of requests matters): chunks go
out in the items' order, a reader's wait jumps the queue, one large object split over many
transfers lands byte for byte through a shared mapping of its tmpfs file (and through pwrite
elsewhere), and the defaults are derived from the machine."""

import hashlib
import os
import time

import pytest

import ossc
from ossc.native import ffi, lib
from ossc.settings import resolve

CHUNK = 64 << 10  # the smallest chunk size: many chunks from a small object
PREFIX = "schedule/"
SHM = "/dev/shm"


def pattern(n: int, seed: int) -> bytes:
    """A hash chain: a block written at the wrong offset or twice is caught."""
    out, block, i = bytearray(), hashlib.sha256(str(seed).encode()).digest(), 0
    while len(out) < n:
        block = hashlib.sha256(block + i.to_bytes(8, "little")).digest()
        out += block * 32
        i += 1
    return bytes(out[:n])


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
        # a range of it, starting and ending inside chunks
        os.ftruncate(fd, 0)
        os.ftruncate(fd, 3 * CHUNK)
        fetch_into_fd(client, "big.bin", fd, offset=5 * CHUNK + 7, length=2 * CHUNK + 11)
        assert os.pread(fd, 2 * CHUNK + 11, 0) == data[5 * CHUNK + 7:7 * CHUNK + 18]
    finally:
        os.close(fd)
    assert capfd.readouterr().err.count("written through a shared mapping") == 2


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


def test_defaults_are_derived_from_the_machine_and_numbers_override_them(monkeypatch):
    """prefetch.vcpus: the CPUs this process may use (2 to 64); workers 8; chunkSize auto
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
    assert s["prefetch"]["vcpus"] == min(64, max(2, cores))
    assert s["prefetch"]["workers"] == 8 and s["chunkSize"] == 32 << 20
    s = resolve("s3://bucket/p/", {"prefetch.vcpus": "5", "chunkSize": "4MiB"}, os.environ)
    assert s["prefetch"]["vcpus"] == 5 and s["chunkSize"] == 4 << 20
    monkeypatch.setenv("OSSC_PREFETCH_WORKERS", "3")
    s = resolve("s3://bucket/p/", {"prefetch.vcpus": "auto"}, os.environ)
    assert s["prefetch"]["vcpus"] == "auto" and s["prefetch"]["workers"] == 3