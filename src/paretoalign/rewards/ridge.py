"""Stage-1 ridge heads of ArmoRM: one linear regression per rated objective on frozen features.

w_i = argmin_w ||H w - r_i||^2 + alpha_i ||w||^2 over the rows where objective i is rated (NaN = not rated), without
an intercept (as the original). alpha_i is chosen on a seeded validation split over a log grid, then the head is
refitted on every rated row with that alpha. One SVD of the training rows serves the whole alpha grid:
w(alpha) = V diag(s / (s^2 + alpha)) U^T r.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_ROWS = 5
"""Fewest rated rows an objective needs (at least one validation row and four training rows)."""
DEFAULT_ALPHAS = np.logspace(-4, 4, 17)
"""The default alpha grid, 1e-4 ... 1e4."""


@dataclass
class RidgeFit:
    """Ridge heads for k objectives."""

    W: np.ndarray
    """(k, d) float32: r_i(x, y) = W[i] . h(x, y)."""
    alphas: np.ndarray
    """(k,) the alpha chosen for each objective."""
    val_mse: np.ndarray
    """(k,) validation mean squared error at the chosen alpha (fitted on the training split)."""
    val_r2: np.ndarray
    """(k,) validation R^2 = 1 - MSE / Var(r_val) at the chosen alpha (NaN when the validation ratings are constant)."""
    n_rows: np.ndarray
    """(k,) rated rows of each objective (training + validation); the final head is fitted on all of them."""


def _svd(H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD without the numerically zero singular values (so alpha = 0 gives the pseudo-inverse solution)."""
    U, s, Vt = np.linalg.svd(H, full_matrices=False)
    keep = s > (s[0] * max(H.shape) * np.finfo(np.float64).eps if s.size else 0.0)
    return U[:, keep], s[keep], Vt[keep]


def _ridge_from_svd(svd: tuple[np.ndarray, np.ndarray, np.ndarray], y: np.ndarray,
                    alphas: np.ndarray) -> np.ndarray:
    """Ridge coefficients for every alpha at once: (n_alphas, d)."""
    U, s, Vt = svd
    uty = U.T @ y                                          # (r,)
    shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (n_alphas, r)
    return (shrink * uty[None, :]) @ Vt                    # (n_alphas, d)


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_ridge_heads(H: np.ndarray, R: np.ndarray, *, alphas: Sequence[float] | np.ndarray = DEFAULT_ALPHAS,
                    val_fraction: float = 0.2, seed: int = 0,
                    objective_names: Sequence[str] | None = None) -> RidgeFit:
    """Fit one ridge head per column of `R` on the features `H`.

    H: (n, d) features h(x, y). R: (n, k) ratings, NaN where a row is not rated for that objective. Each objective
    uses only its rated rows: they are split (seeded permutation, `val_fraction` of them, at least one row, held out),
    alpha is the grid value with the lowest validation MSE (ties: the smaller alpha), and the head is refitted on all
    rated rows. Computation is float64; objectives with the same rated rows share their SVDs.

    Raises ValueError when an objective has fewer than 5 rated rows (naming it, by `objective_names` if given), or on
    shape / value problems.
    """
    H = np.asarray(H, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    if H.ndim != 2 or R.ndim != 2 or H.shape[0] != R.shape[0]:
        raise ValueError(f"H must be (n, d) and R (n, k) with the same n; got {H.shape} and {R.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError("H contains NaN or infinite values")
    if np.any(np.isinf(R)):
        raise ValueError("R contains infinite values (use NaN for 'not rated')")
    grid = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
    if grid.size == 0 or np.any(grid < 0):
        raise ValueError("alphas must be a non-empty grid of non-negative values")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    k = R.shape[1]
    names = list(objective_names) if objective_names is not None else [f"objective {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} objective names for {k} rating columns")

    W = np.zeros((k, H.shape[1]), dtype=np.float64)
    chosen = np.zeros(k)
    val_mse = np.zeros(k)
    val_r2 = np.zeros(k)
    n_rows = np.zeros(k, dtype=np.int64)
    # Objectives rated on the same rows share the split and both SVDs.
    cache: dict[bytes, tuple] = {}
    for i in range(k):
        mask = ~np.isnan(R[:, i])
        n = int(mask.sum())
        n_rows[i] = n
        if n < MIN_ROWS:
            raise ValueError(f"objective {names[i]!r} has {n} rated rows; a ridge head needs at least {MIN_ROWS}")
        key = mask.tobytes()
        if key not in cache:
            rows = np.flatnonzero(mask)
            train, val = _split(n, val_fraction, seed)
            Hm = H[rows]
            cache[key] = (rows, train, val, _svd(Hm[train]), Hm[val], _svd(Hm))
        rows, train, val, svd_train, H_val, svd_all = cache[key]
        y = R[rows, i]
        coefs = _ridge_from_svd(svd_train, y[train], grid)           # (n_alphas, d)
        errors = ((H_val @ coefs.T) - y[val, None]) ** 2             # (n_val, n_alphas)
        mse = errors.mean(axis=0)
        best = int(np.argmin(mse))
        chosen[i] = grid[best]
        val_mse[i] = mse[best]
        var = float(np.var(y[val]))
        val_r2[i] = 1.0 - mse[best] / var if var > 0 else np.nan
        W[i] = _ridge_from_svd(svd_all, y, grid[best:best + 1])[0]
    return RidgeFit(W=W.astype(np.float32), alphas=chosen, val_mse=val_mse, val_r2=val_r2, n_rows=n_rows)
