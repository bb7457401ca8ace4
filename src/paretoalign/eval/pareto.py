"""Pareto dominance and non-dominated fronts of points with any number of axes.

Supports axes that are maximised or minimised (``maximize`` per axis), ties and duplicate points: a point dominates
another if it is at least as good on every axis and strictly better on at least one, so identical points never
dominate each other and are both on the front. Assumes finite or infinite values; NaN is an error. O(n² d) in numpy,
meant for the few dozen points of a trade-off report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from paretoalign.errors import InputError


def _oriented(points: np.ndarray | Sequence[Sequence[float]], maximize: Sequence[bool] | None) -> np.ndarray:
    """Points as an (n, d) float array with every axis turned into "larger is better"."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"points must be a 2-D (n, d) array, got shape {arr.shape}", field="points")
    if maximize is None:
        maximize = [True] * arr.shape[1]
    if len(maximize) != arr.shape[1]:
        raise InputError(f"maximize has {len(maximize)} entries for {arr.shape[1]} axes", field="maximize")
    bad = np.flatnonzero(np.isnan(arr).any(axis=1))
    if bad.size:
        raise InputError(f"point(s) {bad.tolist()} contain NaN: every point needs a value on every axis",
                         field="points")
    sign = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    return arr * sign


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool] | None = None) -> bool:
    """Whether `a` is >= `b` on every axis and > on at least one (axes maximised unless `maximize` says not)."""
    if len(a) != len(b):
        raise InputError(f"points have {len(a)} and {len(b)} axes", field="points")
    pair = _oriented([list(a), list(b)], maximize)
    return bool(np.all(pair[0] >= pair[1]) and np.any(pair[0] > pair[1]))


def pareto_front(points: np.ndarray | Sequence[Sequence[float]], maximize: Sequence[bool]) -> np.ndarray:
    """A boolean mask (n,) of the non-dominated points; identical points are all kept."""
    arr = _oriented(points, maximize)
    n = arr.shape[0]
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        at_least = np.all(arr >= arr[i], axis=1)
        better = np.any(arr > arr[i], axis=1)
        mask[i] = not np.any(at_least & better)
    return mask
