"""Lazy sessions and the cache budget, against SeaweedFS through the fault proxy (which counts
the store's requests): `prefetch.policy=lazy` fetches a large file only when a process opens
it; `cacheLimit` releases files nobody holds, least recently opened first, and a released
file reads again by fetching it again; an eager prefetch that cannot fit the cache is
refused at start. Every byte read equals the local copy's."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ossc.errors import EXIT_NO_SPACE
from ossc.native import preload_library, session_dir
from support.session_helpers import launcher_env, session_info, wait_session_gone

MIB = 1 << 20
NAMES = [f"adapter-{i}/weights.bin" for i in range(6)]  # 2 MiB each: 12 MiB in all


@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    """Six 2 MiB files (each in its own directory, like adapters) and a small config."""
    local = tmp_path_factory.mktemp("lazy-model")
    (local / "config.json").write_text('{"model_type": "test"}')
    for i, name in enumerate(NAMES):
        (local / name).parent.mkdir()
        (local / name).write_bytes(
            np.random.default_rng(i).integers(0, 256, 2 * MIB, dtype=np.uint8).tobytes())
    prefix = f"lazy-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    return {"url": f"s3://{bucket}/{prefix}", "prefix": f"{bucket}/{prefix}", "local": local}


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    yield path
    wait_session_gone(path, timeout=10)
    shutil.rmtree(session_dir(str(path)), ignore_errors=True)


def env_mode(store, remote, model_dir, proxy, tmp_path, **extra):
    env = dict(os.environ, **store.env())
    env.update(OSSC_CONFIG="", MODEL_DIR=str(model_dir),
               OSS_PATH=remote["url"], ENABLE_CONNECTOR="1", AWS_ENDPOINT_URL=proxy.endpoint,
               LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                 str(preload_library())])),
               OSSC_CHUNK_SIZE="1MiB", OSSC_SMALL_FILE_SIZE="64KiB", OSSC_EXPIRE_TIME_SEC="1",
               OSSC_LOG_LEVEL="info", OSSC_LOG_PATH=str(tmp_path / "ossc.log"),
               OSSC_AUDIT_PATH=str(tmp_path / "audit.log"))
    env.update({k: str(v) for k, v in extra.items()})
    return env


# Reads what the test says, one command a line on stdin, and answers each with a JSON line:
#   read NAME          -> sha256 of NAME read whole (open, read, close)
#   try NAME           -> the same, or the name of the errno that open or read failed with
#   hold NAME          -> opens NAME and keeps the fd (until "unmap"); "ok"
#   map NAME           -> sha256 of NAME through a mapping it keeps (and its fd) until "unmap"
#   check              -> sha256 of every kept mapping, read again now
#   random N           -> N random preads from 8 threads over every file, compared with the
#                         local copy (argv[1]); the count of mismatches
#   tree               -> {relative path: size} of MODEL_DIR as listing and stat see it
DRIVER = textwrap.dedent("""
    import errno, hashlib, json, mmap, os, random, sys, threading
    root, local = os.environ["MODEL_DIR"], sys.argv[1]
    kept = {}
    def answer(x):
        print(json.dumps(x), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "read":
            with open(os.path.join(root, arg), "rb") as f:
                answer(hashlib.sha256(f.read()).hexdigest())
        elif cmd == "try":
            try:
                with open(os.path.join(root, arg), "rb") as f:
                    answer(hashlib.sha256(f.read()).hexdigest())
            except OSError as e:
                answer(errno.errorcode.get(e.errno, str(e.errno)))
        elif cmd == "hold":
            kept[arg] = (os.open(os.path.join(root, arg), os.O_RDONLY), mmap.mmap(-1, 1))
            answer("ok")
        elif cmd == "map":
            fd = os.open(os.path.join(root, arg), os.O_RDONLY)
            kept[arg] = (fd, mmap.mmap(fd, 0, prot=mmap.PROT_READ))
            answer(hashlib.sha256(kept[arg][1]).hexdigest())
        elif cmd == "unmap":
            fd, m = kept.pop(arg)
            m.close()
            os.close(fd)
            answer("ok")
        elif cmd == "check":
            answer({k: hashlib.sha256(m).hexdigest() for k, (_, m) in kept.items()})
        elif cmd == "random":
            names = sorted(os.path.relpath(os.path.join(d, f), local)
                           for d, _, fs in os.walk(local) for f in fs if f.endswith(".bin"))
            bad = []
            def work(seed):
                rng = random.Random(seed)
                for _ in range(int(arg) // 8):
                    name = rng.choice(names)
                    size = os.path.getsize(os.path.join(local, name))
                    off = rng.randrange(size)
                    n = rng.randrange(1, 300000)
                    fd = os.open(os.path.join(root, name), os.O_RDONLY)
                    got = os.pread(fd, n, off)
                    os.close(fd)
                    with open(os.path.join(local, name), "rb") as f:
                        f.seek(off)
                        if f.read(n) != got:
                            bad.append((name, off, n))
            threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            answer(len(bad))
        elif cmd == "tree":
            answer({os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_size
                    for d, _, fs in os.walk(root) for f in fs if not f.startswith(".ossc")})
""")


class Driver:
    def __init__(self, env, local: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(local)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        assert out, f"the driver died on {line!r}"
        return json.loads(out)

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit(tmp_path) -> list:
    """The owner's lines: (event, relative path, reason), in order."""
    out = []
    for line in (tmp_path / "audit.log").read_text().splitlines():
        if " owner=" not in line:
            continue
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        event = "fetch" if "fetch" in fields else "release"
        out.append((event, fields[event].split("/model/", 1)[1], fields["reason"]))
    return out


def gets(proxy, remote, name) -> int:
    return proxy.request_count("GET", remote["prefix"] + name)


def test_lazy_fetches_only_what_is_opened(store, remote, model_dir, proxy, tmp_path):
    local = remote["local"]
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path,
                          OSSC_PREFETCH_POLICY="lazy"), local)
    try:
        # Listing and stat as eager: every file, its size, nothing fetched for it.
        want_tree = {str(p.relative_to(local)): p.stat().st_size
                     for p in local.rglob("*") if p.is_file()}
        assert run("tree") == want_tree
        assert all(gets(proxy, remote, name) == 0 for name in NAMES)
        assert run(f"read {NAMES[2]}") == sha(local / NAMES[2])
        assert run(f"read {NAMES[2]}") == sha(local / NAMES[2])  # once fetched, held
        info = session_info(model_dir)
        assert info["policy"] == "lazy" and info["bytesHeld"] == 2 * MIB
        assert [gets(proxy, remote, name) for name in NAMES] == [0, 0, 2, 0, 0, 0]
        assert audit(tmp_path) == [("fetch", NAMES[2], "open")]
        status = subprocess.run([sys.executable, "-m", "ossc", "status", str(model_dir)],
                                capture_output=True, text=True, timeout=30)
        assert "policy     lazy" in status.stdout, status.stdout
        assert "2.1 MB of large files held, cacheLimit none" in status.stdout, status.stdout
        assert run("random 400") == 0  # every file now, from 8 threads
    finally:
        run.close()
    assert sorted(e[1] for e in audit(tmp_path) if e[0] == "fetch") == sorted(NAMES)


def test_budget_releases_what_nobody_holds(store, remote, model_dir, proxy, tmp_path):
    """cacheLimit 5 MiB, files of 2 MiB: two fit. A mapped file is never released, and keeps
    its bytes; the least recently opened of the others goes; a released file reads again."""
    local = remote["local"]
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path,
                          OSSC_PREFETCH_POLICY="lazy", OSSC_CACHE_LIMIT="5MiB",
                          OSSC_EXPIRE_TIME_SEC="0"), local)
    try:
        a, b, c, d = NAMES[:4]
        assert run(f"map {a}") == sha(local / a)
        assert run(f"read {b}") == sha(local / b)
        assert run(f"read {c}") == sha(local / c)   # 6 MiB: b, not the mapped a, goes
        assert run(f"read {d}") == sha(local / d)   # then c
        assert run("check") == {a: sha(local / a)}
        events = audit(tmp_path)
        assert ("release", b, "cacheLimit") in events and ("release", c, "cacheLimit") in events
        assert not [e for e in events if e[0] == "release" and e[1] == a], events
        assert session_info(model_dir)["bytesHeld"] <= 5 * MIB
        # A released file reads again: fetched anew, same bytes.
        before = gets(proxy, remote, b)
        assert run(f"read {b}") == sha(local / b)
        assert gets(proxy, remote, b) == before + 2
        assert ("fetch", b, "refetch") in audit(tmp_path)
        # Two held at once past the limit: reads go on, one warning says by how much.
        assert run(f"map {b}") == sha(local / b)
        assert run(f"map {c}") == sha(local / c)
        assert run("check") == {a: sha(local / a), b: sha(local / b), c: sha(local / c)}
        log = (tmp_path / "ossc.log").read_text()
        assert "6.00 MiB, 1.00 MiB over cacheLimit 5.00 MiB" in log, log
        for name in (a, b, c):
            run(f"unmap {name}")
        # Closed, with no open or fetch after it: released all the same, within a second
        # or so, while the process lives on.
        deadline = time.monotonic() + 10
        while session_info(model_dir)["bytesHeld"] > 5 * MIB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_info(model_dir)["bytesHeld"] <= 5 * MIB
        # Random reads from 8 threads over 12 MiB of files under a 5 MiB budget.
        assert run("random 400") == 0
        info = session_info(model_dir)
        assert info["releases"] >= 4 and info["cacheLimit"] == 5 * MIB
    finally:
        run.close()


def test_eager_prefetches_up_to_the_limit(store, remote, model_dir, proxy, tmp_path):
    local = remote["local"]
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path,
                          OSSC_CACHE_LIMIT="5MiB"), local)
    try:
        assert run("tree")  # attached; the prefetch runs
        info = session_info(model_dir)
        assert info["policy"] == "eager"
        assert [e for e in audit(tmp_path) if e[2] == "prefetch"] == \
            [("fetch", NAMES[0], "prefetch"), ("fetch", NAMES[1], "prefetch")]
        assert run(f"read {NAMES[5]}") == sha(local / NAMES[5])
        assert ("fetch", NAMES[5], "open") in audit(tmp_path)
        assert [gets(proxy, remote, name) for name in NAMES[2:5]] == [0, 0, 0]
    finally:
        run.close()


def test_one_failed_object_fails_only_itself(store, remote, model_dir, proxy, tmp_path):
    """A permanent 403 on one prefetched file: the prefetch completes with that file failed
    (objectsFailed), and every other file, prefetched or fetched on open, reads as usual."""
    local = remote["local"]
    proxy.add_fault("status", key=NAMES[0], status=403, times=None)
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path, OSSC_RETRIES="0",
                          OSSC_CACHE_LIMIT="5MiB"), local)
    try:
        assert run(f"read {NAMES[1]}") == sha(local / NAMES[1])  # prefetched
        assert run(f"read {NAMES[4]}") == sha(local / NAMES[4])  # past cacheLimit: on open
        assert run(f"try {NAMES[0]}") == "EACCES"
        info = session_info(model_dir)
        assert info["state"] == "complete" and info["objectsFailed"] == 1, info
        assert [e["file"] for e in info["errors"]] == [NAMES[0]], info
        status = subprocess.run([sys.executable, "-m", "ossc", "status", str(model_dir)],
                                capture_output=True, text=True, timeout=30).stdout
        assert "6 large files, 1 failed" in status and f"error      {NAMES[0]}: " in status, \
            status
        assert gets(proxy, remote, NAMES[4]) == 2
    finally:
        run.close()


def test_failed_lazy_fetch_is_retried_by_a_later_open(store, remote, model_dir, proxy,
                                                      tmp_path):
    """No retries, one 403: the open fails with EACCES; the fault gone, the next open fetches
    the file again (its failed data file retired first) and reads the store's bytes."""
    local = remote["local"]
    proxy.add_fault("status", key=NAMES[1], status=403, times=1)
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path, OSSC_RETRIES="0",
                          OSSC_PREFETCH_POLICY="lazy"), local)
    try:
        assert run(f"try {NAMES[1]}") == "EACCES"
        assert session_info(model_dir)["objectsFailed"] == 1
        before = gets(proxy, remote, NAMES[1])
        assert run(f"read {NAMES[1]}") == sha(local / NAMES[1])
        assert gets(proxy, remote, NAMES[1]) == before + 2
        assert run("random 200") == 0
        info = session_info(model_dir)
        assert info["objectsFailed"] == 0 and info["errors"] == [], info
        events = audit(tmp_path)
        assert ("release", NAMES[1], "failed") in events, events
        assert events.count(("fetch", NAMES[1], "open")) == 1, events
    finally:
        run.close()


def test_an_open_right_after_a_failed_lazy_fetch_fetches_it_again(store, remote, model_dir,
                                                                  proxy, tmp_path):
    """The file's first chunk fails (403, no retries, once its second is asked for) while the
    store holds the second 5 s: the next open neither fails with the old error nor waits for
    the held transfer (which feeds nobody now); the failed fetch is stopped, its file retired,
    and the object fetched again."""
    local = remote["local"]
    # The second chunk's GET takes the first fault that matches it, whichever comes first.
    proxy.add_fault("stall", key=NAMES[1], ranged_only=True, times=1, seconds=5.0,
                    range_from=1 << 20)
    proxy.add_fault("status", key=NAMES[1], status=403, times=1, requests=2)
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path, OSSC_RETRIES="0",
                          OSSC_PREFETCH_POLICY="lazy", OSSC_READ_TIMEOUT_SEC="10"), local)
    try:
        assert run(f"try {NAMES[1]}") == "EACCES"
        assert gets(proxy, remote, NAMES[1]) == 2, "the second chunk was not in flight"
        began = time.monotonic()
        assert run(f"read {NAMES[1]}") == sha(local / NAMES[1])
        assert time.monotonic() - began < 4, "the open waited for the held transfer"
        events = audit(tmp_path)
        assert [e for e in events if e[1] == NAMES[1]] == [
            ("fetch", NAMES[1], "open"), ("release", NAMES[1], "failed"),
            ("fetch", NAMES[1], "refetch")], events
    finally:
        run.close()


def test_a_failed_prefetched_file_is_fetched_again_while_the_prefetch_runs(store, remote,
                                                                          model_dir, proxy,
                                                                          tmp_path):
    """Eager, no retries: the first file fails (403) while the store holds another file's
    replies 8 s, so the prefetch runs on. Nothing writes the failed file any more: an open
    fetches it again at once instead of failing until the whole prefetch has ended."""
    local = remote["local"]
    proxy.add_fault("status", key=NAMES[0], status=403, times=1)
    proxy.add_fault("stall", key=NAMES[3], ranged_only=True, times=2, seconds=8.0)
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path, OSSC_RETRIES="0",
                          OSSC_READ_TIMEOUT_SEC="20"), local)
    try:
        run("tree")  # the driver is attached: the session is there
        deadline = time.monotonic() + 30
        while session_info(model_dir)["objectsFailed"] != 1:
            assert time.monotonic() < deadline, session_info(model_dir)
            time.sleep(0.01)
        assert session_info(model_dir)["state"] == "fetching"
        assert run(f"read {NAMES[0]}") == sha(local / NAMES[0])
        assert session_info(model_dir)["state"] == "fetching", "the test's prefetch ended"
        assert ("release", NAMES[0], "failed") in audit(tmp_path)
    finally:
        run.close()


def test_an_object_the_prefetch_writes_again_is_not_released_under_it(store, remote,
                                                                      model_dir, proxy,
                                                                      tmp_path):
    """verifyBeforeRead=no, cacheLimit 5 MiB (the eager prefix is two 2 MiB files): the
    first file's CRC-64 mismatch has the prefetch fetch it again (held 3 s by the store)
    while every chunk of it already counts as in. With the second held open, a read of a
    third file needs room that only the first could give; it must not be released then:
    its fd would close under the transfers, which would then write its bytes into whatever
    file took the fd number (the third's)."""
    local = remote["local"]
    proxy.add_crc64 = True
    first, second, third = NAMES[:3]
    flip = proxy.add_fault("flip_byte", key=first, ranged_only=True, times=1)
    # The flipped reply is the flip's; the stall lets the other first reply through.
    held = proxy.add_fault("stall", key=first, ranged_only=True, after=1, times=2,
                           seconds=3.0)
    run = Driver(env_mode(store, remote, model_dir, proxy, tmp_path,
                          OSSC_VERIFY_BEFORE_READ="no", OSSC_CACHE_LIMIT="5MiB",
                          OSSC_EXPIRE_TIME_SEC="0"), local)
    try:
        deadline = time.monotonic() + 30
        while not (flip.fired and held.fired):
            assert time.monotonic() < deadline, "the prefetch never fetched the file again"
            time.sleep(0.01)
        assert run(f"hold {second}") == "ok"  # so that the room can only come from the first
        assert run(f"read {third}") == sha(local / third)
        while session_info(model_dir)["state"] != "complete":  # the held transfers ended
            assert time.monotonic() < deadline + 30, session_info(model_dir)
            time.sleep(0.05)
        assert run(f"read {third}") == sha(local / third)
        assert run(f"read {first}") == sha(local / first)
        assert run("random 200") == 0
    finally:
        run.close()


def test_failed_file_held_by_a_reader_is_kept_until_it_lets_go(store, remote, model_dir,
                                                               proxy, tmp_path):
    """A reader holds the data file of a fetch that then fails: the owner never replaces it
    under that reader (a new file's chunks would make its holes readable as zeros); another
    open fails with the errno, without a request; once the reader lets go, an open fetches
    the file again."""
    local = remote["local"]
    name = NAMES[3]
    # One request at a time: the first chunk stalls (the reader opens meanwhile), the second
    # is refused.
    proxy.add_fault("stall", key=name, seconds=1.5, times=1)
    proxy.add_fault("status", key=name, status=403, times=1)
    env = env_mode(store, remote, model_dir, proxy, tmp_path, OSSC_RETRIES="0",
                   OSSC_PREFETCH_POLICY="lazy", OSSC_PREFETCH_VCPUS="1",
                   OSSC_PREFETCH_WORKERS="1")
    holder, other = Driver(env, local), Driver(env, local)
    try:
        assert holder(f"hold {name}") == "ok"
        assert other(f"try {name}") == "EACCES"  # the fetch failed; the holder keeps it
        before = gets(proxy, remote, name)
        assert other(f"try {name}") == "EACCES"  # asked once, not fetched: still held
        assert gets(proxy, remote, name) == before
        assert ("release", name, "failed") not in audit(tmp_path)
        holder(f"unmap {name}")
        assert other(f"read {name}") == sha(local / name)
        assert gets(proxy, remote, name) == before + 2
        assert ("release", name, "failed") in audit(tmp_path)
    finally:
        holder.close()
        other.close()


def test_eager_that_cannot_fit_is_refused_at_start(store, bucket, model_dir, small_tmpfs,
                                                   tmp_path):
    local = tmp_path / "big"
    local.mkdir()
    (local / "config.json").write_text("{}")
    for i in range(3):  # 72 MiB > 64 MiB
        (local / f"shard-{i}.bin").write_bytes(os.urandom(24 * MIB))
    prefix = f"lazy-big-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    marker = tmp_path / "command-ran"
    env = launcher_env()
    env.update(store.env())
    r = subprocess.run([sys.executable, "-m", "ossc.launcher", "--config", "", "--oss-path",
                        f"s3://{bucket}/{prefix}", "--model-dir", str(model_dir),
                        "--cache-dir", str(small_tmpfs), "--",
                        sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_NO_SPACE == 14, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "0.07 GiB" in lines[0] and "cacheDir" in lines[0] and "lazy" in lines[0] \
        and "cacheLimit" in lines[0], lines[0]
    assert not marker.exists() and not model_dir.exists()
    assert list(small_tmpfs.iterdir()) == []
    assert wait_session_gone(model_dir)


def test_env_var_mode_serves_every_mount_of_ossc_mounts(store, bucket, remote, proxy, tmp_path):
    """ENABLE_CONNECTOR=1 with OSSC_MOUNTS and no MODEL_DIR: a session per mount, each with
    its policy (the second lazy), both read through the shim."""
    other = tmp_path / "other-local"
    other.mkdir()
    (other / "weights.bin").write_bytes(os.urandom(MIB))
    prefix = f"lazy-other-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(other))
    first, second = tmp_path / "m1", tmp_path / "m2"
    env = env_mode(store, remote, first, proxy, tmp_path,
                   OSSC_MOUNTS=f"s3://{bucket}/{prefix}={first}\n  {remote['url']}={second}:lazy")
    del env["MODEL_DIR"], env["OSS_PATH"]
    code = textwrap.dedent(f"""
        import hashlib, json
        def sha(p):
            return hashlib.sha256(open(p, "rb").read()).hexdigest()
        print(json.dumps([sha("{first}/weights.bin"), sha("{second}/{NAMES[4]}")]))
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == [sha(other / "weights.bin"), sha(remote["local"] / NAMES[4])]
        lines = (tmp_path / "audit.log").read_text()
        assert f"fetch={first}/weights.bin bytes={MIB} reason=prefetch" in lines, lines
        assert f"fetch={second}/{NAMES[4]} bytes={2 * MIB} reason=open" in lines, lines
        assert [gets(proxy, remote, name) for name in NAMES] == [0, 0, 0, 0, 1 * 2, 0]
    finally:
        for path in (first, second):
            wait_session_gone(path, timeout=10)
            shutil.rmtree(session_dir(str(path)), ignore_errors=True)
