"""Looking at a session from a test: the model it serves, its owner, its data directory, its
end."""

import hashlib
import os
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np

from ossc.native import session_dir, sessions


# Prints {relative path: sha256} of every file under MODEL_DIR, read through the shim; with an
# argument it then holds the session (stays attached) until a line on stdin.
READER = textwrap.dedent("""
    import hashlib, json, os, sys
    root = os.environ["MODEL_DIR"]
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    print(json.dumps(out), flush=True)
    if len(sys.argv) > 1:
        sys.stdin.readline()  # holds the session until told
""")


def upload_small_model(store, bucket, local: Path, tag: str, seed: int, sizes) -> dict:
    """A config, a.bin and sub/b.bin (sizes bytes each, random) in the store under a fresh
    prefix: {"url", "want": {relative path: sha256}, "local"}."""
    rng = np.random.default_rng(seed)
    (local / "config.json").write_text('{"model_type": "test"}')
    (local / "sub").mkdir()
    for name, size in zip(("a.bin", "sub/b.bin"), sizes):
        (local / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    prefix = f"{tag}-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    want = {str(p.relative_to(local)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in local.rglob("*") if p.is_file()}
    return {"url": f"s3://{bucket}/{prefix}", "want": want, "local": local}


def launcher_env() -> dict:
    """This process's environment for an `ossc-run` child: no shim, no ossc settings (the
    library under test stays)."""
    return {k: v for k, v in os.environ.items()
            if k == "OSSC_LIBRARY" or not k.startswith(
                ("LD_PRELOAD", "ENABLE_CONNECTOR", "OSS_", "MODEL_DIR", "OSSC_"))}


def session_info(model_dir) -> dict:
    found = sessions(str(model_dir))
    assert found, f"no session serves {model_dir}"
    return found[0]


def wait_session_gone(model_dir, timeout: float = 15.0) -> bool:
    """True once nothing of the session for model_dir is left in /dev/shm (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sessions(str(model_dir)) and not os.path.exists(session_dir(str(model_dir))):
            return True
        time.sleep(0.1)
    return False


def wanted_count(control_path: str) -> int:
    """The header's `wanted` futex word (offset 80, session_layout.h): it changes each time
    a blocked reader asks for a chunk."""
    with open(control_path, "rb") as f:
        f.seek(80)
        return int.from_bytes(f.read(4), "little")
