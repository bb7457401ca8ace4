"""Pairwise preference accuracy and its percentile-bootstrap interval (pure numpy).

A reward model "wins" a pair when it scores the chosen reply above the rejected one. Ties count half, as in
RewardBench-style reporting, so a constant scorer gets exactly 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pairwise_outcomes(chosen_scores, rejected_scores) -> np.ndarray:
    """Per pair: 1.0 when chosen > rejected (a win), 0.0 when chosen < rejected, 0.5 on an exact tie.

    Raises ValueError when the shapes differ or a score is NaN (a broken scorer should not pass as ties).
    """
    c = np.asarray(chosen_scores, dtype=np.float64).reshape(-1)
    r = np.asarray(rejected_scores, dtype=np.float64).reshape(-1)
    if c.shape != r.shape:
        raise ValueError(f"{c.size} chosen scores but {r.size} rejected scores")
    if np.isnan(c).any() or np.isnan(r).any():
        raise ValueError("NaN score: pairwise outcomes need finite or infinite scores, not NaN")
    return np.where(c > r, 1.0, np.where(c < r, 0.0, 0.5))


def accuracy(outcomes) -> float:
    """The mean outcome (ties count half); NaN for no pairs."""
    o = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    return float(o.mean()) if o.size else float("nan")


def bootstrap_means(outcomes, *, n_boot: int = 1000, rng: np.random.Generator | None = None,
                    seed: int = 0) -> np.ndarray:
    """`n_boot` bootstrap replicates of the mean of `outcomes` (resampling n of n with replacement).

    Vectorised without an (n_boot, n) index matrix: resampling n values with replacement is the same as drawing
    multinomial counts over the distinct values (pairwise outcomes have at most three), so memory and time are
    O(n_boot * distinct values) whatever n is. Uses `rng` when given, else a generator seeded with `seed`.
    """
    o = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if o.size == 0:
        return np.full(n_boot, np.nan)
    rng = rng if rng is not None else np.random.default_rng(seed)
    values, counts = np.unique(o, return_counts=True)
    draws = rng.multinomial(o.size, counts / o.size, size=n_boot)  # (n_boot, distinct values)
    return draws @ values / o.size


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap replicates; (NaN, NaN) if any replicate is NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.size == 0 or np.isnan(reps).any():
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [tail, 1.0 - tail])
    return float(lo), float(hi)


def bootstrap_ci(outcomes, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of `accuracy(outcomes)`; deterministic for a given seed."""
    return percentile_interval(bootstrap_means(outcomes, n_boot=n_boot, seed=seed), level)


def length_scores(responses: Sequence[str]) -> np.ndarray:
    """The length heuristic as a scorer: each reply's length in characters (float64).

    Used as a pairwise baseline, it prefers the longer reply (equal lengths tie). Characters, not tokens or
    words, so it needs no tokenizer and is the same for every backbone; the prompt is ignored because both
    replies of a pair share it.
    """
    return np.array([len(r) for r in responses], dtype=np.float64)
