"""WARP with several rewards and a weighting mode: config checks, per-step weights in the metrics, and the
weighting state in each run's checkpoint."""

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.rewards.reward_model import RewardOutput
from paretoalign.train.checkpoint import load_checkpoint
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.warp_trainer import train_warp
from tests.train.conftest import ONLINE, PROMPTS, fresh_policy, metric_rows

WARP = {**ONLINE, "samples_per_prompt": 2, "eta_grid": [1.0], "max_steps": 2, "learning_rate": 1e-2}


class TwoRewards:
    """A reward set of two components: (characters / 10, 1 − characters / 10), weights 0.7 / 0.3."""

    objective_names = ["long", "short"]

    def __init__(self):
        self.weights = np.array([0.7, 0.3])

    def resolve_weights(self, weights):
        return None if weights is None else np.array([weights["long"], weights["short"]])

    def components_matrix(self, prompts, responses):
        n = np.array([len(r) / 10 for r in responses], dtype=np.float64)
        return np.stack([n, 1 - n], axis=1)

    def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
        m = self.components_matrix(prompts, responses)
        w = self.weights if weights is None else self.resolve_weights(weights)
        return RewardOutput(score=m @ w, objectives=m, objectives_raw=m, gating=np.tile(w, (len(m), 1)),
                            baseline=None, objective_names=list(self.objective_names))


@pytest.mark.parametrize(("fields", "field"), [
    ({"weighting": "pama"}, "weighting"),
    ({"weighting": "gradient"}, "weighting"),
    ({"weighting": "best"}, "weighting"),
    ({"weighting_params": [1]}, "weighting_params"),
])
def test_config_refuses_gradient_and_unknown_modes(fields, field):
    with pytest.raises(InputError) as e:
        WARPConfig(**{**WARP, **fields})
    assert e.value.field == field


def test_bad_weighting_params_fail_before_the_run_directory(tmp_path):
    model, tok = fresh_policy()
    config = WARPConfig(**{**WARP, "output_dir": str(tmp_path / "run"), "weighting": "maxmin",
                           "weighting_params": {"momentum": 0.9}})
    with pytest.raises(InputError) as e:
        train_warp(config, PROMPTS[:2], model=model, tokenizer=tok, reward_model=TwoRewards())
    assert e.value.field == "weighting_params.momentum"
    assert not (tmp_path / "run").exists()


def test_maxmin_weights_are_logged_and_checkpointed(tmp_path):
    model, tok = fresh_policy()
    config = WARPConfig(**{**WARP, "output_dir": str(tmp_path / "run"), "weighting": "maxmin"})
    train_warp(config, PROMPTS[:2], model=model, tokenizer=tok, reward_model=TwoRewards())
    for m in (0, 1):
        run_dir = tmp_path / "run" / "iter0" / f"run{m}"
        rows = metric_rows(run_dir)
        assert [r["step"] for r in rows] == [1, 2]
        for r in rows:
            means = [r["reward/long"], r["reward/short"]]
            worst = int(np.argmin(means))
            assert r["weights"] == {"long": float(worst == 0), "short": float(worst == 1)}
            assert r["train_reward"] == pytest.approx(means[worst])
            assert r["reward"] == pytest.approx(0.7 * means[0] + 0.3 * means[1])
        state = load_checkpoint(run_dir).method_state["weighting"]
        assert state["mode"] == "maxmin" and state["names"] == ["long", "short"]
        assert state["last_weights"] == [rows[-1]["weights"]["long"], rows[-1]["weights"]["short"]]


def test_hypervolume_meta_reward_is_logged(tmp_path):
    model, tok = fresh_policy()
    config = WARPConfig(**{**WARP, "output_dir": str(tmp_path / "run"), "weighting": "hypervolume"})
    train_warp(config, PROMPTS[:2], model=model, tokenizer=tok, reward_model=TwoRewards())
    rows = metric_rows(tmp_path / "run" / "iter0" / "run0")
    assert rows[0]["weighting/meta_reward"] == 1.0
    assert all({"weighting/hv_contribution", "weighting/front_size"} <= set(r) for r in rows)


def test_fixed_weights_with_a_reward_set_log_the_configured_weights(tmp_path):
    model, tok = fresh_policy()
    config = WARPConfig(**{**WARP, "output_dir": str(tmp_path / "run"), "max_steps": 1})
    train_warp(config, PROMPTS[:2], model=model, tokenizer=tok, reward_model=TwoRewards())
    row = metric_rows(tmp_path / "run" / "iter0" / "run0")[0]
    assert row["weights"] == {"long": 0.7, "short": 0.3}
    assert "train_reward" not in row
