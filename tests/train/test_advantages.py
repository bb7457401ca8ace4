"""Group-relative advantages: baselines, std scaling, the two aggregation orders."""

import numpy as np
import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.train.advantages import aggregate_advantages, group_normalize, per_objective_advantages
from paretoalign.train.warp_trainer import leave_one_out_advantages


def test_group_mean_advantages_sum_to_zero_per_group():
    rng = np.random.default_rng(0)
    values = rng.normal(size=12)
    for scale in (True, False):
        adv = group_normalize(values, 4, scale=scale)
        np.testing.assert_allclose(adv.reshape(3, 4).sum(axis=1), 0.0, atol=1e-12)
    matrix = rng.normal(size=(12, 3))
    adv = per_objective_advantages(matrix, 3, scale=True, baseline="mean")
    np.testing.assert_allclose(adv.reshape(4, 3, 3).sum(axis=1), 0.0, atol=1e-12)


def test_hand_values_with_and_without_scale():
    values = np.array([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])
    # group 1: mean 2, population std sqrt(2/3); group 2 constant -> zeros
    np.testing.assert_allclose(group_normalize(values, 3, scale=False), [-1, 0, 1, 0, 0, 0])
    std = np.sqrt(2 / 3)
    np.testing.assert_allclose(group_normalize(values, 3), [-1 / (std + 1e-4), 0, 1 / (std + 1e-4), 0, 0, 0])


def test_leave_one_out_matches_warp():
    rewards = torch.tensor([[0.5, -1.0, 2.0, 0.0], [3.0, 3.0, 1.0, -2.0]], dtype=torch.float64)
    ours = group_normalize(rewards.reshape(-1).numpy(), 4, scale=False, baseline="leave_one_out")
    np.testing.assert_allclose(ours, leave_one_out_advantages(rewards).reshape(-1).numpy(), atol=1e-12)
    # hand value: 0.5 - mean(-1, 2, 0) = 0.5 - 1/3
    assert ours[0] == pytest.approx(0.5 - 1 / 3)


def test_aggregation_orders_differ_on_a_hand_example():
    # one group of 2; objective 0 spreads by 2, objective 1 by 20; weights 1/2 each
    rewards = np.array([[2.0, 0.0], [0.0, 20.0]])
    w = np.array([0.5, 0.5])
    # sum then normalise: scalar rewards 1 and 10 -> mean 5.5, std 4.5 -> -1, +1 (up to eps)
    s = aggregate_advantages(rewards, w, 2, aggregation="sum_then_normalize")
    np.testing.assert_allclose(s, [-4.5 / (4.5 + 1e-4), 4.5 / (4.5 + 1e-4)])
    # normalise then sum: objective 0 -> (+1, -1), objective 1 -> (-1, +1), weighted sum -> (0, 0)
    n = aggregate_advantages(rewards, w, 2, aggregation="normalize_then_sum")
    np.testing.assert_allclose(n, [0.5 * (1 / (1 + 1e-4) - 10 / (10 + 1e-4)),
                                   0.5 * (-1 / (1 + 1e-4) + 10 / (10 + 1e-4))], atol=1e-12)
    assert abs(n[0]) < 1e-4 and s[0] < -0.99
    # without std scaling both orders are linear: they agree
    np.testing.assert_allclose(aggregate_advantages(rewards, w, 2, aggregation="sum_then_normalize", scale=False),
                               aggregate_advantages(rewards, w, 2, aggregation="normalize_then_sum", scale=False))
    np.testing.assert_allclose(aggregate_advantages(rewards, w, 2, aggregation="sum_then_normalize", scale=False),
                               [-4.5, 4.5])


def test_zero_variance_group_gives_zeros_not_nan():
    values = np.array([0.3, 0.3, 0.3, 1.0, 2.0, 3.0])
    for baseline in ("mean", "leave_one_out"):
        adv = group_normalize(values, 3, baseline=baseline)
        assert np.all(np.isfinite(adv))
        np.testing.assert_array_equal(adv[:3], 0.0)
    # a value that does not survive subtracting its mean exactly is still zero
    np.testing.assert_array_equal(group_normalize(np.full(4, 0.1), 4), 0.0)


def test_bad_inputs():
    with pytest.raises(InputError) as e:
        group_normalize(np.zeros(5), 2)
    assert e.value.field == "num_generations"
    with pytest.raises(InputError) as e:
        group_normalize(np.zeros(4), 2, baseline="median")
    assert e.value.field == "baseline"
    with pytest.raises(InputError) as e:
        group_normalize(np.zeros(3), 1, baseline="leave_one_out")
    assert e.value.field == "num_generations"
    with pytest.raises(InputError) as e:
        aggregate_advantages(np.zeros((4, 2)), np.ones(2) / 2, 2, aggregation="mean")
    assert e.value.field == "aggregation"
    with pytest.raises(InputError) as e:
        aggregate_advantages(np.zeros((4, 2)), np.ones(3) / 3, 2, aggregation="sum_then_normalize")
    assert e.value.field == "weights"
