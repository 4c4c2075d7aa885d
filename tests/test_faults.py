"""Fault injection between the engine and SeaweedFS: every download ends byte-identical or
fails with a clear error, never silently short or corrupt."""

import hashlib
import os
import subprocess
import sys

import pytest

import ossc
from ossc.errors import status_exit_code
from ossc.native import lib

CHUNK = 64 << 10
PREFIX = "faults/"
SIZE = 6 * CHUNK + 777  # seven chunks, the last one short


def body(seed: int) -> bytes:
    out, block = bytearray(), str(seed).encode()
    while len(out) < SIZE:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:SIZE])


@pytest.fixture(scope="module")
def objects(store, bucket):
    data = {f"{PREFIX}obj{i}.bin": body(i) for i in range(3)}
    s3 = store.s3()
    for key, blob in data.items():
        s3.put_object(Bucket=bucket, Key=key, Body=blob)
    return data


@pytest.fixture
def client_for(store, bucket, proxy, monkeypatch):
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OSSC_CONFIG", "")

    def make(**settings):
        base = {"endpoint": proxy.endpoint, "chunkSize": str(CHUNK), "prefetch.vcpus": "2",
                "prefetch.workers": "2", "stallTimeoutSec": "1", "connectTimeoutSec": "2"}
        base.update({k: str(v) for k, v in settings.items()})
        return ossc.Client(f"s3://{bucket}/{PREFIX}", base)
    return make


def fetch_all(client, objects):
    """Fetches every object into memory; returns (buffers, stats) or raises OsscError."""
    keys = sorted(objects)
    bufs = [bytearray(len(objects[k])) for k in keys]
    items = [ossc.FetchItem(k, len(objects[k]), buffer=b) for k, b in zip(keys, bufs)]
    with client.fetch(items) as f:
        try:
            assert f.wait(120), "fetch did not end in time"
        finally:
            stats = f.stats()
    return dict(zip(keys, map(bytes, bufs))), stats


RECOVERABLE = [
    ("status", {"status": 500}),
    ("status", {"status": 503, "headers": {"x-oss-qos-delay-time": "50"}}),
    ("status", {"status": 429}),
    ("reset", {"after_bytes": 500}),  # < the 777-byte last chunk
    ("reset", {"after_bytes": 0}),
    ("truncate", {"after_bytes": 500}),
    ("stall", {"seconds": 8.0, "after_bytes": 500}),  # curl averages speed over seconds
    ("stall", {"seconds": 5.0}),
    ("wrong_content_range", {"shift": 1}),
    ("status_200_full", {}),
]


@pytest.mark.parametrize("kind,params", RECOVERABLE, ids=[f"{k}-{i}" for i, (k, _) in
                                                         enumerate(RECOVERABLE)])
def test_transient_faults_end_byte_identical(objects, client_for, proxy, kind, params):
    fault = proxy.add_fault(kind, key="obj1", ranged_only=True, after=2, times=2, **params)
    got, stats = fetch_all(client_for(), objects)
    assert fault.fired == 2
    assert stats.retries >= 2
    for key, data in objects.items():
        assert got[key] == data, key


def test_many_faults_at_once(objects, client_for, proxy):
    for kind, params in RECOVERABLE:
        proxy.add_fault(kind, ranged_only=True, times=1, **params)
    got, stats = fetch_all(client_for(retries=12), objects)
    assert got == objects
    assert stats.retries >= len(RECOVERABLE)


def test_corrupt_byte_is_caught_by_crc64_and_refetched(objects, client_for, proxy):
    proxy.add_crc64 = True
    fault = proxy.add_fault("flip_byte", key="obj2", ranged_only=True, times=1)
    got, stats = fetch_all(client_for(), objects)
    assert fault.fired == 1
    assert got == objects
    # The whole object was fetched again: its bytes crossed the proxy twice.
    assert proxy.bytes_served(f"ossc-test/{PREFIX}obj2.bin") >= 2 * SIZE


def test_corruption_that_persists_fails_with_integrity_error(objects, client_for, proxy):
    proxy.add_crc64 = True
    proxy.add_fault("flip_byte", key="obj0", ranged_only=True, times=None)
    with pytest.raises(ossc.OsscError) as exc:
        fetch_all(client_for(), objects)
    assert exc.value.code == lib.OSSC_E_INTEGRITY
    assert "CRC-64 mismatch" in exc.value.message and "obj0" in exc.value.message


def test_permanent_error_is_not_retried(objects, client_for, proxy):
    proxy.add_fault("status", key="obj0", status=403, times=None)
    with pytest.raises(ossc.OsscError) as exc:
        fetch_all(client_for(), objects)
    assert exc.value.code == lib.OSSC_E_AUTH and exc.value.http_status == 403
    # At most the chunks already in flight (2 threads x 2 transfers), none of them retried.
    assert proxy.request_count("GET", f"ossc-test/{PREFIX}obj0.bin") <= 4


def test_persistent_throttling_gives_up_with_server_error(objects, client_for, proxy):
    proxy.add_fault("status", key="obj0", status=503, times=None)
    with pytest.raises(ossc.OsscError) as exc:
        fetch_all(client_for(retries=2), objects)
    assert exc.value.code == lib.OSSC_E_SERVER
    assert "gave up after 3 attempts" in exc.value.message
    # Each of the seven chunks was tried at most three times.
    assert proxy.request_count("GET", f"ossc-test/{PREFIX}obj0.bin") <= 7 * 3


def test_persistent_stall_gives_up_with_network_error(objects, client_for, proxy):
    proxy.add_fault("stall", key="obj0", seconds=30, times=None)
    with pytest.raises(ossc.OsscError) as exc:
        fetch_all(client_for(retries=1), objects)
    assert exc.value.code == lib.OSSC_E_NETWORK


def test_cli_get_through_faults(objects, store, proxy, tmp_path):
    proxy.add_crc64 = True
    for kind, params in RECOVERABLE[:6] + [("flip_byte", {})]:
        proxy.add_fault(kind, ranged_only=True, times=1, **params)
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    r = subprocess.run([sys.executable, "-m", "ossc", "get", f"s3://ossc-test/{PREFIX}",
                        str(tmp_path), "--endpoint", proxy.endpoint, "--chunk-size", "64KiB",
                        "--retries", "12"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for key, data in objects.items():
        assert (tmp_path / key[len(PREFIX):]).read_bytes() == data


def test_cli_failure_removes_partial_files(objects, store, proxy, tmp_path):
    proxy.add_fault("status", key="obj1", status=503, times=None)
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    r = subprocess.run([sys.executable, "-m", "ossc", "get", f"s3://ossc-test/{PREFIX}",
                        str(tmp_path), "--endpoint", proxy.endpoint, "--retries", "1"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == status_exit_code(lib.OSSC_E_SERVER)
    assert "obj1.bin" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "obj1.bin").exists()
