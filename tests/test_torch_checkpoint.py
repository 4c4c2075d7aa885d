"""ossc.torch's checkpoint classes against SeaweedFS: a model-sized state_dict (~300 MB, many
tensors of several dtypes) saved and loaded gives equal tensors through OssCheckpoint
(torch.save/torch.load), OssSafetensor (and the safetensors library agrees on the bytes) and
torch.distributed.checkpoint with 2 processes (gloo on 127.0.0.1)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.distributed.checkpoint as dcp

import ossc
from ossc.torch import OssCheckpoint, OssDCPFileSystem, OssSafetensor
from ossc.torch.store import checkpoint_settings

PREFIX = "torch-ckpt/"
SETTINGS = {"upload.partSize": "8MiB", "upload.concurrency": "4"}


def state_dict(seed: int = 0, layers: int = 72) -> dict:
    """~300 MB: per layer a 1024x1024 float32, a bf16 and an int64 tensor, plus odd shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(layers):
        sd[f"layers.{i}.weight"] = torch.randn(1024, 1024, generator=g)
        sd[f"layers.{i}.norm"] = torch.randn(1024, generator=g).to(torch.bfloat16)
        sd[f"layers.{i}.index"] = torch.randint(0, 1 << 40, (513,), generator=g)
    sd["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["mask"] = torch.rand(77, 3, generator=g) > 0.5
    sd["empty"] = torch.empty(0, 16)
    sd["half"] = torch.randn(3, 5, 7, generator=g).half()
    return sd


def assert_equal(expected: dict, got: dict) -> None:
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name


@pytest.fixture(scope="module")
def sd():
    return state_dict()


@pytest.fixture
def env(store, monkeypatch):
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OSSC_CONFIG", "")


def uri(bucket, name):
    return f"s3://{bucket}/{PREFIX}{name}"


def test_checkpoint_save_and_load(env, store, bucket, sd):
    with OssCheckpoint(endpoint=store.endpoint, settings=SETTINGS) as checkpoint:
        with checkpoint.writer(uri(bucket, "epoch.1")) as writer:
            torch.save(sd, writer)
        with checkpoint.reader(uri(bucket, "epoch.1")) as reader:
            assert_equal(sd, torch.load(reader))
        # the object is what torch.save writes to a file
        with checkpoint.reader(uri(bucket, "epoch.1")) as reader:
            assert reader.size() == len(store.s3().get_object(
                Bucket=bucket, Key=f"{PREFIX}epoch.1")["Body"].read())


def test_checkpoint_failed_save_leaves_nothing(env, store, bucket, sd):
    """A save that fails after parts went out (here: the training step after torch.save
    raises inside the block) leaves no object and no parts."""
    key = f"{PREFIX}broken.pt"
    with OssCheckpoint(endpoint=store.endpoint, settings=SETTINGS) as checkpoint:
        with pytest.raises(RuntimeError, match="crashed"):
            with checkpoint.writer(f"s3://{bucket}/{key}") as writer:
                torch.save({k: sd[k] for k in list(sd)[:12]}, writer)  # ~17 MB: 2 parts
                assert writer.tell() > 16 << 20
                raise RuntimeError("training step crashed")
    s3 = store.s3()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket, Prefix=key)


def test_checkpoint_with_credentials_file_and_config(store, bucket, tmp_path, monkeypatch, sd):
    """cred_path and config_path as osstorchconnector takes them; checkpointConfig applies."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OSS_ACCESS_KEY_ID",
                 "OSS_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    cred = tmp_path / "credentials"
    cred.write_text(json.dumps({"AccessKeyId": store.access_key,
                                "AccessKeySecret": store.secret_key}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"logLevel": 1, "checkpointConfig": {
        "prefetchConcurrency": 6, "prefetchWorker": 2, "uploadConcurrency": 3}}))
    assert checkpoint_settings(str(config)) == {
        "prefetch.vcpus": "2", "prefetch.workers": "3", "upload.concurrency": "3"}
    checkpoint = OssCheckpoint(endpoint=store.endpoint, cred_path=str(cred),
                               config_path=str(config))
    small = {k: sd[k] for k in list(sd)[:6]}
    with checkpoint.writer(uri(bucket, "cred.pt")) as writer:
        torch.save(small, writer)
    with checkpoint.reader(uri(bucket, "cred.pt")) as reader:
        assert_equal(small, torch.load(reader))
    config.write_text(json.dumps({"checkpointConfig": {"uploadConcurrency": 0}}))
    with pytest.raises(ossc.ConfigError, match="uploadConcurrency"):
        OssCheckpoint(endpoint=store.endpoint, cred_path=str(cred), config_path=str(config))


def test_safetensors_save_and_load(env, store, bucket, sd):
    sfts = OssSafetensor(endpoint=store.endpoint, settings=SETTINGS)
    target = uri(bucket, "model.safetensors")
    sfts.save_file(sd, target, {"format": "pt", "step": "100"})
    assert_equal(sd, sfts.load_file(target, device="cpu"))
    with sfts.safe_open(target, framework="pt", device="cpu") as f:
        assert f.metadata() == {"format": "pt", "step": "100"}
        assert f.keys() == sorted(sd)
        assert torch.equal(f.get_tensor("layers.3.norm"), sd["layers.3.norm"])
    # The safetensors library reads what we wrote, and we read what it writes.
    body = store.s3().get_object(Bucket=bucket, Key=f"{PREFIX}model.safetensors")["Body"].read()
    assert_equal(sd, safetensors.torch.load(body))
    store.s3().put_object(Bucket=bucket, Key=f"{PREFIX}theirs.safetensors",
                          Body=safetensors.torch.save(sd, {"by": "safetensors"}))
    with sfts.safe_open(uri(bucket, "theirs.safetensors")) as f:
        assert f.metadata() == {"by": "safetensors"}
        assert_equal(sd, {k: f.get_tensor(k) for k in f.keys()})


def test_safetensors_refuses_a_non_safetensors_object(env, store, bucket):
    store.s3().put_object(Bucket=bucket, Key=f"{PREFIX}not.safetensors",
                          Body=b"\xff" * 8 + b"{}")
    sfts = OssSafetensor(endpoint=store.endpoint)
    with pytest.raises(ossc.OsscError, match="not a safetensors file"):
        sfts.load_file(uri(bucket, "not.safetensors"))


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_single_process(env, store, bucket, sd):
    fs = OssDCPFileSystem(endpoint=store.endpoint, settings=SETTINGS)
    target = uri(bucket, "dcp-single")
    dcp.save(sd, storage_writer=fs.writer(target, thread_count=2), no_dist=True)
    loaded = {k: torch.zeros_like(v) for k, v in sd.items()}
    dcp.load(loaded, storage_reader=fs.reader(target), no_dist=True)
    assert_equal(sd, loaded)
    keys = [o["Key"] for o in store.s3().list_objects_v2(
        Bucket=bucket, Prefix=f"{PREFIX}dcp-single/")["Contents"]]
    assert f"{PREFIX}dcp-single/.metadata" in keys
    assert not any(k.endswith(".tmp") for k in keys)  # renamed: copied, then deleted


RANK_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
    sys.path.insert(0, os.environ["TEST_DIR"])
    from test_torch_checkpoint import assert_equal, state_dict
    from ossc.torch import OssDCPFileSystem
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + os.environ["PORT"],
                            rank=rank, world_size=2)
    # Replicated tensors (one rank writes them) and tensors only this rank holds.
    sd = state_dict(0, layers=6)
    sd.update({"rank%d.%s" % (rank, k): v for k, v in state_dict(rank + 1, layers=4).items()})
    fs = OssDCPFileSystem(endpoint=os.environ["ENDPOINT"],
                          settings={"upload.partSize": "8MiB"})
    dcp.save(sd, storage_writer=fs.writer(os.environ["TARGET"]))
    loaded = {k: torch.zeros_like(v) for k, v in sd.items()}
    dcp.load(loaded, storage_reader=fs.reader(os.environ["TARGET"]))
    assert_equal(sd, loaded)
    dist.destroy_process_group()
    print("rank", rank, "ok")
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dcp_two_processes(env, store, bucket):
    target = uri(bucket, "dcp-2")
    package_root = str(Path(ossc.__file__).resolve().parent.parent)
    environ = {**os.environ, "TEST_DIR": str(Path(__file__).parent), "PORT": str(free_port()),
               "ENDPOINT": store.endpoint, "TARGET": target,
               "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], env={**environ, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outputs = []
    try:
        for p in ranks:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, out) in enumerate(zip(ranks, outputs)):
        assert p.returncode == 0 and f"rank {r} ok" in out, out[-3000:]
    keys = sorted(o["Key"] for o in store.s3().list_objects_v2(
        Bucket=bucket, Prefix=f"{PREFIX}dcp-2/")["Contents"])
    assert f"{PREFIX}dcp-2/.metadata" in keys
    assert any(k.startswith(f"{PREFIX}dcp-2/__1_") for k in keys)  # rank 1 wrote its own data
