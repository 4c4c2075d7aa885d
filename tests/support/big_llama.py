"""A deterministic random Llama of ~1.3 GB in bfloat16 that vLLM on CPU loads and serves: the
model of the vLLM benchmark (scripts/bench_vllm.py). No torch needed: numpy writes the
safetensors shards (BF16 is the top half of a float32, rounded to nearest even), and the
tokenizer is tiny_llama's (a 512-token byte-level BPE; the config's vocab is larger, which
vLLM and transformers accept).

    PYTHONPATH=tests python3 -m support.big_llama DIR [--layers 12] [--shards 3] [--seed 0]

writes DIR/config.json, DIR/model-0000i-of-0000n.safetensors, model.safetensors.index.json,
the tokenizer files and, last, DIR.complete.json beside it (the arguments and every file's
size; outside DIR, so that DIR uploads as a clean model): a build whose manifest matches is
reused as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .tiny_llama import build_tokenizer  # tokenizers + transformers, no torch

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 2048, 5632, 16, 4, 128, 32000


def config(layers: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
        "mlp_bias": False, "initializer_range": 0.02, "torch_dtype": "bfloat16",
        "bos_token_id": 0, "eos_token_id": 1,  # tiny_llama's tokenizer: <s>=0, </s>=1
    }


def tensor_shapes(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes as transformers' LlamaForCausalLM saves them, in file order."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (HIDDEN,)),
                (p + "self_attn.q_proj.weight", (q, HIDDEN)),
                (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
                (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
                (p + "self_attn.o_proj.weight", (HIDDEN, q)),
                (p + "post_attention_layernorm.weight", (HIDDEN,)),
                (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
                (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith("norm.weight"):
        return bf16(np.ones(shape, np.float32))
    return bf16(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]],
                rng: np.random.Generator) -> None:
    """The safetensors layout: u64 header length, JSON header (padded with spaces to 8 bytes),
    then the tensors back to back."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for name, shape in tensors:
            values(name, shape, rng).tofile(f)
    os.replace(tmp, path)


def split(items: list[tuple[str, tuple[int, ...]]], parts: int) -> list[list]:
    """Consecutive groups of about equal bytes."""
    sizes = [int(np.prod(s)) for _, s in items]
    total, out, acc = sum(sizes), [[]], 0
    for item, n in zip(items, sizes):
        if acc >= total * len(out) / parts and len(out) < parts:
            out.append([])
        out[-1].append(item)
        acc += n
    return out


def manifest(directory: Path) -> dict:
    return {f.name: f.stat().st_size for f in sorted(directory.iterdir()) if f.is_file()}


def ensure(directory, layers: int = 12, shards: int = 3, seed: int = 0) -> Path:
    """Build the model in `directory` unless a complete build with these arguments is there."""
    d = Path(directory)
    args = {"layers": layers, "shards": shards, "seed": seed}
    marker = d.parent / (d.name + ".complete.json")
    if marker.exists():
        done = json.loads(marker.read_text())
        if done.get("args") == args and done.get("files") == manifest(d):
            return d
    marker.unlink(missing_ok=True)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    groups = split(tensor_shapes(layers), shards)
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        write_shard(d / name, group, rng)
        for t, shape in group:
            weight_map[t] = name
            total += 2 * int(np.prod(shape))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (d / "config.json").write_text(json.dumps(config(layers), indent=2, sort_keys=True))
    (d / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, indent=2))
    build_tokenizer(d)
    marker.write_text(json.dumps({"args": args, "files": manifest(d)}, indent=2))
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    d = ensure(a.directory, a.layers, a.shards, a.seed)
    size = sum(manifest(d).values())
    print(f"{d}: {size / 1e9:.2f} GB in {len(manifest(d))} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
