"""The connector's direct reads (python/ossc/direct_read.py): a large readinto that the
prefetch has not reached is fetched straight into the caller's buffer, the prefetch gives way
and other reads fill its memory on demand; a run of such reads has the next bytes read ahead
(python/ossc/readahead.py). Sizes are scaled down (64 KiB chunks, direct from 4 chunks on, a
12-chunk read-ahead window in 6-chunk segments) so that every path runs on small objects,
against SeaweedFS through the fault proxy (which slows the prefetch so that readers race it,
corrupts bodies and refuses ranges)."""

from __future__ import annotations

import gc
import io
import random
import threading
import time

import oss2
import pytest

import ossc
from ossc import connector as conn
from ossc import direct_read, readahead

PREFIX = "connector-direct/"
CHUNK = 64 << 10
SIZE = 40 * CHUNK + 333  # ends inside a chunk, and inside a fill step


@pytest.fixture(autouse=True)
def scaled_down(monkeypatch):
    """No config file, the store's region; direct reads, pieces and fill steps in chunks."""
    monkeypatch.setenv("OSSC_CONFIG", "")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(conn, "DIRECT_READ_MIN", 4 * CHUNK)
    monkeypatch.setattr(conn, "FILL_STEP", CHUNK)
    monkeypatch.setattr(direct_read, "PIECE_MIN", CHUNK)
    monkeypatch.setattr(readahead, "WINDOW", 12 * CHUNK)
    monkeypatch.setattr(readahead, "SEGMENT", 6 * CHUNK)  # not the readers' buffer size
    monkeypatch.setattr(readahead, "SEGMENT_MAX", 10 * CHUNK)


@pytest.fixture
def direct_calls(monkeypatch):
    """The ranges each direct fetch (into a caller's buffer or a fill) asked for."""
    calls = []
    real = direct_read.fetch_into

    def spy(client, key, size, ranges, views, wait_step, poll_s):
        calls.append(list(ranges))
        return real(client, key, size, ranges, views, wait_step, poll_s)

    monkeypatch.setattr(direct_read, "fetch_into", spy)
    return calls


@pytest.fixture
def ahead_calls(monkeypatch):
    """The ranges each read-ahead segment's fetch asked for."""
    calls = []
    real = readahead.Fetch

    def spy(client, items):
        calls.append([(i.offset, i.length) for i in items])
        return real(client, items)

    monkeypatch.setattr(readahead, "Fetch", spy)
    return calls


@pytest.fixture(scope="module")
def objects(store, bucket):
    data = {f"obj{i}.bin": random.Random(i).randbytes(SIZE) for i in range(3)}
    s3 = store.s3()
    for name, body in data.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + name, Body=body)
    return data


def make(store, endpoint, direct_reads=None, **settings):
    provider = oss2.credentials.StaticCredentialsProvider(store.access_key, store.secret_key)
    return ossc.OssModelConnector(endpoint, cred_provider=provider, direct_reads=direct_reads,
                                  settings={"chunkSize": "64KiB", **settings})


def uri(bucket, name):
    return f"s3://{bucket}/{PREFIX}{name}"


@pytest.mark.parametrize("give_way_max", [0, 1 << 40], ids=["prefetch-keeps", "gives-way"])
def test_direct_reads_interleaved_with_prefetch_match_bytesio(store, bucket, objects, proxy,
                                                              monkeypatch, direct_calls,
                                                              give_way_max):
    """300 seeded steps over three streams at once (large and small readinto at odd offsets
    and lengths, read, seek, readline, mmap), while their prefetches crawl through a proxy
    that holds every ranged GET 20 ms: every result matches io.BytesIO."""
    monkeypatch.setattr(conn, "GIVE_WAY_MAX", give_way_max)
    proxy.add_fault("stall", ranged_only=True, seconds=0.02, times=None)
    rng = random.Random(20261126)
    names = sorted(objects)
    with make(store, proxy.endpoint) as c:
        streams = [c.open(uri(bucket, n)) for n in names]
        refs = [io.BytesIO(objects[n]) for n in names]
        for step in range(300):
            i = rng.randrange(len(streams))
            f, ref = streams[i], refs[i]
            op = rng.choice(["big", "big", "big", "small", "read", "seek", "readline", "mmap"])
            where = f"step {step}: {op} on {names[i]} at {ref.tell()}"
            if op == "big":
                n = rng.choice([4 * CHUNK, 5 * CHUNK + 17, 9 * CHUNK - 1, SIZE + 5])
                a, b = bytearray(n), bytearray(n)
                assert f.readinto(a) == ref.readinto(b), where
                assert a == b, where
            elif op == "small":
                a, b = bytearray(1000), bytearray(1000)
                assert f.readinto(a) == ref.readinto(b) and a == b, where
            elif op == "read":
                n = rng.choice([1, CHUNK + 3, 3 * CHUNK])
                assert f.read(n) == ref.read(n), where
            elif op == "seek":
                pos = rng.choice([0, rng.randrange(SIZE), SIZE - 100, SIZE + 10])
                assert f.seek(pos) == ref.seek(pos), where
            elif op == "readline":
                assert f.readline(500) == ref.readline(500), where
            elif op == "mmap" and rng.random() < 0.2:
                view = f.mmap()
                assert bytes(view) == objects[names[i]], where
                del view
            assert f.tell() == ref.tell(), where
        for f in streams:
            f.close()
    if give_way_max:  # (without, whether a prefetch is ahead of a reader is up to timing)
        assert direct_calls, "no read went straight into a caller's buffer"
        assert any(s._gave_way for s in streams)


def test_reader_racing_the_prefetch_of_the_same_range(store, bucket, objects, proxy,
                                                       monkeypatch, direct_calls):
    """The prefetch's first GETs are in flight (held 0.5 s) when a readinto asks for the same
    range: the prefetch gives way and the range comes straight into the buffer; what had
    landed is still served from memory, the rest is filled, and the bytes are the object's."""
    monkeypatch.setattr(conn, "GIVE_WAY_MAX", 1 << 40)
    data = objects["obj0.bin"]
    proxy.add_fault("stall", key=PREFIX + "obj0.bin", ranged_only=True, seconds=0.5, times=4)
    with make(store, proxy.endpoint) as c, c.open(uri(bucket, "obj0.bin")) as f:
        assert f._fetch is not None and not f._landed(0, CHUNK)
        buf = bytearray(6 * CHUNK + 11)
        f.seek(CHUNK // 2)
        assert f.readinto(buf) == len(buf) and buf == data[CHUNK // 2:CHUNK // 2 + len(buf)]
        assert f._gave_way
        assert direct_calls[0][0][0] == CHUNK // 2
        assert sum(n for _, n in direct_calls[0]) == len(buf)
        assert f.seek(0) == 0 and f.read(CHUNK) == data[:CHUNK]  # filled on demand
        assert bytes(f.mmap()) == data


def test_direct_read_of_a_corrupt_body_fails_with_integrity_error(store, bucket, objects,
                                                                  monkeypatch, direct_calls):
    """Through a proxy that sends the object's CRC-64 (as OSS does) and flips a byte of every
    body: with verifyBeforeRead=no the direct reads hand out the bytes and the read that ends
    the object raises IntegrityError; without the fault the same reads pass the check."""
    from support.faultproxy import FaultProxy

    monkeypatch.setattr(conn, "GIVE_WAY_MAX", 1 << 40)
    data = objects["obj1.bin"]
    proxy = FaultProxy(store.endpoint, signer=store.sign, add_crc64=True).start()
    try:
        with make(store, proxy.endpoint, verifyBeforeRead="no") as c:
            with c.open(uri(bucket, "obj1.bin")) as f:
                got = bytearray()
                buf = bytearray(7 * CHUNK)
                while n := f.readinto(buf):
                    got += buf[:n]
                assert got == data
            assert direct_calls
            proxy.add_fault("flip_byte", key=PREFIX + "obj1.bin", ranged_only=True, times=None)
            with c.open(uri(bucket, "obj1.bin")) as f:
                buf = bytearray(7 * CHUNK)
                with pytest.raises(conn.IntegrityError, match="CRC-64 mismatch over the bytes"):
                    while f.readinto(buf):
                        pass
    finally:
        proxy.stop()


def test_verify_before_read_keeps_reads_on_the_verified_prefetch(store, bucket, objects,
                                                                 monkeypatch, direct_calls):
    """With the store's CRC-64 and verifyBeforeRead (the default), bytes may not reach a
    reader before the whole object verified: no direct read; a body corrupted once is
    refetched by the prefetch and the reader gets the object's bytes."""
    from support.faultproxy import FaultProxy

    data = objects["obj2.bin"]
    proxy = FaultProxy(store.endpoint, signer=store.sign, add_crc64=True).start()
    try:
        fault = proxy.add_fault("flip_byte", key=PREFIX + "obj2.bin", ranged_only=True, times=1)
        with make(store, proxy.endpoint) as c, c.open(uri(bucket, "obj2.bin")) as f:
            buf = bytearray(SIZE)
            assert f.readinto(buf) == SIZE and buf == data
        assert fault.fired == 1 and not direct_calls
    finally:
        proxy.stop()


def test_direct_reads_default_to_plain_http_and_can_be_turned_off(store, bucket, objects,
                                                                   monkeypatch, direct_calls):
    """Direct reads are on for an http:// endpoint (or one without a scheme), off for https://
    (a fetch per read would pay TLS handshakes); direct_reads=False keeps every read on the
    prefetch, with the same bytes."""
    provider = oss2.credentials.StaticCredentialsProvider(store.access_key, store.secret_key)
    for endpoint, on in (("https://oss-cn-hangzhou.aliyuncs.com", False),
                         ("HTTPS://s3.example.com:9000", False),
                         ("oss-cn-hangzhou-internal.aliyuncs.com", True),
                         (store.endpoint, True)):
        assert ossc.OssModelConnector(endpoint, cred_provider=provider).direct_reads is on
    monkeypatch.setattr(conn, "GIVE_WAY_MAX", 1 << 40)
    with make(store, store.endpoint, direct_reads=False) as c:
        assert not c.direct_reads
        with c.open(uri(bucket, "obj1.bin")) as f:
            buf = bytearray(SIZE)
            assert f.readinto(buf) == SIZE and buf == objects["obj1.bin"]
    assert not direct_calls


def test_direct_reads_leak_nothing(store, bucket, objects, monkeypatch, direct_calls,
                                   ahead_calls):
    """100 cycles of open, direct and read-ahead reads to the end (a fetch per read or
    segment) and close leave the process's fds, threads and memory where they were."""
    from test_connector import _fds, _rss_kib, _rss_says_nothing, _threads

    monkeypatch.setattr(conn, "GIVE_WAY_MAX", 1 << 40)
    data = objects["obj0.bin"]
    buf = bytearray(9 * CHUNK)
    with make(store, store.endpoint) as c:
        def cycle(n):
            for _ in range(n):
                with c.open(uri(bucket, "obj0.bin")) as f:
                    got = bytearray()
                    while k := f.readinto(buf):
                        got += buf[:k]
                    assert got == data
        cycle(10)
        gc.collect()
        fds, threads, rss = _fds(), _threads(), _rss_kib()
        calls = len(direct_calls) + len(ahead_calls)
        cycle(100)
        gc.collect()
        assert len(direct_calls) + len(ahead_calls) - calls >= 100 * (SIZE // len(buf))
        assert len(ahead_calls) >= 100 * 2
        assert _fds() == fds and _threads() == threads
        grown = _rss_kib() - rss
        assert grown < 8 * 1024 or _rss_says_nothing(), \
            f"RSS grew by {grown} KiB over 100 cycles"


def _read_to_end(f, buf) -> bytes:
    got = bytearray()
    while k := f.readinto(buf):
        got += buf[:k]
    return bytes(got)


def test_sequential_reader_reads_ahead(store, bucket, objects, proxy, monkeypatch,
                                       direct_calls, ahead_calls):
    """A reader pulling an object through one 4-chunk buffer (every ranged GET held 20 ms):
    the first read goes straight into the buffer, every later byte was read ahead, each range
    once; after a seek the run starts again, with the same bytes."""
    monkeypatch.setattr(conn, "PREFETCH_STREAMS", 0)  # no prefetch: the same path each run
    proxy.add_fault("stall", ranged_only=True, seconds=0.02, times=None)
    data = objects["obj1.bin"]
    buf = bytearray(4 * CHUNK)
    with make(store, proxy.endpoint) as c, c.open(uri(bucket, "obj1.bin")) as f:
        assert _read_to_end(f, buf) == data
        direct = sorted(r for call in direct_calls for r in call)
        ahead = sorted(r for call in ahead_calls for r in call)
        assert sum(n for _, n in direct) == 4 * CHUNK and direct[0][0] == 0
        assert sum(n for _, n in ahead) == SIZE - 4 * CHUNK
        assert [o for o, _ in ahead] == sorted({o for o, _ in ahead})  # no range twice
        assert f.seek(CHUNK + 5) == CHUNK + 5
        assert _read_to_end(f, buf) == data[CHUNK + 5:]
        assert not f._ahead.segments  # used up at the end: nothing left in flight


def test_failed_range_fails_the_read_with_the_engines_error(store, bucket, objects, proxy,
                                                            monkeypatch, ahead_calls):
    """The store refuses (403) every ranged GET from chunk 12 on. A direct read whose pieces
    (fetched at once into one buffer) include such a range raises RefusedError. A reader
    whose read-ahead segment [8, 14) was refused still gets [8, 12) (fetched directly), and
    the read of [12, 16) raises RefusedError and hands out nothing: the position stays, a
    retry raises again."""
    monkeypatch.setattr(conn, "PREFETCH_STREAMS", 0)
    data = objects["obj2.bin"]
    proxy.add_fault("status", status=403, key=PREFIX + "obj2.bin", range_from=12 * CHUNK,
                    times=None)
    with make(store, proxy.endpoint) as c, c.open(uri(bucket, "obj2.bin")) as f:
        big = bytearray(8 * CHUNK)
        f.seek(6 * CHUNK)  # pieces 6..13: the last two are refused
        with pytest.raises(conn.RefusedError, match="403"):
            f.readinto(big)
        assert f.tell() == 6 * CHUNK
        buf = bytearray(4 * CHUNK)
        f.seek(0)
        for k in range(3):  # [0, 12) read; segment [8, 14) is refused
            assert f.readinto(buf) == len(buf) and buf == data[4 * k * CHUNK:4 * (k + 1) * CHUNK]
        assert any(o >= 12 * CHUNK for call in ahead_calls for o, _ in call)
        for _ in range(2):
            buf[:] = bytes(len(buf))
            with pytest.raises(conn.RefusedError, match="403"):
                f.readinto(buf)
            assert f.tell() == 12 * CHUNK
        assert not f._ahead.segments


def test_close_from_another_thread_ends_a_waiting_read(store, bucket, objects, proxy):
    """A read waiting on the store holds its stream (calls run one at a time); a close() from
    another thread must not wait for the store: the read fails as on a closed file within a
    poll, hands out nothing, and the close returns."""
    proxy.add_fault("stall", key=PREFIX + "obj0.bin", ranged_only=True, seconds=60,
                    times=None)
    with make(store, proxy.endpoint) as c:
        f = c.open(uri(bucket, "obj0.bin"))
        buf = bytearray(8 * CHUNK)
        outcome = []

        def read():
            try:
                outcome.append(f.readinto(buf))
            except Exception as e:  # noqa: BLE001 - the outcome is the assertion
                outcome.append(e)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive()  # waiting on the stalled store
        t = time.monotonic()
        f.close()
        took = time.monotonic() - t
        reader.join(30)
        assert not reader.is_alive() and took < 10, took
        assert isinstance(outcome[0], ValueError), outcome
        assert buf == bytearray(len(buf))
