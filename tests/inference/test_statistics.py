"""Best-of-N statistics: the KL bound, exact Best-of-N on discrete toys, Monte-Carlo KL and empirical win rates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.inference.statistics import (
    bon_kl_bound,
    bon_win_rate,
    empirical_win_rate,
    exact_bon_distribution,
    exact_kl,
    exact_win_rate,
    monte_carlo_kl,
)


def _uniform_distinct(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(k, 1.0 / k), np.arange(k, dtype=float)


def _brute_force_bon(p: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """Enumerate every N-tuple of outcomes; the pick is uniform among the tuple's positions of maximal reward."""
    out = np.zeros_like(p)
    for tup in itertools.product(range(p.size), repeat=n):
        prob = math.prod(p[i] for i in tup)
        best = max(r[i] for i in tup)
        winners = [i for i in tup if r[i] == best]
        for i in winners:
            out[i] += prob / len(winners)
    return out


@pytest.mark.parametrize(("n", "expected"), [(1, 0.0), (4, 0.636), (16, 1.835)])
def test_bon_kl_bound_values(n, expected):
    assert bon_kl_bound(n) == pytest.approx(expected, abs=1e-3)


def test_bon_win_rate_value():
    assert bon_win_rate(4) == pytest.approx(0.8)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bon_kl_bound_rejects_bad_n(n):
    with pytest.raises(InputError) as err:
        bon_kl_bound(n)
    assert err.value.field == "n"


def test_exact_bon_distribution_matches_brute_force_with_ties():
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    r = np.array([1.0, 2.0, 2.0, 0.0, 1.0])
    np.testing.assert_allclose(exact_bon_distribution(p, r, 3), _brute_force_bon(p, r, 3), atol=1e-12)


def test_exact_bon_distribution_splits_a_tied_level_by_reference_mass():
    # Level {0, 1} (reward 1) has F_< = 0.5, F_≤ = 1: mass 1 − 0.25 = 0.75, split 0.1 : 0.4.
    picked = exact_bon_distribution([0.1, 0.4, 0.5], [1.0, 1.0, 0.0], 2)
    np.testing.assert_allclose(picked, [0.15, 0.6, 0.25])


def test_worst_of_n_is_best_of_n_on_negated_rewards():
    p = np.array([0.3, 0.2, 0.4, 0.1])
    r = np.array([0.5, -1.0, 0.5, 2.0])
    np.testing.assert_allclose(exact_bon_distribution(p, r, 3, worst=True), exact_bon_distribution(p, -r, 3))


def test_exact_bon_distribution_rejects_unnormalised_probs():
    with pytest.raises(InputError) as err:
        exact_bon_distribution([0.5, 0.6], [0.0, 1.0], 2)
    assert err.value.field == "ref_probs"


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_exact_bon_kl_is_below_the_bound_on_random_toys(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        k = int(rng.integers(2, 30))
        p = rng.dirichlet(np.full(k, 0.5))
        r = rng.permutation(k).astype(float)
        assert exact_kl(exact_bon_distribution(p, r, n), p) <= bon_kl_bound(n) + 1e-12


@pytest.mark.parametrize("n", [4, 16])
def test_exact_bon_kl_approaches_the_bound_as_the_support_grows(n):
    gaps = []
    for k in (10, 100, 1000):
        p, r = _uniform_distinct(k)
        gaps.append(bon_kl_bound(n) - exact_kl(exact_bon_distribution(p, r, n), p))
    assert gaps[0] > gaps[1] > gaps[2] > 0
    assert gaps[2] < 1e-4


def test_exact_kl_of_a_known_pair():
    assert exact_kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


def test_exact_kl_is_infinite_where_q_misses_mass():
    assert exact_kl([0.5, 0.5], [1.0, 0.0]) == math.inf


def test_exact_bon_win_rate_approaches_n_over_n_plus_1_with_distinct_rewards():
    p, r = _uniform_distinct(2000)
    win = exact_win_rate(exact_bon_distribution(p, r, 8), p, r)
    assert win == pytest.approx(bon_win_rate(8), abs=1e-6)


def test_exact_best_of_2_win_rate_falls_short_by_the_discreteness_term():
    # Σ (F_≤² − F_<²)(F_< + F_≤)/2 = 2/3 − Σ p³/6 for distinct rewards.
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(6))
    r = rng.permutation(6).astype(float)
    win = exact_win_rate(exact_bon_distribution(p, r, 2), p, r)
    assert win == pytest.approx(2 / 3 - np.sum(p**3) / 6, abs=1e-12)


def test_monte_carlo_kl_matches_exact_kl_within_four_standard_errors():
    rng = np.random.default_rng(0)
    policy = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    reference = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    samples = rng.choice(policy.size, size=20_000, p=policy)
    est = monte_carlo_kl(np.log(policy[samples]), np.log(reference[samples]))
    assert est.n == 20_000
    assert 0 < est.stderr < 0.01
    assert abs(est.mean - exact_kl(policy, reference)) < 4 * est.stderr


def test_monte_carlo_kl_sums_ragged_per_token_log_probs():
    rng = np.random.default_rng(1)
    policy_tokens = [rng.normal(size=k) for k in (3, 1, 5, 2)]
    reference_tokens = [rng.normal(size=k) for k in (3, 1, 5, 2)]
    ragged = monte_carlo_kl(policy_tokens, reference_tokens)
    summed = monte_carlo_kl(np.array([t.sum() for t in policy_tokens]), np.array([t.sum() for t in reference_tokens]))
    assert ragged == summed


def test_monte_carlo_kl_rejects_token_count_mismatch():
    with pytest.raises(InputError) as err:
        monte_carlo_kl([np.zeros(3), np.zeros(2)], [np.zeros(3), np.zeros(4)])
    assert err.value.field == "logp_reference"


def test_empirical_win_rate_counts_ties_half():
    # Prompt 0: pick 2 vs refs 1, 2, 3 -> 1 win, 1 tie. Prompt 1: picks 5, 0 vs ref 1 -> 1 win.
    result = empirical_win_rate([[2.0], [5.0, 0.0]], [[1.0, 2.0, 3.0], [1.0]])
    assert (result.wins, result.ties, result.n_comparisons, result.n_prompts) == (2, 1, 5, 2)
    assert result.mean == pytest.approx(2.5 / 5)


def test_empirical_win_rate_stderr_reflects_prompt_clustering():
    # Half the prompts win all 100 comparisons, half lose all: 50 independent units, not 5000.
    picks = [np.full(10, 1.0 if i % 2 == 0 else -1.0) for i in range(50)]
    refs = [np.zeros(10) for _ in range(50)]
    result = empirical_win_rate(picks, refs, n_boot=4000, seed=3)
    assert result.mean == pytest.approx(0.5)
    assert result.stderr == pytest.approx(math.sqrt(0.25 / 50), rel=0.1)


def test_empirical_win_rate_is_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    picks = [rng.normal(size=4) for _ in range(20)]
    refs = [rng.normal(size=6) for _ in range(20)]
    assert empirical_win_rate(picks, refs, seed=11) == empirical_win_rate(picks, refs, seed=11)


def test_empirical_win_rate_rejects_a_prompt_without_references():
    with pytest.raises(InputError) as err:
        empirical_win_rate([[1.0], [2.0]], [[0.0], []])
    assert err.value.field == "reference_rewards[1]"
