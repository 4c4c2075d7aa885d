"""Engine writes against SeaweedFS: PutObject, multipart uploads (file and stream), DeleteObject,
CopyObject. Every object read back is byte-identical (sha256 of what the store serves); an
upload that fails leaves no object and no unfinished multipart upload, also when the fault
proxy resets a part mid-body or corrupts one in flight."""

import hashlib
import os
import subprocess
import sys

import pytest

import ossc
from ossc.errors import status_exit_code
from ossc.native import lib

PART = 5 << 20  # the smallest part S3 allows
PREFIX = "upload/"


def pattern(size: int, seed: int) -> bytes:
    """Bytes that differ at every offset between seeds and within an object."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    reps = size // len(block) + 1
    return (block * reps)[:size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(store, monkeypatch):
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OSSC_CONFIG", "")


@pytest.fixture
def client(env, store, bucket):
    return ossc.Client(f"s3://{bucket}/", {"endpoint": store.endpoint,
                                           "upload.partSize": str(PART),
                                           "upload.concurrency": "3"})


def stored(store, bucket, key) -> bytes:
    return store.s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def absent(store, bucket, key) -> bool:
    s3 = store.s3()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return all(o["Key"] != key for o in listed)


def unfinished_uploads(store, bucket, prefix):
    reply = store.s3().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in reply.get("Uploads", [])]


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART + 12345])
def test_upload_file_round_trips(client, store, bucket, tmp_path, size):
    """Below and at one part: one PutObject; above: parts in parallel. Identical bytes."""
    data = pattern(size, size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}file-{size}.bin"
    client.upload_file(bucket, key, str(path))
    assert sha(stored(store, bucket, key)) == sha(data)
    assert client.head(key)[0] == size
    assert unfinished_uploads(store, bucket, key) == []


def test_put_delete_copy(client, store, bucket):
    data = pattern(300_000, 7)
    key, copy = f"{PREFIX}put.bin", f"{PREFIX}copy dir/模型 copy.bin"
    client.put_object(bucket, key, data)
    client.put_object(bucket, f"{PREFIX}view.bin", memoryview(data)[1000:2000])
    assert stored(store, bucket, f"{PREFIX}view.bin") == data[1000:2000]
    client.copy_object(bucket, key, copy)
    assert sha(stored(store, bucket, copy)) == sha(data)
    client.delete_object(bucket, key)
    assert absent(store, bucket, key)
    assert sha(stored(store, bucket, copy)) == sha(data)  # the copy is its own object
    with pytest.raises(ossc.OsscError) as e:
        client.copy_object(bucket, f"{PREFIX}no-such-key", f"{PREFIX}never")
    assert e.value.code == lib.OSSC_E_NOT_FOUND
    assert absent(store, bucket, f"{PREFIX}never")


def test_stream_in_odd_pieces(client, store, bucket):
    """Writes of every size, across part boundaries, make one object of their bytes."""
    data = pattern(3 * PART + 999, 3)
    key = f"{PREFIX}stream.bin"
    with client.open_upload(bucket, key) as out:
        pos, step = 0, 1
        while pos < len(data):
            pos += out.write(data[pos:pos + step])
            step = step * 7 + 3 if step < PART else 17
        assert out.tell() == len(data)
        assert absent(store, bucket, key)  # nothing is visible before close
    assert sha(stored(store, bucket, key)) == sha(data)


def test_stream_abandoned_leaves_nothing(client, store, bucket):
    """An exception inside the block, an explicit abort, or a stream dropped unclosed: no
    object, and the store holds no parts."""
    key = f"{PREFIX}abandoned.bin"
    with pytest.raises(RuntimeError):
        with client.open_upload(bucket, key) as out:
            out.write(pattern(2 * PART + 5, 1))  # two parts are on their way
            raise RuntimeError("training crashed")
    out = client.open_upload(bucket, key)
    out.write(pattern(PART + 5, 2))
    out.abort()
    with pytest.raises(ValueError):
        out.write(b"x")
    out = client.open_upload(bucket, key)
    out.write(pattern(2 * PART, 3))
    del out
    assert absent(store, bucket, key)
    assert unfinished_uploads(store, bucket, key) == []


def test_upload_file_errors_are_clear(client, bucket, tmp_path):
    with pytest.raises(ossc.OsscError) as e:
        client.upload_file(bucket, f"{PREFIX}x", str(tmp_path / "missing"))
    assert e.value.code == lib.OSSC_E_IO and "missing" in e.value.message


def test_upload_settings_are_checked(env, store, bucket):
    for bad in ({"upload.partSize": "1MiB"}, {"upload.concurrency": "0"}):
        with pytest.raises(ossc.OsscError) as e:
            ossc.Client(f"s3://{bucket}/", {"endpoint": store.endpoint, **bad})
        assert e.value.code == lib.OSSC_E_CONFIG


# --- through the fault proxy ---------------------------------------------------------------


@pytest.fixture
def proxied(env, bucket, proxy):
    def make(**settings):
        base = {"endpoint": proxy.endpoint, "upload.partSize": str(PART),
                "upload.concurrency": "2", "stallTimeoutSec": "2", "connectTimeoutSec": "2"}
        base.update({k: str(v) for k, v in settings.items()})
        return ossc.Client(f"s3://{bucket}/", base)
    return make


RECOVERABLE = [
    ("reset_request", {"method": "PUT", "after_bytes": PART // 2}),  # mid-part
    ("reset_request", {"method": "PUT", "after_bytes": 0, "times": 3}),
    ("flip_request_byte", {"method": "PUT"}),  # the store refuses it: Content-MD5
    ("status", {"method": "PUT", "status": 503}),
    ("status", {"method": "POST", "status": 500}),  # initiate, then complete
    ("status", {"method": "POST", "status": 500, "after": 1}),  # complete
    ("reset_request", {"method": "POST", "after_bytes": 10, "after": 1}),  # complete
    # Complete went through, its reply is lost: the retried Complete finds it done
    ("reset", {"method": "POST", "after_bytes": 0, "after": 1}),
]


@pytest.mark.parametrize("kind,params", RECOVERABLE,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(RECOVERABLE)])
def test_interrupted_upload_completes_after_retries(proxied, proxy, store, bucket, tmp_path,
                                                    kind, params):
    data = pattern(2 * PART + 777, 11)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}retried-{kind}.bin"
    fault = proxy.add_fault(kind, key=key, **params)
    proxied().upload_file(bucket, key, str(path))
    assert fault.fired >= 1
    assert sha(stored(store, bucket, key)) == sha(data)
    assert unfinished_uploads(store, bucket, key) == []


def test_single_put_corrupted_in_flight_is_sent_again(proxied, proxy, store, bucket):
    key = f"{PREFIX}flipped-put.bin"
    data = pattern(100_000, 5)
    fault = proxy.add_fault("flip_request_byte", method="PUT", key=key)
    proxied().put_object(bucket, key, data)
    assert fault.fired == 1 and proxy.request_count("PUT", f"{bucket}/{key}") == 2
    assert stored(store, bucket, key) == data


FATAL = [
    ("reset_request", {"method": "PUT", "after_bytes": PART // 2, "times": None},
     lib.OSSC_E_NETWORK),
    ("status", {"method": "PUT", "status": 403, "after": 1}, lib.OSSC_E_AUTH),
    ("status", {"method": "POST", "status": 500, "after": 1, "times": None}, lib.OSSC_E_SERVER),
]


@pytest.mark.parametrize("kind,params,code", FATAL, ids=["reset-every-part", "refused-part",
                                                          "complete-fails"])
def test_failed_upload_leaves_no_object_and_no_parts(proxied, proxy, store, bucket, tmp_path,
                                                     kind, params, code):
    data = pattern(3 * PART, 13)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}failed-{kind}-{code}.bin"
    proxy.add_fault(kind, key=key, **params)
    with pytest.raises(ossc.OsscError) as e:
        proxied(retries=1).upload_file(bucket, key, str(path))
    assert e.value.code == code, e.value.message
    assert key in e.value.message and "\n" not in e.value.message
    assert absent(store, bucket, key)
    assert unfinished_uploads(store, bucket, key) == []
    # the stream fails the same way: at a write or at close, never leaving anything
    proxy.clear_faults()
    proxy.add_fault(kind, key=key, **params)
    with pytest.raises(ossc.OsscError):
        with proxied(retries=1).open_upload(bucket, key) as out:
            for i in range(0, len(data), PART // 2):
                out.write(data[i:i + PART // 2])
    assert absent(store, bucket, key)
    assert unfinished_uploads(store, bucket, key) == []


# --- the ossc put command ------------------------------------------------------------------


def run_put(store, *args):
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    return subprocess.run([sys.executable, "-m", "ossc", "put", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_put_command(store, bucket, tmp_path):
    data = pattern(PART + 4321, 21)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    r = run_put(store, str(path), f"s3://{bucket}/{PREFIX}cli/", "--part-size", str(PART))
    assert r.returncode == 0, r.stderr
    assert f"put {len(data)} bytes to s3://{bucket}/{PREFIX}cli/weights.bin" in r.stdout
    assert sha(stored(store, bucket, f"{PREFIX}cli/weights.bin")) == sha(data)
    r = run_put(store, str(path), f"s3://{bucket}/{PREFIX}cli/renamed.bin")
    assert r.returncode == 0, r.stderr
    assert sha(stored(store, bucket, f"{PREFIX}cli/renamed.bin")) == sha(data)


@pytest.mark.parametrize("source,needle", [("dir", "is a directory"),
                                           ("missing", "is not a file")])
def test_put_command_bad_source(store, bucket, tmp_path, source, needle):
    (tmp_path / "dir").mkdir()
    r = run_put(store, str(tmp_path / source), f"s3://{bucket}/{PREFIX}cli/x")
    assert r.returncode == status_exit_code(lib.OSSC_E_IO)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- OSS's CRC-64 on writes (the proxy adds x-oss-hash-crc64ecma as OSS does) ----------------


@pytest.fixture
def crc_proxy(store):
    from support.faultproxy import FaultProxy

    p = FaultProxy(store.endpoint, signer=store.sign, add_crc64=True).start()
    yield p
    p.stop()
    assert not p.errors, "fault proxy handler crashed:\n" + "\n".join(p.errors)


@pytest.fixture
def crc_client(env, bucket, crc_proxy):
    def make(**settings):
        base = {"endpoint": crc_proxy.endpoint, "upload.partSize": str(PART),
                "upload.concurrency": "2"}
        base.update({k: str(v) for k, v in settings.items()})
        return ossc.Client(f"s3://{bucket}/", base)
    return make


def test_crc64_of_parts_and_object_verified(crc_client, crc_proxy, store, bucket, tmp_path):
    """Every part's CRC-64 matches what was sent and the object's is their combination; a
    part whose CRC-64 disagrees is sent again."""
    data = pattern(3 * PART + 99, 31)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}crc.bin"
    fault = crc_proxy.add_fault("wrong_crc64", method="PUT", key=key, after=1)
    crc_client().upload_file(bucket, key, str(path))
    assert fault.fired == 1
    assert crc_proxy.request_count("PUT", f"{bucket}/{key}") == 5  # 4 parts, one sent twice
    assert sha(stored(store, bucket, key)) == sha(data)
    crc_client().put_object(bucket, key, data[:1000])  # one PutObject, verified too
    assert stored(store, bucket, key) == data[:1000]


def test_object_crc64_mismatch_removes_the_object(crc_client, crc_proxy, store, bucket,
                                                  tmp_path):
    data = pattern(2 * PART + 1, 32)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}crc-bad.bin"
    crc_proxy.add_fault("wrong_crc64", method="POST", key=key, after=1, times=None)
    with pytest.raises(ossc.OsscError) as e:
        crc_client().upload_file(bucket, key, str(path))
    assert e.value.code == lib.OSSC_E_INTEGRITY and "CRC-64" in e.value.message
    assert absent(store, bucket, key)
    assert unfinished_uploads(store, bucket, key) == []


def test_crc64_mode_resends_a_part_corrupted_in_flight(crc_client, crc_proxy, store, bucket,
                                                       tmp_path):
    """upload.checksum=crc64 (oss://'s default, as oss2 does): no Content-MD5, so the store
    takes a corrupted part; the CRC-64 it returns gives it away and the part is sent again."""
    data = pattern(2 * PART + 3, 33)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}crc-mode.bin"
    fault = crc_proxy.add_fault("flip_request_byte", method="PUT", key=key)
    crc_client(**{"upload.checksum": "crc64"}).upload_file(bucket, key, str(path))
    assert fault.fired == 1
    assert crc_proxy.request_count("PUT", f"{bucket}/{key}") == 4  # 3 parts, one sent twice
    assert sha(stored(store, bucket, key)) == sha(data)
    # off: nothing is checked, the corrupted bytes stay (what the setting means)
    crc_proxy.add_fault("flip_request_byte", method="PUT", key=key)
    crc_client(**{"upload.checksum": "off"}).put_object(bucket, key, data[:5000])
    assert stored(store, bucket, key) != data[:5000]


def test_s3_default_sends_crc32c_the_store_keeps(client, store, bucket, tmp_path):
    """s3:// verifies with x-amz-checksum-crc32c by default: the store checked it and keeps
    the object's (composite, from the parts' CRCs, for a multipart upload)."""
    data = pattern(2 * PART + 10, 41)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    for key, send in ((f"{PREFIX}crc32c-put.bin", lambda k: client.put_object(bucket, k,
                                                                                data[:999])),
                      (f"{PREFIX}crc32c-multi.bin", lambda k: client.upload_file(bucket, k,
                                                                                  str(path)))):
        send(key)
        head = store.s3().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head.get("ChecksumCRC32C"), head


@pytest.mark.parametrize("size", [100_000, 2 * PART + 5])
def test_md5_mode_resends_a_body_corrupted_in_flight(proxied, proxy, store, bucket, tmp_path,
                                                     size):
    data = pattern(size, 42)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    key = f"{PREFIX}md5-{size}.bin"
    fault = proxy.add_fault("flip_request_byte", method="PUT", key=key)
    proxied(**{"upload.checksum": "md5"}).upload_file(bucket, key, str(path))
    assert fault.fired == 1
    assert sha(stored(store, bucket, key)) == sha(data)
