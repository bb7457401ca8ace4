"""Weight-space operations on policies (WARP, Ramé et al. 2024; ALGORITHMS.md §7): task vectors, SLERP, LITI, EMA.

Supports: state dicts (`dict[str, torch.Tensor]`) of any dtype and device; SLERP of two task vectors per tensor
(θ_init + sin((1−λ)Ω)/sin Ω · δ_1 + sin(λΩ)/sin Ω · δ_2, Ω the angle between the flattened δ_1 and δ_2), and of M > 2
by an iterative fold (model k joins the running merge with λ = 1/k); LITI θ_η = (1−η) θ_init + η θ_target; EMA
θ_ema ← (1−μ) θ_ema + μ θ as a new dict or in place on a module's parameters; a per-tensor angle report.
Streamed merging (`stream_slerp_liti_`): SLERP of M saved runs (safetensors, read one tensor at a time) followed by
LITI, written into the live model in place, with θ_slerp and any θ_η written to safetensors files on the way, so no
second full state dict is ever held; it computes exactly what `slerp` then `liti` compute (the same per-tensor code).
Large tensors are computed in chunks (`CHUNK`): element-wise steps are unchanged by it, norms are summed per chunk.
Assumes the inputs share keys, shapes and dtypes (`check_compatible`). Arithmetic is done in float64 and cast back to
the input dtype. Tensors that are not floating point (integer buffers) must be identical across inputs and are copied.
Where sin Ω is ~0 (parallel or anti-parallel task vectors, or a zero one) SLERP falls back to linear interpolation,
its limit. The M > 2 fold equals the mean task vector only in the small-angle (linear) limit; for wide angles the
later models get a smaller share of the angle than the earlier ones.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from paretoalign.errors import InputError
from paretoalign.validation import unit_interval

State = dict[str, torch.Tensor]
CHUNK = 1 << 20
"""Elements per chunk of the per-tensor arithmetic: the float64 temporaries of a large tensor (a second task vector,
LITI's mix) are made a chunk at a time, never whole. Element-wise results do not depend on it; norms are summed over
chunks (for a tensor of more than CHUNK elements that moves the last bits of Ω)."""


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
            _check_spec(key, t.dtype, tuple(t.shape), name, ref_t.dtype, tuple(ref_t.shape), ref_name)
            if not ref_t.is_floating_point() and not torch.equal(t.cpu(), ref_t.cpu()):
                raise _differs(key, name, ref_name)


def _check_spec(key: str, dtype: torch.dtype, shape: tuple[int, ...], name: str, ref_dtype: torch.dtype,
                ref_shape: tuple[int, ...], ref_name: str) -> None:
    if shape != ref_shape:
        raise InputError(f"tensor {key!r} has shape {shape} in model {name!r} but {ref_shape} in {ref_name!r}",
                         field=key)
    if dtype != ref_dtype:
        raise InputError(f"tensor {key!r} has dtype {dtype} in model {name!r} but {ref_dtype} in {ref_name!r}",
                         field=key)


def _differs(key: str, name: str, ref_name: str) -> InputError:
    return InputError(f"non-floating-point tensor {key!r} differs between model {name!r} and {ref_name!r}; such "
                      "tensors are copied, not merged, so they must be identical", field=key)


def _named(*states: Mapping[str, torch.Tensor]) -> dict[str, Mapping[str, torch.Tensor]]:
    return {("init" if i == 0 else f"model {i}"): s for i, s in enumerate(states)}


def _check_unit_interval(value: float, name: str, *, open_low: bool = False) -> None:
    unit_interval(value, name, open_low=open_low)


# ---------------------------------------------------------------- per-tensor arithmetic (in-memory and streamed)
def _float64_copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A fresh, contiguous float64 copy of `t` on `device` (never `t` itself, so in-place ops are safe)."""
    return t.to(device=device, dtype=torch.float64, copy=True, memory_format=torch.contiguous_format)


def _bounds(n: int) -> list[tuple[int, int]]:
    """[start, stop) of the chunks of a flat tensor of n elements (one empty chunk when n is 0)."""
    return [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)] or [(0, 0)]


def _scratch(n: int, rows: int, device: torch.device) -> torch.Tensor:
    """`rows` float64 work buffers of one chunk each, for a tensor of n elements: one allocation per tensor, none
    per chunk (a heap churned by many chunk-sized temporaries grows instead of reusing them)."""
    return torch.empty((rows, max(1, min(CHUNK, n))), dtype=torch.float64, device=device)


def _norm_of(parts: Sequence[torch.Tensor]) -> float:
    """The norm of a vector from its chunks' norms (the one norm itself for a single chunk)."""
    return float(parts[0]) if len(parts) == 1 else float(torch.stack(list(parts)).norm())


def _mix(x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
    """(1−w)·x + w·y in float64, cast to x's dtype, computed a chunk at a time."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    flat_x, flat_y, flat_out = x.reshape(-1), y.reshape(-1), out.view(-1)
    work = _scratch(x.numel(), 2, x.device)
    for a, b in _bounds(x.numel()):
        part = work[0, :b - a].copy_(flat_x[a:b]).mul_(1.0 - weight)
        flat_out[a:b].copy_(part.add_(work[1, :b - a].copy_(flat_y[a:b]).mul_(weight)))
    return out


def _angle_of(d1: torch.Tensor, d2_part: Callable[[int, int], torch.Tensor],
              work: torch.Tensor) -> tuple[float, float, float]:
    """(Ω in radians, |d1|, |d2|) of a flat float64 vector d1 and one given chunk by chunk, d2_part(start, stop);
    Ω is NaN if either is zero. `work`: at least 3 scratch rows that d2_part does not use."""
    bounds = _bounds(d1.numel())
    n1, n2 = float(d1.norm()), _norm_of([d2_part(a, b).norm() for a, b in bounds])
    if n1 == 0.0 or n2 == 0.0:
        return math.nan, n1, n2
    minus, plus = [], []
    for a, b in bounds:
        u1 = torch.div(d1[a:b], n1, out=work[0, :b - a])
        u2 = torch.div(d2_part(a, b), n2, out=work[1, :b - a])
        minus.append(torch.sub(u1, u2, out=work[2, :b - a]).norm())
        plus.append(torch.add(u1, u2, out=work[2, :b - a]).norm())
    # 2·atan2(|u1−u2|, |u1+u2|) stays accurate near 0 and π, where acos(cos) loses half the digits
    return 2.0 * math.atan2(_norm_of(minus), _norm_of(plus)), n1, n2


def _angle(d1: torch.Tensor, d2: torch.Tensor) -> tuple[float, float, float]:
    """(Ω in radians, |d1|, |d2|) of two flat float64 vectors; Ω is NaN if either is zero."""
    return _angle_of(d1, lambda a, b: d2[a:b], _scratch(d1.numel(), 3, d1.device))


def _slerp_step_(delta: torch.Tensor, theta: torch.Tensor, base: torch.Tensor, lam: float, eps: float,
                 work: torch.Tensor) -> tuple[float, float, float]:
    """delta ← SLERP(delta, θ − θ_init) in place (float64, contiguous; linear where sin Ω < eps), the second task
    vector made a chunk at a time from θ = `theta` and θ_init = `base`; returns (Ω, |delta|, |θ − θ_init|).
    `work`: 5 scratch rows."""
    flat_theta, flat_base, flat_delta = theta.reshape(-1), base.reshape(-1), delta.view(-1)

    def other(a: int, b: int) -> torch.Tensor:
        return work[3, :b - a].copy_(flat_theta[a:b]).sub_(work[4, :b - a].copy_(flat_base[a:b]))

    omega, n1, n2 = _angle_of(flat_delta, other, work)
    sin_omega = math.sin(omega) if math.isfinite(omega) else 0.0
    if sin_omega < eps:
        c1, c2 = 1.0 - lam, lam
    else:
        c1, c2 = math.sin((1.0 - lam) * omega) / sin_omega, math.sin(lam * omega) / sin_omega
    for a, b in _bounds(flat_delta.numel()):
        flat_delta[a:b].mul_(c1).add_(other(a, b).mul_(c2))  # = c1·δ_1 + c2·δ_2, rounded as written
    return omega, n1, n2


def _fold_tensor(base: torch.Tensor, tensors: Iterable[torch.Tensor], lams: Sequence[float],
                 eps: float) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """(θ_init + the SLERP fold of the task vectors of `tensors` over θ_init = `base`, cast to base's dtype;
    (Ω, |δ_1|, |δ_2|) of the first two). `tensors` is consumed one at a time: with a lazy iterable at most one input
    is alive, beside one whole float64 task vector (the running merge) and a few chunk-sized buffers."""
    models = iter(tensors)
    work = _scratch(base.numel(), 5, base.device)
    delta = _float64_copy(next(models), base.device)
    flat_delta, flat_base = delta.view(-1), base.reshape(-1)
    for a, b in _bounds(flat_delta.numel()):  # θ_1 − θ_init (a whole-tensor sub_ would upcast base in one piece)
        flat_delta[a:b].sub_(work[0, :b - a].copy_(flat_base[a:b]))
    first: tuple[float, float, float] | None = None
    for lam in lams:
        angle = _slerp_step_(delta, next(models), base, lam, eps, work)
        first = angle if first is None else first
    if first is None:
        raise ValueError("the fold needs at least two models (one λ per model after the first)")
    for a, b in _bounds(flat_delta.numel()):
        flat_delta[a:b].add_(work[0, :b - a].copy_(flat_base[a:b]))
    return delta.to(base.dtype), first


def _fold_lams(count: int, lam: float | None) -> list[float]:
    """The λ of each fold step: [λ] (default 1/2) for 2 models, else 1/k for model k (lam must be None)."""
    if count < 2:
        raise InputError(f"SLERP needs at least 2 models, got {count}", field="models")
    if count == 2:
        lam = 0.5 if lam is None else lam
        _check_unit_interval(lam, "lam")
        return [lam]
    if lam is not None:
        raise InputError(f"lam applies to 2 models only; {count} models are merged with equal weights", field="lam")
    return [1.0 / k for k in range(2, count + 1)]


def _check_eta(eta: float, allow_extrapolation: bool = False) -> None:
    if not math.isfinite(eta):
        raise InputError(f"eta must be finite, got {eta}", field="eta")
    if not allow_extrapolation:
        _check_unit_interval(eta, "eta")


# ---------------------------------------------------------------- task vectors and SLERP
def task_vector(state: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor]) -> State:
    """δ = θ − θ_init for every floating-point tensor (other tensors are left out)."""
    check_compatible(_named(init, state))
    return {k: (t.double() - init[k].double()).to(t.dtype) for k, t in state.items() if t.is_floating_point()}


def _slerp_fold(init: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]],
                lams: Sequence[float], eps: float) -> State:
    check_compatible(_named(init, *states))
    out: State = {}
    for key, base in init.items():
        if not base.is_floating_point():
            out[key] = base.clone()
            continue
        out[key], _ = _fold_tensor(base, (state[key] for state in states), lams, eps)
    return out


def slerp_pair(init: Mapping[str, torch.Tensor], a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
               lam: float, eps: float = 1e-6) -> State:
    """θ_init + sin((1−λ)Ω)/sin Ω · δ_a + sin(λΩ)/sin Ω · δ_b per tensor (λ=0 gives a, λ=1 gives b)."""
    _check_unit_interval(lam, "lam")
    return _slerp_fold(init, [a, b], [lam], eps)


def slerp(init: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]], lam: float | None = None,
          eps: float = 1e-6) -> State:
    """SLERP of M ≥ 2 models' task vectors: λ (default 1/2) for M = 2, else the fold with λ = 1/k for model k."""
    return _slerp_fold(init, states, _fold_lams(len(states), lam), eps)


# ---------------------------------------------------------------- LITI and EMA
def _combine(x: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor], weight: float) -> State:
    """(1−w)·x + w·y per floating-point tensor, non-float tensors copied from x."""
    check_compatible(_named(x, y))
    return {k: _mix(t, y[k], weight) if t.is_floating_point() else t.clone() for k, t in x.items()}


def liti(init: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], eta: float,
         allow_extrapolation: bool = False) -> State:
    """θ_η = (1−η) θ_init + η θ_target; η must be in [0, 1] unless allow_extrapolation."""
    _check_eta(eta, allow_extrapolation)
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
        dst.copy_(_mix(dst, src, rate))
        updated += 1
    return updated


# ---------------------------------------------------------------- report
def _coefficients(d1: torch.Tensor, d2: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Least-squares (c1, c2) with c1·d1 + c2·d2 ≈ target (d1, d2 not parallel)."""
    g11, g12, g22 = float(d1 @ d1), float(d1 @ d2), float(d2 @ d2)
    r1, r2 = float(d1 @ target), float(d2 @ target)
    det = g11 * g22 - g12 * g12
    return (g22 * r1 - g12 * r2) / det, (g11 * r2 - g12 * r1) / det


def _angle_row(key: str, omega: float, n1: float, n2: float) -> dict[str, Any]:
    """One tensor's row of the report: the angle between δ_a and δ_b (None where one is zero) and their norms."""
    return {"name": key, "angle_deg": None if math.isnan(omega) else math.degrees(omega), "norm_a": n1, "norm_b": n2,
            "cos": None if math.isnan(omega) else math.cos(omega)}


def _summary(rows: Sequence[Mapping[str, Any]], errors: Sequence[float]) -> dict[str, Any]:
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
    return summary


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
        row = _angle_row(key, omega, n1, n2)
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
    return {"tensors": rows, "summary": _summary(rows, errors)}


# ---------------------------------------------------------------- streamed merging (one tensor at a time)
_DTYPES: dict[str, torch.dtype] = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                                   "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                                   "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


class SafetensorsReader:
    """The tensors of one model's safetensors file(s), one tensor per `get`.

    Each `get` opens the file and closes it again, so a tensor's pages stay mapped only while that tensor lives:
    reading every tensor in turn never keeps more than the ones still referenced. `partial`: the files may hold only
    some of the model's tensors; the others are taken to equal the model being merged into (a LoRA run's untouched
    weights)."""

    def __init__(self, files: Sequence[str | Path], *, name: str = "model", partial: bool = False) -> None:
        self.name = name
        self.partial = partial
        self.files = [Path(f) for f in files]
        self._where: dict[str, Path] = {}
        self._specs: dict[str, tuple[torch.dtype | str, tuple[int, ...]]] = {}
        for file in self.files:
            try:
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        if key in self._where:
                            raise InputError(f"tensor {key!r} appears in more than one file", path=str(file),
                                             field=key)
                        part = f.get_slice(key)
                        code = part.get_dtype()
                        self._where[key] = file
                        self._specs[key] = (_DTYPES.get(code, code), tuple(part.get_shape()))
            except (SafetensorError, OSError) as exc:
                raise _unreadable(file, exc) from None

    @classmethod
    def policy(cls, directory: str | Path, *, name: str | None = None) -> SafetensorsReader:
        """A reader of a saved policy directory (one model.safetensors or the shards of its index)."""
        from paretoalign.train.policy_files import weight_files

        return cls(weight_files(directory), name=name or str(directory))

    def keys(self) -> list[str]:
        """The names of the stored tensors."""
        return list(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def spec(self, key: str) -> tuple[torch.dtype | str, tuple[int, ...]]:
        """(dtype, shape) of a stored tensor from the file header (a dtype torch lacks stays its safetensors code)."""
        return self._specs[key]

    def get(self, key: str) -> torch.Tensor:
        """One stored tensor, on the CPU."""
        file = self._where[key]
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                return f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None


def _unreadable(file: Path, exc: Exception) -> InputError:
    return InputError(f"not a readable safetensors file, corrupt or cut short ({exc})", path=str(file))


class SafetensorsWriter:
    """A safetensors file written one tensor at a time: the header (every name, dtype and shape) first, then each
    tensor's bytes at its offset, in any order. A context manager; closing checks that every tensor was written."""

    def __init__(self, path: str | Path, layout: Sequence[tuple[str, torch.dtype, Sequence[int]]],
                 metadata: Mapping[str, str] | None = None) -> None:
        header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
        self._slots: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        offset = 0
        for key, dtype, shape in layout:
            if key in self._slots or key == "__metadata__":
                raise ValueError(f"tensor name {key!r} is given twice or reserved")
            if dtype not in _CODES:
                raise InputError(f"tensor {key!r} has dtype {dtype}, which is not written to safetensors here",
                                 field=key)
            size = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._slots[key] = (dtype, tuple(shape), offset)
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        self.path = Path(path)
        self._start = 8 + len(text)
        self._pending = set(self._slots)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        self._file.write(len(text).to_bytes(8, "little"))
        self._file.write(text)
        self._file.truncate(self._start + offset)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write one tensor's bytes (dtype and shape as laid out)."""
        dtype, shape, offset = self._slots[key]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"tensor {key!r} is {tensor.dtype} {tuple(tensor.shape)}, laid out as {dtype} {shape}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._file.seek(self._start + offset)
        self._file.write(memoryview(data.numpy()))
        self._pending.discard(key)

    def close(self) -> None:
        """Close the file; ValueError if a tensor was never written."""
        if self._file.closed:
            return
        self._file.close()
        if self._pending:
            raise ValueError(f"{len(self._pending)} tensors were never written to {self.path}, e.g. "
                             f"{sorted(self._pending)[0]!r}")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()


def tied_groups(state: Mapping[str, torch.Tensor]) -> list[tuple[list[str], torch.Tensor]]:
    """The distinct tensors of `state`, each with the names that share it (tied weights), in first-name order.

    InputError when two distinct tensors overlap in memory: writing one in place would change the other."""
    groups: dict[Any, tuple[list[str], torch.Tensor]] = {}
    for key, t in state.items():
        ident = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) if t.numel() else key
        if ident in groups:
            groups[ident][0].append(key)
        else:
            groups[ident] = ([key], t)
    spans = sorted(_span(t) + (keys[0],) for keys, t in groups.values() if t.numel())
    for before, after in zip(spans, spans[1:], strict=False):
        if before[0] == after[0] and after[1] < before[2]:
            raise InputError(f"tensors {before[3]!r} and {after[3]!r} overlap in memory without being the same "
                             "tensor; they cannot be merged in place", field=after[3])
    return list(groups.values())


def _span(t: torch.Tensor) -> tuple[str, int, int]:
    """(device, first byte, one past the last byte) of the memory a non-empty tensor covers."""
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    return str(t.device), t.data_ptr(), t.data_ptr() + t.element_size() * (last + 1)


def _locate(run: SafetensorsReader, groups: Sequence[tuple[list[str], torch.Tensor]],
            names: set[str]) -> list[str | None]:
    """For each group of tied names, the name `run` stores it under (None: absent, which only a partial run may be);
    InputError for an unknown name or a shape or dtype that differs."""
    extra = [k for k in run.keys() if k not in names]
    if extra:
        raise InputError(f"model {run.name!r} has tensor {extra[0]!r} that the model merged into lacks "
                         f"({len(extra)} extra)", field=extra[0])
    found: list[str | None] = []
    for keys, base in groups:
        key = next((k for k in keys if k in run), None)
        if key is None and not run.partial:
            raise InputError(f"model {run.name!r} lacks tensor {keys[0]!r} that the model merged into has",
                             field=keys[0])
        if key is not None:
            dtype, shape = run.spec(key)
            _check_spec(key, dtype, shape, run.name, base.dtype, tuple(base.shape), "init")  # type: ignore[arg-type]
        found.append(key)
    return found


@torch.no_grad()
def stream_slerp_liti_(live: nn.Module | Mapping[str, torch.Tensor], runs: Sequence[SafetensorsReader], eta: float,
                       *, lam: float | None = None, eps: float = 1e-6,
                       outputs: Mapping[float | None, str | Path] | None = None) -> dict[str, Any]:
    """θ ← LITI(θ, SLERP(θ; runs), η) in place on `live` (θ = θ_init), reading one tensor of each run at a time.

    Computes exactly ``liti(θ, slerp(θ, runs, lam), eta)``. `outputs`: {None: a path for θ_slerp, η': a path for
    LITI(θ, θ_slerp, η')}, each written as a safetensors file while streaming (tied weights once, under the name run 0
    stores them). Returns what ``merge_report(θ, run 0, run 1)`` returns. Every check (names, shapes, dtypes, equal
    non-float tensors) runs before the first tensor is written. Transient memory: about 12 bytes per element of the
    largest tensor (its running float64 task vector and the run tensor being read) plus CHUNK-sized pieces, never a
    second state dict."""
    lams = _fold_lams(len(runs), lam)
    _check_eta(eta)
    targets = dict(outputs or {})
    for weight in targets:
        if weight is not None:
            _check_eta(weight)
    state = live.state_dict() if isinstance(live, nn.Module) else dict(live)
    groups = tied_groups(state)
    plans = [_locate(run, groups, set(state)) for run in runs]
    layout = [(plans[0][g] or keys[0], base.dtype, tuple(base.shape)) for g, (keys, base) in enumerate(groups)]
    for g, (_, base) in enumerate(groups):
        if not base.is_floating_point():
            for run, plan in zip(runs, plans, strict=True):
                key = plan[g]
                if key is not None and not torch.equal(run.get(key), base.cpu()):
                    raise _differs(key, run.name, "init")
    rows: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        writers = {weight: stack.enter_context(SafetensorsWriter(path, layout, {"format": "pt"}))
                   for weight, path in targets.items()}
        for g, (keys, base) in enumerate(groups):
            name = layout[g][0]
            if not base.is_floating_point():
                for writer in writers.values():
                    writer.write(name, base)
                continue
            inputs = (base if plan[g] is None else run.get(plan[g]) for run, plan in zip(runs, plans, strict=True))
            merged, (omega, n1, n2) = _fold_tensor(base, inputs, lams, eps)
            for key in keys:
                rows[key] = _angle_row(key, omega, n1, n2)
            for weight, writer in writers.items():
                writer.write(name, merged if weight is None else _mix(base, merged, weight))
            base.copy_(_mix(base, merged, eta))
            del merged
    ordered = [rows[k] for k in state if k in rows]
    return {"tensors": ordered, "summary": _summary(ordered, [])}
