"""transformers and peft load a tiny Llama, its tokenizer and a LoRA adapter through the shim
exactly as from a local copy."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ossc.native import preload_library, session_dir
from support import tiny_llama

PREFIX = "tiny-llama/"

LOAD = textwrap.dedent("""
    import json, os, sys, torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    root = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(root)
    ids = tok("Object storage keeps models", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32)
    with torch.no_grad():
        plain = base(ids).logits
        lora = PeftModel.from_pretrained(base, os.path.join(root, "loras", "a"))(ids).logits
    print(json.dumps({"ids": ids.tolist(), "plain": plain.double().sum().item(),
                      "lora": lora.double().sum().item(),
                      "argmax": plain.argmax(-1).tolist()}))
""")


@pytest.fixture(scope="module")
def tiny(store, bucket, tmp_path_factory):
    local = tmp_path_factory.mktemp("tiny")
    tiny_llama.build(local)
    store.upload_dir(bucket, PREFIX, str(local))
    return local


def run(cmd, env):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("policy", [
    {},
    # Lazy under a budget smaller than the shards: files are fetched as they are opened and
    # released once closed; what is open past the limit still reads.
    {"OSSC_PREFETCH_POLICY": "lazy", "OSSC_CACHE_LIMIT": "512KiB"},
], ids=["eager", "lazy-budget"])
def test_transformers_and_peft_match_local_copy(store, bucket, tiny, tmp_path, policy):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    want = run([sys.executable, "-c", LOAD, str(tiny)], env)
    model_dir = tmp_path / "model"
    shim = dict(env, **store.env(), OSSC_CONFIG="", MODEL_DIR=str(model_dir),
                OSS_PATH=f"s3://{bucket}/{PREFIX}", ENABLE_CONNECTOR="1",
                LD_PRELOAD=" ".join(filter(None, [os.environ.get("LD_PRELOAD"),
                                                  str(preload_library())])),
                # Shards and the adapter weights stream through the shim; configs are small.
                OSSC_SMALL_FILE_SIZE="20KiB", OSSC_CHUNK_SIZE="64KiB", OSSC_LOG_LEVEL="warn",
                OSSC_AUDIT_PATH=str(tmp_path / "audit.log"), **policy)
    try:
        got = run([sys.executable, "-c", LOAD, str(model_dir)], shim)
        # The shards and the adapter's weights were served by the shim (one audit line each).
        # A shard mapped until exit is released once the process is gone, within a second.
        deadline = time.monotonic() + (10 if policy else 0)
        while True:
            lines = (tmp_path / "audit.log").read_text().splitlines()
            if any("reason=cacheLimit" in line for line in lines) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        served = {line.split()[2] for line in lines if " pid=" in line}
        assert len({p for p in served if p.endswith(".safetensors")}) >= 3, served
        if policy:  # each fetched on its open, and released for the next
            assert sum("reason=open" in line for line in lines) >= 3, lines
            assert any("reason=cacheLimit" in line for line in lines), lines
    finally:
        subprocess.run(["rm", "-rf", session_dir(str(model_dir))])
    assert got == want
