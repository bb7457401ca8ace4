import copy

import pytest
import torch

from paretoalign.embed.chat_format import pad_token_id
from paretoalign.errors import InputError
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.policy_setup import (
    Reference,
    build_reference,
    check_same_vocabulary,
    effective_weights,
    load_plain_weights_,
    plain_state,
    trainable_parameters,
    trained_weight_names,
    wrap_lora,
)
from paretoalign.train.sequences import row_logprob_sums
from tests.tiny import make_tiny_llama, make_tokenizer
from tests.train.conftest import SMALL, fresh_policy

ROWS = [([5, 9, 30, 31, 32, 33], 2), ([7, 8, 50, 51], 2)]


def lora_policy(arch="llama", seed=0):
    """(LoRA-wrapped policy with non-zero adapters, untouched copy of the base, tokenizer)."""
    model, tok = fresh_policy(arch)
    base = copy.deepcopy(model)
    policy = wrap_lora(model, DPOConfig(**SMALL, seed=seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return policy.eval(), base.eval(), tok


def test_lora_trains_only_the_adapters():
    policy, _, _ = lora_policy()
    names = list(trainable_parameters(policy))
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)


def test_lora_reference_is_the_base_model_with_adapters_off():
    policy, base, tok = lora_policy()
    pad = pad_token_id(tok)
    with torch.no_grad():
        expected = row_logprob_sums(base, ROWS, pad)
        before = row_logprob_sums(policy, ROWS, pad)
    reference = build_reference(policy, DPOConfig(**SMALL))
    with reference.active() as ref_model:
        ref = row_logprob_sums(ref_model, ROWS, pad)
    torch.testing.assert_close(ref, expected, atol=1e-6, rtol=0)
    assert not ref.requires_grad
    assert (before - expected).abs().max() > 1e-3  # the adapters do change the policy
    with torch.no_grad():  # and are back on after the reference call
        torch.testing.assert_close(row_logprob_sums(policy, ROWS, pad), before)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_effective_weights_equal_the_merged_model(arch):
    policy, base, _ = lora_policy(arch)
    eff = effective_weights(policy)
    state = plain_state(policy)
    assert sorted(eff) == sorted(trained_weight_names(policy))
    merged = policy.merge_and_unload().state_dict()
    assert sorted(state) == sorted(merged)
    for name, value in merged.items():
        torch.testing.assert_close(state[name], value, atol=1e-6, rtol=0)
    for name in eff:
        torch.testing.assert_close(eff[name], merged[name], atol=1e-6, rtol=0)
        assert not torch.allclose(eff[name], base.state_dict()[name])


def test_load_plain_weights_copies_by_name_and_rejects_unknown_names():
    model, _ = fresh_policy()
    name = "model.layers.0.self_attn.q_proj.weight"
    load_plain_weights_(model, {name: torch.ones_like(model.state_dict()[name])})
    assert bool((model.state_dict()[name] == 1).all())
    with pytest.raises(InputError):
        load_plain_weights_(model, {"no.such.weight": torch.zeros(1)})


def test_full_fine_tuning_without_a_reference_needs_the_initial_model():
    model, _ = fresh_policy()
    with pytest.raises(InputError) as err:
        build_reference(model, DPOConfig(**{**SMALL, "lora": False}))
    assert err.value.field == "reference"


def test_reference_needs_exactly_one_source():
    with pytest.raises(ValueError):
        Reference()


def test_check_same_vocabulary_names_the_field():
    model, _ = fresh_policy()
    other_tok = make_tokenizer()
    other_tok.add_tokens(["<extra_1>", "<extra_2>"])
    other = make_tiny_llama(other_tok)
    check_same_vocabulary(model, fresh_policy()[0], "reference")
    with pytest.raises(InputError) as err:
        check_same_vocabulary(model, other, "reference")
    assert err.value.field == "reference" and "vocabulary" in str(err.value)
