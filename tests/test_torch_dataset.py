"""ossc.torch datasets against SeaweedFS: 5,000 small objects come back exactly once per epoch,
byte-identical, from a prefix, a manifest and a tar, in DataLoader with 0 and 2 workers and
through injected faults; items behave as osstorchconnector's DataObject; a script written from
osstorchconnector's documented examples runs with only its import changed."""

import collections
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from torch.utils.data import DataLoader

import ossc
from ossc.tarindex import TarIndex, build_tar, index_local_tar
from ossc.torch import DataObject, OssIterableDataset, OssMapDataset
from support.localstore import REGION

PREFIX = "torch-ds/"
COUNT = 5000
HERE = os.path.dirname(os.path.abspath(__file__))


def body(i: int) -> bytes:
    rng = random.Random(i)
    return rng.randbytes(rng.randrange(0, 1500))


def key_and_bytes(obj: DataObject):
    """A transform DataLoader workers can send back: (key, label, bytes)."""
    return obj.key, obj.label, obj.read()


def as_list(batch):
    return batch


@pytest.fixture(autouse=True)
def no_config(monkeypatch):
    monkeypatch.setenv("OSSC_CONFIG", "")
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture(scope="module")
def data(store, bucket, tmp_path_factory):
    """5,000 objects under PREFIX/obj/ (one of them empty), their manifest (with labels) in
    the store, and a tar of the same files with its index, in the store and on disk."""
    root = tmp_path_factory.mktemp("torch-ds")
    files = {f"obj/{i:05d}.bin": body(i) for i in range(COUNT)}
    src = root / "src"
    for name, blob in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    s3 = store.s3()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=PREFIX + kv[0], Body=kv[1]),
                      files.items()))
    labels = {name: str(i % 10) for i, name in enumerate(sorted(files))}
    manifest = "".join(f"{name} {labels[name]}\n" for name in sorted(files))
    s3.put_object(Bucket=bucket, Key=PREFIX + "manifest.txt", Body=manifest.encode())
    (root / "manifest.txt").write_text(manifest)
    index = build_tar(str(src), str(root / "data.tar"))
    (root / "data.tar.idx").write_text(index.to_text())
    s3.upload_file(str(root / "data.tar"), bucket, PREFIX + "tar/data.tar")
    s3.put_object(Bucket=bucket, Key=PREFIX + "tar/data.tar.idx", Body=index.to_text().encode())
    creds = root / "credentials.json"
    creds.write_text(json.dumps({"AccessKeyId": store.access_key,
                                 "AccessKeySecret": store.secret_key}))
    return {"files": files, "labels": labels, "root": root, "cred_path": str(creds),
            "base": f"s3://{bucket}/{PREFIX}", "tar": f"s3://{bucket}/{PREFIX}tar/data.tar",
            "index": f"s3://{bucket}/{PREFIX}tar/data.tar.idx"}


def kwargs(store, data, endpoint=None, **more):
    return {"endpoint": endpoint or store.endpoint, "cred_path": data["cred_path"],
            "transform": key_and_bytes, **more}


def load(dataset, workers: int, **loader):
    """Every item of one epoch through a DataLoader: [(key, label, bytes)]."""
    out = []
    for batch in DataLoader(dataset, batch_size=50, num_workers=workers, collate_fn=as_list,
                            **loader):
        out.extend(batch)
    return out


def check_epoch(items, data, strip=PREFIX, labels=False):
    """Every object exactly once, byte-identical (and with its manifest label)."""
    names = [key[len(strip):] if key.startswith(strip) else key for key, _, _ in items]
    repeated = [n for n, c in collections.Counter(names).items() if c > 1]
    assert not repeated, f"{len(repeated)} items came more than once, e.g. {repeated[:3]}"
    assert sorted(names) == sorted(data["files"])
    for name, (_, label, blob) in zip(names, items):
        assert blob == data["files"][name], name
        if labels:
            assert label == data["labels"][name], name


@pytest.mark.parametrize("workers", [0, 2])
def test_map_dataset_from_prefix_every_object_once(store, data, workers):
    dataset = OssMapDataset.from_prefix(data["base"] + "obj/", **kwargs(store, data))
    assert len(dataset) == COUNT
    check_epoch(load(dataset, workers, shuffle=True), data)


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_dataset_from_prefix_every_object_once_per_epoch(store, data, workers):
    dataset = OssIterableDataset.from_prefix(data["base"] + "obj/", **kwargs(store, data))
    for _ in range(2 if workers else 1):
        check_epoch(load(dataset, workers), data)


@pytest.mark.parametrize("cls", [OssMapDataset, OssIterableDataset])
def test_manifest_gives_the_same_items_with_labels(store, data, cls):
    from_store = cls.from_manifest_file(data["base"] + "manifest.txt", None,
                                        data["base"], **kwargs(store, data))
    check_epoch(load(from_store, 2), data, labels=True)


def test_manifest_with_a_parser_from_a_local_file(store, data):
    def parser(reader):  # osstorchconnector's documented parser, in short
        for line in reader.read().decode("utf-8").strip().split("\n"):
            parts = line.strip().split(" ")
            yield parts[0], parts[1] if len(parts) > 1 else ""

    dataset = OssMapDataset.from_manifest_file(str(data["root"] / "manifest.txt"), parser,
                                               data["base"].rstrip("/"), **kwargs(store, data))
    assert len(dataset) == COUNT
    key, label, blob = dataset[123]
    name = sorted(data["files"])[123]
    assert (key, label, blob) == (PREFIX + name, data["labels"][name], data["files"][name])
    check_epoch(list(dataset), data, labels=True)


@pytest.mark.parametrize("cls", [OssMapDataset, OssIterableDataset])
@pytest.mark.parametrize("workers", [0, 2])
def test_tar_gives_the_same_items(store, data, cls, workers):
    dataset = cls.from_tar(data["tar"], data["index"], **kwargs(store, data))
    check_epoch(load(dataset, workers, **({"shuffle": True} if cls is OssMapDataset else {})),
                data)


def test_tar_shuffled_chunks_cover_every_member_once(store, data):
    dataset = OssIterableDataset.from_tar(data["tar"], str(data["root"] / "data.tar.idx"),
                                          shuffle=True, shuffle_chunk_size=700,
                                          **kwargs(store, data))
    items = load(dataset, 2)
    check_epoch(items, data)
    assert [k for k, _, _ in items] != sorted(k for k, _, _ in items)


def test_a_tar_replaced_under_its_index_fails_instead_of_serving_other_bytes(
        store, bucket, data, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.bin").write_bytes(body(i) + b"x" * 600)
    index = build_tar(str(src), str(tmp_path / "a.tar"))
    s3 = store.s3()
    s3.upload_file(str(tmp_path / "a.tar"), bucket, PREFIX + "stale/a.tar")
    s3.put_object(Bucket=bucket, Key=PREFIX + "stale/a.tar.idx", Body=index.to_text().encode())
    uri = f"s3://{bucket}/{PREFIX}stale/a.tar"
    dataset = OssMapDataset.from_tar(uri, uri + ".idx",
                                     **kwargs(store, data, settings={"retries": "1"}))
    assert dataset[1][2] == body(1) + b"x" * 600
    (src / "3.bin").write_bytes(b"one more member")
    build_tar(str(src), str(tmp_path / "b.tar"))
    s3.upload_file(str(tmp_path / "b.tar"), bucket, PREFIX + "stale/a.tar")
    with pytest.raises(ossc.IntegrityError, match="when listed"):
        dataset[1]


def test_spawned_workers_get_the_dataset_without_its_client(store, data):
    """A dataset pickles without its engine client (spawn start method): each worker makes
    its own."""
    uris = [data["base"] + f"obj/{i:05d}.bin" for i in range(0, COUNT, 250)]
    dataset = OssMapDataset.from_objects(uris, **kwargs(store, data))
    dataset[0]  # this process's client exists before the workers start
    items = load(dataset, 2, multiprocessing_context="spawn")
    assert [(k, b) for k, _, b in items] == \
        [(PREFIX + u.split(PREFIX)[1], data["files"][u.split(PREFIX)[1]]) for u in uris]


FAULTS = [("status", {"status": 503}), ("reset", {"after_bytes": 100}),
          ("truncate", {"after_bytes": 50}), ("stall", {"seconds": 3.0}),
          ("status", {"status": 500}), ("wrong_content_range", {"shift": 1})]


@pytest.mark.parametrize("kind", ["prefix", "tar"])
def test_faults_end_byte_identical(store, data, proxy, kind):
    spacing = 5 if kind == "tar" else 40  # a tar batch is one request, an object is one
    fired = [proxy.add_fault(k, after=spacing * i, times=3, **p)
             for i, (k, p) in enumerate(FAULTS)]
    settings = {"stallTimeoutSec": "1", "connectTimeoutSec": "2", "retries": "10"}
    args = kwargs(store, data, endpoint=proxy.endpoint, settings=settings)
    if kind == "tar":
        dataset = OssIterableDataset.from_tar(data["tar"], data["index"], **args)
    else:
        dataset = OssIterableDataset.from_prefix(data["base"] + "obj/", **args)
    check_epoch(load(dataset, 2), data)
    assert all(f.fired for f in fired), [(f.kind, f.fired) for f in fired]


def test_permanent_failure_raises_with_the_engine_class(store, data, proxy):
    proxy.add_fault("status", key="obj/00007.bin", status=403, times=None)
    dataset = OssMapDataset.from_prefix(data["base"] + "obj/",
                                        **kwargs(store, data, endpoint=proxy.endpoint))
    assert dataset[6][2] == data["files"]["obj/00006.bin"]
    with pytest.raises(ossc.RefusedError, match="403"):
        dataset[7]
    with pytest.raises(ossc.RefusedError):
        dataset.__getitems__([5, 6, 7, 8])


def test_data_object_reads_like_osstorchconnector(store, data):
    uris = [data["base"] + "obj/00042.bin", data["base"] + "obj/00001.bin"]
    dataset = OssMapDataset.from_objects(uris, endpoint=store.endpoint,
                                         cred_path=data["cred_path"])
    blob = data["files"]["obj/00042.bin"]
    with dataset[0] as item:
        assert (item.key, item.size, item.label) == (PREFIX + "obj/00042.bin", len(blob), "")
        assert item.read(10) == blob[:10] and item.tell() == 10
        assert item.seek(-5, os.SEEK_END) == len(blob) - 5
        buf = bytearray(100)
        assert item.readinto(buf) == 5 and bytes(buf[:5]) == blob[-5:]
        assert item.read() == b""
        assert item.seek(-3, os.SEEK_CUR) == len(blob) - 3 and item.read() == blob[-3:]
        with pytest.raises(ValueError, match="negative seek position"):
            item.seek(-1)
        with pytest.raises(ValueError, match="invalid whence"):
            item.seek(0, 3)
        item.seek(0)
        assert item.copy().read() == blob
    assert item.closed
    with pytest.raises(ValueError):
        item.read()
    assert [o.key for o in dataset] == [PREFIX + "obj/00042.bin", PREFIX + "obj/00001.bin"]


def test_missing_object_and_bad_index_are_clear_errors(store, data, tmp_path):
    dataset = OssMapDataset.from_objects([data["base"] + "no-such-object"],
                                         endpoint=store.endpoint, cred_path=data["cred_path"])
    with pytest.raises(ossc.NotFoundError, match="no-such-object"):
        dataset[0]
    bad = tmp_path / "bad.idx"
    bad.write_text("not an index\n")
    with pytest.raises(ossc.ConfigError, match="not an ossc tar index"):
        OssIterableDataset.from_tar(data["tar"], str(bad), endpoint=store.endpoint,
                                    cred_path=data["cred_path"])
    with pytest.raises(ossc.ConfigError, match="endpoint is required"):
        OssMapDataset.from_prefix(data["base"], endpoint="", cred_path=data["cred_path"])


def test_dataset_config_keys_are_honoured(store, data, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"logLevel": 1, "datasetConfig": {
        "prefetchConcurrency": 6, "prefetchWorker": 3, "enableFastList": True,
        "listConcurrency": 4, "prefetchObjects": 7, "prefetchBytes": 4096}}))
    dataset = OssIterableDataset.from_prefix(data["base"] + "obj/", config_path=str(config),
                                             **kwargs(store, data))
    client = dataset._connection.get()._client("s3", data["base"].split("/")[2])
    settings = client.settings()
    assert (settings["prefetch"]["vcpus"], settings["prefetch"]["workers"]) == (3, 2)
    assert (dataset._connection.dataset.prefetch_objects,
            dataset._connection.dataset.prefetch_bytes) == (7, 4096)
    check_epoch(load(dataset, 0), data)


def test_import_without_torch(tmp_path):
    """`import ossc` (and its commands) never import torch; ossc.torch says what it needs."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import ossc, ossc.cli, ossc.connector, ossc.tarindex\n"
            "try:\n    import ossc.torch\nexcept ImportError as e:\n    print('E:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ossc.torch needs PyTorch" in out.stdout


def test_osstorchconnector_example_runs_with_only_its_import_changed(store, data):
    """tests/support/osstorch_example.py is osstorchconnector's documented dataset examples
    with `from ossc.torch import ...` for `from osstorchconnector import ...`."""
    env = {**os.environ, "ENDPOINT": store.endpoint, "CRED_PATH": data["cred_path"],
           "CONFIG_PATH": "", "OSS_URI": data["base"] + "obj/",
           "MANIFEST": data["base"] + "manifest.txt", "BASE_URI": data["base"]}
    out = subprocess.run([sys.executable, os.path.join(HERE, "support", "osstorch_example.py")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith(f"ok {COUNT}"), out.stdout[-2000:]


def test_index_of_a_tar_matches_tarfile(data):
    index = index_local_tar(str(data["root"] / "data.tar"))
    assert TarIndex.parse(index.to_text().encode()) == index
    with open(data["root"] / "data.tar", "rb") as f:
        for m in index.members[:50]:
            f.seek(m.offset)
            assert f.read(m.size) == data["files"][m.name]
    assert len(index.members) == COUNT
