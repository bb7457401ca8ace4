"""Read and write saved policies (transformers directories) as plain state dicts, for weight-space operations.

Supports: a directory with config.json and either `model.safetensors` or a sharded `model.safetensors.index.json` plus
its shards; an architecture check from config.json and the safetensors headers (no weights loaded); atomic output of
one `model.safetensors`, every other top-level file of a source directory (config, tokenizer, generation config, chat
template...) and a `merge_record.json`. Assumes weights are safetensors: pickled weights (`*.bin`, `*.pt`) are refused,
never loaded. Tied weights: transformers saves only one of a tied pair (e.g. the embeddings, not `lm_head.weight`),
and the output keeps exactly the keys of the source file, so `from_pretrained` ties them again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from paretoalign import __version__
from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.errors import InputError
from paretoalign.output_paths import MERGE_RECORD_FILE as RECORD_FILE

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
ARCHITECTURE_KEYS = ("model_type", "architectures", "hidden_size", "n_embd", "d_model", "intermediate_size",
                     "n_inner", "num_hidden_layers", "n_layer", "num_layers", "num_attention_heads", "n_head",
                     "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings")


def _directory(directory: str | Path) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise InputError("not a directory (" + ("no such folder; " if not path.exists() else "")
                         + "expected a saved transformers policy)", path=str(path))
    return path


def read_config(directory: str | Path) -> dict[str, Any]:
    """The config.json of a saved policy."""
    path = _directory(directory) / "config.json"
    if not path.is_file():
        raise InputError(f"no model found in {path.parent} (no config.json: not a saved transformers model)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from exc
    if not isinstance(config, dict):
        raise InputError("expected a JSON object", path=str(path))
    return config


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors files holding a saved policy's weights (one file, or the shards of an index)."""
    path = _directory(directory)
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"not a safetensors index with a 'weight_map': {exc}", path=str(index)) from exc
        shards = [path / name for name in dict.fromkeys(weight_map.values())]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise InputError(f"shard {missing[0].name} named by the index is missing", path=str(index))
        return shards
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise InputError(f"only pickled weights ({', '.join(pickled)}); pickled weights are refused because loading "
                         "them can run code: re-save the model with safetensors (save_pretrained does by default)",
                         path=str(path))
    if (path / "adapter_model.safetensors").is_file():
        raise InputError("a PEFT adapter, not a full model: merge the adapter into its base model first",
                         path=str(path))
    raise InputError(f"no {WEIGHTS_FILE} or {INDEX_FILE}", path=str(path))


def load_policy_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict as stored in the safetensors file(s), config.json) of a saved policy, on the CPU."""
    config = read_config(directory)
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        try:
            tensors = load_file(str(file), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None
        for key, tensor in tensors.items():
            if key in state:
                raise InputError(f"tensor {key!r} appears in more than one shard", path=str(file), field=key)
            state[key] = tensor
    return state, config


def tensor_shapes(directory: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from the safetensors headers, without loading the weights."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(directory):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None
    return shapes


def _unreadable(file: Path, exc: Exception) -> InputError:
    return InputError(f"not a readable safetensors file, corrupt or cut short ({exc})", path=str(file))


def check_same_architecture(dirs: Sequence[str | Path]) -> None:
    """Raise InputError naming both directories and the first config key or tensor where two policies differ."""
    if not dirs:
        raise InputError("no model directories given")
    ref_dir = str(dirs[0])
    ref_config, ref_shapes = read_config(ref_dir), tensor_shapes(ref_dir)
    for other in map(str, dirs[1:]):
        config = read_config(other)
        for key in ARCHITECTURE_KEYS:
            if config.get(key) != ref_config.get(key):
                raise InputError(f"{other} and {ref_dir} differ in config {key!r}: {config.get(key)!r} vs "
                                 f"{ref_config.get(key)!r}", path=other, field=key)
        shapes = tensor_shapes(other)
        for key in sorted(ref_shapes.keys() | shapes.keys()):
            if shapes.get(key) != ref_shapes.get(key):
                raise InputError(f"{other} and {ref_dir} differ in tensor {key!r}: shape {shapes.get(key)} vs "
                                 f"{ref_shapes.get(key)} (None: absent)", path=other, field=key)


def _is_weight_file(path: Path) -> bool:
    return path.name.endswith(WEIGHT_SUFFIXES) or path.name.endswith(".index.json") or path.name == RECORD_FILE


def _tensors_to_write(state: Mapping[str, torch.Tensor], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Exactly `keys`, contiguous, on the CPU, no two sharing storage (safetensors refuses shared tensors)."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(f"the state lacks tensor {missing[0]!r} of the source model ({len(missing)} missing)",
                         field=missing[0])
    key_set = set(keys)
    kept = {state[k].data_ptr() for k in keys if state[k].numel()}
    extra = [k for k in state if k not in key_set and state[k].data_ptr() not in kept]
    if extra:
        raise InputError(f"the state has tensor {extra[0]!r} that the source model's weight file lacks", field=extra[0])
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key in keys:
        t = state[key].detach().to("cpu").contiguous()
        if t.numel() and t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        out[key] = t
    return out


def save_policy_state(state: Mapping[str, torch.Tensor], source_dir: str | Path, output_dir: str | Path,
                      record: Mapping[str, Any]) -> Path:
    """Write `state` as a policy directory beside the non-weight files of `source_dir`, atomically; return its path.

    The output holds the keys of `source_dir`'s weight file(s) (tied copies in `state` that share storage with a kept
    tensor are dropped), one `model.safetensors`, and `record` (plus the paretoalign version) as merge_record.json.
    """
    source = _directory(source_dir)
    keys = list(tensor_shapes(source))
    tensors = _tensors_to_write(state, keys)
    target = Path(output_dir)
    with atomic_directory(target) as tmp:
        for item in sorted(source.iterdir()):
            if item.is_file() and not _is_weight_file(item):
                shutil.copy2(item, tmp / item.name)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json_atomic(tmp / RECORD_FILE, {**record, "paretoalign_version": __version__})
    return target
