"""`ossc tar build|index`: the tar holds the directory's files, the index points at each
member's bytes (GNU tar's long names included), a tar in the store is indexed from its headers
by ranged reads, and bad input is one line with its exit code."""

import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from ossc.errors import UserError, status_exit_code
from ossc.native import lib
from ossc.tarindex import TarIndex, index_local_tar

PREFIX = "tar-command/"
LONG = "deep/" + "d" * 120 + "/name with spaces.bin"  # > 100 bytes: a GNU/pax long name


def files():
    out = {f"small/{i:03d}.txt": f"item {i}\n".encode() * (i % 7) for i in range(40)}
    out["big/a.bin"] = os.urandom(3 << 20)
    out["big/b.bin"] = os.urandom((2 << 20) + 5)
    out[LONG] = b"long name"
    return out


def ossc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ossc", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("tar-src")
    data = files()
    for name, blob in data.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return root, data


def check_index(tar_path, index, data):
    """The index names every file once and points at exactly its bytes."""
    assert sorted(m.name for m in index.members) == sorted(data)
    assert index.tar_size == os.path.getsize(tar_path)
    with open(tar_path, "rb") as f:
        for m in index.members:
            f.seek(m.offset)
            assert f.read(m.size) == data[m.name], m.name


def test_build_writes_a_tar_and_its_index(source, tmp_path):
    root, data = source
    r = ossc("tar", "build", str(root), str(tmp_path / "out.tar"))
    assert r.returncode == 0, r.stderr
    assert f"{len(data)} members" in r.stderr
    index = TarIndex.parse((tmp_path / "out.tar.idx").read_bytes())
    check_index(tmp_path / "out.tar", index, data)
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar if m.isreg()} == data
    assert sorted(os.listdir(tmp_path)) == ["out.tar", "out.tar.idx"]


def test_local_outputs_are_written_beside_their_target(source, tmp_path, monkeypatch):
    """A local tar and index are made under temporary names in their own directory and renamed
    over the target when whole: no room is needed in the temporary directory (here one that
    does not exist), an old tar is replaced, never half-written, and nothing is left
    behind."""
    from ossc import tartool

    root, data = source
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    (tmp_path / "out.tar").write_bytes(b"an older tar")
    old = open(tmp_path / "out.tar", "rb")  # a reader of the old one keeps its bytes
    assert tartool.build(str(root), str(tmp_path / "out.tar"), str(tmp_path / "out.idx"),
                         {}) == 0
    assert old.read() == b"an older tar"
    old.close()
    check_index(tmp_path / "out.tar", TarIndex.parse((tmp_path / "out.idx").read_bytes()), data)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "out.tar").st_mode) == 0o666 & ~umask
    with pytest.raises(UserError, match="is not a directory"):
        tartool.build(str(root), str(tmp_path / "out.tar"), str(tmp_path / "gone" / "i"), {})
    assert sorted(os.listdir(tmp_path)) == ["out.idx", "out.tar"]


def test_index_of_a_gnu_tar(source, tmp_path):
    root, data = source
    tar_path = tmp_path / "gnu.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(tar_path), "-C", str(root), "."],
                   check=True)
    r = ossc("tar", "index", str(tar_path), str(tmp_path / "gnu.idx"))
    assert r.returncode == 0, r.stderr
    index = TarIndex.parse((tmp_path / "gnu.idx").read_bytes())
    check_index(tar_path, TarIndex(index.tar_size, tuple(
        type(m)(m.name[2:], m.offset, m.size) for m in index.members)), data)  # "./name"


def test_index_of_a_tar_in_the_store_reads_headers_only(source, store, bucket, proxy,
                                                        tmp_path):
    root, data = source
    tar_path = tmp_path / "t.tar"
    assert ossc("tar", "build", str(root), str(tar_path)).returncode == 0
    store.s3().upload_file(str(tar_path), bucket, PREFIX + "t.tar")
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    r = ossc("tar", "index", f"s3://{bucket}/{PREFIX}t.tar", str(tmp_path / "store.idx"),
             "--endpoint", proxy.endpoint, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "store.idx").read_text() == index_local_tar(str(tar_path)).to_text()
    served = proxy.bytes_served(f"{bucket}/{PREFIX}t.tar")
    assert 0 < served < os.path.getsize(tar_path) - (4 << 20)  # the big members were skipped


def test_build_from_a_prefix_in_the_store(source, store, bucket, tmp_path):
    root, data = source
    s3 = store.s3()
    # At once: SeaweedFS holds some PUTs ~15 s (a volume growing), boto3 then retries.
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=PREFIX + "src/" + kv[0],
                                               Body=kv[1]), data.items()))
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    r = ossc("tar", "build", f"s3://{bucket}/{PREFIX}src", str(tmp_path / "p.tar"), env=env)
    assert r.returncode == 0, r.stderr
    check_index(tmp_path / "p.tar", TarIndex.parse((tmp_path / "p.tar.idx").read_bytes()), data)
    r = ossc("tar", "build", f"s3://{bucket}/{PREFIX}nothing/", str(tmp_path / "n.tar"), env=env)
    assert r.returncode == status_exit_code(lib.OSSC_E_NOT_FOUND), r.stderr
    assert sorted(os.listdir(tmp_path)) == ["p.tar", "p.tar.idx"]


def test_build_uploads_to_the_store(source, store, bucket, tmp_path):
    """Needs ossc.native.Client.upload_file (branch h13w)."""
    root, data = source
    env = dict(os.environ, **store.env(), OSSC_CONFIG="")
    url = f"s3://{bucket}/{PREFIX}up/data.tar"
    r = ossc("tar", "build", str(root), url, env=env)
    assert r.returncode == 0, r.stderr
    s3 = store.s3()
    (tmp_path / "data.tar").write_bytes(
        s3.get_object(Bucket=bucket, Key=PREFIX + "up/data.tar")["Body"].read())
    index = TarIndex.parse(s3.get_object(Bucket=bucket,
                                         Key=PREFIX + "up/data.tar.idx")["Body"].read())
    check_index(tmp_path / "data.tar", index, data)


def test_bad_input_is_one_line_and_its_exit_code(tmp_path):
    (tmp_path / "not.tar").write_bytes(b"this is not a tar archive" * 100)
    cases = [
        (["tar", "build", str(tmp_path / "missing"), str(tmp_path / "o.tar")],
         status_exit_code(lib.OSSC_E_IO), "is not a directory"),
        (["tar", "index", str(tmp_path / "missing.tar")], status_exit_code(lib.OSSC_E_IO),
         "no such file"),
        (["tar", "index", str(tmp_path / "not.tar")], status_exit_code(lib.OSSC_E_PROTOCOL),
         "is not a readable tar"),
        (["tar", "index", str(tmp_path / "not.tar"), "s3://bucket-only/"],
         status_exit_code(lib.OSSC_E_CONFIG), "bad URL"),
    ]
    for args, code, message in cases:
        r = ossc(*args)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["not.tar"]
