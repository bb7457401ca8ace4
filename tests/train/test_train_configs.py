import math

import pytest

from paretoalign.errors import InputError
from paretoalign.train.bond_config import BONDConfig
from paretoalign.train.bond_trainer import train_bond
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.dpo_trainer import train_dpo
from paretoalign.train.modpo_config import MODPOConfig
from paretoalign.train.training_config import FULL_FINETUNE_LEARNING_RATE, LORA_LEARNING_RATE
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.warp_trainer import train_warp
from tests.tiny import make_tiny_llama, make_tokenizer
from tests.train.conftest import ONLINE, PROMPTS, SMALL, fresh_policy, tiny_reward_model, toy_pairs


def error_field(cls, **fields) -> str:
    with pytest.raises(InputError) as err:
        cls(**fields)
    return err.value.field


def test_defaults_are_valid():
    for cls in (DPOConfig, MODPOConfig, BONDConfig, WARPConfig):
        cls()


@pytest.mark.parametrize("weights", [[0.5, 0.6], [0.3, 0.3], [1.0], [0.5, 0.25, 0.25], [0.0, 1.0], [1.2, -0.2],
                                     [0.5, math.nan], "0.5,0.5", [True, 0.0]])
def test_modpo_weights_must_be_a_simplex_point_with_positive_w0(weights):
    assert error_field(MODPOConfig, weights=weights) == "weights"


def test_modpo_weights_grow_with_the_margin_objectives():
    MODPOConfig(weights=[0.5, 0.3, 0.2], margin_objectives=["harmlessness", "honesty"])
    MODPOConfig(weights=[1.0], margin_objectives=[])
    assert error_field(MODPOConfig, weights=[0.5, 0.5], margin_objectives=["a", "b"]) == "weights"


def test_modpo_weights_error_says_what_is_wrong():
    with pytest.raises(InputError, match="sum to 1"):
        MODPOConfig(weights=[0.5, 0.6])
    with pytest.raises(InputError, match="must be > 0"):
        MODPOConfig(weights=[0.0, 1.0])


@pytest.mark.parametrize(("fields", "field"), [
    ({"margin_objectives": ["a", "a"], "weights": [0.4, 0.3, 0.3]}, "margin_objectives"),
    ({"margin_source": "oracle"}, "margin_source"),
    ({"margin_source": "implicit"}, "margin_policies"),
    ({"margin_source": "implicit", "margin_policies": ["p"], "margin_betas": [0.1, 0.2]}, "margin_betas"),
    ({"margin_source": "implicit", "margin_policies": ["p"], "margin_betas": [0.0]}, "margin_betas"),
])
def test_modpo_margin_settings_are_checked(fields, field):
    assert error_field(MODPOConfig, **fields) == field


@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf, math.nan])
def test_dpo_beta_must_be_positive(beta):
    assert error_field(DPOConfig, beta=beta) == "beta"


@pytest.mark.parametrize(("fields", "field"), [
    ({"epochs": 0}, "epochs"), ({"max_pairs": 0}, "max_pairs"), ({"batch_size": 0}, "batch_size"),
    ({"max_length": 1}, "max_length"), ({"learning_rate": 0.0}, "learning_rate"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"max_grad_norm": 0.0}, "max_grad_norm"), ({"lora_r": 0}, "lora_r"),
    ({"micro_batch_size": 0}, "micro_batch_size"), ({"save_every": 0}, "save_every"), ({"max_steps": 0}, "max_steps"),
    ({"model": ""}, "model"), ({"reference": ""}, "reference"), ({"data": ""}, "data"),
])
def test_shared_training_settings_are_checked(fields, field):
    assert error_field(DPOConfig, **fields) == field


def test_learning_rate_defaults_depend_on_lora():
    assert DPOConfig().effective_learning_rate == LORA_LEARNING_RATE
    assert DPOConfig(lora=False).effective_learning_rate == FULL_FINETUNE_LEARNING_RATE
    assert DPOConfig(learning_rate=0.01).effective_learning_rate == 0.01


@pytest.mark.parametrize(("fields", "field"), [
    ({"beta": -0.1}, "beta"), ({"beta": 1.5}, "beta"), ({"variant": "rbond"}, "variant"), ({"gamma": -1.0}, "gamma"),
    ({"variant": "bond", "n": 1}, "n"), ({"variant": "bond", "n": 4, "quantile_samples": 3}, "quantile_samples"),
    ({"anchor_ema": 0.0}, "anchor_ema"), ({"anchor_ema": 1.5}, "anchor_ema"),
    ({"jbond_penalty": -1.0}, "jbond_penalty"),
    ({"samples_per_prompt": 0}, "samples_per_prompt"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_steps": None}, "max_steps"), ({"weights": {"helpfulness": "a lot"}}, "weights"),
    ({"temperature": -1.0}, "temperature"),
])
def test_bond_settings_are_checked(fields, field):
    assert error_field(BONDConfig, **fields) == field


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_bond_beta_ends_are_allowed(beta):
    BONDConfig(beta=beta)


def test_jbond_ignores_n():
    BONDConfig(variant="jbond", n=1, quantile_samples=1)


@pytest.mark.parametrize(("fields", "field"), [
    ({"num_runs": 1}, "num_runs"), ({"samples_per_prompt": 1}, "samples_per_prompt"), ({"iterations": 0}, "iterations"),
    ({"kl_beta": 0.0}, "kl_beta"), ({"ema_rate": 0.0}, "ema_rate"), ({"slerp_lambda": 1.5}, "slerp_lambda"),
    ({"liti_eta": -0.1}, "liti_eta"), ({"liti_eta": 1.01}, "liti_eta"), ({"eta_grid": [0.5, 2.0]}, "eta_grid"),
    ({"eta_grid": 0.5}, "eta_grid"),
])
def test_warp_settings_are_checked(fields, field):
    assert error_field(WARPConfig, **fields) == field


def test_a_missing_reference_model_is_named(tmp_path):
    model, tok = fresh_policy()
    config = DPOConfig(**SMALL, max_steps=1, reference=str(tmp_path / "no-such-model"))
    with pytest.raises(InputError) as err:
        train_dpo(config, toy_pairs(2), model=model, tokenizer=tok)
    assert err.value.field == "reference" and "no-such-model" in str(err.value)


def test_a_reference_with_another_vocabulary_is_rejected(tmp_path):
    model, tok = fresh_policy()
    bigger = make_tokenizer()
    bigger.add_tokens([f"<extra_{i}>" for i in range(5)])
    make_tiny_llama(bigger).save_pretrained(tmp_path / "other")
    bigger.save_pretrained(tmp_path / "other")
    config = DPOConfig(**SMALL, max_steps=1, reference=str(tmp_path / "other"))
    with pytest.raises(InputError) as err:
        train_dpo(config, toy_pairs(2), model=model, tokenizer=tok)
    assert err.value.field == "reference" and "vocabulary" in str(err.value)


@pytest.mark.parametrize("trainer", [train_bond, train_warp])
def test_online_weights_must_name_reward_model_objectives(trainer):
    model, tok = fresh_policy()
    cls = BONDConfig if trainer is train_bond else WARPConfig
    config = cls(**ONLINE, max_steps=1, weights={"helpfulness": 0.5, "kindness": 0.5})
    with pytest.raises(InputError) as err:
        trainer(config, PROMPTS, model=model, tokenizer=tok, reward_model=tiny_reward_model())
    assert err.value.field == "weights" and "kindness" in str(err.value)


def test_a_model_object_needs_its_tokenizer():
    model, _ = fresh_policy()
    with pytest.raises(InputError) as err:
        train_dpo(DPOConfig(**SMALL, max_steps=1), toy_pairs(2), model=model)
    assert err.value.field == "tokenizer"


def test_online_prompts_must_leave_room_for_the_response():
    model, tok = fresh_policy()
    config = BONDConfig(**{**ONLINE, "max_length": 8}, max_steps=1)
    with pytest.raises(InputError) as err:
        train_bond(config, PROMPTS, model=model, tokenizer=tok, reward_model=tiny_reward_model())
    assert err.value.field == "max_length"


def test_jbond_refuses_a_separate_reference():
    with pytest.raises(InputError, match="initial policy") as info:
        BONDConfig(variant="jbond", reference="some/other/model")
    assert info.value.field == "reference"
    assert BONDConfig(variant="bond", reference="some/other/model").reference == "some/other/model"
