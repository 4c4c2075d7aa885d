"""Shared fixtures: a real S3 server (SeaweedFS) for the session, a fault proxy per test."""

import pytest

# support/ (pytest puts tests/ on sys.path, wherever it runs from): shared with the demo and
# the benchmarks, never in the wheel.
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
