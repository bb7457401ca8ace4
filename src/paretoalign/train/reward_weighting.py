"""Reward weighting modes for online RL with several rewards: how each step's weights on the simplex are chosen.

Modes (``WEIGHTING_MODES``; each declares its parameters in ``WEIGHTING_SPECS``):

- ``fixed``: linear scalarisation with the configured weights w (the baseline).
- ``hypervolume``: hypervolume-guided weight adaptation (Lu et al. 2025, "Learning to Optimize Multi-Objective
  Alignment Through Dynamic Reward Weighting"), as the authors' released code does it: a buffer holds the
  reference point (the first step's vector of per-objective mean rewards) and every later vector that enlarged the
  hypervolume; each step the batch's vector of per-objective means p gets the hypervolume contribution
  Δ = HV(buffer ∪ {p}) − HV(buffer) (w.r.t. the reference; points that do not dominate it add nothing), the
  step's rewards are multiplied by the meta-reward m = base + gain·tanh(Δ) (defaults 0.5 and 1.5; m = 1 on the
  first step) through `sample_scale`, and p joins the buffer when Δ > 0. The weights stay the configured w.
  Deviation: the authors evaluate p on a validation set after each update; we use the training batch (sampled from
  the current policy), which needs no extra generation. A common factor changes nothing after per-group std
  scaling (GRPO's scale_rewards); it acts with Dr. GRPO / scale_rewards=False and REINFORCE-style losses.
- ``gradient``: gradient-based weight optimisation (same paper, the authors' code): with g_k the flat policy
  gradient of objective k, the influence of objective k is s_k = Σ_j ⟨g_k, g_j⟩ (``include_self``: j = k counted,
  as the released code does; false: only the others), averaged over ``accumulation_steps`` calls, then the mirror
  (exponentiated-gradient) step w ← softmax(log w + step_size·s). step_size stands for the code's
  learning_rate / regularization_factor. A weight configured as 0 stays 0.
- ``pama``: PAMA (He & Maghsudi 2025, "Pareto Multi-Objective Alignment for Language Models") reduces the per-step
  weight choice to a convex problem with a closed form. We could not read that closed form, so this mode solves the
  problem it states exactly: the MGDA min-norm point λ* = argmin_{λ∈Δ} ‖Σ_k λ_k g_k‖² (closed form for 2
  objectives, λ_1 = clip(⟨g_2 − g_1, g_2⟩ / ‖g_1 − g_2‖², 0, 1); for more, the best of the KKT solutions over
  every support, exact for up to 12 objectives). ``normalize_gradients`` divides each g_k by its norm first.
- ``maxmin``: MaxMin-RLHF's policy step (Chakraborty et al. 2024): the objective (group reward) with the lowest
  batch mean gets weight 1, ties to the lowest index. With ``normalize``, the means are compared after per-objective
  standardisation with running statistics (mean and population std of every reward seen so far, this batch
  included), so objectives on different scales compare by how far each is below its own history.

Every mode keeps JSON-able state (`state` / `load_state`, for exact resume) and exposes ``last_weights``.
Assumes rewards are "higher is better" in every objective.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from paretoalign.errors import InputError
from paretoalign.rewards.reward_set import SIMPLEX_TOLERANCE

if TYPE_CHECKING:
    import torch

MAX_ENUMERATED_OBJECTIVES = 12


class RewardWeighting(Protocol):
    """A weighting mode: this step's weights from the step's rewards (and, in gradient modes, gradients)."""

    name: str
    needs_gradients: bool
    names: list[str]
    last_weights: np.ndarray

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """(K,) weights on the simplex for this step from its raw reward matrix (n, K)."""
        ...

    def sample_scale(self, rewards: np.ndarray, group_size: int) -> np.ndarray | None:
        """Per-sample multiplier (n,) of the aggregated reward, or None when the mode has none."""
        ...

    def mix_gradients(self, grads: Sequence[torch.Tensor], step: int) -> np.ndarray:
        """(K,) weights of the objectives' flat gradients for this update (gradient modes only)."""
        ...

    def metrics(self) -> dict[str, float]:
        """The mode's own numbers of the last step, logged as ``weighting/<name>`` (may be empty)."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-able state for the checkpoint."""
        ...

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore `state` as written by `state`."""
        ...


@dataclass(frozen=True)
class WeightingParam:
    """One declared parameter of a weighting mode."""

    name: str
    kind: type | tuple[type, ...]
    default: object
    help: str
    check: Callable[[Any], str | None] | None = None
    """Returns a reason when the value is bad, else None."""


@dataclass(frozen=True)
class WeightingSpec:
    """A weighting mode: its name, help, declared parameters and constructor."""

    name: str
    help: str
    needs_gradients: bool
    params: tuple[WeightingParam, ...]
    factory: Callable[..., BaseWeighting]


def check_simplex(weights: Any, k: int, *, field: str = "weights") -> np.ndarray:
    """`weights` as a (k,) float vector on the simplex (finite, >= 0, summing to 1 within 1e-6); else InputError."""
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"weights must be a vector of {k} numbers, got {weights!r}", field=field) from None
    if w.shape != (k,):
        raise InputError(f"expected {k} weights (one per objective), got {w.size}", field=field)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(float(w.sum()) - 1.0) > SIMPLEX_TOLERANCE:
        raise InputError(f"weights must lie on the simplex (finite, >= 0, summing to 1), got {w.tolist()}",
                         field=field)
    return w


def _rewards(rewards: np.ndarray, k: int) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != k or r.shape[0] == 0:
        raise InputError(f"expected a non-empty reward matrix (n, {k}), got shape {r.shape}", field="rewards")
    if not np.all(np.isfinite(r)):
        raise InputError("rewards must be finite (no NaN or inf)", field="rewards")
    return r


def _float_list(value: Any, k: int | None, what: str) -> list[float]:
    if not isinstance(value, list) or (k is not None and len(value) != k):
        raise InputError(f"bad weighting state: {what} must be a list of {k} numbers", field="method_state.weighting")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise InputError(f"bad weighting state: {what} holds a non-number", field="method_state.weighting")
    return [float(v) for v in value]


class BaseWeighting:
    """Shared parts of the modes: names, configured weights, the last weights used, state bookkeeping."""

    name = "base"
    needs_gradients = False

    def __init__(self, weights: np.ndarray, names: Sequence[str]) -> None:
        self.names = list(names)
        self.weights = np.asarray(weights, dtype=np.float64).copy()
        self.last_weights = self.weights.copy()

    @property
    def k(self) -> int:
        """Number of objectives."""
        return len(self.names)

    def named_weights(self) -> dict[str, float]:
        """``last_weights`` by objective name (what the trainers log as ``weights``)."""
        return {n: float(w) for n, w in zip(self.names, self.last_weights, strict=True)}

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """The configured weights (modes override)."""
        _rewards(rewards, self.k)
        self.last_weights = self.weights.copy()
        return self.last_weights.copy()

    def sample_scale(self, rewards: np.ndarray, group_size: int) -> np.ndarray | None:
        """No per-sample multiplier."""
        return None

    def metrics(self) -> dict[str, float]:
        """The mode's own numbers of the last step for metrics.jsonl (``weighting/<name>``); none by default."""
        return {}

    def mix_gradients(self, grads: Sequence[torch.Tensor], step: int) -> np.ndarray:
        """Only gradient modes mix gradients."""
        raise TypeError(f"weighting mode {self.name!r} does not mix gradients (needs_gradients is False)")

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """JSON-able state: mode, objective names, last weights and the mode's own fields."""
        return {"mode": self.name, "names": list(self.names), "last_weights": self.last_weights.tolist(),
                **self._extra_state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by `state` for the same mode and objectives."""
        if not isinstance(state, Mapping):
            raise InputError("bad weighting state: expected an object", field="method_state.weighting")
        if state.get("mode") != self.name:
            raise InputError(f"the checkpoint's weighting mode is {state.get('mode')!r}, this run's is {self.name!r}",
                             field="weighting")
        if state.get("names") != self.names:
            raise InputError(f"the checkpoint's objectives are {state.get('names')!r}, this run's are {self.names!r}",
                             field="rewards")
        self.last_weights = np.asarray(_float_list(state.get("last_weights"), self.k, "last_weights"))
        self._load_extra(state)


class FixedWeighting(BaseWeighting):
    """Linear scalarisation with the configured weights."""

    name = "fixed"


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume of the union of the boxes [reference, p] over points p that dominate `reference` (maximisation)."""
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, ref.size)
    pts = pts[np.all(pts > ref, axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    if ref.size == 1:
        return float(pts[:, 0].max() - ref[0])
    # slice along the first objective: between consecutive values, the points at or beyond the slice cover it
    pts = pts[np.argsort(-pts[:, 0], kind="stable")]
    total = 0.0
    for i in range(pts.shape[0]):
        lower = pts[i + 1, 0] if i + 1 < pts.shape[0] else ref[0]
        width = pts[i, 0] - lower
        if width > 0:
            total += width * hypervolume(pts[:i + 1, 1:], ref[1:])
    return total


def _non_dominated(points: list[list[float]]) -> list[list[float]]:
    arr = np.asarray(points, dtype=np.float64)
    keep = []
    for i, p in enumerate(arr):
        dominated = np.any(np.all(arr >= p, axis=1) & np.any(arr > p, axis=1))
        duplicate = any(np.array_equal(arr[j], p) for j in keep)
        if not dominated and not duplicate:
            keep.append(i)
    return [points[i] for i in keep]


class HypervolumeWeighting(BaseWeighting):
    """Hypervolume-guided adaptation: the configured weights, rewards scaled by a hypervolume meta-reward.

    Each step's mean reward vector is compared with an archive of the non-dominated means of earlier steps. The
    hypervolume reference is the nadir of every mean seen so far, moved back by `margin` of each objective's observed
    range, and the contribution is divided by the volume of the box between that reference and the ideal point, so
    it is a fraction in [0, 1] whatever the rewards' scales. (A fixed reference such as the first batch's mean lets one
    lucky first batch dominate every later one, and the meta-reward then never leaves `base`.)
    """

    name = "hypervolume"

    def __init__(self, weights: np.ndarray, names: Sequence[str], *, base: float, gain: float,
                 margin: float) -> None:
        super().__init__(weights, names)
        self.base = float(base)
        self.gain = float(gain)
        self.margin = float(margin)
        self.low: list[float] | None = None
        self.high: list[float] | None = None
        self.front: list[list[float]] = []
        self.scale = 1.0
        self.contribution = 0.0

    def reference(self) -> np.ndarray:
        """The hypervolume reference point: the nadir seen so far minus `margin` of each objective's range."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        span = high - low
        return low - self.margin * np.where(span > 0, span, 1.0)

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """Update the meta-reward from the batch's mean vector; return the configured weights."""
        point = _rewards(rewards, self.k).mean(axis=0)
        if self.low is None:  # nothing to compare the first batch with
            self.low, self.high = point.tolist(), point.tolist()
            self.front = [point.tolist()]
            self.scale, self.contribution = 1.0, 0.0
        else:
            self.low = np.minimum(self.low, point).tolist()
            self.high = np.maximum(self.high, point).tolist()
            ref = self.reference()
            front = np.asarray(self.front).reshape(-1, self.k)
            gained = hypervolume(np.vstack([front, point[None]]), ref) - hypervolume(front, ref)
            box = float(np.prod(np.asarray(self.high) - ref))
            self.contribution = max(gained, 0.0) / box if box > 0 else 0.0
            self.scale = self.base + self.gain * math.tanh(self.contribution)
            if self.contribution > 0:
                self.front = _non_dominated([*self.front, point.tolist()])
        self.last_weights = self.weights.copy()
        return self.last_weights.copy()

    def sample_scale(self, rewards: np.ndarray, group_size: int) -> np.ndarray | None:
        """The current meta-reward for every sample."""
        return np.full(np.asarray(rewards).shape[0], self.scale)

    def metrics(self) -> dict[str, float]:
        """Meta-reward m, relative hypervolume contribution and archive size of the last step."""
        return {"weighting/meta_reward": float(self.scale), "weighting/hv_contribution": float(self.contribution),
                "weighting/front_size": float(len(self.front))}

    def _extra_state(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "front": self.front, "scale": self.scale,
                "contribution": self.contribution}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        if ("low" in state) != ("high" in state) or "low" not in state:
            raise InputError("bad weighting state: low and high are required (a checkpoint of an older version?)",
                             field="method_state.weighting")
        low, high = state.get("low"), state.get("high")
        self.low = None if low is None else _float_list(low, self.k, "low")
        self.high = None if high is None else _float_list(high, self.k, "high")
        front = state.get("front")
        if not isinstance(front, list):
            raise InputError("bad weighting state: front must be a list", field="method_state.weighting")
        self.front = [_float_list(p, self.k, "front") for p in front]
        self.scale = _float_list([state.get("scale")], 1, "scale")[0]
        self.contribution = _float_list([state.get("contribution")], 1, "contribution")[0]


def _gram(grads: Sequence[torch.Tensor], k: int) -> np.ndarray:
    import torch

    if len(grads) != k:
        raise InputError(f"expected {k} gradients (one per objective), got {len(grads)}", field="grads")
    flat = torch.stack([g.detach().reshape(-1).double() for g in grads])
    gram = (flat @ flat.T).cpu().numpy()
    if not np.all(np.isfinite(gram)):
        raise InputError("the objectives' gradients are not finite (NaN or inf)", field="grads")
    return gram


class GradientWeighting(BaseWeighting):
    """Gradient-based weight optimisation: exponentiated-gradient steps on the objectives' gradient influence."""

    name = "gradient"
    needs_gradients = True

    def __init__(self, weights: np.ndarray, names: Sequence[str], *, step_size: float, accumulation_steps: int,
                 include_self: bool) -> None:
        super().__init__(weights, names)
        self.step_size = float(step_size)
        self.accumulation_steps = int(accumulation_steps)
        self.include_self = bool(include_self)
        self.current = self.weights.copy()
        self.accumulated = np.zeros(self.k)
        self.count = 0

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """The current (adapted) weights."""
        _rewards(rewards, self.k)
        return self.current.copy()

    def influence(self, grads: Sequence[torch.Tensor]) -> np.ndarray:
        """s_k = Σ_j ⟨g_k, g_j⟩ (without j = k unless include_self)."""
        gram = _gram(grads, self.k)
        return gram.sum(axis=1) - (0.0 if self.include_self else np.diag(gram))

    def mix_gradients(self, grads: Sequence[torch.Tensor], step: int) -> np.ndarray:
        """Accumulate the influence; every accumulation_steps calls, w ← softmax(log w + step_size·mean s)."""
        self.accumulated += self.influence(grads)
        self.count += 1
        if self.count >= self.accumulation_steps:
            with np.errstate(divide="ignore"):
                logits = np.log(self.current) + self.step_size * self.accumulated / self.count
            logits -= logits[np.isfinite(logits)].max()
            w = np.exp(logits)
            self.current = w / w.sum()
            self.accumulated = np.zeros(self.k)
            self.count = 0
        self.last_weights = self.current.copy()
        return self.current.copy()

    def _extra_state(self) -> dict[str, Any]:
        return {"current": self.current.tolist(), "accumulated": self.accumulated.tolist(), "count": self.count}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        self.current = np.asarray(_float_list(state.get("current"), self.k, "current"))
        self.accumulated = np.asarray(_float_list(state.get("accumulated"), self.k, "accumulated"))
        count = state.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError("bad weighting state: count must be an integer >= 0", field="method_state.weighting")
        self.count = count


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """argmin over the simplex of λᵀ G λ for a Gram matrix G (the min-norm point of the gradients' convex hull)."""
    g = np.asarray(gram, dtype=np.float64)
    k = g.shape[0]
    if g.shape != (k, k) or k == 0:
        raise InputError(f"expected a square Gram matrix, got shape {g.shape}", field="grads")
    if k == 1:
        return np.ones(1)
    if k == 2:
        denom = g[0, 0] + g[1, 1] - 2 * g[0, 1]  # ‖g_1 − g_2‖²
        lam = 0.5 if denom <= 0 else float(np.clip((g[1, 1] - g[0, 1]) / denom, 0.0, 1.0))
        return np.array([lam, 1.0 - lam])
    if k > MAX_ENUMERATED_OBJECTIVES:
        raise InputError(f"the min-norm weights are solved exactly for at most {MAX_ENUMERATED_OBJECTIVES} "
                         f"objectives, got {k}", field="weighting")
    best, best_value = None, math.inf
    tol = 1e-12 * max(1.0, float(np.abs(np.diag(g)).max()))
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            # KKT on the support: G_SS λ_S = μ·1, Σ λ_S = 1
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = g[np.ix_(idx, idx)]
            system[:size, size] = -1.0
            system[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            try:
                sol = np.linalg.solve(system, rhs)
            except np.linalg.LinAlgError:
                continue
            lam_s = sol[:size]
            if np.any(lam_s < -1e-10):
                continue
            lam = np.zeros(k)
            lam[idx] = np.clip(lam_s, 0.0, None)
            lam /= lam.sum()
            value = float(lam @ g @ lam)
            if value < best_value - tol:
                best, best_value = lam, value
    assert best is not None  # singletons always solve
    return best


class PAMAWeighting(BaseWeighting):
    """Per-step min-norm (MGDA) weights of the objectives' gradients (PAMA's convex step, see the module docstring)."""

    name = "pama"
    needs_gradients = True

    def __init__(self, weights: np.ndarray, names: Sequence[str], *, normalize_gradients: bool) -> None:
        super().__init__(weights, names)
        self.normalize_gradients = bool(normalize_gradients)
        if self.k > MAX_ENUMERATED_OBJECTIVES:
            raise InputError(f"pama solves the min-norm weights exactly for at most {MAX_ENUMERATED_OBJECTIVES} "
                             f"objectives, got {self.k}", field="weighting")

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """The last mixing weights (the configured ones before the first update)."""
        _rewards(rewards, self.k)
        return self.last_weights.copy()

    def mix_gradients(self, grads: Sequence[torch.Tensor], step: int) -> np.ndarray:
        """The min-norm convex combination of the gradients (after dividing each by its norm, if configured)."""
        gram = _gram(grads, self.k)
        if self.normalize_gradients:
            norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
            norms[norms == 0] = 1.0
            gram = gram / np.outer(norms, norms)
        self.last_weights = min_norm_weights(gram)
        return self.last_weights.copy()


class MaxMinWeighting(BaseWeighting):
    """MaxMin-RLHF's step: all weight on the objective with the lowest (optionally standardised) batch mean."""

    name = "maxmin"

    def __init__(self, weights: np.ndarray, names: Sequence[str], *, normalize: bool) -> None:
        super().__init__(weights, names)
        self.normalize = bool(normalize)
        self.count = 0
        self.mean = np.zeros(self.k)
        self.m2 = np.zeros(self.k)

    def _update_stats(self, r: np.ndarray) -> None:
        # Chan et al.'s parallel merge of (count, mean, M2) with the batch's
        n_b = r.shape[0]
        mean_b = r.mean(axis=0)
        m2_b = ((r - mean_b) ** 2).sum(axis=0)
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.count * n_b / total)
        self.count = total

    def step_weights(self, rewards: np.ndarray, group_size: int, step: int) -> np.ndarray:
        """One-hot on the worst-served objective of this batch (ties: the lowest index)."""
        r = _rewards(rewards, self.k)
        means = r.mean(axis=0)
        if self.normalize:
            self._update_stats(r)
            std = np.sqrt(self.m2 / self.count)
            means = (means - self.mean) / np.where(std > 0, std, 1.0)
        w = np.zeros(self.k)
        w[int(np.argmin(means))] = 1.0
        self.last_weights = w
        return w.copy()

    def _extra_state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def _load_extra(self, state: Mapping[str, Any]) -> None:
        count = state.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InputError("bad weighting state: count must be an integer >= 0", field="method_state.weighting")
        self.count = count
        self.mean = np.asarray(_float_list(state.get("mean"), self.k, "mean"))
        self.m2 = np.asarray(_float_list(state.get("m2"), self.k, "m2"))


def _positive(value: Any) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _non_negative(value: Any) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


def _at_least_one(value: Any) -> str | None:
    return None if value >= 1 else "must be an integer >= 1"


WEIGHTING_SPECS: dict[str, WeightingSpec] = {
    "fixed": WeightingSpec("fixed", "Linear scalarisation with the configured weights.", False, (), FixedWeighting),
    "hypervolume": WeightingSpec(
        "hypervolume", "Hypervolume-guided adaptation: rewards times base + gain*tanh(hypervolume contribution).",
        False,
        (WeightingParam("base", (int, float), 0.5, "Meta-reward with no hypervolume gain.", _non_negative),
         WeightingParam("gain", (int, float), 1.5, "Meta-reward gain: base + gain*tanh(contribution), the "
                        "contribution a fraction of the box between the reference and the ideal point.",
                        _non_negative),
         WeightingParam("margin", (int, float), 0.1, "The reference point lies this fraction of each objective's "
                        "observed range below the worst mean seen.", _non_negative)),
        HypervolumeWeighting),
    "gradient": WeightingSpec(
        "gradient", "Gradient-based weights: w <- softmax(log w + step_size * sum_j <g_k, g_j>).", True,
        (WeightingParam("step_size", (int, float), 1.0, "Multiplier of the gradient influence in the mirror step.",
                        _positive),
         WeightingParam("accumulation_steps", int, 1, "Average the influence over this many updates before "
                        "changing the weights.", _at_least_one),
         WeightingParam("include_self", bool, True, "Count <g_k, g_k> in objective k's influence.")),
        GradientWeighting),
    "pama": WeightingSpec(
        "pama", "Per-update min-norm (MGDA) weights of the objectives' gradients.", True,
        (WeightingParam("normalize_gradients", bool, False, "Divide each gradient by its norm first."),),
        PAMAWeighting),
    "maxmin": WeightingSpec(
        "maxmin", "MaxMin-RLHF: weight 1 on the objective with the lowest batch mean (ties: lowest index).", False,
        (WeightingParam("normalize", bool, False, "Compare means standardised by running per-objective stats."),),
        MaxMinWeighting),
}
WEIGHTING_MODES = tuple(WEIGHTING_SPECS)


def _param_values(spec: WeightingSpec, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InputError(f"weighting_params must be a mapping, got {type(params).__name__}", field="weighting_params")
    declared = {p.name: p for p in spec.params}
    for key in params:
        if key not in declared:
            known = ", ".join(declared) or "none"
            raise InputError(f"unknown parameter {key!r} of weighting mode {spec.name!r} (its parameters: {known})",
                             field=f"weighting_params.{key}")
    values = {}
    for p in spec.params:
        value = params.get(p.name, p.default)
        kinds = p.kind if isinstance(p.kind, tuple) else (p.kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise InputError(f"{p.name} must be {names}, got {value!r}", field=f"weighting_params.{p.name}")
        reason = p.check(value) if p.check is not None else None
        if reason:
            raise InputError(f"{p.name} {reason}, got {value!r}", field=f"weighting_params.{p.name}")
        values[p.name] = value
    return values


def build_weighting(mode: str, weights: np.ndarray, names: Sequence[str],
                    params: Mapping[str, Any] | None) -> RewardWeighting:
    """The weighting mode `mode` over objectives `names` with configured weights `weights` (on the simplex)."""
    if not isinstance(mode, str) or mode not in WEIGHTING_SPECS:
        raise InputError(f"unknown weighting mode {mode!r}; choose one of {', '.join(WEIGHTING_MODES)}",
                         field="weighting")
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise InputError(f"objective names must be non-empty and distinct, got {names}", field="rewards")
    w = check_simplex(weights, len(names))
    spec = WEIGHTING_SPECS[mode]
    return spec.factory(w, names, **_param_values(spec, params))
