"""The preload shim: unmodified programs read MODEL_DIR while it streams from a real store.

Each test starts an owner process (ENABLE_CONNECTOR=1 with the shim preloaded) that runs a
small script or program; results must equal what the same code gets from a local copy."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ossc.native import preload_library, session_dir
from support.session_helpers import session_info, wait_session_gone, wanted_count

PREFIX = "shim-model/"
CHUNK = "1MiB"


def pattern(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def model(store, bucket, tmp_path_factory):
    """A local copy and the same files in the store: safetensors shards with an index, a
    large binary, small configs, a nested directory."""
    import safetensors.torch as safetensors_torch
    import torch

    local = tmp_path_factory.mktemp("local-model")
    weight_map = {}
    for shard in (1, 2):
        gen = torch.Generator().manual_seed(shard)
        tensors = {f"layer{shard}.{name}": torch.randn(512, 1024, generator=gen)
                   for name in ("q", "k", "v")}
        name = f"model-0000{shard}-of-00002.safetensors"
        safetensors_torch.save_file(tensors, str(local / name))
        weight_map.update({t: name for t in tensors})
    (local / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    gen = torch.Generator().manual_seed(3)
    torch.save({"emb": torch.randn(1024, 512, generator=gen), "bias": torch.arange(100)},
               str(local / "pytorch_model.bin"))
    (local / "config.json").write_text('{"model_type": "test"}')
    (local / "weights.bin").write_bytes(pattern(9 << 20, 7))
    (local / "sub").mkdir()
    (local / "sub" / "extra.bin").write_bytes(pattern(5 << 20, 8))
    store.upload_dir(bucket, PREFIX, str(local))
    return local


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    yield path
    shutil.rmtree(session_dir(str(path)), ignore_errors=True)


def shim_env(store, bucket, model_dir, endpoint=None, **extra):
    env = dict(os.environ, **store.env(), OSSC_CONFIG="", MODEL_DIR=str(model_dir),
               OSS_PATH=f"s3://{bucket}/{PREFIX}", ENABLE_CONNECTOR="1",
               # After whatever is preloaded already (a sanitizer runtime must come first).
               LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                 str(preload_library())])),
               OSSC_CHUNK_SIZE=CHUNK,
               OSSC_SMALL_FILE_SIZE="64KiB", OSSC_LOG_LEVEL="warn")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_owner(env, code, timeout=120):
    """Runs a Python script as the owner; returns its JSON result."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def digest_tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".ossc")}


READ_EVERYTHING = """
import hashlib, json, mmap, os, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.environ["MODEL_DIR"]
out = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if f.startswith(".ossc"):
            continue
        p = os.path.join(dirpath, f)
        rel = os.path.relpath(p, root)
        with open(p, "rb") as fh:
            via_read = hashlib.sha256(fh.read()).hexdigest()
        fd = os.open(p, os.O_RDONLY)
        size = os.fstat(fd).st_size
        via_pread = hashlib.sha256(os.pread(fd, size + 1, 0)).hexdigest()
        via_mmap = hashlib.sha256(mmap.mmap(fd, 0, prot=mmap.PROT_READ)).hexdigest() if size else via_read
        os.close(fd)
        assert via_read == via_pread == via_mmap, rel
        out[rel] = via_read
print(json.dumps(out))
"""


def test_python_read_pread_mmap_equal_local_copy(store, bucket, model, model_dir, tmp_path):
    audit = tmp_path / "audit.log"
    got = run_owner(shim_env(store, bucket, model_dir, OSSC_AUDIT_PATH=audit), READ_EVERYTHING)
    assert got == digest_tree(model)
    # One audit line per closed fd of a large file: pid, path, bytes, time spent waiting.
    # (The owner's lines say what it fetched: "owner=<pid> fetch=<path> ... reason=prefetch".)
    lines = [line for line in audit.read_text().splitlines() if " owner=" not in line]
    assert any(f"path={model_dir}/weights.bin bytes={9 << 20} waited_ms=" in line
               for line in lines), lines
    assert all(" pid=" in line for line in lines) and len(lines) >= 2 * 5


def test_a_mapping_of_a_large_file_is_placed_for_its_huge_pages(store, bucket, model,
                                                                model_dir):
    """A data file's huge pages map whole only at an address aligned as their offset; the
    kernel places a /dev/shm file's mappings anywhere, so the shim places them."""
    code = """
    import ctypes, json, mmap, os
    libc = ctypes.CDLL(None, use_errno=True)  # mmap through the shim, as a loader calls it
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(os.path.join(os.environ["MODEL_DIR"], "weights.bin"), os.O_RDONLY)
    out = []
    for flags, prot, offset, length in [
            (mmap.MAP_SHARED, mmap.PROT_READ, 0, 9 << 20),
            (mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE, (2 << 20) + 4096, 5 << 20),
            (mmap.MAP_SHARED, mmap.PROT_READ, 4096, (4 << 20) + 17)]:
        addr = libc.mmap(None, length, prot, flags, fd, offset)
        assert addr not in (None, 2**64 - 1), os.strerror(ctypes.get_errno())
        out.append({"offset": offset, "misplaced": (addr - offset) % (2 << 20),
                    "bytes": ctypes.string_at(addr, length).hex()})
        if prot & mmap.PROT_WRITE:  # copy on write: the mapping's page, not the file
            ctypes.memset(addr, 0, 4096)
            assert os.pread(fd, 4096, offset) == bytes.fromhex(out[-1]["bytes"])[:4096]
        assert libc.munmap(addr, length) == 0
    print(json.dumps(out))
    """
    got = run_owner(shim_env(store, bucket, model_dir), code)
    local = (model / "weights.bin").read_bytes()
    for m in got:
        assert m["misplaced"] == 0, m["offset"]
        length = len(m["bytes"]) // 2
        assert bytes.fromhex(m["bytes"]) == local[m["offset"]:m["offset"] + length]


def test_safetensors_and_torch_loaders(store, bucket, model, model_dir):
    code = """
    import json, os, torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    root = os.environ["MODEL_DIR"]
    index = json.load(open(os.path.join(root, "model.safetensors.index.json")))
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        path = os.path.join(root, shard)
        loaded = load_file(path)
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                assert torch.equal(f.get_tensor(name), loaded[name])
        out.update({k: v.double().sum().item() for k, v in loaded.items()})
    print(json.dumps(out))
    """
    got = run_owner(shim_env(store, bucket, model_dir), code)
    from safetensors.torch import load_file
    want = {}
    for shard in sorted(model.glob("*.safetensors")):
        want.update({k: v.double().sum().item() for k, v in load_file(str(shard)).items()})
    assert got == want


@pytest.mark.parametrize("mmap", [False, True])
def test_torch_load_bin(store, bucket, model, model_dir, mmap):
    code = f"""
    import json, os, torch
    sd = torch.load(os.path.join(os.environ["MODEL_DIR"], "pytorch_model.bin"), mmap={mmap},
                    weights_only=True)
    print(json.dumps({{k: v.double().sum().item() for k, v in sd.items()}}))
    """
    import torch
    want = torch.load(str(model / "pytorch_model.bin"), weights_only=True)
    got = run_owner(shim_env(store, bucket, model_dir), code)
    assert got == {k: v.double().sum().item() for k, v in want.items()}


def test_coreutils_see_the_model(store, bucket, model, model_dir, tmp_path):
    copy = tmp_path / "copy"
    script = f"""
    import json, os, subprocess
    root = os.environ["MODEL_DIR"]
    def sh(cmd):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
        return r.stdout
    out = {{
        "sha256sum": sh(f"cd {{root}} && sha256sum weights.bin sub/extra.bin"),
        "cat": sh(f"cat {{root}}/weights.bin | sha256sum"),
        "dd": sh(f"dd if={{root}}/sub/extra.bin bs=1M status=none | sha256sum"),
        "tar": sh(f"tar -C {{root}} -cf - --exclude=.ossc-materialized . | tar -tf - | sort"),
    }}
    sh(f"cp -r {{root}} {copy}")
    print(json.dumps(out))
    """
    got = run_owner(shim_env(store, bucket, model_dir), script)
    w = hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    e = hashlib.sha256((model / "sub/extra.bin").read_bytes()).hexdigest()
    assert got["sha256sum"].split() == [w, "weights.bin", e, "sub/extra.bin"]
    assert got["cat"].split()[0] == w and got["dd"].split()[0] == e
    assert "./model-00002-of-00002.safetensors" in got["tar"]
    assert digest_tree(copy) == digest_tree(model)


def test_reader_before_download_finishes_gets_the_bytes(store, bucket, model, model_dir, proxy):
    # Every GET stalls a little: the reader starts long before the prefetch is done.
    proxy.add_fault("stall", key="weights.bin", ranged_only=True, seconds=0.3, times=None)
    code = """
    import hashlib, json, os, time
    root = os.environ["MODEL_DIR"]
    t = time.monotonic()
    with open(os.path.join(root, "weights.bin"), "rb") as f:
        first = f.read(4096)
        f.seek(-4096, 2)
        last = f.read()
    head_tail_s = time.monotonic() - t
    data = open(os.path.join(root, "weights.bin"), "rb").read()
    print(json.dumps({"first": first.hex(), "last": last.hex(), "head_tail_s": head_tail_s,
                      "sha": hashlib.sha256(data).hexdigest()}))
    """
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint,
                   OSSC_PREFETCH_VCPUS=1, OSSC_PREFETCH_WORKERS=1)
    got = run_owner(env, code)
    data = (model / "weights.bin").read_bytes()
    assert got["first"] == data[:4096].hex() and got["last"] == data[-4096:].hex()
    assert got["sha"] == hashlib.sha256(data).hexdigest()
    # The last chunk was asked for out of order: it came long before 9 stalled chunks would.
    assert got["head_tail_s"] < 9 * 0.3


def test_unfetchable_object_fails_with_eio(store, bucket, model, model_dir, proxy, tmp_path):
    """...with the errno that is the truth, and a line in the config file's logPath (which
    reaches the shim through the session, not through the environment)."""
    proxy.add_fault("status", key="sub/extra.bin", status=403, times=None)
    config, log = tmp_path / "config.json", tmp_path / "ossc.log"
    config.write_text(json.dumps({"logPath": str(log), "logLevel": "warn"}))
    code = """
    import errno, json, os
    root = os.environ["MODEL_DIR"]
    ok = len(open(os.path.join(root, "weights.bin"), "rb").read())
    try:
        open(os.path.join(root, "sub/extra.bin"), "rb").read()
        err = 0
    except OSError as e:
        err = e.errno
    print(json.dumps({"ok": ok, "errno": err}))
    """
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint, OSSC_CONFIG=config)
    del env["OSSC_LOG_LEVEL"]
    got = run_owner(env, code)
    assert got == {"ok": 9 << 20, "errno": 13}  # EACCES: the store refused it
    lines = log.read_text().splitlines()
    assert any("sub/extra.bin" in line and "could not be fetched" in line for line in lines), \
        lines


def test_owner_death_makes_readers_fail_not_hang(store, bucket, model, model_dir, proxy):
    """SIGKILL of the owner (the OOM killer, say): a waiting reader fails with EIO, promptly,
    and once no process uses the session any more its guardian removes it."""
    proxy.add_fault("stall", key="weights.bin", ranged_only=True, seconds=60, times=None)
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint, OSSC_EXPIRE_TIME_SEC=1)
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (model_dir / "weights.bin").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        control = session_dir(str(model_dir)) + "/control"
        asked = wanted_count(control)
        reader_env = {k: v for k, v in env.items() if k != "ENABLE_CONNECTOR"}
        reader = subprocess.Popen(
            [sys.executable, "-c", "import os,sys\ntry:\n open(sys.argv[1],'rb').read()\n"
             "except OSError as e:\n sys.exit(e.errno)", str(model_dir / "weights.bin")],
            env=reader_env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30  # the reader waits once it asked for a chunk
        while wanted_count(control) == asked and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(session_info(model_dir)["ownerPid"], signal.SIGKILL)
        _, err = reader.communicate(timeout=30)
        assert reader.returncode == 5  # EIO
        assert "owner process died" in err
    finally:
        os.killpg(user.pid, signal.SIGKILL)
        user.wait()
    assert wait_session_gone(model_dir)
    assert not model_dir.exists()


def test_files_outside_model_dir_are_untouched(store, bucket, model, model_dir, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"outside" * 1000)
    code = f"""
    import json, os
    data = open({str(other)!r}, "rb").read()
    fd = os.open({str(other)!r}, os.O_RDWR)
    os.pwrite(fd, b"X", 0)
    os.close(fd)
    print(json.dumps({{"n": len(data), "first": open({str(other)!r}, "rb").read(1).decode()}}))
    """
    assert run_owner(shim_env(store, bucket, model_dir), code) == {"n": 7000, "first": "X"}


def test_disable_makes_the_shim_a_pass_through(store, bucket, model, model_dir):
    env = shim_env(store, bucket, model_dir, OSSC_DISABLE=1)
    r = subprocess.run([sys.executable, "-c", "print('ran')"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "ran\n"
    assert not model_dir.exists() and not os.path.exists(session_dir(str(model_dir)))


def test_non_empty_model_dir_is_refused_and_kept(store, bucket, model, model_dir):
    model_dir.mkdir()
    (model_dir / "precious.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-c", "print('must not run')"],
                       env=shim_env(store, bucket, model_dir), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3 and "must not run" not in r.stdout
    assert "not empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in model_dir.iterdir()] == ["precious.txt"]


def test_writes_to_model_files_are_refused(store, bucket, model, model_dir):
    code = """
    import json, os
    try:
        open(os.path.join(os.environ["MODEL_DIR"], "weights.bin"), "r+b")
        err = 0
    except OSError as e:
        err = e.errno
    print(json.dumps({"errno": err}))
    """
    assert run_owner(shim_env(store, bucket, model_dir), code) == {"errno": 30}  # EROFS


def test_four_processes_share_one_download(store, bucket, model, model_dir, proxy):
    """The owner's children attach: the store serves each byte once, memory holds one copy."""
    code = """
    import hashlib, json, os, subprocess, sys
    reader = ("import hashlib,os,sys\\nfrom safetensors.torch import load_file\\n"
              "r=sys.argv[1]\\nh=hashlib.sha256(open(os.path.join(r,'weights.bin'),'rb').read())\\n"
              "n=sum(len(load_file(os.path.join(r,f))) for f in sorted(os.listdir(r)) if f.endswith('.safetensors'))\\n"
              "print(h.hexdigest(), n)")
    procs = [subprocess.Popen([sys.executable, "-c", reader, os.environ["MODEL_DIR"]],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate()[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    import glob
    data = glob.glob(os.environ["SESSION_DIR"] + "/data.*")[0]  # measured while in use
    allocated = sum(os.stat(os.path.join(data, f)).st_blocks * 512 for f in os.listdir(data))
    print(json.dumps({"outs": outs, "allocated": allocated}))
    """
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint)
    env["SESSION_DIR"] = session_dir(str(model_dir))
    got = run_owner(env, code)
    want = hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    assert got["outs"] == [[want, "6"]] * 4
    for path in model.rglob("*"):
        if path.is_file() and path.stat().st_size >= 64 << 10:
            key = f"{bucket}/{PREFIX}{path.relative_to(model)}"
            assert proxy.bytes_served(key) == path.stat().st_size, key
    # One copy in memory: the session's data files, fully allocated, and nothing more.
    large = sum(p.stat().st_size for p in model.rglob("*")
                if p.is_file() and p.stat().st_size >= 64 << 10)
    assert large <= got["allocated"] < large + (1 << 20)
    # SIGTERM ends the session at once (not expireTimeSec after its last user): nothing left
    # in /dev/shm, nothing in MODEL_DIR.
    os.kill(session_info(model_dir)["ownerPid"], signal.SIGTERM)
    assert wait_session_gone(model_dir)
    assert not model_dir.exists()


def test_second_owner_attaches_instead_of_fetching(store, bucket, model, model_dir, proxy):
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint)
    proxy.add_fault("stall", key="weights.bin", ranged_only=True, seconds=2, times=1)
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"], env=env)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(session_dir(str(model_dir)) + "/control"):  # published
            assert time.monotonic() < deadline
            time.sleep(0.05)
        got = run_owner(env, READ_EVERYTHING)
    finally:
        first.wait(timeout=30)
    assert got == digest_tree(model)
    assert proxy.bytes_served(f"{bucket}/{PREFIX}weights.bin") == 9 << 20


def test_expired_data_is_released_and_fetched_again(store, bucket, model, model_dir, proxy):
    """expireTimeSec after the last open of a complete session its data files go; a mapping
    made before keeps its bytes, stat still tells the size, and a later open fetches again."""
    code = """
    import hashlib, json, mmap, os, time
    path = os.path.join(os.environ["MODEL_DIR"], "weights.bin")
    import glob
    data = glob.glob(os.environ["SESSION_DIR"] + "/data.*")[0]
    with open(path, "rb") as f:
        first = hashlib.sha256(f.read()).hexdigest()
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    early = open(path, "rb")  # opened on the complete file: its reads never wait
    deadline = time.monotonic() + 30
    while os.listdir(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    released = not os.listdir(data)
    kept = hashlib.sha256(mapped).hexdigest()
    assert hashlib.sha256(early.read()).hexdigest() == first
    assert not os.listdir(data), "a read through an fd opened before the release refetched"
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        again = hashlib.sha256(f.read()).hexdigest()
    print(json.dumps({"first": first, "kept": kept, "again": again, "released": released,
                      "size": size, "back": len(os.listdir(data))}))
    """
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint, OSSC_EXPIRE_TIME_SEC=1)
    env["SESSION_DIR"] = session_dir(str(model_dir))
    got = run_owner(env, code)
    want = hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    assert got["released"] and got["back"] == 1
    assert got["first"] == got["kept"] == got["again"] == want
    assert got["size"] == 9 << 20
    # Fetched twice: once by the prefetch, once more after the release; nothing else again.
    assert proxy.bytes_served(f"{bucket}/{PREFIX}weights.bin") == 2 * (9 << 20)
    assert proxy.bytes_served(f"{bucket}/{PREFIX}sub/extra.bin") == 5 << 20


def test_corrupt_byte_never_reaches_a_reader(store, bucket, model, model_dir, proxy):
    """With the store's CRC-64 (as OSS sends it), a flipped byte is caught and the object is
    fetched again; a reader that starts at once only ever sees the verified bytes."""
    proxy.add_crc64 = True
    fault = proxy.add_fault("flip_byte", key="weights.bin", ranged_only=True, times=1)
    code = """
    import hashlib, json, os
    with open(os.path.join(os.environ["MODEL_DIR"], "weights.bin"), "rb") as f:
        print(json.dumps(hashlib.sha256(f.read()).hexdigest()))
    """
    got = run_owner(shim_env(store, bucket, model_dir, endpoint=proxy.endpoint), code)
    assert fault.fired == 1
    assert got == hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    assert proxy.bytes_served(f"{bucket}/{PREFIX}weights.bin") >= 2 * (9 << 20)


def test_an_object_fetched_again_unverified_counts_its_chunks_once(store, bucket, model,
                                                                  model_dir, proxy):
    """verifyBeforeRead=no hands chunks out as they land; a CRC-64 mismatch fetches the
    object again and its chunks land a second time. They count once: the session ends
    complete with bytesDone equal to bytesTotal, and is released on expiry."""
    proxy.add_crc64 = True
    fault = proxy.add_fault("flip_byte", key="weights.bin", ranged_only=True, times=1)
    code = """
    import json, os
    with open(os.path.join(os.environ["MODEL_DIR"], "config.json"), "rb") as f:
        print(json.dumps(len(f.read())))
    """
    run_owner(shim_env(store, bucket, model_dir, endpoint=proxy.endpoint,
                       OSSC_VERIFY_BEFORE_READ="no", OSSC_EXPIRE_TIME_SEC=1), code)
    deadline = time.monotonic() + 60
    while (info := session_info(model_dir))["state"] != "complete":
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert fault.fired == 1
    assert info["bytesDone"] == info["bytesTotal"], info
    assert wait_session_gone(model_dir), "the session's data was never released"


def test_cache_dir_holds_the_data_files(store, bucket, model, model_dir, tmp_path):
    """cacheDir moves the data files (e.g. to a local disk's page cache); the control file
    stays in /dev/shm and tells every reader where they are."""
    cache = tmp_path / "cache"
    code = """
    import hashlib, json, os
    root = os.environ["MODEL_DIR"]
    digest = hashlib.sha256(open(os.path.join(root, "weights.bin"), "rb").read()).hexdigest()
    cache = os.environ["OSSC_CACHE_DIR"]
    print(json.dumps({"digest": digest, "files": sum(len(f) for _, _, f in os.walk(cache))}))
    """
    got = run_owner(shim_env(store, bucket, model_dir, OSSC_CACHE_DIR=cache,
                             OSSC_EXPIRE_TIME_SEC=1), code)
    assert got["digest"] == hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    assert got["files"] == 5  # the large objects: 2 shards, the .bin, weights.bin, sub/extra.bin
    assert wait_session_gone(model_dir)
    assert list(cache.iterdir()) == []  # removed with the session


def test_two_released_objects_read_at_once_both_come_back(store, bucket, model, model_dir):
    """Readers share one request slot: after a release, two objects asked for at the same
    moment are both fetched again (a lost request would wait for the read timeout)."""
    code = """
    import hashlib, json, os, threading, time
    import glob
    root = os.environ["MODEL_DIR"]
    data = glob.glob(os.environ["SESSION_DIR"] + "/data.*")[0]
    names = ["weights.bin", "sub/extra.bin", "pytorch_model.bin"]
    for name in names:
        open(os.path.join(root, name), "rb").close()
    deadline = time.monotonic() + 30
    while os.listdir(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    start, got = threading.Barrier(len(names)), {}
    def read(name):
        start.wait()
        with open(os.path.join(root, name), "rb") as f:
            got[name] = hashlib.sha256(f.read()).hexdigest()
    t0 = time.monotonic()
    threads = [threading.Thread(target=read, args=(n,)) for n in names]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps({"got": got, "seconds": time.monotonic() - t0}))
    """
    env = shim_env(store, bucket, model_dir, OSSC_EXPIRE_TIME_SEC=1, OSSC_READ_TIMEOUT_SEC=30)
    env["SESSION_DIR"] = session_dir(str(model_dir))
    got = run_owner(env, code)
    for name in ("weights.bin", "sub/extra.bin", "pytorch_model.bin"):
        assert got["got"][name] == hashlib.sha256((model / name).read_bytes()).hexdigest()
    assert got["seconds"] < 15


def test_dead_owners_released_session_is_not_reused(store, bucket, model, model_dir):
    """An owner killed after its data files were released leaves a complete control file
    behind while a process still uses it; a new program must get a new owner that fetches
    again, not attach to a session nobody serves."""
    code = """
    import fcntl, glob, json, os, signal, subprocess, sys, threading, time
    data = glob.glob(os.environ["SESSION_DIR"] + "/data.*")[0]
    open(os.path.join(os.environ["MODEL_DIR"], "weights.bin"), "rb").close()
    deadline = time.monotonic() + 30
    while os.listdir(data) and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(os.path.join(os.environ["SESSION_DIR"], "control"), "rb") as f:
        f.seek(12)
        owner = int.from_bytes(f.read(4), "little")  # owner_pid
    os.kill(owner, signal.SIGKILL)
    # kill() returns before the owner is dead: a reader started now would still find it alive
    # and lose it mid-read (EIO, as documented), which is not this case. Its main thread shows
    # as a zombie while other threads still exit and hold its files: only the control file's
    # lock, which the owner holds while it lives, says it is gone.
    with open(os.path.join(os.environ["SESSION_DIR"], "control"), "rb") as f:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.01)
    # The reader starts while the directory is locked, as the dead owner's guardian locks it
    # to look whether the session can go: its new owner must wait, not join the dead one. The
    # lock goes only once a new owner has the directory open (it then finds it locked and
    # waits), else a slow start would find it free and the test pass on the old code too.
    session = os.environ["SESSION_DIR"]
    held = os.open(session, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    def owners():
        found = set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != "ossc-owner":
                        continue
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == session
                       for fd in os.listdir(f"/proc/{pid}/fd")):
                    found.add(int(pid))
            except OSError:
                pass
        return found
    before = owners()  # the dead owner's guardian may hold it too
    waited = []
    def release_once_a_new_owner_waits():
        end = time.monotonic() + 30
        while not (new := owners() - before) and time.monotonic() < end:
            time.sleep(0.01)
        waited.append(bool(new))
        time.sleep(0.3)  # the new owner goes on from open() to the lock it must wait at
        os.close(held)
    releaser = threading.Thread(target=release_once_a_new_owner_waits)
    releaser.start()
    out = subprocess.run([sys.executable, "-c", os.environ["READER"]], capture_output=True,
                         text=True)
    releaser.join()
    assert waited == [True], ("no new owner waited at the locked directory (one that joins "
                              "the dead session leaves at once)")
    assert out.returncode == 0, out.stderr
    print(out.stdout.strip().splitlines()[-1])
    """
    env = shim_env(store, bucket, model_dir, OSSC_EXPIRE_TIME_SEC=1, READER=READ_EVERYTHING)
    env["SESSION_DIR"] = session_dir(str(model_dir))
    assert run_owner(env, code) == digest_tree(model)
    assert wait_session_gone(model_dir)


def test_reader_of_a_held_object_moves_all_of_it_forward(store, bucket, model, model_dir,
                                                        proxy):
    """With OSS's CRC-64 an object's chunks are held until it verifies, so a reader waits
    for all of it: its request must bring the whole object forward, past slow objects
    queued before it."""
    proxy.add_crc64 = True
    for key in ("pytorch_model.bin", "sub/extra.bin"):  # queued before weights.bin
        proxy.add_fault("stall", key=key, ranged_only=True, seconds=0.4, times=None)
    code = """
    import hashlib, json, os, time
    path = os.path.join(os.environ["MODEL_DIR"], "weights.bin")
    t = time.monotonic()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(json.dumps({"sha": digest, "seconds": time.monotonic() - t}))
    """
    env = shim_env(store, bucket, model_dir, endpoint=proxy.endpoint, OSSC_CHUNK_SIZE="64KiB")
    got = run_owner(env, code)
    assert got["sha"] == hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()
    # Behind the 112 stalled chunks of the two objects before it (16 transfers in flight,
    # 0.4 s each) weights.bin would take about 3 s.
    assert got["seconds"] < 2.0


def test_freopen_serves_the_object(store, bucket, model, model_dir):
    code = """
    import ctypes, hashlib, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.freopen.restype = ctypes.c_void_p
    libc.freopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    stdin = ctypes.c_void_p.in_dll(libc, "stdin")
    path = os.path.join(os.environ["MODEL_DIR"], "weights.bin").encode()
    f = libc.freopen(path, b"r", stdin)
    assert f, os.strerror(ctypes.get_errno())
    buf = ctypes.create_string_buffer(9 << 20)
    n = libc.fread(buf, 1, len(buf), f)
    print(json.dumps([n, hashlib.sha256(buf.raw[:n]).hexdigest()]))
    """
    got = run_owner(shim_env(store, bucket, model_dir), code)
    assert got == [9 << 20, hashlib.sha256((model / "weights.bin").read_bytes()).hexdigest()]
