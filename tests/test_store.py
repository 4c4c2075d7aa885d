"""The engine and the `ossc` command against a real S3 server (SeaweedFS on 127.0.0.1)."""

import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import ossc
from ossc.cli import _relative_path
from ossc.errors import UserError, status_exit_code
from ossc.native import lib
from support.patterns import pattern

CHUNK = 64 << 10  # the smallest chunk size: many chunks from small objects


@pytest.fixture(scope="module")
def objects(store, bucket):
    """A prefix with a zero-byte object, small ones, multi-chunk ones, odd key characters."""
    prefix = "store-test/"
    files = {
        "empty.bin": b"",
        "one.bin": b"x",
        "config.json": b'{"a": 1}',
        "multi/chunk-exact.bin": pattern(4 * CHUNK, 1),
        "multi/chunk-odd.bin": pattern(5 * CHUNK + 12345, 2),
        "with space+plus~tilde%pct.bin": pattern(CHUNK + 1, 3),
        "模型/权重 1.bin": pattern(3 * CHUNK - 1, 4),
    }
    s3 = store.s3()
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
    return prefix, files


@pytest.fixture
def env(store):
    """Environment for a CLI run: the store's keys, no config file from /etc."""
    e = dict(os.environ, **store.env(), OSSC_CONFIG="")
    for name in ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_ENDPOINT"):
        e.pop(name, None)
    return e


@pytest.fixture
def client_env(monkeypatch, env):
    for k, v in env.items():
        if k.startswith(("AWS_", "OSSC_")):
            monkeypatch.setenv(k, v)


def run_cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ossc", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_listing_paginates_past_2500_keys(store, bucket, client_env):
    prefix = "many-keys/"
    keys = [f"{prefix}k{i:05d}" for i in range(2600)]
    s3 = store.s3()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    client = ossc.Client(f"s3://{bucket}/{prefix}")
    listed = client.list()
    assert [o.key for o in listed] == keys
    assert all(o.size == len(o.key) for o in listed)
    # ossc_list_fast (the connector's fast list; test_connector.py has the awkward names): the
    # same objects with any number of threads, here also under the sanitizer build
    for threads in (1, 2, 16):
        assert client.list_fast(threads=threads) == listed


def test_list_decodes_odd_keys(objects, bucket, client_env):
    prefix, files = objects
    listed = {o.key[len(prefix):]: o.size for o in ossc.Client(f"s3://{bucket}/{prefix}").list()}
    assert listed == {name: len(data) for name, data in files.items()}


def test_get_is_byte_identical(objects, bucket, env, tmp_path):
    prefix, files = objects
    target = tmp_path / "out"
    r = run_cli(env, "get", f"s3://{bucket}/{prefix}", str(target), "--chunk-size", "64KiB",
                "--vcpus", "2", "--workers", "3")
    assert r.returncode == 0, r.stderr
    assert "fetched 7 objects" in r.stdout and "GB/s" in r.stdout
    for name, data in files.items():
        got = (target / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), name


@pytest.mark.parametrize("name", ["multi/chunk-odd.bin", "one.bin", "模型/权重 1.bin"])
def test_ranges_at_every_boundary(objects, bucket, client_env, name):
    prefix, files = objects
    data = files[name]
    size = len(data)
    client = ossc.Client(f"s3://{bucket}/{prefix}", {"chunkSize": str(CHUNK)})
    points = sorted({p for b in range(0, size + 1, CHUNK) for p in (b - 1, b, b + 1)
                     if 0 <= p <= size} | {0, size})
    ranges = [(a, b - a) for a in points for b in points if b > a]
    items, buffers = [], []
    for off, length in ranges:
        buf = bytearray(length)
        buffers.append(buf)
        items.append(ossc.FetchItem(prefix + name, size, off, length, buffer=buf))
    with client.fetch(items) as f:
        assert f.wait(60)
        assert f.stats().bytes_done == sum(n for _, n in ranges)
    for (off, length), buf in zip(ranges, buffers):
        assert bytes(buf) == data[off:off + length], (off, length)


def test_range_outside_object_is_refused(objects, bucket, client_env):
    prefix, files = objects
    client = ossc.Client(f"s3://{bucket}/{prefix}")
    with pytest.raises(ossc.OsscError) as exc:
        client.fetch([ossc.FetchItem(prefix + "one.bin", 1, 1, 1, buffer=bytearray(1))])
    assert exc.value.code == lib.OSSC_E_CONFIG


def test_size_changed_since_listing_is_an_error(objects, bucket, client_env):
    prefix, files = objects
    client = ossc.Client(f"s3://{bucket}/{prefix}", {"retries": "0"})
    size = len(files["multi/chunk-exact.bin"])
    with client.fetch([ossc.FetchItem(prefix + "multi/chunk-exact.bin", size + 1, 0, size,
                                      buffer=bytearray(size))]) as f:
        with pytest.raises(ossc.OsscError) as exc:
            f.wait(30)
    assert exc.value.code == lib.OSSC_E_INTEGRITY
    assert "changed" in exc.value.message


def test_stat(objects, bucket, env):
    prefix, files = objects
    r = run_cli(env, "stat", f"s3://{bucket}/{prefix}multi/chunk-odd.bin")
    assert r.returncode == 0, r.stderr
    assert f"bytes: {len(files['multi/chunk-odd.bin'])}" in r.stdout
    r = run_cli(env, "stat", f"s3://{bucket}/{prefix}")
    assert f"objects: {len(files)}" in r.stdout


def test_wrong_secret_is_a_clear_auth_error(objects, bucket, env, tmp_path):
    prefix, _ = objects
    r = run_cli(dict(env, AWS_SECRET_ACCESS_KEY="not-the-secret"), "get",
                f"s3://{bucket}/{prefix}", str(tmp_path / "x"))
    assert r.returncode == status_exit_code(lib.OSSC_E_AUTH)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "SignatureDoesNotMatch" in lines[0], r.stderr
    assert "not-the-secret" not in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,overrides,code,needle", [
    (["ls", "http://bucket/x"], {}, lib.OSSC_E_CONFIG, "not a store URL"),
    (["ls", "s3://Bad_Bucket/"], {}, lib.OSSC_E_CONFIG, "not a valid bucket name"),
    (["ls", "s3://ossc-test/"], {"AWS_ACCESS_KEY_ID": None}, lib.OSSC_E_CREDENTIALS,
     "no credentials"),
    (["ls", "s3://no-such-bucket-x/"], {}, lib.OSSC_E_NOT_FOUND, "NoSuchBucket"),
    (["ls", "s3://ossc-test/", "--endpoint", "http://127.0.0.1:9"], {}, lib.OSSC_E_NETWORK,
     "127.0.0.1:9"),
    (["ls", "s3://ossc-test/", "--endpoint", "ftp://x"], {}, lib.OSSC_E_CONFIG, "endpoint"),
    (["ls", "s3://ossc-test/", "--chunk-size", "huge"], {}, lib.OSSC_E_CONFIG, "chunkSize"),
])
def test_bad_input_gives_one_line_and_distinct_code(bucket, env, args, overrides, code, needle):
    e = dict(env)
    for k, v in overrides.items():
        e.pop(k, None) if v is None else e.__setitem__(k, v)
    start = time.monotonic()
    r = run_cli(e, *args, "--retries", "1")
    assert r.returncode == status_exit_code(code), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - start < 30


def test_bad_config_file_key_has_a_hint(bucket, env, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"prefetch": {"vcpu": 4}}))
    r = run_cli(dict(env, OSSC_CONFIG=str(cfg)), "ls", f"s3://{bucket}/")
    assert r.returncode == status_exit_code(lib.OSSC_E_CONFIG)
    assert "did you mean 'prefetch.vcpus'" in r.stderr


def test_credentials_file_is_reread_when_it_changes(store, objects, bucket, client_env,
                                                    monkeypatch, tmp_path):
    prefix, _ = objects
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"AccessKeyId": store.access_key, "AccessKeySecret": "wrong"}))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    client = ossc.Client(f"s3://{bucket}/{prefix}", {"credentialsFile": str(creds),
                                                     "retries": "0"})
    with pytest.raises(ossc.OsscError) as exc:
        client.list()
    assert exc.value.code == lib.OSSC_E_AUTH
    time.sleep(1.1)  # the engine looks at the file at most once a second
    creds.write_text(json.dumps({"AccessKeyId": store.access_key,
                                 "AccessKeySecret": store.secret_key,
                                 "Expiration": "2099-01-01T00:00:00Z"}))
    os.utime(creds, (time.time() + 5, time.time() + 5))  # a new mtime even on coarse clocks
    assert len(client.list()) > 0


def test_keys_that_escape_the_target_are_refused():
    assert str(_relative_path("p/a/b.bin", "p/")) == "a/b.bin"
    assert _relative_path("p/dir/", "p/") is None
    for bad in ("p/../x", "p//x", "p/./x", "p/a/../../x"):
        with pytest.raises(UserError):
            _relative_path(bad, "p/")


def test_debug_log_shows_no_secret_or_token(bucket, env):
    e = dict(env, AWS_SESSION_TOKEN="sts-token-must-not-leak")
    r = run_cli(e, "ls", f"s3://{bucket}/", "-vv", "--retries", "0")
    assert "string to sign" in r.stderr  # the debug log is on
    assert "sts-token-must-not-leak" not in r.stderr
    assert env["AWS_SECRET_ACCESS_KEY"] not in r.stderr


# --- `ossc get URL DIR` reads URLs as `aws s3 cp` and s5cmd do (README, "Using ossc") -------

GET_URLS = {
    "big/model-00001-of-00002.safetensors": pattern(2 * CHUNK + 7, 11),
    "big/model-00002-of-00002.safetensors": pattern(CHUNK - 3, 12),
    "big/sub/config.json": b'{"b": 2}',
    "bigger/other.bin": b"a sibling that starts with the same name",
    "solo": b"an object and a prefix of the same name",
    "solo/inner.bin": b"below the object of the same name",
}


@pytest.fixture(scope="module")
def get_urls(store, bucket):
    prefix = "get-urls/"
    s3 = store.s3()
    for name, data in GET_URLS.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)
    return f"s3://{bucket}/{prefix}"


def tree(root) -> dict:
    """Every file below root (relative name: bytes): what landed, and nothing else."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("url,want", [
    # a prefix without its trailing slash is that prefix, never the sibling bigger/
    ("big", {"model-00001-of-00002.safetensors": "big/model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors": "big/model-00002-of-00002.safetensors",
             "sub/config.json": "big/sub/config.json"}),
    ("big/", {"model-00001-of-00002.safetensors": "big/model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors": "big/model-00002-of-00002.safetensors",
              "sub/config.json": "big/sub/config.json"}),
    # an object URL: that object, into the directory
    ("big/model-00002-of-00002.safetensors",
     {"model-00002-of-00002.safetensors": "big/model-00002-of-00002.safetensors"}),
    ("big/sub/config.json", {"config.json": "big/sub/config.json"}),
    # an object and a prefix of one name: the object (`aws s3 cp` without --recursive)
    ("solo", {"solo": "solo"}),
    ("solo/", {"inner.bin": "solo/inner.bin"}),
])
def test_get_url_forms(get_urls, env, tmp_path, url, want):
    target = tmp_path / "out"
    r = run_cli(env, "get", get_urls + url, str(target), "--chunk-size", "64KiB")
    assert r.returncode == 0, r.stderr
    assert f"fetched {len(want)} objects" in r.stdout
    assert tree(target) == {path: GET_URLS[name] for path, name in want.items()}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # nothing beside the target


@pytest.mark.parametrize("url,needle", [
    # the start of a name: an error naming what starts with it, nothing written
    ("big/model-00002", "model-00002-of-00002.safetensors"),
    ("bi", "big/model-00001-of-00002.safetensors, big/model-00002-of-00002.safetensors, "
           "big/sub/config.json and 1 more"),
    ("big/model-00003-of-00002.safetensors", "nothing under"),
    ("none/", "nothing under"),
])
def test_get_partial_or_missing_name_is_an_error(get_urls, env, tmp_path, url, needle):
    r = run_cli(env, "get", get_urls + url, str(tmp_path / "out"))
    assert r.returncode == status_exit_code(lib.OSSC_E_NOT_FOUND), r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []
