"""Resumable training checkpoints: safetensors for every tensor, JSON for the rest, written atomically.

A checkpoint directory holds ``trainable.safetensors`` (the parameters the optimizer updates, by name),
``optimizer.safetensors`` + the JSON param groups of AdamW, optional named tensor groups (an EMA anchor, finished
WARP runs…) as ``<group>.safetensors``, and ``state.json`` (step, method state, the config it was written with).
Nothing is ever unpickled. Resuming checks that the config matches, field by field, except the fields that only
say how long or how verbosely to run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.errors import InputError
from paretoalign.output_paths import CHECKPOINT_DIR
from paretoalign.output_paths import CHECKPOINT_STATE_FILE as STATE_FILE

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM

RESUME_FREE_FIELDS = frozenset({"max_steps", "resume", "progress", "save_every", "tensorboard", "output_dir",
                                "device"})
"""Config fields a resumed run may change."""


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW-style optimizer state split into tensors (by "param_index.key") and JSON (param groups, scalars)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return _contiguous(tensors), {"param_groups": groups, "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      meta: dict[str, Any]) -> None:
    """Load optimizer state written by `optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        groups.append({k: (tuple(v) if k == "betas" else v) for k, v in g.items()})
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def config_record(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-ready dict."""
    return dataclasses.asdict(config)


def save_checkpoint(run_dir: str | Path, *, step: int, trainable: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None, config: Any, method_state: dict[str, Any] | None = None,
                    tensor_groups: dict[str, dict[str, torch.Tensor]] | None = None,
                    elapsed_s: float | None = None) -> Path:
    """Write `run_dir/checkpoint` atomically (replacing the previous one); `elapsed_s`: the run's training time so
    far, which a resumed run continues from (metrics' elapsed_s stays cumulative)."""
    target = Path(run_dir) / CHECKPOINT_DIR
    with atomic_directory(target) as tmp:
        save_file(_contiguous(trainable), str(tmp / "trainable.safetensors"))
        meta: dict[str, Any] = {}
        if optimizer is not None:
            tensors, meta = optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        for group, tensors in (tensor_groups or {}).items():
            save_file(_contiguous(tensors), str(tmp / f"{group}.safetensors"))
        write_json_atomic(tmp / STATE_FILE, {
            "step": step, "elapsed_s": float(elapsed_s or 0.0), "method_state": method_state or {}, "optimizer": meta,
            "tensor_groups": sorted(tensor_groups or {}), "config": config_record(config)})
    return target


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    step: int
    trainable: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_meta: dict[str, Any]
    method_state: dict[str, Any]
    tensor_groups: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    elapsed_s: float = 0.0
    """Training seconds before this checkpoint (0 for checkpoints written before it was recorded)."""


def load_checkpoint(run_dir: str | Path) -> Checkpoint | None:
    """The checkpoint in `run_dir`, or None when there is none."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        step = int(state["step"])
        elapsed = float(state.get("elapsed_s") or 0.0)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"unreadable checkpoint state: {exc}", path=str(state_path)) from exc
    opt_path = directory / "optimizer.safetensors"
    groups = {g: load_file(str(directory / f"{g}.safetensors")) for g in state.get("tensor_groups", [])}
    return Checkpoint(step=step, trainable=load_file(str(directory / "trainable.safetensors")),
                      optimizer_tensors=load_file(str(opt_path)) if opt_path.is_file() else {},
                      optimizer_meta=state.get("optimizer", {}), method_state=state.get("method_state", {}),
                      tensor_groups=groups, config=state.get("config", {}), elapsed_s=elapsed)


def check_resumable(checkpoint: Checkpoint, config: Any, run_dir: str | Path) -> None:
    """Raise InputError naming the first config field that differs from the checkpoint's."""
    current = json.loads(json.dumps(config_record(config)))
    for key in sorted(set(current) | set(checkpoint.config)):
        if key in RESUME_FREE_FIELDS:
            continue
        if current.get(key) != checkpoint.config.get(key):
            raise InputError(f"the checkpoint was written with {key}={checkpoint.config.get(key)!r}, this run has "
                             f"{current.get(key)!r}; use the same config or set resume=false to start over",
                             path=str(Path(run_dir) / CHECKPOINT_DIR), field=key)


@torch.no_grad()
def restore_trainable_(model: CausalLM, tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpointed trainable parameters into `model` (names must match exactly)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise InputError(f"checkpoint parameters do not match the model (missing {missing[:3]}, unexpected "
                         f"{extra[:3]})", field="checkpoint")
    for name, p in params.items():
        p.copy_(tensors[name].to(p.device, p.dtype))
