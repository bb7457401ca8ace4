"""Checks of command-line values: argparse number types, input paths, model references, weights and lists.

Each raises InputError naming the flag (or argparse's error, for a `type=`) before any model loads.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoalign.errors import InputError

if TYPE_CHECKING:  # the commands import these when they run (nothing heavy at start-up)
    from paretoalign.inference.deal import DeALParams
    from paretoalign.rewards.loading import RewardModelReference
    from paretoalign.rewards.protocols import Scorer


# ---------------------------------------------------------------- argparse value checks
# argparse names the flag in its error ("argument --batch-size: must be an integer >= 1, got '0'") and exits 2
# before any work; the flags use these instead of a bare int / float.
def _checked_number(kind: type, what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse `type=` that parses `kind` and accepts only finite values for which `ok(value)` holds."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__doc__ = f"{what[0].upper()}{what[1:]}."
    return parse


positive_int = _checked_number(int, "an integer >= 1", lambda v: v >= 1)
non_negative_int = _checked_number(int, "an integer >= 0", lambda v: v >= 0)
non_negative_float = _checked_number(float, "a finite number >= 0", lambda v: v >= 0)
positive_float = _checked_number(float, "a finite number > 0", lambda v: v > 0)
probability = _checked_number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
unit_fraction = _checked_number(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


# ---------------------------------------------------------------- paths and model references
def check_input_file(path: str | None, field: str) -> None:
    """InputError naming `field` unless `path` is an existing file (None: not given, nothing to check)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; expected a file", path=str(path), field=field)
    if not p.exists():
        raise InputError("file not found", path=str(path), field=field)


def check_input_dir(path: str | None, field: str, what: str = "folder") -> None:
    """InputError naming `field` unless `path` is an existing folder (None: not given)."""
    if path is None:
        return
    p = Path(path)
    if p.is_file():
        raise InputError(f"is a file; expected a {what}", path=str(path), field=field)
    if not p.is_dir():
        raise InputError(f"no such {what}", path=str(path), field=field)


def check_model_ref(ref: str | None, field: str) -> None:
    """Before any model loads: InputError naming `field` for a model reference that is a missing path, a file that
    is not a .gguf, a folder holding no model, or a folder with an unreadable safetensors file. Aliases and hub
    ids pass (their loaders report them)."""
    if ref is None:
        return
    from paretoalign.embed.models import ALIASES, check_model_files

    text = str(ref)
    path = Path(text).expanduser()
    if text in ALIASES and not path.exists():
        return
    if path.is_dir():
        check_model_files(path)
    elif path.is_file():
        if path.suffix != ".gguf":
            raise InputError("is a file, not a model folder (nor a .gguf file)", path=text, field=field)
    elif text.startswith(("/", "./", "../", "~")) or path.suffix == ".gguf":
        raise InputError("no such model folder or file", path=text, field=field)


def check_reward_model_dir(path: str, field: str, trust_remote_code: bool = False) -> RewardModelReference:
    """Before any model loads: InputError, with a hint, unless `path` names a reward model we can load (our folder,
    `default`, a Hugging Face sequence classifier, or a reward-set file; see `paretoalign.rewards.loading`). Returns
    what it names."""
    from paretoalign.rewards.loading import inspect_reward_model

    return inspect_reward_model(path, field=field, trust_remote_code=trust_remote_code)


def load_cli_reward_model(path: str, field: str, trust_remote_code: bool = False) -> Scorer:
    """The reward model a command's flag names (checked by `check_reward_model_dir` first)."""
    from paretoalign.rewards.loading import load_reward_model

    return load_reward_model(path, trust_remote_code=trust_remote_code, field=field)


# ---------------------------------------------------------------- weights
def parse_weights(text: str | None) -> dict[str, float] | None:
    """Parse `name=value,name=value` into a weight dict (None when not given)."""
    if text is None:
        return None
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InputError(f"expected name=value, got {part!r}", path="command line", field="--weights")
        name, raw = (s.strip() for s in part.split("=", 1))
        try:
            value = float(raw)
        except ValueError as exc:
            raise InputError(f"weight of {name!r} is not a number: {raw!r}", path="command line",
                             field="--weights") from exc
        if not math.isfinite(value):
            raise InputError(f"weight of {name!r} must be finite", path="command line", field="--weights")
        if name in weights:
            raise InputError(f"weight of {name!r} given twice", path="command line", field="--weights")
        weights[name] = value
    if not weights:
        raise InputError("no weights given", path="command line", field="--weights")
    return weights


def check_weights(weights: dict[str, float] | None, objective_names: Sequence[str]) -> None:
    """Raise InputError naming any weight whose objective the model does not have."""
    if weights is None:
        return
    unknown = [k for k in weights if k not in objective_names]
    if unknown:
        raise InputError(f"unknown objective(s) {unknown}; this model has {list(objective_names)}",
                         path="command line", field="--weights")


def check_rm_weights(weights: dict[str, float] | None, model: Scorer) -> None:
    """InputError naming --weights (and, for a classifier, its folder) unless the model accepts these weights."""
    if weights is None:
        return
    try:
        model.resolve_weights(weights)
    except InputError as exc:
        raise InputError(exc.reason, path=exc.path or "command line", field="--weights") from None


# ---------------------------------------------------------------- lists
def parse_int_list(text: str | None, field: str) -> list[int] | None:
    """'16,32,64' -> [16, 32, 64]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InputError(f"expected comma-separated integers, got {text!r}", field=field) from exc


def parse_bon_ns(text: str) -> list[int]:
    """'2,4,8' -> [2, 4, 8] (sorted, distinct); an empty string disables Best-of-N."""
    from paretoalign.inference.statistics import check_n

    return sorted({check_n(n, "--bon") for n in parse_int_list(text, "--bon") or []})


def parse_deal_settings(text: str | None, max_new_tokens: int) -> list[DeALParams]:
    """'2,2,4,5,4;4,2,4,5,4' -> DeAL settings (beams, top_k, lookahead, lam, reward_every); '' or None -> []."""
    from paretoalign.inference.deal import DeALParams

    settings = []
    for k, part in enumerate(p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        fields = [f.strip() for f in part.split(",")]
        try:
            if len(fields) != 5:
                raise ValueError
            beams, top_k, lookahead, every = (int(fields[i]) for i in (0, 1, 2, 4))
            lam = float(fields[3])
        except ValueError:
            raise InputError(f"setting {k + 1} {part!r} is not beams,top_k,lookahead,lam,reward_every "
                             "(integers, lam a number), e.g. 2,2,4,5,4", path="command line", field="--deal") from None
        try:
            settings.append(DeALParams(beams=beams, top_k=top_k, lookahead=lookahead, lam=lam, reward_every=every,
                                       max_new_tokens=max_new_tokens))
        except InputError as err:
            raise InputError(f"setting {k + 1} {part!r}: {err.reason}", path="command line",
                             field=f"--deal.{err.field}") from None
    return settings


def parse_reward_lms(specs: Sequence[str]) -> list[tuple[str, float]]:
    """['DIR=0.5', 'DIR2'] -> [('DIR', 0.5), ('DIR2', 1.0)]."""
    out = []
    for spec in specs:
        path, sep, weight = spec.rpartition("=")
        if not sep:
            path, weight = spec, "1"
        try:
            value = float(weight)
        except ValueError as exc:
            raise InputError(f"expected DIR=WEIGHT, got {spec!r}", field="--reward-lm") from exc
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"the weight of {path!r} must be a finite number >= 0, got {weight!r}",
                             path="command line", field="--reward-lm")
        out.append((path, value))
    return out
