"""Merge saved policies in weight space (WARP, ALGORITHMS.md §7) and save the result as a transformers directory.

Supports: "slerp" (θ_init and M ≥ 2 fine-tuned policies; λ for M = 2, default 1/2; the equal-weight fold for M > 2),
"liti" (θ_init, one policy θ and η ∈ [0, 1]: (1−η) θ_init + η θ) and "ema" (an anchor and a current policy, μ ∈ (0, 1]:
(1−μ) θ_anchor + μ θ_current). Every input is checked (counts, values, same architecture from config.json and
safetensors headers) before any weights are loaded; an InputError about an argument names it as its ``field`` ("lam",
"eta", "mu", "init", "models", "output_dir"; the CLI names the flag). The output copies config and tokenizer files
from the first model and records the operation, inputs, parameters and task-vector angles in merge_record.json.
Assumes all inputs fit in CPU memory at once and share dtypes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from paretoalign.errors import InputError
from paretoalign.train.policy_files import check_same_architecture, load_policy_state, save_policy_state
from paretoalign.train.weight_ops import check_compatible, ema_states, liti, merge_report, slerp
from paretoalign.validation import unit_interval

OPERATIONS = ("slerp", "liti", "ema")
FORMULAS = {
    "slerp": "theta_init + sin((1-lam) Omega)/sin Omega * delta_1 + sin(lam Omega)/sin Omega * delta_2 per tensor; "
             "M > 2: model k joins the running merge with lam = 1/k",
    "liti": "(1-eta) theta_init + eta theta",
    "ema": "(1-mu) theta_anchor + mu theta_current",
}


ARGUMENTS = ("init", "models", "lam", "eta", "mu", "output_dir")
"""The arguments of `merge_policies` that its InputErrors name as their ``field``."""


def _check_value(value: float | None, name: str, op: str, *, open_low: bool = False) -> float:
    if value is None:
        raise InputError(f"{op} needs --{name}", field=name)
    try:
        return unit_interval(value, f"--{name}", open_low=open_low)
    except InputError as exc:  # the message names the flag; the field stays the argument (see ARGUMENTS)
        raise InputError(exc.reason, field=name) from None


def _refuse(op: str, **given: Any) -> None:
    for name, value in given.items():
        if value is not None:
            raise InputError(f"--{name} does not apply to {op}", field=name)


def check_merge_arguments(op: str, init: str | None, models: list[str], lam: float | None, eta: float | None,
                          mu: float | None) -> None:
    """Raise InputError, naming the argument, for a wrong model count or a missing, superfluous or out-of-range
    value."""
    if op not in OPERATIONS:
        raise InputError(f"unknown operation {op!r}; choose one of {list(OPERATIONS)}", field="op")
    if op == "slerp":
        _refuse(op, eta=eta, mu=mu)
        if len(models) < 2:
            raise InputError(f"slerp needs at least 2 models, got {len(models)}", field="models")
        if lam is not None and len(models) > 2:
            raise InputError(f"--lam applies to 2 models only; {len(models)} models are merged with equal weights",
                             field="lam")
        if lam is not None:
            _check_value(lam, "lam", op)
    elif op == "liti":
        _refuse(op, lam=lam, mu=mu)
        if len(models) != 1:
            raise InputError(f"liti takes exactly one model (e.g. the SLERP result), got {len(models)}",
                             field="models")
        _check_value(eta, "eta", op)
    else:
        _refuse(op, init=init, lam=lam, eta=eta)
        if len(models) != 2:
            raise InputError(f"ema takes exactly two models (anchor, then current), got {len(models)}",
                             field="models")
        _check_value(mu, "mu", op, open_low=True)
    if op != "ema" and init is None:
        raise InputError(f"{op} needs --init (the policy the models were fine-tuned from)", field="init")


def _distance(x: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor]) -> float:
    """Euclidean distance between two states over their floating-point tensors."""
    total = sum(float(((x[k].double() - y[k].double()) ** 2).sum()) for k in x if x[k].is_floating_point())
    return math.sqrt(total)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _slerp_record(init: Mapping[str, torch.Tensor], states: list[Mapping[str, torch.Tensor]],
                  merged: Mapping[str, torch.Tensor], lam: float | None) -> dict[str, Any]:
    if len(states) == 2:
        report = merge_report(init, states[0], states[1], merged=merged, lam=lam)
        return {"summary": report["summary"], "tensors": report["tensors"]}
    pairs, angles = [], []
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            report = merge_report(init, states[i], states[j])
            pairs.append({"a": i, "b": j, "summary": report["summary"]})
            angles += [r["angle_deg"] for r in report["tensors"] if r["angle_deg"] is not None]
    summary = {"mean_angle_deg": statistics.fmean(angles) if angles else None,
               "median_angle_deg": statistics.median(angles) if angles else None}
    return {"summary": summary, "pairs": pairs}


def policy_source(ref: str) -> str:
    """A saved policy directory for `ref`: a shipped-model alias (e.g. 'smollm2', converted once), a training run
    directory (its policy/), or the directory itself."""
    from paretoalign.embed.models import ALIASES, resolve_model

    ref = str(ref)
    path = Path(ref)
    if ref in ALIASES and not path.exists():
        return resolve_model(ref)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "policy" / "config.json").is_file():
        return str(path / "policy")
    return ref


def merge_policies(op: str, *, init: str | None, models: list[str], output_dir: str, lam: float | None = None,
                   eta: float | None = None, mu: float | None = None, overwrite: bool = False) -> Path:
    """Apply `op` ("slerp", "liti" or "ema") to saved policies and write the result to `output_dir`; return it.

    `output_dir` must be missing, empty or a previous merge, and no input (else InputError; any other folder is
    replaced only with `overwrite`; see `paretoalign.output_paths`)."""
    from paretoalign.output_paths import MERGE, check_output_dir

    check_output_dir(output_dir, MERGE, inputs=[init, *models], overwrite=overwrite, field="output_dir")
    models = [policy_source(m) for m in models]
    init = policy_source(init) if init is not None else None
    check_merge_arguments(op, init, models, lam, eta, mu)
    inputs = ([str(init)] if init is not None else []) + models
    check_output_dir(output_dir, MERGE, inputs=inputs, overwrite=overwrite, field="output_dir")
    check_same_architecture(inputs)
    loaded = {path: load_policy_state(path)[0] for path in inputs}
    check_compatible(loaded)
    states = [loaded[m] for m in models]
    record: dict[str, Any] = {"operation": op, "formula": FORMULAS[op],
                              "init": str(Path(init).resolve()) if init is not None else None,
                              "models": [str(Path(m).resolve()) for m in models], "lam": None, "eta": eta, "mu": mu}
    if op == "slerp":
        init_state = loaded[str(init)]
        lam_used = (0.5 if lam is None else lam) if len(states) == 2 else None
        result = slerp(init_state, states, lam=lam_used)
        record["lam"] = lam_used if lam_used is not None else [1.0 / k for k in range(2, len(states) + 1)]
        record.update(_slerp_record(init_state, states, result, lam_used))
    elif op == "liti":
        init_state = loaded[str(init)]
        result = liti(init_state, states[0], eta)
        record["summary"] = {"task_vector_norm_ratio": _ratio(_distance(result, init_state),
                                                              _distance(states[0], init_state))}
    else:
        result = ema_states(states[0], states[1], mu)
        record["summary"] = {"distance_ratio": _ratio(_distance(result, states[0]),
                                                      _distance(states[1], states[0]))}
    return save_policy_state(result, models[0], output_dir, record)
