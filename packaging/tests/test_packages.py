"""The deb and rpm that scripts/package.sh built: metadata, files, modes and config marking of
both formats, lintian on the debs, the rpm against RHEL 9's base (rpm --root into an empty
root, glibc symbol versions, requirements); then each deb installed with apt into a fresh
minimal root of its Debian release, where env-var mode, ossc-run and ossc run on the
distribution's python3 against SeaweedFS on 127.0.0.1, and an upgrade over itself, remove
and purge leave what they should.

Run through `scripts/package.sh --test`, which sets OSSC_PACKAGES (the packages),
OSSC_PACKAGE_ROOTS (the minimal roots it made, RELEASE/base) and OSSC_PACKAGE_RELEASES.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from support.localstore import LocalStore  # noqa: E402

for name in ("OSSC_PACKAGES", "OSSC_PACKAGE_ROOTS", "OSSC_PACKAGE_RELEASES"):
    if not os.environ.get(name):
        raise RuntimeError(f"{name} is not set: run scripts/package.sh --test")
PACKAGES = Path(os.environ["OSSC_PACKAGES"])
ROOTS = Path(os.environ["OSSC_PACKAGE_ROOTS"])
RELEASES = os.environ["OSSC_PACKAGE_RELEASES"].split()
NUMBER = {"bullseye": 11, "bookworm": 12, "trixie": 13}
VERSION = re.search(r"^project\(ossc VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text(),
                    re.M).group(1)
LIB = "/usr/local/lib"
PYDIR = f"{LIB}/ossc/python/ossc"
CONFIG = "/etc/oss-connector/config.json"
BUCKET, PREFIX = "pkg", "model/"

# path -> mode string as `ls -l` shows it, or "-> target" for a symbolic link.
FILES = {
    f"{LIB}/libossc_preload.so": "-rw-r--r--",
    f"{LIB}/libossc.so.{VERSION}": "-rw-r--r--",
    f"{LIB}/libossc.so.0": f"-> libossc.so.{VERSION}",
    f"{LIB}/libossc.so": "-> libossc.so.0",
    f"{LIB}/ossc-owner": "-rwxr-xr-x",
    "/usr/local/bin/ossc-run": "-rwxr-xr-x",
    "/usr/local/bin/ossc": "-rwxr-xr-x",
    "/usr/local/include/ossc.h": "-rw-r--r--",
    f"{PYDIR}/ossc.h": "-rw-r--r--",
    f"{PYDIR}/libossc.so": "-> ../../../libossc.so",
    f"{PYDIR}/libossc_preload.so": "-> ../../../libossc_preload.so",
    f"{PYDIR}/ossc-owner": "-> ../../../ossc-owner",
    CONFIG: "-rw-r--r--",
    "/usr/share/doc/ossc/README.md": "-rw-r--r--",
    **{f"{PYDIR}/{p.relative_to(REPO / 'python/ossc')}": "-rw-r--r--"
       for p in (REPO / "python/ossc").rglob("*.py")},
}
DEB_FILES = {**FILES, "/usr/share/doc/ossc/copyright": "-rw-r--r--",
             "/usr/share/doc/ossc/changelog.Debian.gz": "-rw-r--r--",
             "/usr/share/lintian/overrides/ossc": "-rw-r--r--"}
RPM_FILES = {**FILES, "/usr/share/licenses/ossc/LICENSE": "-rw-r--r--",
             "/usr/share/licenses/ossc/LICENSE.cJSON": "-rw-r--r--"}
DIRS = {"/var/log/oss-connector": "drwxr-xr-x"}

# What RHEL 9's BaseOS provides for what the rpm needs: glibc (libc.so.6 up to GLIBC_2.34),
# openssl-libs (libcrypto.so.3, OPENSSL_3.0.0), libcurl or libcurl-minimal (libcurl.so.4),
# expat (libexpat.so.1), python3 (3.9) and python3-cffi.
RHEL9_BASE = {"libc.so.6(GLIBC_2.34)(64bit)", "libcrypto.so.3(OPENSSL_3.0.0)(64bit)",
              "libcurl.so.4()(64bit)", "libexpat.so.1()(64bit)", "python3", "python3-cffi",
              "/bin/sh"}
RHEL9_SONAMES = {"libc.so.6", "ld-linux-x86-64.so.2", "libcrypto.so.3", "libcurl.so.4",
                 "libexpat.so.1"}


def run(*argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(list(argv), capture_output=True, text=True, **kw)


def deb(release: str) -> Path:
    return PACKAGES / f"ossc_{VERSION}_{release}_amd64.deb"


RPM = PACKAGES / f"ossc-{VERSION}-1.el9.x86_64.rpm"


def ls_modes(listing: str, fields: int) -> dict:
    """`dpkg-deb -c` (6 fields) or `rpm -qlv` (9) lines -> {path: mode or "-> target"}."""
    files = {}
    for line in listing.splitlines():
        mode, rest = line.split()[0], line.split(None, fields - 1)[-1]
        path = rest.split(" -> ")[0].lstrip(".").rstrip("/")
        if mode.startswith("l"):
            files[path] = "-> " + rest.split(" -> ")[1]
        else:
            files[path] = mode
    return files


def owners_ok(listing: str) -> bool:
    return all(re.search(r" (root/root|0/0) |\sroot\s+root\s", line)
               for line in listing.splitlines())


def test_one_version_everywhere():
    """CMakeLists.txt's version is the only one: the packages, the wheel's metadata (its regex
    provider) and ossc.__version__ (the engine's ossc_version) all take it."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"^version =", pyproject, re.M)
    regex = re.search(r"^regex = '(.*)'$", pyproject, re.M).group(1)
    assert re.search(regex, (REPO / "CMakeLists.txt").read_text()).group("value") == VERSION
    assert not re.search(r"__version__ = ['\"]", (REPO / "python/ossc/__init__.py").read_text())


def test_config_has_no_credentials():
    text = (REPO / "etc/config.json").read_text()
    json.loads(text)
    assert not re.search(r"secret|accesskey|access_key|credential|token|password", text, re.I)


# --- the debs, as built ---

@pytest.mark.parametrize("release", RELEASES)
def test_deb_metadata(release):
    fields = {f: run("dpkg-deb", "-f", str(deb(release)), f).stdout.strip()
              for f in ("Package", "Version", "Architecture", "Depends", "Provides",
                        "Conflicts", "Replaces", "Maintainer", "Description")}
    assert fields["Package"] == "ossc"
    assert fields["Version"] == f"{VERSION}-1~deb{NUMBER[release]}"
    assert fields["Architecture"] == "amd64"
    for relation in ("Provides", "Conflicts", "Replaces"):
        assert fields[relation] == "oss-connector-lib"
    depends = [d.strip().split()[0] for d in fields["Depends"].split(",")]
    # python3 and its cffi, then dpkg-shlibdeps' libraries: no libcjson (linked in).
    assert depends[:2] == ["python3", "python3-cffi"]
    # Debian 13 renamed some for 64-bit time_t (libcurl4t64, libssl3t64).
    for pattern in (r"libc6", r"libcurl4(t64)?", r"libexpat1", r"libssl(1\.1|3|3t64)"):
        assert any(re.fullmatch(pattern, d) for d in depends), (pattern, depends)
    assert not any("cjson" in d for d in depends)
    assert "(>=" in fields["Depends"]  # versions from the symbols used


@pytest.mark.parametrize("release", RELEASES)
def test_deb_files_modes_and_conffile(release, tmp_path):
    listing = run("dpkg-deb", "-c", str(deb(release))).stdout
    assert owners_ok(listing)
    entries = ls_modes(listing, 6)
    files = {p: m for p, m in entries.items() if not m.startswith("d")}
    assert files == DEB_FILES
    for path, mode in DIRS.items():
        assert entries[path] == mode
    run("dpkg-deb", "-e", str(deb(release)), str(tmp_path / "control"))
    assert (tmp_path / "control/conffiles").read_text().split() == [CONFIG]
    assert "ldconfig" in (tmp_path / "control/triggers").read_text()
    run("dpkg-deb", "-x", str(deb(release)), str(tmp_path / "root"))
    assert (tmp_path / f"root{CONFIG}").read_text() == (REPO / "etc/config.json").read_text()


@pytest.mark.parametrize("release", RELEASES)
def test_lintian_has_no_errors(release):
    out = run("lintian", "--no-cfg", "--no-tag-display-limit", str(deb(release)),
              check=False)
    errors = [line for line in out.stdout.splitlines() if line.startswith("E:")]
    assert out.returncode in (0, 1) and not errors, out.stdout + out.stderr


# --- the rpm ---

def test_rpm_metadata():
    q = run("rpm", "-qp", "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}",
            str(RPM)).stdout
    assert q == f"ossc|{VERSION}|1.el9|x86_64|Apache-2.0 AND MIT"
    for relation in ("--provides", "--conflicts", "--obsoletes"):
        names = run("rpm", "-qp", relation, str(RPM)).stdout.split("\n")
        assert "oss-connector-lib" in [n.split()[0] for n in names if n], relation


def test_rpm_requires_only_rhel9_base():
    requires = run("rpm", "-qpR", str(RPM)).stdout.splitlines()
    others = [r for r in requires if r not in RHEL9_BASE and not r.startswith("rpmlib(")]
    assert not others, others
    assert "python3-cffi" in requires


@pytest.fixture(scope="module")
def rpm_root(tmp_path_factory):
    """The rpm installed with rpm --root into an empty root (its scriptlets would need a
    shell there: --noscripts; --nodeps: the root has nothing it depends on)."""
    root = tmp_path_factory.mktemp("rpmroot")
    run("rpm", "--root", str(root), "--initdb")
    run("rpm", "--root", str(root), "-i", "--nodeps", "--noscripts", str(RPM))
    return root


def test_rpm_installs_files_modes_and_config(rpm_root):
    listing = run("rpm", "--root", str(rpm_root), "-qlv", "ossc").stdout
    assert owners_ok(listing)
    entries = ls_modes(listing, 9)
    assert {p: m for p, m in entries.items() if not m.startswith("d")} == RPM_FILES
    for path, mode in DIRS.items():
        assert entries[path] == mode
    for path, mode in RPM_FILES.items():  # on disk as listed
        on_disk = rpm_root / path.lstrip("/")
        if mode.startswith("->"):
            assert os.readlink(on_disk) == mode[3:]
        else:
            assert on_disk.is_file()
    assert run("rpm", "--root", str(rpm_root), "-qc", "ossc").stdout.split() == [CONFIG]
    flags = run("rpm", "--root", str(rpm_root), "-q", "--qf",
                "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", "ossc").stdout
    assert f"{CONFIG} cn" in flags.splitlines()  # %config(noreplace)
    assert run("rpm", "--root", str(rpm_root), "-V", "--nodeps", "ossc").stdout == ""


def test_rpm_binaries_need_glibc_234_at_most(rpm_root):
    binaries = [rpm_root / p.lstrip("/") for p, m in RPM_FILES.items()
                if p.startswith(LIB + "/lib") and not m.startswith("->")]
    binaries.append(rpm_root / f"{LIB.lstrip('/')}/ossc-owner")
    versions = set()
    for path in binaries:
        versions |= set(re.findall(r"GLIBC_([0-9.]+)", run("objdump", "-T", str(path)).stdout))
    newest = max(versions, key=lambda v: tuple(map(int, v.split("."))))
    assert tuple(map(int, newest.split("."))) <= (2, 34), sorted(versions)
    # What rpm's own dependency generator finds is covered by the declared requirements.
    needs = run("/usr/lib/rpm/elfdeps", "--requires", *map(str, binaries)).stdout.split()
    for cap in needs:
        soname = cap.split("(")[0]
        if soname.startswith("libossc.so") or cap == "rtld(GNU_HASH)":
            continue  # its own library; glibc provides rtld(GNU_HASH)
        assert soname in RHEL9_SONAMES, cap


def test_rpm_erases_clean(tmp_path):
    root = tmp_path / "root"
    run("rpm", "--root", str(root), "--initdb")
    run("rpm", "--root", str(root), "-i", "--nodeps", "--noscripts", str(RPM))
    run("rpm", "--root", str(root), "-e", "--noscripts", "ossc")
    left = [str(p.relative_to(root)) for p in root.rglob("*")
            if not str(p.relative_to(root)).startswith(("var/lib/rpm", "usr/lib/sysimage",
                                                         "root/.rpmdb"))
            and not p.is_dir()]
    assert left == []


# --- each deb in a fresh minimal root of its release ---

def make_model(path: Path) -> dict:
    """A safetensors file (a 6 MiB tensor of a checkable pattern) and two small JSON files;
    returns {name: sha256}."""
    path.mkdir()
    rows, cols = 1536, 1024
    data = b"".join(hashlib.sha256(struct.pack("<Q", i)).digest() for i in range(rows * cols // 8))
    header = json.dumps({"w": {"dtype": "F32", "shape": [rows, cols],
                               "data_offsets": [0, len(data)]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    (path / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden": cols}))
    (path / "tokenizer.json").write_text(json.dumps({"vocab": {str(i): i for i in range(500)}}))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir()}


# Runs on the release's own python3, nothing from pip: reads the JSON files, maps the
# safetensors file and reads its tensor, prints {name: sha256} and the tensor's digest.
LOADER = r'''
import hashlib, json, mmap, os, struct, sys
d = sys.argv[1]
out = {"python": "%d.%d" % sys.version_info[:2]}
for name in sorted(os.listdir(d)):
    with open(os.path.join(d, name), "rb") as f:
        if name.endswith(".json"):
            json.loads(f.read())
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            out[name] = hashlib.sha256(m).hexdigest()
            if name.endswith(".safetensors"):
                n = struct.unpack("<Q", m[:8])[0]
                begin, end = json.loads(m[8:8 + n])["w"]["data_offsets"]
                out["tensor"] = hashlib.sha256(m[8 + n + begin:8 + n + end]).hexdigest()
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    base = tmp_path_factory.mktemp("store")
    with LocalStore(str(base / "data")) as s:
        s.create_bucket(BUCKET)
        hashes = make_model(base / "model")
        s.upload_dir(BUCKET, PREFIX, str(base / "model"))
        s.hashes = hashes
        data = (base / "model/model.safetensors").read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        s.tensor = hashlib.sha256(data[8 + n:]).hexdigest()
        yield s


class Root:
    """A copy of the release's minimal root with proc and a tmpfs at /dev/shm mounted."""

    def __init__(self, release: str):
        self.release = release
        self.path = ROOTS / release / "test"
        shutil.rmtree(self.path, ignore_errors=True)
        run("cp", "-a", str(ROOTS / release / "base"), str(self.path))
        self.listing_before = self.files()
        try:
            run("mount", "-t", "proc", "proc", str(self.path / "proc"))
            (self.path / "dev/shm").mkdir(exist_ok=True)
            run("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(self.path / "dev/shm"))
        except BaseException:
            self.close()
            raise
        shutil.copy(deb(release), self.path / "tmp/ossc.deb")
        (self.path / "tmp/loader.py").write_text(LOADER)

    def sh(self, script: str, env=None, check=True, timeout=600):
        full = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C", "DEBIAN_FRONTEND": "noninteractive",
                **(env or {})}
        out = subprocess.run(["chroot", str(self.path), "/bin/sh", "-ec", script], env=full,
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check and out.returncode:
            raise AssertionError(f"{self.release}: {script!r} exited {out.returncode}\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def processes(self) -> list:
        pids = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and os.readlink(p / "root") == str(self.path):
                    pids.append(int(p.name))
            except OSError:
                pass
        return pids

    def wait_idle(self, timeout=30.0) -> None:
        """Every process started in the root has exited (owners expire after their run)."""
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.processes()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"{self.release}: processes left in the root: {left}"

    def files(self) -> set:
        """Every path in the root but under /proc, /dev, /sys and /tmp."""
        found = set()
        for top, dirs, names in os.walk(self.path):
            rel = os.path.relpath(top, self.path)
            if rel == ".":
                dirs[:] = [d for d in dirs if d not in ("proc", "dev", "sys", "tmp")]
            found.update(os.path.normpath(os.path.join(rel, n)) for n in dirs + names)
        return found

    def close(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)
        for mount in ("dev/shm", "proc"):
            subprocess.run(["umount", "-l", str(self.path / mount)], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture(scope="module")
def roots():
    """Each release's deb installed by apt into a fresh copy of its minimal root, in
    parallel: apt resolves what the deb declares, and nothing else comes in."""
    made = {}

    def install(release):
        root = made[release] = Root(release)
        before = set(root.sh("dpkg-query -W -f '${Package}\\n'").stdout.split())
        root.sh("apt-get update -qq && apt-get install -y -qq /tmp/ossc.deb >/dev/null")
        root.new_packages = set(root.sh("dpkg-query -W -f '${Package}\\n'").stdout.split()) \
            - before
        return root

    try:
        with ThreadPoolExecutor(len(RELEASES)) as pool:
            list(pool.map(install, RELEASES))
        yield made
    finally:
        for root in made.values():
            root.close()


def sums(out: str) -> dict:
    """sha256sum's lines -> {file name: digest}."""
    return {os.path.basename(line.split(None, 1)[1]): line.split()[0]
            for line in out.splitlines()}


def store_env(store, model_dir: str) -> dict:
    return {**store.env(), "OSS_PATH": f"s3://{BUCKET}/{PREFIX}", "MODEL_DIR": model_dir,
            "OSSC_EXPIRE_TIME_SEC": "1", "OSSC_CHUNK_SIZE": "1MiB",
            "OSSC_SMALL_FILE_SIZE": "64KiB"}


@pytest.mark.parametrize("release", RELEASES)
def test_apt_installs_the_declared_dependencies(roots, release):
    root = roots[release]
    assert "ossc" in root.new_packages
    assert {"python3", "python3-cffi"} <= root.new_packages
    assert not any("cjson" in p or p.startswith("python3-pip") for p in root.new_packages)
    status = root.sh("dpkg-query -W -f '${Status} ${Version}' ossc").stdout
    assert status == f"install ok installed {VERSION}-1~deb{NUMBER[release]}"


@pytest.mark.parametrize("release", RELEASES)
def test_env_var_mode_serves_sha256sum_and_python(roots, store, release):
    """LD_PRELOAD=/usr/local/lib/libossc_preload.so ENABLE_CONNECTOR=1, as Aliyun documents,
    with the installed /etc/oss-connector/config.json."""
    root = roots[release]
    env = {**store_env(store, "/models/env"), "LD_PRELOAD": f"{LIB}/libossc_preload.so",
           "ENABLE_CONNECTOR": "1"}
    assert sums(root.sh("sha256sum /models/env/*", env=env).stdout) == store.hashes
    root.wait_idle()
    env["MODEL_DIR"] = "/models/env-python"
    got = json.loads(root.sh("python3 /tmp/loader.py /models/env-python", env=env).stdout)
    assert got.pop("tensor") == store.tensor
    print(f"{release}: python {got.pop('python')}")
    assert got == store.hashes
    root.wait_idle()


@pytest.mark.parametrize("release", RELEASES)
def test_ossc_run_serves_a_reader(roots, store, release):
    root = roots[release]
    env = store_env(store, "/models/run")
    got = json.loads(root.sh("ossc-run -- python3 /tmp/loader.py /models/run", env=env).stdout)
    assert got.pop("tensor") == store.tensor
    got.pop("python")
    assert got == store.hashes
    out = root.sh(f"ossc-run --oss-path s3://{BUCKET}/{PREFIX} --model-dir /models/run2 -- "
                  "sh -c 'sha256sum /models/run2/*'",
                  env={**store.env(), "OSSC_EXPIRE_TIME_SEC": "1"}).stdout
    assert sums(out) == store.hashes
    root.wait_idle()


@pytest.mark.parametrize("release", RELEASES)
def test_help_and_config_validate(roots, release):
    root = roots[release]
    assert "usage: ossc-run" in root.sh("ossc-run --help").stdout
    assert root.sh("ossc config validate").stdout.strip() == f"{CONFIG}: valid"
    assert "usage: ossc" in root.sh("ossc --help").stdout
    # Nothing written beside the package's modules by running them.
    assert not (root.path / PYDIR.lstrip("/") / "__pycache__").exists()
    # The distribution's cffi reads the declarations parsed ahead of time (python/ossc/
    # binding.py): no command parses C at start.
    probe = f"import sys; sys.path.insert(0, '{LIB}/ossc/python'); import ossc.native as n; " \
            "print(n.BINDING, 'pycparser' in sys.modules)"
    assert root.sh(f'python3 -B -c "{probe}"').stdout.split() == ["precompiled", "False"]


def next_revision(release: str, tmp_path: Path) -> Path:
    """The release's deb as the next revision (-2~debN), the same files: an upgrade."""
    tree = tmp_path / "next"
    run("dpkg-deb", "-R", str(deb(release)), str(tree))
    control = tree / "DEBIAN/control"
    control.write_text(control.read_text().replace(
        f"Version: {VERSION}-1~", f"Version: {VERSION}-2~"))
    run("dpkg-deb", "--root-owner-group", "-b", str(tree), str(tmp_path / "next.deb"))
    return tmp_path / "next.deb"


@pytest.mark.parametrize("release", RELEASES)
def test_upgrade_keeps_config_remove_and_purge(roots, release, tmp_path):
    root = roots[release]
    edited = '{\n  "logLevel": "warn"\n}\n'
    (root.path / CONFIG.lstrip("/")).write_text(edited)
    root.sh("apt-get install -y -qq --reinstall /tmp/ossc.deb >/dev/null")  # over itself
    assert (root.path / CONFIG.lstrip("/")).read_text() == edited
    shutil.copy(next_revision(release, tmp_path), root.path / "tmp/ossc-next.deb")
    root.sh("apt-get install -y -qq /tmp/ossc-next.deb >/dev/null")  # and to the next one
    assert root.sh("dpkg-query -W -f '${Version}' ossc").stdout == \
        f"{VERSION}-2~deb{NUMBER[release]}"
    assert (root.path / CONFIG.lstrip("/")).read_text() == edited
    assert root.sh("ossc config validate").stdout.strip() == f"{CONFIG}: valid"

    root.sh("apt-get remove -y -qq ossc >/dev/null")
    for path in DEB_FILES:
        if path != CONFIG:
            assert not os.path.lexists(root.path / path.lstrip("/")), path
    assert not (root.path / f"{LIB.lstrip('/')}/ossc").exists()
    assert (root.path / CONFIG.lstrip("/")).read_text() == edited  # kept until purge
    assert root.sh("dpkg-query -W -f '${Status}' ossc").stdout == "deinstall ok config-files"

    root.sh("apt-get purge -y -qq ossc >/dev/null")
    assert not (root.path / "etc/oss-connector").exists()
    assert not (root.path / "var/log/oss-connector").exists()
    assert root.sh("dpkg-query -W ossc", check=False).returncode != 0
    # What remains: the root as before, plus the dependencies apt brought in.
    added = root.files() - root.listing_before
    ours = [p for p in added if "ossc" in p or "oss-connector" in p]
    assert not ours, ours
