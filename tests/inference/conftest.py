"""Tiny policies (random Llama / GPT-2 with an EOS bias so responses end) and a deterministic reward model."""

from __future__ import annotations

import pytest
import torch

from paretoalign.inference.policy import Policy
from tests.rewards.model_factory import RecordingBackbone, random_model
from tests.tiny import make_tiny_gpt2, make_tiny_llama, make_tokenizer

EOS_BIAS = 3.5
"""Random tiny logits are nearly uniform over ~300 tokens; +3.5 on EOS ends a response after ~10 tokens."""


def with_eos_bias(model, eos_id: int, bias: float = EOS_BIAS):
    """Replace the LM head by one with a bias that favours EOS."""
    old = model.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eos_id] = bias
    model.lm_head = head
    return model


def make_policy(arch: str = "llama", eos_bias: float = EOS_BIAS, seed: int = 0) -> Policy:
    tok = make_tokenizer()
    model = make_tiny_llama(tok, seed) if arch == "llama" else make_tiny_gpt2(tok, seed)
    if eos_bias:
        model = with_eos_bias(model, tok.eos_token_id, eos_bias)
    return Policy(model, tok, name=f"tiny-{arch}")


@pytest.fixture(scope="module")
def tiny_policy() -> Policy:
    return make_policy("llama")


@pytest.fixture(scope="module")
def tiny_gpt2_policy() -> Policy:
    return make_policy("gpt2")


@pytest.fixture()
def tiny_rm():
    """A RewardModel (4 objectives) whose features are a deterministic function of the text."""
    return random_model(backbone=RecordingBackbone())
