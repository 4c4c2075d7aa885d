#!/usr/bin/env python3
"""Convert a GGUF model file into a Hugging Face directory that vLLM, transformers and ossc load:
config.json, the tokenizer (with its chat template) and safetensors shards with an index.

    python3 scripts/convert_gguf.py MODEL.gguf OUT_DIR [--dtype bfloat16] [--max-shard-size 100MB]

transformers reads the GGUF (its `gguf_file=` loader, which needs the `gguf` and `accelerate`
packages), every quantized weight is unpacked into a dense tensor of --dtype, and the model is
saved without GGUF's quantization config, so the result is an ordinary checkpoint. The
architectures transformers can read from GGUF are the ones it can convert (Llama, Mistral,
Qwen2, Phi-3, Gemma, ...). OUT_DIR must not exist or be empty; it is written under a temporary
name next to it and renamed when complete, so an interrupted run leaves no half directory.
Exit codes: 0 done, 1 the conversion failed, 2 bad command line or missing packages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROG = "convert_gguf"
PACKAGES = ("torch", "transformers", "gguf", "accelerate")


class Failure(Exception):
    """One line for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def check_input(gguf: Path, out: Path) -> None:
    if not gguf.is_file():
        raise Failure(f"{gguf}: no such file", 2)
    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise Failure(f"{gguf}: not a GGUF file (it does not start with 'GGUF')", 2)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Failure(f"{out}: exists and is not an empty directory", 2)


def import_packages():
    missing = []
    for name in PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise Failure(f"{sys.executable} lacks {', '.join(missing)}: "
                      f"`{sys.executable} -m pip install {' '.join(missing)}`", 2)


def load_dense(gguf: Path, dtype_name: str):
    """The tokenizer and the model of `gguf`, every weight a dense tensor of dtype_name."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    where, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    kwargs = {}
    if hasattr(transformers, "GgufConfig"):
        # Newer transformers keep GGUF blocks packed unless asked to unpack them.
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=dtype, **kwargs)
    model = model.to(dtype)
    # What remains of the GGUF: without it, save_pretrained writes a plain checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    odd = {f"{n}: {type(p).__name__} {p.dtype}" for n, p in model.named_parameters()
           if type(p) is not torch.nn.Parameter or p.dtype != dtype}
    if odd:
        raise Failure(f"weights left packed after unpacking: {sorted(odd)[:3]}")
    return tokenizer, model


def convert(gguf: Path, out: Path, dtype: str, max_shard_size: str) -> list[Path]:
    check_input(gguf, out)
    import_packages()
    started = time.monotonic()
    say(f"reading {gguf} ({gguf.stat().st_size / 1e6:.0f} MB) and unpacking its weights "
        f"to {dtype}")
    tokenizer, model = load_dense(gguf, dtype)
    params = sum(p.numel() for p in model.parameters())
    say(f"{type(model).__name__}, {params / 1e6:.0f}M parameters, "
        f"loaded in {time.monotonic() - started:.0f} s; writing shards of at most "
        f"{max_shard_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
        # mkdtemp and safetensors create owner-only modes; a model directory is for all.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            out.rmdir()  # checked empty above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(out.iterdir())
    total = sum(f.stat().st_size for f in files)
    shards = [f for f in files if f.suffix == ".safetensors"]
    say(f"wrote {out}: {len(files)} files, {total / 1e6:.0f} MB, {len(shards)} safetensors "
        f"shard{'s' if len(shards) != 1 else ''}, in {time.monotonic() - started:.0f} s")
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path, help="the .gguf file")
    parser.add_argument("out", type=Path, help="the directory to write (absent or empty)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="dtype of the written weights (default %(default)s)")
    parser.add_argument("--max-shard-size", default="5GB",
                        help="largest safetensors shard, e.g. 100MB (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        convert(args.gguf.resolve(), args.out.resolve(), args.dtype, args.max_shard_size)
    except Failure as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # transformers' own errors: unsupported architecture, bad file
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
