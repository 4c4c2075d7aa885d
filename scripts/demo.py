#!/usr/bin/env python3
"""The demo: the real vLLM OpenAI server loads a model straight from a local object store.

1. SeaweedFS starts on 127.0.0.1 with access-key auth (the project's LocalStore).
2. A tiny Llama (random weights, locally trained tokenizer; tests/support/tiny_llama.py) is built
   with the vLLM venv's Python and uploaded.
3. `ossc-run` checks the store, starts the prefetch and spawns
   `python -m vllm.entrypoints.openai.api_server --model MODEL_DIR`, unchanged.
4. One completion is printed; SIGTERM to ossc-run stops vLLM and removes the session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ossc.native import session_dir

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tests' support package: the local store, the vLLM harness
from support.localstore import LocalStore  # noqa: E402
from support.vllm_harness import VllmError, VllmServer, free_port  # noqa: E402

BUCKET = "ossc-demo"
PREFIX = "models/tiny-llama/"
PROMPT = "Object storage keeps models"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=os.environ.get("OSSC_VLLM_PYTHON"),
                        help="Python of the vLLM venv (default OSSC_VLLM_PYTHON)")
    parser.add_argument("--model-dir", default="/var/tmp/ossc-demo/model",
                        help="where vLLM sees the model (created by ossc-run)")
    args = parser.parse_args()
    if not args.vllm_python:
        parser.error("no vLLM: pass --vllm-python or set OSSC_VLLM_PYTHON (scripts/setup.sh "
                     "demo creates one)")

    work = Path(tempfile.mkdtemp(prefix="ossc-demo-"))
    model_dir = Path(args.model_dir)
    server = None
    try:
        local = work / "tiny-llama"
        subprocess.run([args.vllm_python, str(TESTS / "support" / "tiny_llama.py"), str(local)],
                       check=True)
        with LocalStore(str(work / "store")) as store:
            store.create_bucket(BUCKET)
            store.upload_dir(BUCKET, PREFIX, str(local))
            url = f"s3://{BUCKET}/{PREFIX}"
            print(f"demo: {url} on {store.endpoint}; vLLM will load it from {model_dir}",
                  flush=True)
            shutil.rmtree(model_dir, ignore_errors=True)  # the demo's own directory
            port = free_port()
            launcher = [sys.executable, "-m", "ossc.launcher", "--oss-path", url,
                        "--model-dir", str(model_dir), "--config", str(work / "config.json"),
                        # the tiny model's shards are small: stream them through the shim
                        "--small-file-size", "16KiB", "--chunk-size", "64KiB",
                        "--ready-url", f"http://127.0.0.1:{port}/health", "--"]
            server = VllmServer(model_dir, python=args.vllm_python, port=port,
                                wrapper=launcher, env=store.env(),
                                log_path=str(work / "server.log"))
            print(f"$ {' '.join(server.command)}", flush=True)
            server.start()
            seconds = server.wait_ready(300)
            print(f"demo: vLLM ready in {seconds:.1f} s", flush=True)
            completion = server.complete(PROMPT, max_tokens=16)
            print(f"demo: {PROMPT!r} -> {completion.text!r} (random weights)", flush=True)
            status = server.stop(signal.SIGTERM)
            with open(server.log_path, errors="replace") as log:
                print("".join(line for line in log if line.startswith("ossc-run:")), end="")
            server = None
            gone = not os.path.exists(session_dir(str(model_dir)))
            print(f"demo: ossc-run exited with {status}; session removed from /dev/shm: {gone}")
            return 0 if gone else 1
    except (subprocess.CalledProcessError, VllmError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        if server is not None:
            print(server.log_tail(), file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop(signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
