"""Group-relative advantages for online RL with one or several rewards (GRPO, Dr. GRPO, RLOO/WARP).

Supports:

- `group_normalize`: per-group baselines — "mean" (x − mean_G x, GRPO) or "leave_one_out" (x_i − mean_{j≠i} x_j,
  RLOO/WARP) — optionally divided by the group's population standard deviation plus `eps` (GRPO's scale_rewards);
  works on a vector (n,) or per column of a matrix (n, K).
- `aggregate_advantages`: several rewards combined with weights w, either "sum_then_normalize" (normalise r·w) or
  "normalize_then_sum" (normalise each reward, then weight; GDPO-style, keeps a high-variance reward from drowning
  the others).
- `per_objective_advantages`: the (n, K) matrix of per-reward advantages.

Assumes n = groups × group_size with the rows of one group (the samples of one prompt) contiguous. A group whose
values are all equal gets zero advantages (never NaN).
"""

from __future__ import annotations

import numpy as np

from paretoalign.errors import InputError

BASELINES = ("mean", "leave_one_out")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _grouped(values: np.ndarray, group_size: int) -> np.ndarray:
    """View of `values` as (groups, group_size, K)."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise InputError(f"group size must be a positive integer, got {group_size!r}", field="num_generations")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise InputError(f"advantages need values of shape (n,) or (n, K), got shape {arr.shape}")
    n = arr.shape[0]
    if n % group_size:
        raise InputError(f"{n} values do not split into groups of {group_size}", field="num_generations")
    return arr.reshape(n // group_size, group_size, -1)


def group_normalize(values: np.ndarray, group_size: int, *, scale: bool = True, baseline: str = "mean",
                    eps: float = 1e-4) -> np.ndarray:
    """Per-group advantages of `values` (n,) or (n, K): value minus its group baseline, optionally over its std."""
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}", field="baseline")
    arr = np.asarray(values, dtype=np.float64)
    g = _grouped(arr, group_size)
    mean = g.mean(axis=1, keepdims=True)
    if baseline == "mean":
        adv = g - mean
    else:
        if group_size < 2:
            raise InputError("the leave-one-out baseline needs at least 2 samples per prompt", field="num_generations")
        adv = (g - mean) * (group_size / (group_size - 1))
    if scale:
        adv = adv / (g.std(axis=1, keepdims=True) + eps)
    # a constant group: subtracting the mean may leave rounding noise that the division by eps would blow up
    constant = np.ptp(g, axis=1, keepdims=True) == 0
    adv = np.where(constant, 0.0, adv)
    return adv.reshape(arr.shape)


def per_objective_advantages(rewards: np.ndarray, group_size: int, *, scale: bool = True,
                             baseline: str = "mean") -> np.ndarray:
    """(n, K) advantages, each reward column normalised within its groups."""
    arr = np.asarray(rewards, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"per-objective advantages need a reward matrix (n, K), got shape {arr.shape}")
    return group_normalize(arr, group_size, scale=scale, baseline=baseline)


def aggregate_advantages(rewards: np.ndarray, weights: np.ndarray, group_size: int, *, aggregation: str,
                         scale: bool = True, baseline: str = "mean") -> np.ndarray:
    """(n,) advantages of several rewards (n, K) weighted by `weights` (K,), by the chosen aggregation order."""
    if aggregation not in AGGREGATIONS:
        raise InputError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}",
                         field="aggregation")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 1:
        r = r[:, None]
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if r.ndim != 2 or r.shape[1] != w.shape[0]:
        raise InputError(f"rewards of shape {r.shape} do not match {w.shape[0]} weights", field="weights")
    if aggregation == "sum_then_normalize":
        return group_normalize(r @ w, group_size, scale=scale, baseline=baseline)
    return per_objective_advantages(r, group_size, scale=scale, baseline=baseline) @ w
