"""A deterministic Llama-7B-like safetensors model for the benchmarks.

bf16 tensors with Llama-7B shapes (hidden 4096, intermediate 11008), as many layers as fit the
requested size, split into 4 shards with model.safetensors.index.json and config.json. A
manifest next to it holds the sha256 of every file and tensor so any copy can be checked.
Written with numpy alone (no torch); cached and reused while complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

GEN_VERSION = 1  # bump when the generator changes, so stale caches are rebuilt
SEED = 0x05C0FE7C
HIDDEN, INTER, VOCAB, SHARDS = 4096, 11008, 32000, 4
BF16 = 2  # bytes per element
CHUNK = 64 << 20  # generation / hashing granularity


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)



def plan_model(size_gib: float):
    """Tensor list (name, shape) of a Llama-like model close to size_gib."""
    target = size_gib * 2**30
    layer = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN) * BF16
    embeds = 2 * VOCAB * HIDDEN * BF16  # embed_tokens + untied lm_head
    layers = max(1, round((target - embeds) / layer))
    vocab = VOCAB
    if layers * layer + embeds > 1.1 * target:  # small runs: shrink the vocab, not the layer shapes
        vocab = max(256, int((target - layers * layer) // (2 * HIDDEN * BF16)))
    t = [("model.embed_tokens.weight", (vocab, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", (HIDDEN,))]
        t += [(p + f"self_attn.{x}_proj.weight", (HIDDEN, HIDDEN)) for x in "qkvo"]
        t += [(p + "post_attention_layernorm.weight", (HIDDEN,)),
              (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
              (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
              (p + "mlp.down_proj.weight", (HIDDEN, INTER))]
    t += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (vocab, HIDDEN))]
    return layers, vocab, t


def tensor_chunks(name: str, nbytes: int):
    """Deterministic bf16 bytes for one tensor: random sign/mantissa, exponents of 2^-10..2^-3
    (finite, weight-like, about as incompressible as real weights). Norms are ~1.0."""
    rng = np.random.Generator(np.random.PCG64([SEED, zlib.crc32(name.encode())]))
    norm = name.endswith("norm.weight")
    left = nbytes
    while left:
        n = min(CHUNK, left)
        r = np.frombuffer(rng.bytes(n), dtype=np.uint16)
        if norm:
            v = (r & 0x003F) | 0x3F80
        else:
            v = (r & 0x807F) | ((117 + ((r >> 7) & 7)) << 7)
        yield v.astype(np.uint16).tobytes()
        left -= n


def write_shard(path: Path, tensors) -> tuple[str, dict]:
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * BF16
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-(8 + len(hj)) % 8)  # keep the data section 8-byte aligned
    fsha, tsha = hashlib.sha256(), {}
    with open(path, "wb") as f:
        for b in (len(hj).to_bytes(8, "little"), hj):
            f.write(b)
            fsha.update(b)
        for name, shape in tensors:
            h = hashlib.sha256()
            for b in tensor_chunks(name, int(np.prod(shape)) * BF16):
                f.write(b)
                fsha.update(b)
                h.update(b)
            tsha[name] = h.hexdigest()
    return fsha.hexdigest(), tsha


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


def ensure_model(root: Path, size_gib: float) -> tuple[Path, dict]:
    """Model dir + manifest; regenerated only when missing, incomplete or from another generator."""
    tag = f"{size_gib:g}gib"
    mdir, mpath = root / tag, root / f"{tag}.manifest.json"
    layers, vocab, tensors = plan_model(size_gib)
    params = {"gen_version": GEN_VERSION, "size_gib": size_gib, "layers": layers, "vocab": vocab}
    if mpath.exists():
        man = json.loads(mpath.read_text())
        if man.get("params") == params and all(
                (mdir / f).is_file() and (mdir / f).stat().st_size == m["size"]
                for f, m in man["files"].items()):
            return mdir, man
    log(f"generating {tag} model in {mdir} ({layers} layers, vocab {vocab}) ...")
    t0 = time.time()
    shutil.rmtree(mdir, ignore_errors=True)
    mpath.unlink(missing_ok=True)
    mdir.mkdir(parents=True)
    sizes = [int(np.prod(s)) * BF16 for _, s in tensors]
    total = sum(sizes)
    shards, acc = [[] for _ in range(SHARDS)], 0
    for t, n in zip(tensors, sizes):  # greedy split in order, ~total/SHARDS per shard
        shards[min(SHARDS - 1, int(acc * SHARDS // total))].append(t)
        acc += n
    files, tsha, weight_map = {}, {}, {}
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        fsha, ts = write_shard(mdir / fn, sh)
        files[fn] = {"size": (mdir / fn).stat().st_size, "sha256": fsha}
        tsha.update(ts)
        weight_map.update({name: fn for name, _ in sh})
    extra = {
        "model.safetensors.index.json": {"metadata": {"total_size": total}, "weight_map": weight_map},
        "config.json": {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
            "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": vocab,
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    }
    for fn, obj in extra.items():
        (mdir / fn).write_text(json.dumps(obj, indent=2) + "\n")
        files[fn] = {"size": (mdir / fn).stat().st_size, "sha256": sha256_file(mdir / fn)}
    man = {"params": params, "files": files, "tensors": tsha, "tensor_bytes": total}
    mpath.write_text(json.dumps(man, indent=1))  # written last: marks the cache complete
    log(f"  {sum(f['size'] for f in files.values()) / 1e9:.2f} GB in {time.time() - t0:.0f}s")
    return mdir, man


def ensure_single_file(root: Path, size_gib: float) -> tuple[Path, dict]:
    """One large object (big.bin, random bytes, each 64 MiB block stamped with its number) for
    the single-object benchmark; the manifest holds a sha256 per block, so a copy is checked on
    every core at once. Cached like ensure_model."""
    from concurrent.futures import ThreadPoolExecutor
    import os
    tag = f"single-{size_gib:g}gib"
    mdir, mpath = root / tag, root / f"{tag}.manifest.json"
    size = int(size_gib * 2**30)
    params = {"gen_version": GEN_VERSION, "single_gib": size_gib}
    if mpath.exists():
        man = json.loads(mpath.read_text())
        if man.get("params") == params and (mdir / "big.bin").is_file() and \
                (mdir / "big.bin").stat().st_size == size:
            return mdir, man
    log(f"generating {tag} in {mdir} ...")
    shutil.rmtree(mdir, ignore_errors=True)
    mpath.unlink(missing_ok=True)
    mdir.mkdir(parents=True)
    base = np.random.Generator(np.random.PCG64(SEED)).bytes(CHUNK)
    fd = os.open(mdir / "big.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)

        def block(i: int) -> str:
            data = (i.to_bytes(8, "little") + base[8:])[:min(CHUNK, size - i * CHUNK)]
            os.pwrite(fd, data, i * CHUNK)
            return hashlib.sha256(data).hexdigest()
        with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
            blocks = list(ex.map(block, range((size + CHUNK - 1) // CHUNK)))
    finally:
        os.close(fd)
    man = {"params": params, "files": {"big.bin": {"size": size, "blocks": blocks}},
           "block_bytes": CHUNK}
    mpath.write_text(json.dumps(man, indent=1))
    return mdir, man


def verify_blocks(path: Path, blocks: list, threads: int) -> list:
    """The numbers of the 64 MiB blocks of path whose sha256 differs from blocks."""
    from concurrent.futures import ThreadPoolExecutor
    import os
    fd = os.open(path, os.O_RDONLY)
    try:
        def bad(i: int) -> bool:
            return hashlib.sha256(os.pread(fd, CHUNK, i * CHUNK)).hexdigest() != blocks[i]
        with ThreadPoolExecutor(threads) as ex:
            return [i for i, b in enumerate(ex.map(bad, range(len(blocks)))) if b]
    finally:
        os.close(fd)
