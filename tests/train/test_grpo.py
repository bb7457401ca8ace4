"""GRPO: the loss against hand computations, its REINFORCE limit, config checks, training, resume and the CLI."""

import json
import math

import numpy as np
import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.train.checkpoint import load_checkpoint
from paretoalign.train.grpo_config import GRPOConfig
from paretoalign.train.grpo_loss import grpo_loss, k3
from paretoalign.train.metrics import MetricsLog
from paretoalign.train.sequences import row_logprob_sums, row_token_logprobs
from paretoalign.train.warp_trainer import reinforce_loss
from tests.train.conftest import (
    ONLINE,
    PROMPTS,
    assert_same_weights,
    fresh_policy,
    metric_rows,
    tiny_reward_model,
    weights_of,
)

GRPO = {**ONLINE, "num_generations": 2, "learning_rate": 1e-2}

# ratios exp(logp - old) per token; row 1's last token is padding
RATIOS = torch.tensor([[1.5, 1.0, 0.5], [0.5, 1.5, 1.0]], dtype=torch.float64)
MASK = torch.tensor([[True, True, True], [True, True, False]])
ADV = torch.tensor([1.0, -1.0], dtype=torch.float64)


def fixed_terms(**kw):
    old = torch.full_like(RATIOS, -2.0) * MASK
    logp = (old + RATIOS.log()) * MASK
    return grpo_loss(logp, old, ADV, MASK, epsilon=0.2, **kw)


# ------------------------------------------------------------------ the loss on fixed tensors
def test_grpo_loss_clips_each_side_by_the_sign_of_the_advantage():
    terms = fixed_terms()
    # row 0 (A = +1): -min(rA, clip(r)A) = -[1.2, 1.0, 0.5]; row 1 (A = -1): -min(-r, -clip(r)) = [0.8, 1.5]
    torch.testing.assert_close(terms.losses, torch.tensor([-2.7 / 3, 2.3 / 2], dtype=torch.float64))
    # the clip binds on row 0's first token (r > 1 + eps, A > 0) and row 1's first (r < 1 - eps, A < 0) only
    assert terms.clipped.tolist() == [1.0, 1.0] and terms.tokens.tolist() == [3.0, 2.0]
    assert terms.kl is None


def test_grpo_loss_upper_clip_is_epsilon_high():
    terms = fixed_terms(epsilon_high=0.3)
    torch.testing.assert_close(terms.losses, torch.tensor([-2.8 / 3, 2.3 / 2], dtype=torch.float64))


def test_dr_grpo_sums_tokens_over_max_new_tokens():
    terms = fixed_terms(loss_type="dr_grpo", max_new_tokens=4)
    torch.testing.assert_close(terms.losses, torch.tensor([-2.7 / 4, 2.3 / 4], dtype=torch.float64))


def test_k3_term_matches_its_formula():
    assert float(k3(torch.tensor(0.0), torch.tensor(math.log(2)))) == pytest.approx(1 - math.log(2))
    assert float(k3(torch.tensor(-1.3), torch.tensor(-1.3))) == 0.0
    old = torch.full_like(RATIOS, -2.0) * MASK
    logp = (old + RATIOS.log()) * MASK
    ref = (logp + math.log(2)) * MASK  # ref/pi = 2 on every response token
    terms = grpo_loss(logp, old, ADV, MASK, epsilon=0.2, beta=0.5, ref_logp=ref)
    kl = 1 - math.log(2)
    torch.testing.assert_close(terms.kl, torch.tensor([kl, kl], dtype=torch.float64))
    torch.testing.assert_close(terms.losses, torch.tensor([-2.7 / 3 + 0.5 * kl, 2.3 / 2 + 0.5 * kl],
                                                          dtype=torch.float64))


def test_a_kl_term_needs_reference_log_probs():
    with pytest.raises(InputError) as err:
        fixed_terms(beta=0.1)
    assert err.value.field == "beta"


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_at_ratio_one_the_gradient_is_the_reinforce_gradient(loss_type):
    logp = (torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * MASK)
    logp.requires_grad_(True)
    terms = grpo_loss(logp, logp.detach(), ADV, MASK, epsilon=0.2, loss_type=loss_type, max_new_tokens=4)
    (grad,) = torch.autograd.grad(terms.losses.mean(), logp)
    lengths = MASK.sum(-1, keepdim=True).double() if loss_type == "grpo" else torch.full((2, 1), 4.0).double()
    # REINFORCE: -mean_i A_i * (sum_t log pi_t) / length_i
    expected = torch.autograd.grad(reinforce_loss(ADV, (logp * MASK / lengths).sum(-1)).mean(), logp)[0]
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(grad[0], -ADV[0] / lengths[0] / 2 * MASK[0])


def test_token_log_probs_of_a_model_sum_to_its_sequence_log_probs():
    model, tok = fresh_policy()
    rows = [([5, 6, 7, 8, 9], 2), ([5, 6, 10], 1)]
    logps, mask = row_token_logprobs(model, rows, 0)
    assert mask.sum(-1).tolist() == [3, 2]
    torch.testing.assert_close(logps.sum(-1), row_logprob_sums(model, rows, 0))


def test_dr_grpo_on_a_model_at_ratio_one_has_the_reinforce_gradient():
    model, _ = fresh_policy()
    rows = [([5, 6, 7, 8, 9], 2), ([5, 6, 10], 1), ([5, 11, 12, 13], 1)]
    adv = torch.tensor([0.7, -0.2, -0.5])
    params = [p for p in model.parameters() if p.requires_grad]
    logps, mask = row_token_logprobs(model, rows, 0)
    terms = grpo_loss(logps, logps.detach(), adv, mask, epsilon=0.2, loss_type="dr_grpo", max_new_tokens=3)
    grpo_grads = torch.autograd.grad(terms.losses.mean(), params)
    reinforce = reinforce_loss(adv, row_logprob_sums(model, rows, 0)).mean() / 3
    for a, b in zip(grpo_grads, torch.autograd.grad(reinforce, params), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ config
def test_one_generation_per_prompt_is_refused():
    with pytest.raises(InputError) as err:
        GRPOConfig(num_generations=1)
    assert err.value.field == "num_generations" and "at least 2" in err.value.reason


@pytest.mark.parametrize(("fields", "named"), [
    ({"loss_type": "dr_grpo", "scale_rewards": True}, "scale_rewards"),
    ({"loss_type": "ppo"}, "loss_type"),
    ({"epsilon": 1.0}, "epsilon"),
    ({"epsilon_high": -0.1}, "epsilon_high"),
    ({"beta": -1}, "beta"),
    ({"baseline": "median"}, "baseline"),
    ({"num_iterations": 0}, "num_iterations"),
    ({"aggregation": "product"}, "aggregation"),
    ({"rewards": [{"checker": "word_count", "max": 5}, "brief"]}, "rewards[1]"),
])
def test_bad_settings_name_their_field(fields, named):
    with pytest.raises(InputError) as err:
        GRPOConfig(**fields)
    assert err.value.field == named


def test_scale_follows_the_loss_type():
    assert GRPOConfig().scale and not GRPOConfig(loss_type="dr_grpo").scale
    assert not GRPOConfig(scale_rewards=False).scale


# ------------------------------------------------------------------ training
def length_reward(prompts, completions, scale=10.0):
    """A user reward function (TRL convention): characters / scale."""
    return [len(c) / scale for c in completions]


def vowel_reward(prompts, completions):
    """Fraction of vowels among the characters (0 for an empty text)."""
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


TWO_REWARDS = [{"name": "length", "function": f"{__name__}:length_reward", "weight": 0.5},
               {"name": "vowels", "function": f"{__name__}:vowel_reward", "weight": 0.5}]


def grpo(run_dir, reward_model=None, prompts=PROMPTS, **fields):
    from paretoalign.train.grpo_trainer import train_grpo

    model, tok = fresh_policy()
    config = GRPOConfig(**{**GRPO, "output_dir": str(run_dir), **fields})
    if reward_model is None and config.rewards is None:
        reward_model = tiny_reward_model()
    trained, stats = train_grpo(config, prompts, model=model, tokenizer=tok, reward_model=reward_model)
    return weights_of(trained), stats


def test_grpo_trains_on_a_reward_model_and_logs_each_step(tmp_path):
    initial = weights_of(fresh_policy()[0])
    trained, stats = grpo(tmp_path / "run", max_steps=2, num_iterations=2, beta=0.1)
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    rows = metric_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["weights"] == {"score": 1.0} and r["reward/score"] == pytest.approx(r["reward"])
        assert r["kl"] >= 0 and 0 <= r["clip_fraction"] <= 1 and 0 <= r["finished"] <= 1
        assert 0 < r["response_tokens"] <= GRPO["max_new_tokens"] and r["grad_norm"] > 0
        assert math.isfinite(r["loss"])
    assert stats["optimizer_updates"] == 4 and stats["objectives"] == ["score"]
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["method"] == "grpo" and record["stats"]["optimizer_updates"] == 4


def test_the_first_update_starts_at_the_reference(tmp_path):
    grpo(tmp_path / "run", max_steps=1, beta=0.1)
    (row,) = metric_rows(tmp_path / "run")
    assert row["kl"] == pytest.approx(0.0, abs=1e-6) and row["clip_fraction"] == 0.0  # rho = 1 with one epoch


def test_without_kl_no_reference_runs_and_kl_is_null(tmp_path, monkeypatch):
    import paretoalign.train.grpo_trainer as trainer

    def no_reference(*args, **kwargs):
        raise AssertionError("beta=0 needs no reference")

    monkeypatch.setattr(trainer, "build_reference", no_reference)
    grpo(tmp_path / "run", max_steps=1, beta=0.0, lora=False)
    assert metric_rows(tmp_path / "run")[0]["kl"] is None


def test_several_rewards_log_each_component_and_their_weights(tmp_path):
    _, stats = grpo(tmp_path / "run", max_steps=2, beta=0.0, rewards=TWO_REWARDS, aggregation="normalize_then_sum")
    assert stats["objectives"] == ["length", "vowels"] and stats["aggregation"] == "normalize_then_sum"
    for r in metric_rows(tmp_path / "run"):
        assert r["weights"] == {"length": 0.5, "vowels": 0.5}
        # the set's score is the weighted sum of its components, so are their means
        assert r["reward"] == pytest.approx(0.5 * r["reward/length"] + 0.5 * r["reward/vowels"])
        assert r["reward/length"] > 0


def test_hypervolume_meta_reward_is_logged_each_step(tmp_path):
    grpo(tmp_path / "run", max_steps=2, beta=0.0, rewards=TWO_REWARDS, weighting="hypervolume", scale_rewards=False)
    rows = metric_rows(tmp_path / "run")
    assert rows[0]["weighting/meta_reward"] == 1.0 and rows[0]["weighting/hv_contribution"] == 0.0  # nothing before it
    assert all(r["weights"] == {"length": 0.5, "vowels": 0.5} for r in rows)
    for r in rows[1:]:
        assert r["weighting/meta_reward"] == pytest.approx(0.5 + 1.5 * np.tanh(r["weighting/hv_contribution"]))


def test_maxmin_puts_all_weight_on_the_worst_served_reward(tmp_path):
    grpo(tmp_path / "run", max_steps=2, beta=0.0, rewards=TWO_REWARDS, weighting="maxmin")
    for r in metric_rows(tmp_path / "run"):
        worst = min(("length", "vowels"), key=lambda n: (r[f"reward/{n}"], n))
        assert r["weights"] == {n: float(n == worst) for n in ("length", "vowels")}


class FirstObjectiveOnly:
    """A gradient-mixing weighting that always picks objective 0 (checks the per-objective gradient path)."""

    name = "first"
    needs_gradients = True

    def __init__(self, k):
        self.k, self.calls = k, 0
        self.last_weights = np.eye(k)[0]

    def step_weights(self, rewards, group_size, step):
        return np.full(self.k, 1 / self.k)

    def sample_scale(self, rewards, group_size):
        return None

    def mix_gradients(self, grads, step):
        assert len(grads) == self.k and grads[0].ndim == 1 and not torch.equal(grads[0], grads[1])
        self.calls += 1
        return np.eye(self.k)[0]

    def metrics(self):
        return {"weighting/calls": float(self.calls)}

    def state(self):
        return {"calls": self.calls}

    def load_state(self, state):
        self.calls = state["calls"]


def test_gradient_mixing_updates_with_the_mixed_per_objective_gradients(tmp_path, monkeypatch):
    import paretoalign.train.reward_weighting as weighting

    one_hot = [{**TWO_REWARDS[0], "weight": 1.0}, {**TWO_REWARDS[1], "weight": 0.0}]
    fixed, _ = grpo(tmp_path / "fixed", max_steps=2, beta=0.1, rewards=one_hot, aggregation="normalize_then_sum")
    made = []
    monkeypatch.setattr(weighting, "build_weighting", lambda mode, w, names, params: made.append(
        FirstObjectiveOnly(len(names))) or made[-1])
    mixed, _ = grpo(tmp_path / "mixed", max_steps=2, beta=0.1, rewards=TWO_REWARDS)
    assert made[0].calls == 2
    for name in fixed:
        torch.testing.assert_close(mixed[name], fixed[name], atol=1e-6, rtol=0)
    assert [r["weights"] for r in metric_rows(tmp_path / "mixed")] == [{"length": 1.0, "vowels": 0.0}] * 2
    assert [r["weighting/calls"] for r in metric_rows(tmp_path / "mixed")] == [1.0, 2.0]  # the mode's own metrics
    assert load_checkpoint(tmp_path / "mixed").method_state == {"weighting": {"calls": 2}}


def test_pama_weights_stay_on_the_simplex(tmp_path):
    grpo(tmp_path / "run", max_steps=1, beta=0.0, rewards=TWO_REWARDS, weighting="pama")
    (row,) = metric_rows(tmp_path / "run")
    assert sum(row["weights"].values()) == pytest.approx(1.0) and min(row["weights"].values()) >= 0
    assert row["step_weights"] == {"length": 0.5, "vowels": 0.5}


def test_bad_weighting_params_are_refused_before_the_run_folder_is_written(tmp_path):
    with pytest.raises(InputError) as err:
        grpo(tmp_path / "run", max_steps=1, rewards=TWO_REWARDS, weighting="maxmin", weighting_params={"nope": 1})
    assert err.value.field == "weighting_params.nope"
    assert not (tmp_path / "run").exists()


def test_a_checker_reward_is_learned_within_a_few_steps(tmp_path):
    brief = [{"checker": "word_count", "max": 1}]  # responses of at most one word
    fields = {"max_steps": 10, "beta": 0.0, "rewards": brief, "num_generations": 4, "lora": False}
    grpo(tmp_path / "trained", learning_rate=1e-2, **fields)
    grpo(tmp_path / "frozen", learning_rate=1e-8, **fields)  # the same draws without learning: the control
    trained = [r["reward"] for r in metric_rows(tmp_path / "trained")]
    frozen = [r["reward"] for r in metric_rows(tmp_path / "frozen")]
    assert np.mean(trained[-4:]) >= 0.95 > 0.85 >= np.mean(frozen[-4:])
    assert np.mean(trained[-4:]) > np.mean(trained[:2])


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_file_constraints_are_attached_to_the_reward_set(tmp_path):
    from paretoalign.train.grpo_trainer import train_grpo

    rows = [{"prompt": PROMPTS[0], "constraints": [{"checker": "word_count", "max": 1}]},
            {"prompt": PROMPTS[1], "constraints": [{"checker": "word_count", "min": 1000}]}]
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    model, tok = fresh_policy()
    config = GRPOConfig(**{**GRPO, "output_dir": str(tmp_path / "run"), "prompts": str(prompts), "max_steps": 1,
                           "beta": 0.0, "rewards": [{"checker": "prompt_constraints"}]})
    train_grpo(config, model=model, tokenizer=tok)
    (row,) = metric_rows(tmp_path / "run")
    # no response of max_new_tokens=8 tokens reaches 1000 words: the second prompt's samples all score 0
    assert row["weights"] == {"prompt_constraints": 1.0} and row["reward"] <= 0.5


def test_a_prompt_without_constraints_is_refused_before_the_run_folder_is_written(tmp_path):
    from paretoalign.train.grpo_trainer import train_grpo

    prompts = write_prompts(tmp_path / "prompts.jsonl", [
        {"prompt": PROMPTS[0], "constraints": [{"checker": "word_count", "max": 1}]}, {"prompt": PROMPTS[1]}])
    model, tok = fresh_policy()
    config = GRPOConfig(**{**GRPO, "output_dir": str(tmp_path / "run"), "prompts": str(prompts), "max_steps": 1,
                           "rewards": [{"checker": "prompt_constraints"}]})
    with pytest.raises(InputError) as err:
        train_grpo(config, model=model, tokenizer=tok)
    assert "constraints" in err.value.reason and err.value.field.startswith("rewards[0]")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ resume
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    fields = {"max_steps": 4, "save_every": 2, "num_iterations": 2, "beta": 0.1, "rewards": TWO_REWARDS,
              "weighting": "maxmin", "weighting_params": {"normalize": True}}
    full, _ = grpo(tmp_path / "full", **fields)
    log = MetricsLog.log

    def crash_after_step_3(self, record):
        log(self, record)
        if record["step"] == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(MetricsLog, "log", crash_after_step_3)
    with pytest.raises(RuntimeError):
        grpo(tmp_path / "crash", **fields)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "crash").step == 2
    resumed, _ = grpo(tmp_path / "crash", **fields)
    assert_same_weights(full, resumed)
    assert any(not torch.equal(full[k], initial) for k, initial in weights_of(fresh_policy()[0]).items())
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "crash")
    state = load_checkpoint(tmp_path / "full").method_state["weighting"]
    assert state["mode"] == "maxmin" and state == load_checkpoint(tmp_path / "crash").method_state["weighting"]


# ------------------------------------------------------------------ the command
def test_grpo_command_trains_on_a_checker_reward(tmp_path, tiny_llama_dir):
    from paretoalign.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    out = tmp_path / "run"
    rc = main(["grpo", "--output-dir", str(out), f"model={tiny_llama_dir}", f"prompts={prompts}", "max_steps=1",
               "num_generations=2", "batch_size=2", "progress=false", "lora_r=4", "max_length=64",
               "max_new_tokens=4", "rewards=[{checker: word_count, max: 2}]"])
    assert rc == 0
    (row,) = metric_rows(out)
    assert row["step"] == 1 and row["weights"] == {"word_count": 1.0} and 0 <= row["reward"] <= 1
    assert (out / "policy" / "config.json").is_file()
    record = json.loads((out / "training.json").read_text())
    assert record["method"] == "grpo" and record["config"]["rewards"] == [{"checker": "word_count", "max": 2}]


def test_the_example_config_loads():
    from pathlib import Path

    from paretoalign.config_loading import load_config

    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / "grpo.yaml"
    config = load_config(GRPOConfig, path, ["max_steps=3"])
    assert config.max_steps == 3 and [r["name"] for r in config.rewards] == ["helpfulness", "harmlessness", "brief"]
    assert sum(r["weight"] for r in config.rewards) == pytest.approx(1.0)
