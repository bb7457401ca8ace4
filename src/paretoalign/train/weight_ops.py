"""Weight-space operations on policies (WARP, Ramé et al. 2024; ALGORITHMS.md §7): task vectors, SLERP, LITI, EMA.

Supports: state dicts (`dict[str, torch.Tensor]`) of any dtype and device; SLERP of two task vectors per tensor
(θ_init + sin((1−λ)Ω)/sin Ω · δ_1 + sin(λΩ)/sin Ω · δ_2, Ω the angle between the flattened δ_1 and δ_2), and of M > 2
by an iterative fold (model k joins the running merge with λ = 1/k); LITI θ_η = (1−η) θ_init + η θ_target; EMA
θ_ema ← (1−μ) θ_ema + μ θ as a new dict or in place on a module's parameters; a per-tensor angle report.
Assumes the inputs share keys, shapes and dtypes (`check_compatible`). Arithmetic is done in float64 and cast back to
the input dtype. Tensors that are not floating point (integer buffers) must be identical across inputs and are copied.
Where sin Ω is ~0 (parallel or anti-parallel task vectors, or a zero one) SLERP falls back to linear interpolation,
its limit. The M > 2 fold equals the mean task vector only in the small-angle (linear) limit; for wide angles the
later models get a smaller share of the angle than the earlier ones.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from paretoalign.errors import InputError

State = dict[str, torch.Tensor]


# ---------------------------------------------------------------- checks
def check_compatible(named_states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise InputError naming the model and tensor where key sets, shapes, dtypes or non-float values differ."""
    if not named_states:
        raise InputError("no models given")
    items = list(named_states.items())
    ref_name, ref = items[0]
    for name, state in items[1:]:
        missing = [k for k in ref if k not in state]
        if missing:
            raise InputError(f"model {name!r} lacks tensor {missing[0]!r} that {ref_name!r} has "
                             f"({len(missing)} missing)", field=missing[0])
        extra = [k for k in state if k not in ref]
        if extra:
            raise InputError(f"model {name!r} has tensor {extra[0]!r} that {ref_name!r} lacks "
                             f"({len(extra)} extra)", field=extra[0])
        for key, ref_t in ref.items():
            t = state[key]
            if t.shape != ref_t.shape:
                raise InputError(f"tensor {key!r} has shape {tuple(t.shape)} in model {name!r} but "
                                 f"{tuple(ref_t.shape)} in {ref_name!r}", field=key)
            if t.dtype != ref_t.dtype:
                raise InputError(f"tensor {key!r} has dtype {t.dtype} in model {name!r} but {ref_t.dtype} in "
                                 f"{ref_name!r}", field=key)
            if not ref_t.is_floating_point() and not torch.equal(t.cpu(), ref_t.cpu()):
                raise InputError(f"non-floating-point tensor {key!r} differs between model {name!r} and "
                                 f"{ref_name!r}; such tensors are copied, not merged, so they must be identical",
                                 field=key)


def _named(*states: Mapping[str, torch.Tensor]) -> dict[str, Mapping[str, torch.Tensor]]:
    return {("init" if i == 0 else f"model {i}"): s for i, s in enumerate(states)}


def _check_unit_interval(value: float, name: str, *, open_low: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise InputError(f"{name} must be in {interval}, got {value}", field=name)


# ---------------------------------------------------------------- task vectors and SLERP
def task_vector(state: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor]) -> State:
    """δ = θ − θ_init for every floating-point tensor (other tensors are left out)."""
    check_compatible(_named(init, state))
    return {k: (t.double() - init[k].double()).to(t.dtype) for k, t in state.items() if t.is_floating_point()}


def _angle(d1: torch.Tensor, d2: torch.Tensor) -> tuple[float, float, float]:
    """(Ω in radians, |d1|, |d2|) of two flat float64 vectors; Ω is NaN if either is zero."""
    n1, n2 = float(d1.norm()), float(d2.norm())
    if n1 == 0.0 or n2 == 0.0:
        return math.nan, n1, n2
    u1, u2 = d1 / n1, d2 / n2
    # 2·atan2(|u1−u2|, |u1+u2|) stays accurate near 0 and π, where acos(cos) loses half the digits
    return 2.0 * math.atan2(float((u1 - u2).norm()), float((u1 + u2).norm())), n1, n2


def _slerp_delta(d1: torch.Tensor, d2: torch.Tensor, lam: float, eps: float) -> torch.Tensor:
    """SLERP of two float64 task vectors (any shape), linear where sin Ω < eps."""
    omega, _, _ = _angle(d1.reshape(-1), d2.reshape(-1))
    sin_omega = math.sin(omega) if math.isfinite(omega) else 0.0
    if sin_omega < eps:
        return (1.0 - lam) * d1 + lam * d2
    return (math.sin((1.0 - lam) * omega) / sin_omega) * d1 + (math.sin(lam * omega) / sin_omega) * d2


def _slerp_fold(init: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]],
                lams: Sequence[float], eps: float) -> State:
    check_compatible(_named(init, *states))
    out: State = {}
    for key, base in init.items():
        if not base.is_floating_point():
            out[key] = base.clone()
            continue
        base64 = base.double()
        delta = states[0][key].to(base.device).double() - base64
        for state, lam in zip(states[1:], lams, strict=True):
            delta = _slerp_delta(delta, state[key].to(base.device).double() - base64, lam, eps)
        out[key] = (base64 + delta).to(base.dtype)
    return out


def slerp_pair(init: Mapping[str, torch.Tensor], a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
               lam: float, eps: float = 1e-6) -> State:
    """θ_init + sin((1−λ)Ω)/sin Ω · δ_a + sin(λΩ)/sin Ω · δ_b per tensor (λ=0 gives a, λ=1 gives b)."""
    _check_unit_interval(lam, "lam")
    return _slerp_fold(init, [a, b], [lam], eps)


def slerp(init: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]], lam: float | None = None,
          eps: float = 1e-6) -> State:
    """SLERP of M ≥ 2 models' task vectors: λ (default 1/2) for M = 2, else the fold with λ = 1/k for model k."""
    if len(states) < 2:
        raise InputError(f"SLERP needs at least 2 models, got {len(states)}", field="models")
    if len(states) == 2:
        return slerp_pair(init, states[0], states[1], 0.5 if lam is None else lam, eps)
    if lam is not None:
        raise InputError(f"lam applies to 2 models only; {len(states)} models are merged with equal weights",
                         field="lam")
    return _slerp_fold(init, states, [1.0 / k for k in range(2, len(states) + 1)], eps)


# ---------------------------------------------------------------- LITI and EMA
def _combine(x: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor], weight: float) -> State:
    """(1−w)·x + w·y per floating-point tensor, non-float tensors copied from x."""
    check_compatible(_named(x, y))
    return {k: ((1.0 - weight) * t.double() + weight * y[k].to(t.device).double()).to(t.dtype)
            if t.is_floating_point() else t.clone() for k, t in x.items()}


def liti(init: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], eta: float,
         allow_extrapolation: bool = False) -> State:
    """θ_η = (1−η) θ_init + η θ_target; η must be in [0, 1] unless allow_extrapolation."""
    if not math.isfinite(eta):
        raise InputError(f"eta must be finite, got {eta}", field="eta")
    if not allow_extrapolation:
        _check_unit_interval(eta, "eta")
    return _combine(init, target, eta)


def ema_states(anchor: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor], rate: float) -> State:
    """A new state (1−μ) θ_anchor + μ θ_current, μ = rate in (0, 1]."""
    _check_unit_interval(rate, "mu", open_low=True)
    return _combine(anchor, current, rate)


def _tensors(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(obj.named_parameters()) if isinstance(obj, nn.Module) else dict(obj)


@torch.no_grad()
def ema_update_(anchor: nn.Module | Mapping[str, torch.Tensor], current: nn.Module | Mapping[str, torch.Tensor],
                rate: float) -> int:
    """θ_anchor ← (1−μ) θ_anchor + μ θ_current in place for every tensor of `current`; returns how many changed."""
    _check_unit_interval(rate, "mu", open_low=True)
    targets, sources = _tensors(anchor), _tensors(current)
    unknown = [k for k in sources if k not in targets]
    if unknown:
        raise InputError(f"EMA source has tensor {unknown[0]!r} that the anchor lacks ({len(unknown)} unknown)",
                         field=unknown[0])
    for key, src in sources.items():
        dst = targets[key]
        if src.shape != dst.shape:
            raise InputError(f"tensor {key!r} has shape {tuple(src.shape)} in the EMA source but "
                             f"{tuple(dst.shape)} in the anchor", field=key)
        if dst.is_floating_point() != src.is_floating_point():
            raise InputError(f"tensor {key!r} is floating point in only one of anchor and source", field=key)
    updated = 0
    for key, src in sources.items():
        dst = targets[key]
        if not dst.is_floating_point():
            if not torch.equal(dst, src.to(dst.device)):
                raise InputError(f"non-floating-point tensor {key!r} differs between anchor and source", field=key)
            continue
        mixed = (1.0 - rate) * dst.double() + rate * src.to(dst.device).double()
        dst.copy_(mixed.to(dst.dtype))
        updated += 1
    return updated


# ---------------------------------------------------------------- report
def _coefficients(d1: torch.Tensor, d2: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Least-squares (c1, c2) with c1·d1 + c2·d2 ≈ target (d1, d2 not parallel)."""
    g11, g12, g22 = float(d1 @ d1), float(d1 @ d2), float(d2 @ d2)
    r1, r2 = float(d1 @ target), float(d2 @ target)
    det = g11 * g22 - g12 * g12
    return (g22 * r1 - g12 * r2) / det, (g11 * r2 - g12 * r1) / det


def merge_report(init: Mapping[str, torch.Tensor], a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                 merged: Mapping[str, torch.Tensor] | None = None, lam: float | None = None) -> dict[str, Any]:
    """Per-tensor angles and norms of the task vectors of a and b, and a summary; with `merged` and `lam`, also the
    coefficients (c_a, c_b) of δ_merged = c_a δ_a + c_b δ_b, fitted by least squares, next to SLERP's values."""
    check_compatible(_named(init, a, b) if merged is None else _named(init, a, b, merged))
    rows: list[dict[str, Any]] = []
    errors: list[float] = []
    for key, base in init.items():
        if not base.is_floating_point():
            continue
        base64 = base.double().reshape(-1)
        d1 = a[key].double().reshape(-1) - base64
        d2 = b[key].double().reshape(-1) - base64
        omega, n1, n2 = _angle(d1, d2)
        row: dict[str, Any] = {"name": key, "angle_deg": None if math.isnan(omega) else math.degrees(omega),
                               "norm_a": n1, "norm_b": n2, "cos": None if math.isnan(omega) else math.cos(omega)}
        if merged is not None:
            dm = merged[key].double().reshape(-1) - base64
            to_a, _, nm = _angle(d1, dm)
            row["norm_merged"] = nm
            row["angle_to_a_deg"] = None if math.isnan(to_a) else math.degrees(to_a)
            if lam is not None and math.sin(omega) >= 1e-6:
                row["coef_a"], row["coef_b"] = _coefficients(d1, d2, dm)
                row["expected_coef_a"] = math.sin((1.0 - lam) * omega) / math.sin(omega)
                row["expected_coef_b"] = math.sin(lam * omega) / math.sin(omega)
                errors.append(max(abs(row["coef_a"] - row["expected_coef_a"]),
                                  abs(row["coef_b"] - row["expected_coef_b"])))
        rows.append(row)
    angles = [r["angle_deg"] for r in rows if r["angle_deg"] is not None]
    summary: dict[str, Any] = {
        "tensors": len(rows),
        "zero_task_vectors": len(rows) - len(angles),
        "mean_angle_deg": statistics.fmean(angles) if angles else None,
        "median_angle_deg": statistics.median(angles) if angles else None,
        "min_angle_deg": min(angles, default=None),
        "max_angle_deg": max(angles, default=None),
    }
    if errors:
        summary["max_coef_error"] = max(errors)
    return {"tensors": rows, "summary": summary}
