"""The fault proxy itself, against a real LocalStore."""

import concurrent.futures
import http.client
import random
import socket
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from support.faultproxy import crc64, crc64_py
from support.localstore import sigv4_headers

SIZE = 3 * 1024 * 1024 + 123  # several proxy pieces, not a multiple of anything


@pytest.fixture(scope="module")
def obj(store, bucket):
    """(key, body) of a test object, uploaded directly (not through the proxy)."""
    key = "faultproxy/obj.bin"
    body = random.Random(1234).randbytes(SIZE)
    store.s3().put_object(Bucket=bucket, Key=key, Body=body)
    return key, body


def request(proxy, store, path, *, method="GET", headers=None, conn=None, secret=None,
            signed=True, timeout=10.0):
    """One signed request through the proxy; returns (conn, response) with the body unread."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    host = f"127.0.0.1:{proxy.port}"
    auth = {}
    if signed:
        auth = sigv4_headers(method, host, path, access_key=store.access_key,
                             secret_key=secret or store.secret_key)
        del auth["host"]  # http.client sends Host itself
    conn.request(method, path, headers={**auth, **(headers or {})})
    return conn, conn.getresponse()


def object_path(bucket, key):
    return f"/{bucket}/{urllib.parse.quote(key)}"


def test_crc64_check_value():
    assert crc64(b"123456789", 0) == crc64_py(b"123456789") == 0x995DC9BBDF1939FA
    data = random.Random(1).randbytes(1000)
    assert crc64(data[300:], crc64(data[:300], 0)) == crc64(data, 0) == crc64_py(data)


def test_passthrough_keepalive_and_counts(proxy, store, bucket, obj):
    key, body = obj
    path, full_key = object_path(bucket, key), f"{bucket}/{key}"
    conn, resp = request(proxy, store, path)
    assert resp.status == 200 and resp.read() == body
    sock = conn.sock
    conn, resp = request(proxy, store, path, conn=conn, headers={"Range": "bytes=100-199"})
    assert resp.status == 206
    assert resp.getheader("Content-Range") == f"bytes 100-199/{SIZE}"
    assert resp.getheader("ETag")
    assert resp.read() == body[100:200]
    conn, resp = request(proxy, store, path, conn=conn, method="HEAD")
    assert resp.status == 200 and resp.read() == b""
    assert conn.sock is sock, "client connection was not kept alive"
    assert proxy.request_count("GET", full_key) == 2
    assert proxy.request_count("HEAD", full_key) == 1
    assert proxy.bytes_served(full_key) == SIZE + 100
    assert proxy.served_ranges(full_key) == [(0, SIZE), (100, 100)]
    proxy.reset()
    assert proxy.bytes_served() == 0 and proxy.request_count() == 0


def test_boto3_through_proxy(proxy, store, bucket, obj):
    """A real SigV4 client works through the proxy: Host is forwarded as signed."""
    key, body = obj
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=proxy.endpoint, region_name="us-east-1",
        aws_access_key_id=store.access_key, aws_secret_access_key=store.secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    got = s3.get_object(Bucket=bucket, Key=key, Range="bytes=5-9")["Body"].read()
    assert got == body[5:10]
    s3.put_object(Bucket=bucket, Key="faultproxy/put.bin", Body=b"x" * 300_000)  # body relay
    assert s3.head_object(Bucket=bucket, Key="faultproxy/put.bin")["ContentLength"] == 300_000


def test_store_refuses_unsigned_and_wrong_secret(proxy, store, bucket, obj):
    path = object_path(bucket, obj[0])
    _, resp = request(proxy, store, path, signed=False)
    assert resp.status == 403
    assert ET.fromstring(resp.read()).findtext("Code") == "AccessDenied"
    _, resp = request(proxy, store, path, secret="not-the-secret")
    assert resp.status == 403
    assert ET.fromstring(resp.read()).findtext("Code") == "SignatureDoesNotMatch"


def test_status_fault_after_and_times(proxy, store, bucket, obj):
    path = object_path(bucket, obj[0])
    fault = proxy.add_fault("status", key=obj[0], status=503, after=1, times=1,
                            headers={"x-oss-qos-delay-time": "250"})
    conn, resp = request(proxy, store, path)
    assert resp.status == 200
    resp.read()
    conn, resp = request(proxy, store, path, conn=conn)
    assert resp.status == 503
    assert resp.getheader("x-oss-qos-delay-time") == "250"
    assert ET.fromstring(resp.read()).findtext("Code") == "SlowDown"
    conn, resp = request(proxy, store, path, conn=conn)  # same connection: kept alive
    assert resp.status == 200
    resp.read()
    assert (fault.skipped, fault.fired) == (1, 1)

    proxy.add_fault("status", method="HEAD", status=500)
    conn, resp = request(proxy, store, path, conn=conn, method="HEAD")
    assert resp.status == 500 and resp.read() == b""
    conn, resp = request(proxy, store, path, conn=conn, method="HEAD")
    assert resp.status == 200


def test_status_fault_range_from(proxy, store, bucket, obj):
    """range_from=X: only ranged GETs starting at X or past it; a whole GET and earlier ranges
    pass."""
    path = object_path(bucket, obj[0])
    fault = proxy.add_fault("status", key=obj[0], status=403, range_from=1000, times=None)
    for rng, status in ((None, 200), ("bytes=0-1999", 206), ("bytes=999-1000", 206),
                        ("bytes=1000-1999", 403), ("bytes=5000-", 403)):
        conn, resp = request(proxy, store, path, headers={"Range": rng} if rng else None)
        assert resp.status == status, rng
        resp.read()
        conn.close()
    assert fault.fired == 2


def test_status_fault_waits_for_the_requests_it_names(proxy, store, bucket, obj):
    """requests=2: the first GET's error comes only once a second GET of the key has come."""
    path = object_path(bucket, obj[0])
    proxy.add_fault("status", key=obj[0], status=403, requests=2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(lambda: request(proxy, store, path)[1].status)
        with pytest.raises(concurrent.futures.TimeoutError):  # held: no second GET yet
            first.result(timeout=0.5)
        conn, resp = request(proxy, store, path)
        assert resp.status == 200
        resp.read()
        assert first.result(timeout=5) == 403


def test_reset_sends_rst_after_n_bytes(proxy, store, bucket, obj):
    key, body = obj
    proxy.add_fault("reset", after_bytes=1000)
    _, resp = request(proxy, store, object_path(bucket, key))
    assert resp.status == 200 and resp.getheader("Content-Length") == str(SIZE)
    got = b""
    with pytest.raises(ConnectionResetError):
        while piece := resp.read1(65536):
            got += piece
    assert got == body[:1000]
    assert proxy.bytes_served(f"{bucket}/{key}") == 1000


def test_truncate_closes_cleanly(proxy, store, bucket, obj):
    key, body = obj
    proxy.add_fault("truncate", after_bytes=5000, ranged_only=True)
    _, resp = request(proxy, store, object_path(bucket, key), headers={"Range": "bytes=0-99999"})
    assert resp.status == 206
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert e.value.partial == body[:5000]


def test_stall_before_headers_and_mid_body(proxy, store, bucket, obj):
    path = object_path(bucket, obj[0])
    proxy.add_fault("stall", seconds=0.5, times=1)
    t0 = time.monotonic()
    _, resp = request(proxy, store, path, headers={"Range": "bytes=0-9"})
    assert resp.status == 206 and time.monotonic() - t0 >= 0.5
    resp.read()

    proxy.add_fault("stall", seconds=30, after_bytes=10)
    _, resp = request(proxy, store, path, headers={"Range": "bytes=0-99"}, timeout=0.5)
    assert resp.status == 206
    with pytest.raises((TimeoutError, socket.timeout)):
        resp.read()


def test_wrong_content_range(proxy, store, bucket, obj):
    key, body = obj
    proxy.add_fault("wrong_content_range", shift=7)
    _, resp = request(proxy, store, object_path(bucket, key), headers={"Range": "bytes=10-19"})
    assert resp.getheader("Content-Range") == f"bytes 17-26/{SIZE}"
    assert resp.read() == body[10:20]


def test_flip_byte_is_caught_by_crc64(proxy, store, bucket, obj):
    key, body = obj
    proxy.add_crc64 = True
    proxy.add_fault("flip_byte", offset=12345)
    _, resp = request(proxy, store, object_path(bucket, key))
    got = resp.read()
    assert int(resp.getheader("x-oss-hash-crc64ecma")) == crc64(body, 0)
    assert len(got) == SIZE and got != body
    assert [i for i in range(SIZE) if got[i] != body[i]] == [12345]
    _, resp = request(proxy, store, object_path(bucket, key), method="HEAD")
    assert int(resp.getheader("x-oss-hash-crc64ecma")) == crc64(body, 0)
    resp.read()


def test_status_200_full(proxy, store, bucket, obj):
    key, body = obj
    proxy.add_fault("status_200_full")
    _, resp = request(proxy, store, object_path(bucket, key), headers={"Range": "bytes=10-19"})
    assert resp.status == 200 and resp.getheader("Content-Range") is None
    assert resp.read() == body
    assert proxy.served_ranges(f"{bucket}/{key}") == [(0, SIZE)]


def test_stop_closes_live_connections(store, bucket, obj):
    from support.faultproxy import FaultProxy

    proxy = FaultProxy(store.endpoint).start()
    path = object_path(bucket, obj[0])
    idle, resp = request(proxy, store, path, headers={"Range": "bytes=0-9"})
    resp.read()
    proxy.add_fault("stall", seconds=60, after_bytes=0)
    _, stalled = request(proxy, store, path, headers={"Range": "bytes=0-9"})
    t0 = time.monotonic()
    proxy.stop()
    assert time.monotonic() - t0 < 5
    with pytest.raises(http.client.IncompleteRead):
        stalled.read()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(proxy, store, path, conn=idle)
    assert proxy.errors == []
