#!/usr/bin/env python3
"""The demo: start a local object store, upload a generated model, fetch it with `ossc get`.

SeaweedFS runs on 127.0.0.1 with access-key auth; the model is a deterministic Llama-like
safetensors model (scripts/synth_model.py). The fetched copy is checked file by file against
the generated one, and ossc's own final line reports GB/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ossc.localstore import LocalStore
from synth_model import ensure_model, sha256_file

BUCKET = "ossc-demo"
PREFIX = "models/synth-llama/"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="model size (default 1)")
    parser.add_argument("--model-dir", default="/var/tmp/ossc-demo/model")
    parser.add_argument("--target", default="/dev/shm/ossc-demo-model",
                        help="where ossc get puts the model (removed at the end)")
    args = parser.parse_args()

    model, manifest = ensure_model(Path(args.model_dir), args.size_gib)
    store_dir = tempfile.mkdtemp(prefix="ossc-demo-store-")
    target = Path(args.target)
    try:
        with LocalStore(store_dir) as store:
            print(f"local store at {store.endpoint}; uploading {model} ...", flush=True)
            store.create_bucket(BUCKET)
            store.upload_dir(BUCKET, PREFIX, str(model))
            url = f"s3://{BUCKET}/{PREFIX}"
            env = dict(os.environ, **store.env(), OSSC_CONFIG="")
            run = [sys.executable, "-m", "ossc"]
            subprocess.run([*run, "ls", url], env=env, check=True)
            shutil.rmtree(target, ignore_errors=True)
            print(f"$ ossc get {url} {target}", flush=True)
            subprocess.run([*run, "get", url, str(target)], env=env, check=True)
            for name, meta in manifest["files"].items():
                if sha256_file(target / name) != meta["sha256"]:
                    print(f"demo: {name} differs from the generated model", file=sys.stderr)
                    return 1
            print(f"verified: all {len(manifest['files'])} files are byte-identical (sha256)")
    except subprocess.CalledProcessError as exc:
        print(f"demo: {' '.join(map(str, exc.cmd[1:4]))} failed with exit {exc.returncode}",
              file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
