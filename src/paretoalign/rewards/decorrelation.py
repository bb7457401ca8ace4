"""ArmoRM's verbosity de-correlation: r'_i = r_i - lambda_i r_v, as one matrix T (r' = T r).

lambda_i is the smallest grid value (default {0, 0.01, ..., 0.95}) for which Spearman(r'_i, r_v) <= threshold on a
reference set of responses (a signed bound, as in the paper: objectives already negatively correlated with verbosity
keep lambda = 0). The verbosity objective itself is left unchanged. The same T must be applied when training the
gating network and when scoring.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr


def lambda_grid(max_lambda: float, *, name: str = "max_lambda") -> np.ndarray:
    """The lambda grid {0, 0.01, ..., max_lambda} (the paper: max_lambda = 0.95)."""
    if not 0 <= max_lambda <= 100:
        raise ValueError(f"{name} must be in [0, 100], got {max_lambda}")
    return np.round(np.arange(0, max_lambda + 0.005, 0.01), 2)


DEFAULT_GRID = lambda_grid(0.95)


@dataclass
class DecorrelationFit:
    """The de-correlation transform and what it achieved on the reference set."""

    T: np.ndarray
    """(k, k) float32: identity, with T[i, v] = -lambda_i for i != v."""
    lambdas: np.ndarray
    """(k,) lambda_i (0 for the verbosity objective)."""
    spearman_before: np.ndarray
    """(k,) Spearman(r_i, r_v) on the reference set (NaN for the verbosity objective itself)."""
    spearman_after: np.ndarray
    """(k,) Spearman(r'_i, r_v) at the chosen lambda (NaN for the verbosity objective itself)."""
    satisfied: np.ndarray
    """(k,) bool: whether the chosen lambda meets the threshold (True for the verbosity objective)."""


def _spearman_with(target: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of `columns` (n, g) with `target` (n,); constant columns give 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant columns: scipy warns and returns NaN
        rho = spearmanr(np.column_stack([target, columns])).statistic
    # Two variables give a scalar, more give the full correlation matrix.
    rho = np.atleast_1d(rho) if np.ndim(rho) == 0 else rho[0, 1:]
    return np.nan_to_num(rho, nan=0.0)


def verbosity_transform(R_ref: np.ndarray, verbosity_index: int, *,
                        grid: Sequence[float] | np.ndarray = DEFAULT_GRID, threshold: float = 0.03,
                        objective_names: Sequence[str] | None = None) -> DecorrelationFit:
    """Fit T on reference rewards R_ref (n, k) (the raw head outputs r on the reference responses).

    For each objective i != v, lambda_i is the smallest value of `grid` with Spearman(r_i - lambda_i r_v, r_v) <=
    `threshold` (scipy.stats.spearmanr, average ranks for ties; a constant r'_i counts as uncorrelated). If no grid
    value satisfies it, lambda_i is the grid maximum, `satisfied[i]` is False and a warning names the objective.
    """
    R = np.asarray(R_ref, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 3:
        raise ValueError(f"R_ref must be (n, k) with n >= 3 reference rows, got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError("R_ref contains NaN or infinite values")
    n, k = R.shape
    v = int(verbosity_index)
    if not 0 <= v < k:
        raise ValueError(f"verbosity_index {verbosity_index} is out of range for {k} objectives")
    names = list(objective_names) if objective_names is not None else [f"objective {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} objective names for {k} columns")
    lam_grid = np.sort(np.asarray(grid, dtype=np.float64).ravel())
    if lam_grid.size == 0:
        raise ValueError("grid must not be empty")
    r_v = R[:, v]
    if np.all(r_v == r_v[0]):
        raise ValueError(f"the verbosity objective {names[v]!r} is constant on the reference set")

    T = np.eye(k)
    lambdas = np.zeros(k)
    before = np.full(k, np.nan)
    after = np.full(k, np.nan)
    satisfied = np.ones(k, dtype=bool)
    for i in range(k):
        if i == v:
            continue
        candidates = R[:, i, None] - lam_grid[None, :] * r_v[:, None]          # (n, g)
        rho = _spearman_with(r_v, candidates)
        before[i] = _spearman_with(r_v, R[:, i, None])[0]
        ok = np.flatnonzero(rho <= threshold)
        j = int(ok[0]) if ok.size else lam_grid.size - 1
        if not ok.size:
            satisfied[i] = False
            warnings.warn(f"verbosity de-correlation: objective {names[i]!r} still has Spearman {rho[j]:.3f} > "
                          f"{threshold} with {names[v]!r} at the largest lambda {lam_grid[j]}", stacklevel=2)
        lambdas[i] = lam_grid[j]
        after[i] = rho[j]
        T[i, v] = -lam_grid[j]
    return DecorrelationFit(T=T.astype(np.float32), lambdas=lambdas, spearman_before=before,
                            spearman_after=after, satisfied=satisfied)


def apply_transform(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """r' = T r for every row: R (n, k) -> R @ T.T."""
    return np.asarray(R) @ np.asarray(T).T
