"""Best-of-N statistics: the KL bound and win rate, exact Best-of-N on discrete toys, and sample estimates.

Formulas (ALGORITHMS.md §3, Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy"):
KL(π_BoN ‖ π_ref) ≤ log N − (N−1)/N, with equality only in the continuous (no ties, no atoms) limit, and the win rate
of a Best-of-N pick against one fresh π_ref sample is N/(N+1) in that limit (at most that with ties counted half).
Everything here is pure numpy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from paretoalign.errors import InputError

_PROB_TOLERANCE = 1e-6


@dataclass(frozen=True)
class KLEstimate:
    """A Monte-Carlo KL estimate: the sample mean, its standard error (NaN for one sample) and the sample count."""

    mean: float
    stderr: float
    n: int


@dataclass(frozen=True)
class WinRate:
    """A win rate over (pick, reference) comparisons, ties counting half, with a prompt-level bootstrap error."""

    mean: float
    stderr: float
    n_prompts: int
    n_comparisons: int
    wins: int
    ties: int
    method: str = "prompt-bootstrap"


def check_n(n: int, field: str = "n") -> int:
    """N as an int >= 1 (InputError otherwise)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise InputError(f"N must be an integer >= 1, got {n!r}", field=field)
    return int(n)


def _distribution(p, field: str) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"expected a non-empty 1-D probability vector, got shape {arr.shape}", field=field)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError("probabilities must be finite and non-negative", field=field)
    total = float(arr.sum())
    if abs(total - 1.0) > _PROB_TOLERANCE:
        raise InputError(f"probabilities must sum to 1, got {total!r}", field=field)
    return arr / total


def _finite_vector(values, field: str, size: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-D array, got shape {arr.shape}", field=field)
    if size is not None and arr.size != size:
        raise InputError(f"expected {size} values, got {arr.size}", field=field)
    if not np.all(np.isfinite(arr)):
        raise InputError("values must be finite (no NaN or inf)", field=field)
    return arr


def bon_kl_bound(n: int) -> float:
    """The Best-of-N KL bound log N − (N−1)/N in nats."""
    n = check_n(n)
    return math.log(n) - (n - 1) / n


def bon_win_rate(n: int) -> float:
    """The win rate N/(N+1) of a Best-of-N pick against one reference sample (continuous rewards)."""
    n = check_n(n)
    return n / (n + 1)


def exact_bon_distribution(ref_probs, rewards, n: int, *, worst: bool = False) -> np.ndarray:
    """The exact distribution of the Best-of-N (or, with `worst`, Worst-of-N) pick over a finite outcome set.

    Ties between equal rewards are broken uniformly at random, so a reward level's pick mass F_≤^N − F_<^N
    (Worst-of-N: (1 − F_<)^N − (1 − F_≤)^N) is split among its outcomes in proportion to their reference mass.
    """
    n = check_n(n)
    p = _distribution(ref_probs, "ref_probs")
    r = _finite_vector(rewards, "rewards", size=p.size)
    levels, level_of = np.unique(r, return_inverse=True)
    level_mass = np.bincount(level_of, weights=p, minlength=levels.size)
    at_most = np.minimum(np.cumsum(level_mass), 1.0)
    below = np.maximum(at_most - level_mass, 0.0)
    if worst:
        level_pick = (1.0 - below) ** n - (1.0 - at_most) ** n
    else:
        level_pick = at_most**n - below**n
    share = np.divide(p, level_mass[level_of], out=np.zeros_like(p), where=level_mass[level_of] > 0)
    return share * level_pick[level_of]


def exact_kl(p, q) -> float:
    """KL(p ‖ q) in nats for two distributions over the same finite set; inf where q misses mass of p."""
    p = _distribution(p, "p")
    q = _distribution(q, "q")
    if p.shape != q.shape:
        raise InputError(f"p has {p.size} outcomes but q has {q.size}", field="q")
    support = p > 0
    if np.any(q[support] == 0):
        return math.inf
    return float(np.sum(p[support] * (np.log(p[support]) - np.log(q[support]))))


def exact_win_rate(policy_probs, ref_probs, rewards) -> float:
    """P(R(y) > R(z)) + ½ P(R(y) = R(z)) for y ~ policy and z ~ reference over a finite outcome set."""
    q = _distribution(policy_probs, "policy_probs")
    p = _distribution(ref_probs, "ref_probs")
    if q.shape != p.shape:
        raise InputError(f"policy_probs has {q.size} outcomes but ref_probs has {p.size}", field="ref_probs")
    r = _finite_vector(rewards, "rewards", size=p.size)
    levels, level_of = np.unique(r, return_inverse=True)
    level_mass = np.bincount(level_of, weights=p, minlength=levels.size)
    below = np.cumsum(level_mass) - level_mass
    calibrated = below + 0.5 * level_mass
    return float(np.sum(q * calibrated[level_of]))


def _summed_logps(values, field: str) -> tuple[np.ndarray, list[int] | None]:
    """Per-sample summed log-probs and, for per-token input, each sample's token count."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InputError(f"expected a 1-D array of summed log-probs or a list of per-token arrays, got shape "
                             f"{values.shape}", field=field)
        return _finite_vector(values, field), None
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise InputError(f"expected an array or a list, got {type(values).__name__}", field=field)
    ragged = [np.ndim(v) >= 1 for v in values]
    if not any(ragged):
        return _finite_vector(list(values), field), None
    if not all(ragged):
        raise InputError("mixes per-token arrays with scalar log-probs", field=field)
    sums, lengths = [], []
    for i, tokens in enumerate(values):
        arr = np.asarray(tokens, dtype=np.float64)
        if arr.ndim != 1:
            raise InputError(f"sample {i}: per-token log-probs must be 1-D, got shape {arr.shape}", field=field)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"sample {i}: log-probs must be finite", field=field)
        sums.append(float(arr.sum()))
        lengths.append(arr.size)
    return np.asarray(sums, dtype=np.float64), lengths


def monte_carlo_kl(logp_policy, logp_reference) -> KLEstimate:
    """Estimate KL(π ‖ π_ref) from samples of π as the mean of log π(y) − log π_ref(y) per sampled sequence.

    Each input is either per-sequence summed log-probs (1-D) or a list of per-token log-prob arrays (summed here).
    """
    policy, policy_lengths = _summed_logps(logp_policy, "logp_policy")
    reference, reference_lengths = _summed_logps(logp_reference, "logp_reference")
    if policy.size != reference.size:
        raise InputError(f"{policy.size} policy samples but {reference.size} reference samples",
                         field="logp_reference")
    if policy.size == 0:
        raise InputError("no samples", field="logp_policy")
    if policy_lengths is not None and reference_lengths is not None:
        for i, (a, b) in enumerate(zip(policy_lengths, reference_lengths, strict=True)):
            if a != b:
                raise InputError(f"sample {i}: {a} policy tokens but {b} reference tokens", field="logp_reference")
    diff = policy - reference
    n = int(diff.size)
    stderr = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return KLEstimate(mean=float(diff.mean()), stderr=stderr, n=n)


def empirical_win_rate(pick_rewards, reference_rewards, *, n_boot: int = 1000, seed: int = 0) -> WinRate:
    """The fraction of (pick, reference) reward comparisons the pick wins, ties counting half, pooled over prompts.

    `pick_rewards[i]` and `reference_rewards[i]` hold prompt i's picks and fresh reference samples; every pick is
    compared with every reference sample of its own prompt. Comparisons within a prompt are correlated, so the
    standard error is that of a prompt-level (cluster) bootstrap: `n_boot` resamples of the prompts with replacement,
    generator seeded with `seed`; NaN with fewer than two prompts.
    """
    if len(pick_rewards) != len(reference_rewards):
        raise InputError(f"{len(pick_rewards)} prompts of picks but {len(reference_rewards)} of references",
                         field="reference_rewards")
    if len(pick_rewards) == 0:
        raise InputError("no prompts", field="pick_rewards")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 2:
        raise InputError(f"n_boot must be an integer >= 2, got {n_boot!r}", field="n_boot")
    n_prompts = len(pick_rewards)
    scores = np.empty(n_prompts)
    counts = np.empty(n_prompts)
    wins = ties = 0
    for i, (picks, refs) in enumerate(zip(pick_rewards, reference_rewards, strict=True)):
        a = _finite_vector(np.atleast_1d(np.asarray(picks, dtype=np.float64)), f"pick_rewards[{i}]")
        b = _finite_vector(np.atleast_1d(np.asarray(refs, dtype=np.float64)), f"reference_rewards[{i}]")
        if a.size == 0 or b.size == 0:
            field = f"pick_rewards[{i}]" if a.size == 0 else f"reference_rewards[{i}]"
            raise InputError("every prompt needs at least one value", field=field)
        b = np.sort(b)
        below = np.searchsorted(b, a, side="left")
        equal = np.searchsorted(b, a, side="right") - below
        prompt_wins, prompt_ties = int(below.sum()), int(equal.sum())
        wins += prompt_wins
        ties += prompt_ties
        scores[i] = prompt_wins + 0.5 * prompt_ties
        counts[i] = a.size * b.size
    mean = float(scores.sum() / counts.sum())
    stderr = _cluster_bootstrap_stderr(scores, counts, n_boot, seed) if n_prompts > 1 else math.nan
    return WinRate(mean=mean, stderr=stderr, n_prompts=n_prompts, n_comparisons=int(counts.sum()), wins=wins,
                   ties=ties)


def _cluster_bootstrap_stderr(scores: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> float:
    """Standard deviation of the pooled ratio sum(scores)/sum(counts) over prompt resamples."""
    rng = np.random.default_rng(seed)
    n = scores.size
    uniform = np.full(n, 1.0 / n)
    chunk = max(1, 4_000_000 // n)  # bounds the (replicates, prompts) draw matrix to a few million entries
    replicates = []
    for start in range(0, n_boot, chunk):
        draws = rng.multinomial(n, uniform, size=min(chunk, n_boot - start))
        replicates.append((draws @ scores) / (draws @ counts))
    return float(np.std(np.concatenate(replicates), ddof=1))
