"""Pairwise outcomes, accuracy, the bootstrap interval and the length heuristic."""

from __future__ import annotations

import numpy as np
import pytest

from paretoalign.eval.pairwise import (
    accuracy,
    bootstrap_ci,
    bootstrap_means,
    length_scores,
    pairwise_outcomes,
    percentile_interval,
)


def test_outcomes_win_loss_tie():
    out = pairwise_outcomes([2.0, 1.0, 3.0, -np.inf], [1.0, 2.0, 3.0, -np.inf])
    assert out.tolist() == [1.0, 0.0, 0.5, 0.5]
    assert out.dtype == np.float64


def test_outcomes_reject_bad_input():
    with pytest.raises(ValueError, match="chosen scores"):
        pairwise_outcomes([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        pairwise_outcomes([np.nan], [1.0])


def test_accuracy_counts_ties_half():
    assert accuracy(pairwise_outcomes([1, 1, 0, 5], [0, 2, 0, 1])) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert accuracy(pairwise_outcomes(np.zeros(7), np.zeros(7))) == 0.5  # a constant scorer
    assert np.isnan(accuracy([]))


def test_bootstrap_ci_contains_point_estimate_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 500, 5000):
        outcomes = (rng.random(n) < 0.7).astype(float)
        lo, hi = bootstrap_ci(outcomes, n_boot=2000, seed=0)
        assert lo <= accuracy(outcomes) <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # ~ 2 * 1.96 * sqrt(p (1 - p) / n) for the normal approximation
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 5000), rel=0.15)


def test_bootstrap_is_deterministic_by_seed():
    outcomes = np.array([1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.5, 1.0, 1.0])
    assert bootstrap_ci(outcomes, seed=3) == bootstrap_ci(outcomes, seed=3)
    assert bootstrap_ci(outcomes, seed=3) != bootstrap_ci(outcomes, seed=4)


def test_bootstrap_matches_index_resampling_in_distribution():
    """The multinomial shortcut has the distribution of resampling indices with replacement."""
    outcomes = np.array([1.0] * 30 + [0.0] * 15 + [0.5] * 5)
    fast = bootstrap_means(outcomes, n_boot=20000, seed=0)
    rng = np.random.default_rng(1)
    slow = outcomes[rng.integers(0, outcomes.size, size=(20000, outcomes.size))].mean(axis=1)
    assert fast.mean() == pytest.approx(slow.mean(), abs=2e-3)
    assert fast.std() == pytest.approx(slow.std(), rel=0.05)


def test_bootstrap_edge_cases():
    assert bootstrap_ci(np.ones(20)) == (1.0, 1.0)
    assert bootstrap_ci([0.0]) == (0.0, 0.0)
    lo, hi = bootstrap_ci([])
    assert np.isnan(lo) and np.isnan(hi)
    lo, hi = bootstrap_ci(np.r_[np.ones(60), np.zeros(40)], level=0.5)
    lo95, hi95 = bootstrap_ci(np.r_[np.ones(60), np.zeros(40)], level=0.95)
    assert lo95 < lo <= 0.6 <= hi < hi95
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError):
        percentile_interval(np.ones(3), level=1.0)


def test_length_heuristic_prefers_the_longer_reply():
    chosen = ["a much longer answer", "short", "same"]
    rejected = ["short", "a much longer answer", "SAME"]
    scores_c, scores_r = length_scores(chosen), length_scores(rejected)
    assert scores_c.tolist() == [20.0, 5.0, 4.0]
    assert pairwise_outcomes(scores_c, scores_r).tolist() == [1.0, 0.0, 0.5]
    assert length_scores([]).shape == (0,)
