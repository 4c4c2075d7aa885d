"""Sessions other local users can neither read, nor plant, nor corrupt (docs/SECURITY.md).

Run as root, as CI runs: each test makes an unprivileged user (and a group for the opt-in
sharing) and removes them again. What that user runs is coreutils under the shim, from a copy
of ossc's binaries it can read."""

import grp
import hashlib
import json
import os
import pwd
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from ossc.native import owner_program, preload_library, session_dir, sessions
from support.session_helpers import READER, upload_small_model, wait_session_gone

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates users: needs root")

@pytest.fixture(scope="module")
def public_dir():
    """A directory every user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ossc-security-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stranger(public_dir):
    """An unprivileged user, a group it may be given, and ossc's binaries where it can run
    them (the shim finds ossc-owner and libossc next to itself)."""
    tag = uuid.uuid4().hex[:6]
    name, group = f"osscx{tag}", f"osscg{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True)
    bin_dir = public_dir / "bin"
    bin_dir.mkdir(mode=0o755)
    shim = Path(preload_library())
    for src in (shim, shim.parent / "libossc.so", Path(owner_program())):
        shutil.copy2(src, bin_dir / src.name)
    try:
        yield {"uid": pwd.getpwnam(name).pw_uid, "gid": pwd.getpwnam(name).pw_gid,
               "group": group, "group_id": grp.getgrnam(group).gr_gid, "bin": bin_dir}
    finally:
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", group], check=False)


@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    return upload_small_model(store, bucket, tmp_path_factory.mktemp("security-model"), "security", 16,
                              (3 << 20, 2 << 20))


@pytest.fixture
def model_dir(public_dir):
    path = public_dir / f"model-{uuid.uuid4().hex[:6]}"
    yield path
    for info in sessions(str(path)):
        if info.get("ownerAlive"):
            os.kill(info["ownerPid"], 15)
    wait_session_gone(path, timeout=10)


def clean_env() -> dict:
    """This process's environment without ossc's settings (the library to test stays)."""
    return {k: v for k, v in os.environ.items() if k == "OSSC_LIBRARY" or
            not k.startswith(("OSS_", "MODEL_DIR", "OSSC_", "ENABLE_CONNECTOR"))}


def shim_env(store, remote, model_dir, shim, **extra) -> dict:
    env = clean_env()
    env.update(store.env())
    env.update(OSSC_CONFIG="", LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                                str(shim)])),
               ENABLE_CONNECTOR="1", OSS_PATH=remote["url"], MODEL_DIR=str(model_dir),
               OSSC_CHUNK_SIZE="1MiB", OSSC_SMALL_FILE_SIZE="64KiB", OSSC_EXPIRE_TIME_SEC="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def snapshot(root: Path) -> dict:
    """Everything under root, as lstat and contents say: what a run must leave as it was."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        body = os.readlink(path) if path.is_symlink() else \
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, body)
    return out


def control_image(model_dir: str, data_dir: str, objects=(), chunk=1 << 20, **header) -> bytes:
    """A control file as session_layout.h lays it out, every chunk ready; header overrides
    any header field by name (to craft a bad one)."""
    h = dict(magic=0x4353534F, version=4, header_size=8352, state=2, owner_pid=1,
             n_objects=len(objects), n_chunks=sum(-(-size // chunk) for _, size in objects),
             chunk_size=chunk, objects_offset=8384)
    h["bits_offset"] = h["objects_offset"] + 40 * len(objects)
    h["names_offset"] = h["bits_offset"] + (h["n_chunks"] + 63) // 64 * 8
    names = b"".join(name.encode() + b"\0" for name, _ in objects)
    h["control_size"] = h["names_offset"] + len(names)
    h.update(header)
    head = bytearray(8384)
    struct.pack_into("<IHHIIIIQQQQQ", head, 0, *(h[k] for k in (
        "magic", "version", "header_size", "state", "owner_pid", "n_objects", "n_chunks",
        "chunk_size", "objects_offset", "bits_offset", "names_offset", "control_size")))
    struct.pack_into("<I", head, 68, 600000)                  # read_timeout_ms
    head[96:96 + len(model_dir)] = model_dir.encode()         # model_dir
    head[6248:6248 + len(data_dir)] = data_dir.encode()       # data_dir
    table, first, offset = bytearray(), 0, 0
    for name, size in objects:
        n = -(-size // chunk)
        table += struct.pack("<QIIIIiIQ", size, first, n, offset, len(name), 0, n, 0)
        first, offset = first + n, offset + len(name) + 1
    bits = b"\xff" * ((h["n_chunks"] + 63) // 64 * 8)
    body = bytes(head) + bytes(table) + bits + names
    return body[:h["control_size"]] if h["control_size"] <= len(body) else \
        body + bytes(h["control_size"] - len(body))


def plant_session(path: Path, model_dir: Path, remote, uid: int) -> None:
    """What another user can make where root's session will go: a directory with a control
    file that looks right (every chunk ready) over data files of its own."""
    data = path / "data.1"
    data.mkdir(parents=True)
    objects = [(name, 3 << 20 if name == "a.bin" else 2 << 20)
               for name in sorted(remote["want"]) if name.endswith(".bin")]
    for i, (_, size) in enumerate(objects):
        (data / str(i)).write_bytes(b"E" * size)
    (path / "control").write_bytes(control_image(str(model_dir), str(data), objects))
    (path / "users").write_bytes(b"")
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, -1)
        p.chmod(0o777 if p.is_dir() else 0o666)


def as_user(stranger, argv, env, groups=()):
    return subprocess.run(argv, env=env, user=stranger["uid"], group=stranger["gid"],
                          extra_groups=list(groups), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("how", ["env-var mode", "ossc-run"])
def test_planted_session_and_log_paths_are_never_used(store, remote, model_dir, stranger,
                                                      public_dir, how):
    """Another user plants root's session directory (control file, ready bits, data of its
    own) and symlinks at the log and audit paths. root's program reads the store's bytes,
    nothing is written into or through what was planted, and each is named once."""
    model_dir.parent.mkdir(exist_ok=True)
    planted = Path(session_dir(str(model_dir)))
    plant_session(planted, model_dir.resolve(), remote, stranger["uid"])
    shared = public_dir / f"shared-{uuid.uuid4().hex[:6]}"  # like /tmp: sticky, for everyone
    shared.mkdir()
    shared.chmod(0o1777)
    victim = public_dir / f"victim-{uuid.uuid4().hex[:6]}"
    victim.write_text("root's file\n")
    for name in ("ossc.log", "audit.log"):
        (shared / name).symlink_to(victim)
        os.lchown(shared / name, stranger["uid"], -1)
    before = {**snapshot(planted), **snapshot(shared), **snapshot(victim)}
    logs = dict(OSSC_LOG_PATH=shared / "ossc.log", OSSC_AUDIT_PATH=shared / "audit.log")
    try:
        if how == "env-var mode":
            env = shim_env(store, remote, model_dir, preload_library(), **logs)
            r = subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True,
                               text=True, timeout=120)
        else:
            env = clean_env()
            env.update(store.env(), **{k: str(v) for k, v in logs.items()})
            r = subprocess.run(
                [sys.executable, "-m", "ossc.launcher", "--config", "", "--oss-path",
                 remote["url"], "--model-dir", str(model_dir), "--expire-time-sec", "1",
                 "--chunk-size", "1MiB", "--small-file-size", "64KiB",
                 "--", sys.executable, "-c", READER],
                env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1]) == remote["want"]
        after = {**snapshot(planted), **snapshot(shared), **snapshot(victim)}
        assert after == before  # nothing written into or through the planted paths
        lines = r.stderr.splitlines()
        assert [line for line in lines if str(planted) in line and "another user" in line]
        for name in ("ossc.log", "audit.log"):
            assert [line for line in lines if f"{shared}/{name}" in line
                    and "symbolic link" in line], r.stderr
    finally:
        shutil.rmtree(planted, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_other_users_cannot_read_or_attach_and_the_group_attaches_read_only(
        store, remote, model_dir, stranger):
    """A private session is closed to another uid: its control and data files, and
    MODEL_DIR's placeholders (EACCES, never their holes). Shared with a group, a member reads
    every byte through its session, and can write none of it."""
    shim = stranger["bin"] / "libossc_preload.so"
    for shared_group in ("", stranger["group"]):
        env = shim_env(store, remote, model_dir, preload_library(),
                       OSSC_SHARED_GROUP=shared_group)
        holder = subprocess.Popen([sys.executable, "-c", READER, "hold"], env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert json.loads(holder.stdout.readline()) == remote["want"]
            info = sessions(str(model_dir))[0]
            session, data = Path(info["path"]), Path(info["dataDir"])
            theirs = shim_env(store, remote, model_dir, shim, OSSC_SHARED_GROUP=shared_group)
            del theirs["ENABLE_CONNECTOR"]  # attach only: never start an owner of their own
            files = [str(model_dir / name) for name in sorted(remote["want"])]
            outsider = as_user(stranger, ["sha256sum", str(session / "control"), str(data / "0"),
                                          *files], theirs)
            assert outsider.returncode != 0
            denied = [line for line in outsider.stderr.splitlines() if "Permission denied" in line]
            assert len(denied) == 2 + 2, outsider.stderr  # control, data, both placeholders
            assert "config.json" not in outsider.stderr  # a small file is the real file
            if not shared_group:
                assert (session.stat().st_mode & 0o7777, (session / "control").stat().st_mode
                        & 0o777) == (0o700, 0o600)
                continue
            assert session.name.startswith(f"ossc-g{stranger['group_id']}-")
            assert (session.stat().st_mode & 0o7777, (session / "control").stat().st_mode
                    & 0o777) == (0o2750, 0o640)
            member = as_user(stranger, ["sha256sum", *files], theirs, [stranger["group_id"]])
            assert member.returncode == 0, member.stderr
            got = {os.path.relpath(line.split()[1], model_dir): line.split()[0]
                   for line in member.stdout.splitlines()}
            assert got == remote["want"]
            # A spelling the shim resolves only by the placeholder's identity (a relative
            # path) still reaches the object, though the placeholder is root's alone.
            relative = as_user(stranger, ["sh", "-c", f"cd {model_dir} && cat a.bin sub/b.bin"
                                          " | sha256sum"], theirs, [stranger["group_id"]])
            whole = b"".join((remote["local"] / n).read_bytes() for n in ("a.bin", "sub/b.bin"))
            assert relative.stdout.split()[0] == hashlib.sha256(whole).hexdigest(), \
                relative.stderr
            writer = as_user(stranger, ["sh", "-c", f"echo x >> {session}/control"], theirs,
                             [stranger["group_id"]])
            assert writer.returncode != 0 and "Permission denied" in writer.stderr
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
            assert wait_session_gone(model_dir)


CRAFTED = {
    "huge object count": dict(n_objects=0xFFFFFFFF),
    "names past the end": dict(names_offset=1 << 40),
    "objects before the header": dict(objects_offset=64),
    "control_size not the file's": "resized",
    "unterminated model_dir": "unterminated",
    "truncated header": "truncated",
}


@pytest.mark.parametrize("craft", sorted(CRAFTED))
def test_crafted_control_files_are_ignored(model_dir, tmp_path, craft):
    """A control file of the right uid and modes whose structure is wrong is ignored with one
    line; the reader gets the file that is really in MODEL_DIR and does not crash."""
    model_dir.mkdir(parents=True)
    real = os.urandom(3 << 20)
    (model_dir / "a.bin").write_bytes(real)
    path = Path(session_dir(str(model_dir)))
    (path / "data").mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    how = CRAFTED[craft]
    image = control_image(str(model_dir.resolve()), str(path / "data"), [("a.bin", 3 << 20)],
                          **(how if isinstance(how, dict) else {}))
    if how == "unterminated":
        image = image[:96] + b"/" * 4096 + image[96 + 4096:]
    elif how == "truncated":
        image = image[:100]
    elif how == "resized":
        image = image[:56] + struct.pack("<Q", 1 << 30) + image[64:]
    for name, body in (("control", image), ("users", b"")):
        fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body)
        os.close(fd)
    try:
        env = clean_env()
        env.update(LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                     str(preload_library())])),
                   MODEL_DIR=str(model_dir))
        r = subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1]) == \
            {"a.bin": hashlib.sha256(real).hexdigest()}
        warned = [line for line in r.stderr.splitlines() if f"ignoring the session in {path}"
                  in line]
        assert len(warned) == 1, r.stderr
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_credentials_reach_no_session_file_log_status_or_command_line(store, remote, model_dir,
                                                                     tmp_path):
    """The secret is in the owner's environment only: not in its command line (which `ps`
    shows every user), the session's files, the log, the audit lines or `ossc status`."""
    secret = store.env()["AWS_SECRET_ACCESS_KEY"].encode()
    log, audit = tmp_path / "ossc.log", tmp_path / "audit.log"
    env = shim_env(store, remote, model_dir, preload_library(), OSSC_LOG_PATH=log,
                   OSSC_AUDIT_PATH=audit, OSSC_LOG_LEVEL="debug")
    holder = subprocess.Popen([sys.executable, "-c", READER, "hold"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert json.loads(holder.stdout.readline()) == remote["want"]
        info = sessions(str(model_dir))[0]
        owner_cmdline = Path(f"/proc/{info['ownerPid']}/cmdline").read_bytes()
        assert b"--oss-path" in owner_cmdline and secret not in owner_cmdline
        status = subprocess.run([sys.executable, "-m", "ossc", "status", "--json"],
                                capture_output=True, timeout=60)
        assert status.returncode == 0 and str(model_dir).encode() in status.stdout
        files = [p for p in Path(info["path"]).rglob("*") if p.is_file()]
        assert len(files) >= 4  # control, users, owner.log or manifest, data files
        for path in [*files, log]:
            assert secret not in path.read_bytes(), path
        assert secret not in status.stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert audit.read_text() and secret not in audit.read_bytes()


@pytest.fixture(scope="module")
def stranger_python(stranger, public_dir):
    """The distribution's python3 with what ossc imports, where the unprivileged user can read
    it: ossc itself (with its libraries and header beside it) and its site-packages imports."""
    probe = ("import json, sys, ossc.launcher, ossc.cli, ossc.native as n\n"
             "mods = {m: v.__file__ for m, v in list(sys.modules.items()) if '.' not in m\n"
             "        and getattr(v, '__file__', None) and 'site-packages' in v.__file__}\n"
             "print(json.dumps({'ossc': n.__file__, 'mods': mods,\n"
             "                  'lib': str(n.LIBRARY_PATH)}))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], check=True,
                                      capture_output=True, text=True).stdout)
    root = public_dir / "py"
    package = root / "ossc"
    shutil.copytree(Path(found["ossc"]).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("libossc.so", "libossc_preload.so", "ossc-owner"):
        shutil.copy2(stranger["bin"] / name, package / name)
    header = Path(found["lib"]).parent / "ossc.h"
    if not header.is_file():
        header = Path(__file__).resolve().parent.parent / "preload/include/ossc.h"
    shutil.copy2(header, package / "ossc.h")
    for name, path in found["mods"].items():
        if name == "ossc":
            continue
        src = Path(path)
        if src.name == "__init__.py":
            shutil.copytree(src.parent, root / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / src.name)
    return root


def test_a_group_member_runs_ossc_run_on_a_shared_session(store, remote, model_dir, stranger,
                                                         stranger_python):
    """ossc-run as another uid in sharedGroup attaches to root's live shared session, reports
    it, and its command reads every byte through the shim; nothing needed writing."""
    env = shim_env(store, remote, model_dir, preload_library(),
                   OSSC_SHARED_GROUP=stranger["group"])
    holder = subprocess.Popen([sys.executable, "-c", READER, "hold"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert json.loads(holder.stdout.readline()) == remote["want"]
        theirs = {k: v for k, v in clean_env().items()
                  if k not in ("OSSC_LIBRARY", "LD_PRELOAD", "PYTHONPATH")}
        theirs.update(store.env(), PYTHONPATH=str(stranger_python), HOME="/tmp")
        files = [str(model_dir / name) for name in sorted(remote["want"])]
        r = as_user(stranger, ["/usr/bin/python3", "-m", "ossc.launcher", "--config", "",
                               "--oss-path", remote["url"], "--model-dir", str(model_dir),
                               "--shared-group", stranger["group"], "--",
                               "sha256sum", *files], theirs, [stranger["group_id"]])
        assert r.returncode == 0, r.stderr
        got = {os.path.relpath(line.split()[1], model_dir): line.split()[0]
               for line in r.stdout.splitlines()}
        assert got == remote["want"]
        assert f"session owner pid {sessions(str(model_dir))[0]['ownerPid']}" in r.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        assert wait_session_gone(model_dir)
