import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import paretoalign.train.dpo_trainer as dpo_trainer
from paretoalign.embed.chat_format import pad_token_id
from paretoalign.errors import InputError
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.dpo_trainer import batch_indices, encode_pairs, steps_for, train_dpo
from paretoalign.train.modpo_config import MODPOConfig
from paretoalign.train.modpo_trainer import train_modpo
from paretoalign.train.policy_files import load_policy_state
from paretoalign.train.sequences import reply_end_token_id, row_logprob_sums
from tests.train.conftest import SMALL, fresh_policy, metric_rows, tiny_reward_model, toy_pairs, weights_of

PAIRS = toy_pairs(4)


def run_dpo(tmp_path, name, **fields):
    model, tok = fresh_policy()
    trained, stats = train_dpo(DPOConfig(**{**SMALL, "output_dir": str(tmp_path / name), **fields}), PAIRS,
                               model=model, tokenizer=tok)
    return trained, stats, tmp_path / name


def run_modpo(tmp_path, name, margins, **fields):
    model, tok = fresh_policy()
    config = MODPOConfig(**{**SMALL, "output_dir": str(tmp_path / name), **fields})
    trained, stats = train_modpo(config, PAIRS, model=model, tokenizer=tok, margins=margins)
    return trained, stats, tmp_path / name


def random_margins(k=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 3, (len(PAIRS), k)), rng.normal(0, 3, (len(PAIRS), k))


def test_modpo_with_all_weight_on_the_pair_objective_trains_exactly_like_dpo(tmp_path):
    dpo, _, dpo_dir = run_dpo(tmp_path, "dpo", max_steps=2, learning_rate=1e-2)
    modpo, stats, modpo_dir = run_modpo(tmp_path, "modpo", random_margins(), max_steps=2, learning_rate=1e-2,
                                        weights=[1.0, 0.0])
    a, b = weights_of(dpo), weights_of(modpo)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metric_rows(dpo_dir) == metric_rows(modpo_dir)
    assert stats["weights"] == [1.0, 0.0]


def test_modpo_margins_change_the_training(tmp_path):
    dpo, _, dpo_dir = run_dpo(tmp_path, "dpo", max_steps=2, learning_rate=1e-2)
    _, _, modpo_dir = run_modpo(tmp_path, "modpo", random_margins(), max_steps=2, learning_rate=1e-2,
                                weights=[0.5, 0.5])
    assert metric_rows(dpo_dir)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metric_rows(modpo_dir)[0]["loss"] != pytest.approx(math.log(2), abs=1e-3)


def test_modpo_trains_with_three_objectives(tmp_path):
    _, stats, run_dir = run_modpo(tmp_path, "m3", random_margins(k=2), max_steps=1, weights=[0.5, 0.3, 0.2],
                                  margin_objectives=["harmlessness", "honesty"])
    assert len(metric_rows(run_dir)) == 1
    assert sorted(stats["mean_margin_difference"]) == ["harmlessness", "honesty"]


def test_modpo_rejects_margins_of_the_wrong_shape(tmp_path):
    chosen, rejected = random_margins(k=2)
    with pytest.raises(InputError) as err:
        run_modpo(tmp_path, "bad", (chosen, rejected), max_steps=1)
    assert err.value.field == "margins"


def test_modpo_margins_from_the_reward_model_need_its_objectives():
    model, tok = fresh_policy()
    config = MODPOConfig(**SMALL, max_steps=1, margin_objectives=["kindness"])
    with pytest.raises(InputError) as err:
        train_modpo(config, PAIRS, model=model, tokenizer=tok, reward_model=tiny_reward_model())
    assert err.value.field == "margin_objectives" and "kindness" in str(err.value)


def test_dpo_writes_the_policy_metrics_and_training_record(tmp_path):
    trained, stats, run_dir = run_dpo(tmp_path, "dpo", max_steps=2)
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # LoRA starts at the reference
    assert rows[0]["chosen_reward"] == 0.0 and rows[0]["rejected_reward"] == 0.0
    saved = load_policy_state(run_dir / "policy")[0]  # the LoRA-merged plain model, EOS-biased head included
    assert sorted(saved) == sorted(trained.state_dict())
    for name, value in saved.items():
        assert torch.equal(value, trained.state_dict()[name]), name
    record = json.loads((run_dir / "training.json").read_text())
    assert record["method"] == "dpo" and record["stats"]["steps"] == 2 and stats["num_pairs"] == 4


def test_dpo_learns_to_prefer_the_chosen_responses(tmp_path):
    _, _, run_dir = run_dpo(tmp_path, "dpo", epochs=4, learning_rate=5e-3, beta=0.5)
    rows = metric_rows(run_dir)
    assert len(rows) == steps_for(4, 2, 4, None) == 8
    assert rows[-1]["reward_margin"] > 0.1 and rows[-1]["loss"] < math.log(2)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    whole, _, _ = run_dpo(tmp_path, "whole", batch_size=4, max_steps=1, learning_rate=1e-2, max_grad_norm=None)
    # micro-batches of 3 and 1 pairs: each pair must still weigh 1/4 (no clipping to hide a wrong scale)
    accumulated, _, _ = run_dpo(tmp_path, "micro", batch_size=4, micro_batch_size=3, max_steps=1,
                                learning_rate=1e-2, max_grad_norm=None)
    a, b = weights_of(whole), weights_of(accumulated)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_batch_order_is_a_seeded_permutation_per_epoch():
    steps = list(batch_indices(5, 2, seed=3, start_step=0, total_steps=6))
    assert [e for e, _ in steps] == [0, 0, 0, 1, 1, 1]
    for epoch in (0, 1):
        seen = sorted(i for e, idx in steps if e == epoch for i in idx)
        assert seen == [0, 1, 2, 3, 4]
    assert list(batch_indices(5, 2, seed=3, start_step=4, total_steps=6)) == steps[4:]


def test_an_explicit_reference_model_gives_the_implicit_rewards(tmp_path, tiny_llama_dir):
    _, _, run_dir = run_dpo(tmp_path, "ref", max_steps=1, reference=str(tiny_llama_dir), beta=0.5)
    step1 = metric_rows(run_dir)[0]
    policy, tok = fresh_policy()
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    encoded = encode_pairs(tok, PAIRS, 64, reply_end_token_id(tok, policy))
    _, first = next(batch_indices(len(PAIRS), 2, 0, 0, 1))
    rows = [encoded[i].chosen for i in first]
    with torch.no_grad():
        diff = row_logprob_sums(policy, rows, pad_token_id(tok)) - row_logprob_sums(reference, rows,
                                                                                    pad_token_id(tok))
    assert step1["chosen_reward"] == pytest.approx(float(0.5 * diff.mean()), abs=1e-5)
    assert abs(step1["chosen_reward"]) > 1e-3


def test_full_fine_tuning_keeps_the_reference_frozen(tmp_path, monkeypatch):
    captured = []

    def capture(*args, **kwargs):
        captured.append(build(*args, **kwargs))
        return captured[-1]

    build = dpo_trainer.build_reference
    monkeypatch.setattr(dpo_trainer, "build_reference", capture)
    model, tok = fresh_policy()
    initial = weights_of(model)
    trained, _ = train_dpo(DPOConfig(**{**SMALL, "lora": False, "max_steps": 2, "learning_rate": 1e-3}), PAIRS,
                           model=model, tokenizer=tok)
    reference = captured[0].model
    assert reference is not trained
    for name, p in reference.named_parameters():
        assert p.grad is None and not p.requires_grad, name
        assert torch.equal(p.detach(), initial[name]), name
    changed = [n for n, v in weights_of(trained).items() if not torch.equal(v, initial[n])]
    assert len(changed) > 10
