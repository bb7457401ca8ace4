import math

import pytest
import torch
from safetensors.torch import load_file

import paretoalign.train.bond_trainer as bond_trainer
from paretoalign.train.bond_config import BONDConfig
from paretoalign.train.bond_trainer import train_bond
from tests.train.conftest import (
    ONLINE,
    PROMPTS,
    assert_same_weights,
    fresh_policy,
    metric_rows,
    tiny_reward_model,
    weights_of,
)


def run_bond(tmp_path, name="run", **fields):
    model, tok = fresh_policy()
    initial = weights_of(model)
    config = BONDConfig(**{**ONLINE, "output_dir": str(tmp_path / name), **fields})
    trained, stats = train_bond(config, PROMPTS, model=model, tokenizer=tok, reward_model=tiny_reward_model())
    return trained, stats, tmp_path / name, initial


@pytest.mark.parametrize("lora", [True, False])
def test_jbond_anchor_moves_by_ema_toward_the_trained_policy(tmp_path, lora):
    eta = 0.25
    trained, stats, run_dir, initial = run_bond(tmp_path, max_steps=1, anchor_ema=eta, learning_rate=1e-2, lora=lora)
    anchor = load_file(str(run_dir / "checkpoint" / "anchor.safetensors"))
    policy = weights_of(trained)
    assert stats["variant"] == "jbond"
    assert len(anchor) == (4 if lora else len(dict(trained.named_parameters())))  # q/v of 2 layers, or every weight
    moved = 0
    for name, value in anchor.items():
        torch.testing.assert_close(value, (1 - eta) * initial[name] + eta * policy[name], atol=1e-6, rtol=0)
        moved += not torch.equal(policy[name], initial[name])
    assert moved == len(anchor)


def test_jbond_anchor_never_gets_gradients(tmp_path, monkeypatch):
    anchors = []

    def capture(config, model=None):
        anchors.append(copy_initial(config, model))
        return anchors[-1]

    copy_initial = bond_trainer.initial_copy
    monkeypatch.setattr(bond_trainer, "initial_copy", capture)
    trained, _, _, initial = run_bond(tmp_path, max_steps=2, gamma=0.5, beta=0.5)
    (anchor,) = anchors
    assert anchor is not trained
    for name, p in anchor.named_parameters():
        assert p.grad is None and not p.requires_grad, name
    untouched = [n for n, p in anchor.named_parameters() if "q_proj" not in n and "v_proj" not in n]
    assert untouched and all(torch.equal(dict(anchor.named_parameters())[n], initial[n]) for n in untouched)


def test_jbond_logs_its_backward_reward_and_kl(tmp_path):
    _, _, run_dir, _ = run_bond(tmp_path, max_steps=3, gamma=0.1, learning_rate=1e-2)
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    penalty = math.log(16)
    for row in rows:  # the mean over 2 prompts of values in {-log 16, 0}
        assert min(abs(row["backward_reward"] - v) for v in (0.0, -penalty / 2, -penalty)) < 1e-6
        assert 0.0 <= row["finished"] <= 1.0
    assert rows[0]["kl_anchor_mc"] == pytest.approx(0.0, abs=1e-5)  # the policy starts at its anchor
    assert rows[0]["token_kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[-1]["token_kl"] > 1e-6


def test_plain_bond_trains_against_the_fixed_reference(tmp_path):
    _, stats, run_dir, _ = run_bond(tmp_path, variant="bond", n=2, quantile_samples=3, max_steps=2)
    rows = metric_rows(run_dir)
    assert stats["variant"] == "bond" and len(rows) == 2
    # (n - 1) log p<= lies in [log(1/4), 0] with k = 3 reference samples
    assert all(math.log(1 / 4) - 1e-9 <= r["backward_reward"] <= 0.0 for r in rows)
    assert rows[0]["kl_anchor_mc"] == pytest.approx(0.0, abs=1e-5)
    assert not (run_dir / "checkpoint" / "anchor.safetensors").exists()


def test_samples_per_prompt_trains_on_every_sample(tmp_path):
    _, _, run_dir, _ = run_bond(tmp_path, max_steps=1, samples_per_prompt=3, micro_batch_size=1)
    assert len(metric_rows(run_dir)) == 1


def test_a_forward_only_mix_ignores_the_backward_reward(tmp_path):
    a, _, _, _ = run_bond(tmp_path, "a", max_steps=1, beta=0.0, learning_rate=1e-2)
    b, _, _, _ = run_bond(tmp_path, "b", max_steps=1, beta=0.0, learning_rate=1e-2, jbond_penalty=5.0)
    assert_same_weights(weights_of(a), weights_of(b))


def test_a_backward_only_mix_has_no_loss_at_the_anchor_without_reward(tmp_path):
    # beta = 1, r_J = 0 and log pi/pi_anc = 0 at step 1: the policy-gradient coefficient is 0
    _, _, run_dir, _ = run_bond(tmp_path, "pg", max_steps=1, beta=1.0, jbond_penalty=0.0)
    assert metric_rows(run_dir)[0]["loss"] == pytest.approx(0.0, abs=1e-3)
    _, _, run_dir, _ = run_bond(tmp_path, "mix", max_steps=1, beta=0.5, jbond_penalty=0.0)
    assert metric_rows(run_dir)[0]["loss"] > 1.0  # half of -log pi(y_best) over ~300 tokens


@pytest.mark.parametrize("variant", ["bond", "jbond"])
def test_forward_target_is_the_best_sample_even_when_truncated(tmp_path, monkeypatch, variant):
    """BOND deliberately differs from `paretoalign bon` (best FINISHED sample): π_BoN ranks every sample."""
    anchors, targets = [], []
    sample, terms = bond_trainer.sample_responses, bond_trainer._policy_terms

    def flagged(*args, role, **kwargs):
        groups = sample(*args, role=role, **kwargs)
        if role == "anchor":  # sample 0 of each prompt is cut at the limit, the others finished
            for group in groups:
                for j, s in enumerate(group):
                    s.finished = j > 0
            anchors.extend(groups)
        return groups

    def by_truncation(reward_model, prompts, samples, weights=None):
        for s in samples:  # the truncated sample scores best
            s.reward = 10.0 if not s.finished else float(len(s.response_ids))

    def capture(run, anchor, forward_rows, sample_rows_, need_kl):
        targets.extend(ids[n_prompt:] for ids, n_prompt in forward_rows)
        return terms(run, anchor, forward_rows, sample_rows_, need_kl)

    monkeypatch.setattr(bond_trainer, "sample_responses", flagged)
    monkeypatch.setattr(bond_trainer, "score_samples", by_truncation)
    monkeypatch.setattr(bond_trainer, "_policy_terms", capture)
    run_bond(tmp_path, max_steps=1, variant=variant, n=2, quantile_samples=2)
    assert len(targets) == len(anchors) == ONLINE["batch_size"]
    for target, group in zip(targets, anchors, strict=True):
        assert not group[0].finished and target == group[0].response_ids
