"""The session's owner is a process of its own: every way users start and end programs works,
nothing is left in /dev/shm or MODEL_DIR, and servers on one MODEL_DIR share one session.

Each case reads the model while the download still runs (the fault proxy slows the large
objects), and compares every byte with a local copy."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ossc.native import preload_library, session_dir, sessions
from support.session_helpers import READER, session_info, upload_small_model, wait_session_gone

@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    return upload_small_model(store, bucket, tmp_path_factory.mktemp("lifecycle-model"), "lifecycle", 11,
                              (6 << 20, 3 << 20))


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    yield path
    for info in sessions(str(path)):  # a failed case must not leave its session behind
        if info.get("ownerAlive"):
            os.kill(info["ownerPid"], signal.SIGTERM)
    wait_session_gone(path, timeout=10)


def env_mode(store, remote, model_dir, proxy, **extra):
    """Env-var mode as a container image sets it, the store slowed so reads overlap it."""
    proxy.add_fault("stall", key=".bin", ranged_only=True, seconds=0.5, times=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "MODEL_DIR"))}
    env.update(store.env())
    env.update(AWS_ENDPOINT_URL=proxy.endpoint, OSSC_CONFIG="",
               LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                 str(preload_library())])),
               ENABLE_CONNECTOR="1", OSS_PATH=remote["url"], MODEL_DIR=str(model_dir),
               OSSC_CHUNK_SIZE="1MiB", OSSC_SMALL_FILE_SIZE="64KiB", OSSC_EXPIRE_TIME_SEC="1",
               OSSC_LOG_LEVEL="warn")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_script(path, text, mode=0o755):
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(mode)
    return path


def launch_patterns(tmp_path):
    reader = write_script(tmp_path / "reader.py", "#!/usr/bin/env python3\n" + READER)
    entry = write_script(tmp_path / "entrypoint.sh", """
        #!/bin/sh
        # A container entrypoint: set things up, then become the program.
        exec "$@"
        """)
    shim = tmp_path / "pyenv-shims"
    shim.mkdir()
    write_script(shim / "python3", f"""
        #!/bin/sh
        # What pyenv puts first on PATH: a shell script that execs the real interpreter.
        exec {sys.executable} "$@"
        """)
    return {
        "plain": [sys.executable, str(reader)],
        "exec entrypoint": [str(entry), sys.executable, str(reader)],
        "nohup": ["nohup", sys.executable, str(reader)],
        "#!/usr/bin/env python3": [str(reader)],
        "sh -c exec": ["sh", "-c", f"exec {sys.executable} {reader}"],
        "pyenv shim": [str(shim / "python3"), str(reader)],
    }


PATTERNS = ["plain", "exec entrypoint", "nohup", "#!/usr/bin/env python3", "sh -c exec",
            "pyenv shim"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_launch_pattern_reads_every_byte(store, remote, model_dir, proxy, tmp_path,
                                              pattern):
    audit = tmp_path / "audit.log"
    env = env_mode(store, remote, model_dir, proxy, OSSC_AUDIT_PATH=audit)
    argv = launch_patterns(tmp_path)[pattern]
    env["PATH"] = f"{tmp_path / 'pyenv-shims'}:{env['PATH']}"
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == remote["want"]
    # It read while the download ran: a read of a large file waited for bytes.
    waits = [int(line.rsplit("waited_ms=", 1)[1]) for line in audit.read_text().splitlines()
             if "waited_ms=" in line]  # the shim's lines, not the owner's fetch lines
    assert len(waits) == 2 and max(waits) > 0, waits
    assert wait_session_gone(model_dir)
    assert not model_dir.exists()  # ossc made it, ossc removed it


@pytest.mark.parametrize("ending", ["exit", "_exit", "sigkill", "exec"])
def test_nothing_leaks_however_the_program_ends(store, remote, model_dir, proxy, ending):
    """The program ends mid-download, each way it can; the session goes expireTimeSec (1 s)
    plus the 2 s linger after its last user."""
    code = {
        "exit": "import sys; sys.exit(0)",
        "_exit": "import os; os._exit(3)",
        "sigkill": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "exec": "import os; os.execv('/bin/true', ['true'])",
    }[ending]
    env = env_mode(store, remote, model_dir, proxy)
    pre = "import os; open(os.path.join(os.environ['MODEL_DIR'], 'a.bin'), 'rb').read(10)\n"
    subprocess.run([sys.executable, "-c", pre + code], env=env, timeout=60)
    assert wait_session_gone(model_dir, timeout=20)
    assert not model_dir.exists()


def test_owner_killed_mapping_keeps_bytes_new_reads_never_zeros(store, remote, model_dir,
                                                                 proxy):
    """SIGKILL of the owner mid-download: a mapping made of what had landed keeps its bytes,
    a read of what had not fails with EIO (never zeros), and the guardian removes the
    session once the program is gone."""
    code = """
    import errno, hashlib, json, mmap, os, signal
    root = os.environ["MODEL_DIR"]
    f = open(os.path.join(root, "sub/b.bin"), "rb")
    whole = f.read()                       # waits for all of it
    mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    with open(os.path.join(os.environ["SESSION_DIR"], "control"), "rb") as c:
        c.seek(12)
        os.kill(int.from_bytes(c.read(4), "little"), signal.SIGKILL)
    try:
        tail = open(os.path.join(root, "a.bin"), "rb").read()
        result = "zeros" if tail.count(0) > len(tail) // 2 else "bytes"
    except OSError as e:
        result = errno.errorcode[e.errno]
    print(json.dumps({"mapped": hashlib.sha256(mapped).hexdigest(),
                      "whole": hashlib.sha256(whole).hexdigest(), "a": result}))
    """
    proxy.add_fault("stall", key="a.bin", ranged_only=True, seconds=60, times=None)
    env = env_mode(store, remote, model_dir, proxy, SESSION_DIR=session_dir(str(model_dir)),
                   OSSC_READ_TIMEOUT_SEC=20)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["mapped"] == got["whole"] == remote["want"]["sub/b.bin"]
    assert got["a"] == "EIO"
    assert wait_session_gone(model_dir, timeout=20)


def test_model_dir_lists_exactly_the_prefix(store, remote, model_dir, proxy):
    """During the download and after it: the prefix's names and sizes, nothing else."""
    code = """
    import json, os, time
    root = os.environ["MODEL_DIR"]
    def listing():
        return sorted((os.path.relpath(os.path.join(d, f), root),
                       os.stat(os.path.join(d, f)).st_size)
                      for d, _, fs in os.walk(root) for f in fs)
    during = listing()
    open(os.path.join(root, "a.bin"), "rb").read()
    open(os.path.join(root, "sub/b.bin"), "rb").read()
    print(json.dumps({"during": during, "after": listing(), "dirs": sorted(os.listdir(root))}))
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                       env=env_mode(store, remote, model_dir, proxy), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    want = sorted([name, (remote["local"] / name).stat().st_size] for name in remote["want"])
    assert got["during"] == got["after"] == want
    assert got["dirs"] == ["a.bin", "config.json", "sub"]


def run_launcher(store, remote, model_dir, command, *extra, url=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OSS_", "MODEL_DIR", "ENABLE_CONNECTOR"))}
    env.update(**store.env())
    return subprocess.Popen(
        [sys.executable, "-m", "ossc.launcher", "--config", "", "--oss-path", url or remote["url"],
         "--model-dir", str(model_dir), "--expire-time-sec", "1", "--chunk-size", "1MiB",
         "--small-file-size", "64KiB", *extra, "--", *command],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_launchers_share_one_session(store, remote, model_dir, tmp_path):
    """A second ossc-run on the same MODEL_DIR attaches; after the first ends, the second
    still reads every file; after the second ends, nothing is left. Another store path on the
    same MODEL_DIR is refused with its own exit code."""
    go = tmp_path / "go"
    wait_go = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
    # The first server stays up until told; the second starts while it runs.
    holder = run_launcher(store, remote, model_dir, [sys.executable, "-c", wait_go + READER])
    deadline = time.monotonic() + 30
    # Until its control file is published a session is "creating", without an owner pid.
    while "ownerPid" not in (sessions(str(model_dir)) or [{}])[0] and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    owner = session_info(model_dir)["ownerPid"]
    # Its prefix without the '/' names the same directory of the store, so the same session.
    second = run_launcher(store, remote, model_dir,
                          [sys.executable, "-c", wait_go + "time.sleep(3)\n" + READER],
                          url=remote["url"].rstrip("/"))
    conflict = run_launcher(store, remote, model_dir, ["true"],
                            url=remote["url"].rstrip("/") + "-other/")
    _, err = conflict.communicate(timeout=60)
    assert conflict.returncode == 13, err
    assert "already served from" in err and err.count("\n") == 1, err
    go.touch()
    out1, err1 = holder.communicate(timeout=60)
    assert holder.returncode == 0, err1
    out2, err2 = second.communicate(timeout=60)  # read 3 s after the first one left
    assert second.returncode == 0, err2
    assert json.loads(out2.strip().splitlines()[-1]) == remote["want"]
    assert f"owner pid {owner}" in err2  # the same session, not a second download
    assert wait_session_gone(model_dir)
    assert not model_dir.exists()


def test_owner_under_ossc_run_sizes_chunks_over_its_objects(store, remote, model_dir):
    """chunkSize left auto reaches the owner as auto: it cuts the 9 MiB of large objects into
    4 MiB chunks (the smallest auto size), not the 32 MiB a fetch of unknown size would get
    (what ossc-run passed on before, as a number)."""
    code = ("import os, struct\n"
            "from ossc.native import session_dir\n"
            "with open(os.path.join(session_dir(os.environ['MODEL_DIR']), 'control'), 'rb') as f:"
            "\n    print(struct.unpack_from('<Q', f.read(32), 24)[0])\n")
    proc = run_launcher(store, remote, model_dir, [sys.executable, "-c", code],
                        "--chunk-size", "auto")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert int(out.strip().splitlines()[-1]) == 4 << 20, out
    assert wait_session_gone(model_dir)


def test_status_shows_the_session(store, remote, model_dir, proxy, tmp_path):
    env = env_mode(store, remote, model_dir, proxy)
    code = ("import os, subprocess, sys\n"
            "open(os.path.join(os.environ['MODEL_DIR'], 'a.bin'), 'rb').read()\n"
            "env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', "
            "'ENABLE_CONNECTOR')}\n"
            "print(subprocess.run([sys.executable, '-m', 'ossc', 'status', "
            "os.environ['MODEL_DIR']], env=env, capture_output=True, text=True).stdout)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    for expected in (f"model dir  {os.path.realpath(model_dir)}", f"store      {remote['url']}",
                     "users      1", "9.4 MB in memory"):
        assert expected in text, text
    assert "AWS_SECRET" not in text and store.secret_key not in text
