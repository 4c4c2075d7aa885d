"""A tiny Llama with a locally trained tokenizer and peft LoRA adapters, written to a directory:
real transformers/peft artifacts without a hub, in shapes that vLLM on CPU also accepts
(head_dim 64; see shared/reference/vllm-cpu.md).

    PYTHONPATH=tests python -m support.tiny_llama DIR [--lora NAME ...] [--seed N]

writes DIR/config.json, two safetensors shards with model.safetensors.index.json, the tokenizer
(with a chat template) and, per --lora NAME, a peft adapter in DIR/loras/NAME. peft is imported
only when adapters are asked for, so a venv with torch + transformers alone can build the base.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEXT = """Object storage keeps models where disks are expensive and models change.
The connector streams every byte in parallel ranged requests while the server starts.
A reader that needs a range waits for it; nothing is ever served that did not come
from the object. Many processes share one download and one copy in memory.""" * 4

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def build_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(directory))


def build_lora(model, directory: Path, seed: int) -> None:
    """A peft adapter (r=8 on q_proj, v_proj) with random non-zero A and B: peft starts B at
    zero, and a no-op adapter would prove nothing. `model` is left unchanged."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(model),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    lora.save_pretrained(str(directory))


def build_adapters(base, directory, n: int, rank: int = 64, seed: int = 1000) -> list:
    """n peft adapters for the model saved at base, rank `rank` on every projection (about
    1 MiB of weights each at rank 64), each with its own random weights, as
    directory/adapter-NN (the many-adapters prefix of the lazy tests and bench_lora.py)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(LlamaForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
    names = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed + i)
        with torch.no_grad():
            for name, p in lora.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        names.append(f"adapter-{i:02d}")
        lora.save_pretrained(str(Path(directory) / names[-1]))
    return names


def build(directory, seed: int = 0, loras=("a", "b"), layers: int = 2) -> Path:
    """config, 2 safetensors shards + index, tokenizer, and a peft adapter per name in
    `loras` under directory/loras/<name> (each with its own random weights). More `layers`
    make larger adapters (bench_lora.py)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                         vocab_size=512, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory), max_shard_size="1MB")  # ~1.7 MB: two shards
    build_tokenizer(directory)
    for i, name in enumerate(loras):
        build_lora(model, directory / "loras" / name, seed=seed * 1000 + i + 1)
    return directory


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--lora", action="append", default=[], metavar="NAME",
                    help="also write a peft adapter to DIR/loras/NAME (needs peft); repeatable")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build(args.directory, seed=args.seed, loras=tuple(args.lora))
    print(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
