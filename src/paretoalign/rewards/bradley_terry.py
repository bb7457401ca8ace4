"""Linear Bradley-Terry heads on embedding differences.

P(y_w > y_l | x) = sigma(w . (h(x, y_w) - h(x, y_l)) - m), m an optional per-pair margin (0 when absent). The head
is fitted by L2-regularised logistic regression without an intercept, minimising

    L(w) = (1/n) sum_j -log sigma(w . D_j - m_j)  +  ||w||^2 / (2 C n)

i.e. sklearn's convention (C = inverse regularisation strength, C * sum of losses + ||w||^2 / 2) divided by C n.
Used for pairwise-only objectives (our extension of ArmoRM) and for the pooled Bradley-Terry baseline head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import threadpool_limits

MIN_PAIRS = 5
DEFAULT_CS = np.logspace(-3, 3, 13)
"""Inverse L2 strengths tried by default (sklearn's C convention)."""


@dataclass
class BTFit:
    """A fitted linear Bradley-Terry head."""

    w: np.ndarray
    """(d,) float32: r(x, y) = w . h(x, y)."""
    C: float
    """The chosen inverse L2 strength."""
    val_accuracy: float
    """Fraction of validation pairs with w . D > 0 (ties count 1/2), at the chosen C, fitted on the training split."""
    val_loss: float
    """Mean validation -log sigma(w . D - m) at the chosen C."""
    n_pairs: int
    """Pairs used for the final fit (training + validation)."""
    val_losses: np.ndarray | None = None
    """Validation loss of every C of the grid, in ascending C order."""


def _loss_and_grad(w: np.ndarray, D: np.ndarray, m: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    z = D @ w - m
    loss = float(np.mean(np.logaddexp(0.0, -z))) + 0.5 * lam * float(w @ w)
    grad = -(D.T @ expit(-z)) / D.shape[0] + lam * w
    return loss, grad


def _fit(D: np.ndarray, m: np.ndarray, C: float, w0: np.ndarray) -> np.ndarray:
    lam = 1.0 / (C * D.shape[0])
    res = minimize(_loss_and_grad, w0, args=(D, m, lam), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-8, "ftol": 1e-13})
    return res.x


def _pair_loss(w: np.ndarray, D: np.ndarray, m: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, -(D @ w - m))))


def _accuracy(w: np.ndarray, D: np.ndarray) -> float:
    z = D @ w
    return float(np.mean((z > 0) + 0.5 * (z == 0)))


def _checked_pairs(D: np.ndarray, margins: np.ndarray | Sequence[float] | None,
                   name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """D as float64 (n, d) and the margins (zeros when None), validated."""
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2:
        raise ValueError(f"D must be (n, d), got shape {D.shape}")
    n = D.shape[0]
    what = f"objective {name!r}" if name else "the Bradley-Terry head"
    if n < MIN_PAIRS:
        raise ValueError(f"{what} has {n} preference pairs; a Bradley-Terry head needs at least {MIN_PAIRS}")
    if not np.all(np.isfinite(D)):
        raise ValueError("D contains NaN or infinite values")
    m = np.zeros(n) if margins is None else np.asarray(margins, dtype=np.float64).ravel()
    if m.shape != (n,) or not np.all(np.isfinite(m)):
        raise ValueError(f"margins must be {n} finite numbers, got shape {m.shape}")
    return D, m


def fit_bt_weights(D: np.ndarray, C: float, *, margins: np.ndarray | Sequence[float] | None = None,
                   name: str | None = None) -> np.ndarray:
    """w (float64) fitted on all pairs at a fixed C: no validation split (C already chosen, e.g. by fit_bt_head)."""
    D, m = _checked_pairs(D, margins, name)
    if not C > 0:
        raise ValueError(f"C must be positive, got {C}")
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(D, m, float(C), np.zeros(D.shape[1]))


def fit_bt_head(D: np.ndarray, *, margins: np.ndarray | Sequence[float] | None = None,
                Cs: Sequence[float] | np.ndarray = DEFAULT_CS, val_fraction: float = 0.2,
                seed: int = 0, name: str | None = None) -> BTFit:
    """Fit w on embedding differences D = h(x, y_w) - h(x, y_l), (n, d).

    C is chosen on a seeded validation split (`val_fraction` of the pairs, at least one) by validation log-loss
    (ties: the smaller C), then w is refitted on all pairs. L-BFGS-B on the exact loss above, float64, warm-started
    along the ascending C grid. Raises ValueError with fewer than 5 pairs (naming `name` if given).
    """
    D, m = _checked_pairs(D, margins, name)
    n, d = D.shape
    grid = np.sort(np.asarray(Cs, dtype=np.float64).ravel())
    if grid.size == 0 or np.any(grid <= 0):
        raise ValueError("Cs must be a non-empty grid of positive values")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")

    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    # The objective is a pair of matrix-vector products: one BLAS thread is fastest, and multithreaded BLAS
    # spin-waiting slows L-BFGS down many times over on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        w = np.zeros(d)
        D_train, m_train = D[train], m[train]
        fits, losses = [], []
        for C in grid:
            w = _fit(D_train, m_train, C, w)
            fits.append(w)
            losses.append(_pair_loss(w, D[val], m[val]))
        best = int(np.argmin(losses))
        w_best = fits[best]
        acc = _accuracy(w_best, D[val])
        w_all = _fit(D, m, grid[best], w_best)
    return BTFit(w=w_all.astype(np.float32), C=float(grid[best]), val_accuracy=acc, val_loss=float(losses[best]),
                 n_pairs=n, val_losses=np.asarray(losses))
