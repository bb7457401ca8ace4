"""Tiny random models and a locally built tokenizer for unit tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I bake bread? Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "I cannot help with that request, but here is a safer alternative.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "user assistant system hello thanks please explain why because answer question",
    "0123456789 !?.,;:'\"()[]{}-_/\\ \n\t",
]


def make_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a tiny corpus, with a ChatML template and a distinct pad token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = padding_side
    return fast


def make_tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer, 64-dim random Llama in fp32."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def make_tiny_gpt2(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer, 64-dim random GPT-2 in fp32."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def save_tiny_model(directory: Path, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random model and its tokenizer as a local HF directory (safetensors); return the path."""
    tokenizer = make_tokenizer()
    model = make_tiny_llama(tokenizer, seed) if arch == "llama" else make_tiny_gpt2(tokenizer, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
