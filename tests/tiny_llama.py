"""A tiny Llama with a locally trained tokenizer and a LoRA adapter, written to a directory:
real transformers/peft artifacts without a hub (shapes that vLLM on CPU also accepts)."""

from pathlib import Path

TEXT = """Object storage keeps models where disks are expensive and models change.
The connector streams every byte in parallel ranged requests while the server starts.
A reader that needs a range waits for it; nothing is ever served that did not come
from the object. Many processes share one download and one copy in memory.""" * 4


def build_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(directory))


def build(directory: Path, seed: int = 0) -> None:
    """config, 2 safetensors shards + index, tokenizer, and loras/a (peft)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                         vocab_size=512, max_position_embeddings=256)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory), max_shard_size="700KB")
    build_tokenizer(directory)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                            target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # peft starts B at zero: a no-op adapter would prove nothing
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    lora.save_pretrained(str(directory / "loras" / "a"))
