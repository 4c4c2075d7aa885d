"""Shared fixtures: a real S3 server (SeaweedFS) for the session, a fault proxy per test; with
OSSC_NO_UNEXPECTED_SKIPS=1, a run fails when a test skips that support/skips.py does not allow."""

import os
import subprocess

import pytest

# support/ (pytest puts tests/ on sys.path, wherever it runs from): shared with the demo and
# the benchmarks, never in the wheel.
from support import skips
from support.faultproxy import FaultProxy
from support.localstore import LocalStore

TEST_BUCKET = "ossc-test"


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One LocalStore for the whole session (start costs ~3 s)."""
    s = LocalStore(str(tmp_path_factory.mktemp("localstore")))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def bucket(store):
    """Name of a bucket in `store`. Shared by all tests: use keys unique to your test.
    (Every bucket costs SeaweedFS a volume, and the volume count is limited.)"""
    store.create_bucket(TEST_BUCKET)
    return TEST_BUCKET


@pytest.fixture
def proxy(store):
    """A FaultProxy in front of `store`, able to sign its own GETs (add_crc64, 200-full)."""
    p = FaultProxy(store.endpoint, signer=store.sign).start()
    yield p
    p.stop()
    assert not p.errors, "fault proxy handler crashed:\n" + "\n".join(p.errors)


# --- skips: with OSSC_NO_UNEXPECTED_SKIPS=1 one that support/skips.py does not allow fails ---

_ENFORCED = os.environ.get("OSSC_NO_UNEXPECTED_SKIPS") == "1"
_unexpected_skips: list[tuple[str, str]] = []  # (key, reason)


def _record_skip(report) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    key = skips.key_of(str(report.fspath), report.nodeid)
    if not skips.allowed(key):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _unexpected_skips.append((key, reason.removeprefix("Skipped: ")))


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    _record_skip(report)  # a module that skips itself (pytest.skip(allow_module_level=True))


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and _ENFORCED:
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips and _ENFORCED:
        terminalreporter.section("unexpected skips (not in tests/support/skips.py)", red=True)
        for key, reason in _unexpected_skips:
            terminalreporter.line(f"{key}: {reason}")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 MiB tmpfs, to fill (we are root in CI and here); unmounted lazily if a process
    still holds a file there."""
    path = tmp_path / "small-cache"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs (the test needs root): {r.stderr}"
    yield path
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)
