"""Where an output may be written: never over a user's data, never over (or inside) an input.

The one place that decides it, for every command and every library save path:

- a **folder** output (a reward model, an export, a merge, a front report, a training run...) is written only if it
  is missing, empty, or a previous output of the same kind, recognised by our own format or marker file (an RM's
  config.json with our format, a run's `paretoalign_run.json` / training.json, a merge's merge_record.json, a
  report's front.json, a fine-tuned classifier RM's paretoalign_rm_classifier.json...). Anything else is refused,
  naming the folder, unless `overwrite=True` (`--overwrite`): then the folder is replaced and what it held is
  deleted;
- a **file** output (`--output` of score, eval-rm, bon, calibrate, guided) may replace an existing file (written
  atomically, as usual for an output file) but never a folder;
- an output that is a file where a folder is expected (or the reverse), that equals an input, lies inside one or
  holds one, or that is the current folder, the home folder or one of their parents, is refused even with
  `overwrite=True`.

The checks touch nothing on disk, so callers run them before any model loads or any embedding starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from paretoalign.atomic_io import read_json_or_none
from paretoalign.errors import InputError

RUN_MARKER = "paretoalign_run.json"
"""Written into a training run folder when the run starts, so that a killed run is recognised (and resumed)."""
RUN_FORMAT = "paretoalign-training-run"
OVERWRITE_HELP = ("Without it, the output folder must be missing, empty or a previous output of this command "
                  "(replaced; a training run resumes), else nothing runs. With it, any folder is replaced and "
                  "everything it held is deleted (a training run starts over). Never allowed for a file, an "
                  "input, a folder holding one, the current folder or the home folder.")


def _json_field(path: Path, key: str) -> Any:
    data = read_json_or_none(path)
    return data.get(key) if isinstance(data, dict) else None


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder output: its description (in messages) and how a previous one is recognised."""

    description: str
    recognise: Callable[[Path], bool]


# The files that mark each kind of output. They live here, below every layer, so that recognising an output needs
# no import of the code that writes it; the writers import them from here.
RM_CONFIG_FILE = "config.json"
"""A saved reward model's config (`paretoalign.rewards.reward_model`)."""
RM_FORMAT = "paretoalign-reward-model"
HF_EXPORT_INFO_FILE = "paretoalign_export.json"
"""Written beside an exported sequence classifier (`paretoalign.rewards.export_hf`)."""
HF_EXPORT_FORMAT = "paretoalign-hf-export"
MERGE_RECORD_FILE = "merge_record.json"
"""Written beside a merged policy (`paretoalign.train.policy_files`)."""
CLASSIFIER_INFO_FILE = "paretoalign_rm_classifier.json"
"""Written beside a fine-tuned classifier RM (`paretoalign.train.rm_finetune_trainer`)."""
CLASSIFIER_FORMAT = "paretoalign-rm-classifier"
CHECKPOINT_DIR = "checkpoint"
"""A training run's resumable state (`paretoalign.train.checkpoint`)."""
CHECKPOINT_STATE_FILE = "state.json"
TRAINING_RECORD = "training.json"
"""Written beside a saved policy and in its run folder when a run ends (`paretoalign.train.run`)."""


def _is_reward_model(d: Path) -> bool:
    return _json_field(d / RM_CONFIG_FILE, "format") == RM_FORMAT


def _is_hf_export(d: Path) -> bool:
    return _json_field(d / HF_EXPORT_INFO_FILE, "format") == HF_EXPORT_FORMAT


def _is_merge(d: Path) -> bool:
    return isinstance(_json_field(d / MERGE_RECORD_FILE, "operation"), str)


def _is_front_report(d: Path) -> bool:
    data = read_json_or_none(d / "front.json")
    return isinstance(data, dict) and "points" in data and "fronts" in data


GENARM_METHOD = "genarm"
"""The method a GenARM run folder records (`paretoalign.train.genarm_trainer`)."""
GENARM_RECORD = "genarm_training.json"
"""Written beside a trained GenARM reward LM, in its run folder (and alone, by versions before the shared loop)."""


def _is_genarm(d: Path) -> bool:
    return (d / GENARM_RECORD).is_file() or training_run(GENARM_METHOD).recognise(d)


def _is_finetuned_rm(d: Path) -> bool:
    return _json_field(d / CLASSIFIER_INFO_FILE, "format") == CLASSIFIER_FORMAT


REWARD_MODEL = OutputKind("reward model (train-rm)", _is_reward_model)
FINETUNED_RM = OutputKind("fine-tuned sequence-classifier reward model (train-rm method=bt_finetune|grm)",
                          _is_finetuned_rm)
"""The classifier folder a bt_finetune / GRM run saves (``run_dir/reward_model``); the run folder itself is a
`training_run` of its method."""
HF_EXPORT = OutputKind("sequence-classifier export (export-hf)", _is_hf_export)
MERGE = OutputKind("merged policy (merge)", _is_merge)
FRONT_REPORT = OutputKind("front report (front)", _is_front_report)
GENARM = OutputKind("autoregressive reward LM (train-genarm)", _is_genarm)


def training_run(method: str) -> OutputKind:
    """The kind of a training run folder of `method` (dpo, modpo, jbond, bond, warp, ...)."""

    def recognise(d: Path) -> bool:
        marker = read_json_or_none(d / RUN_MARKER)
        if isinstance(marker, dict) and marker.get("format") == RUN_FORMAT:
            return marker.get("method") == method
        recorded = _json_field(d / TRAINING_RECORD, "method")
        if recorded is not None:
            return recorded == method
        # a run started before the marker existed (WARP's runs and a MODPO sweep's weightings in sub-folders): its
        # checkpoint is checked field by field when resumed
        state = f"{CHECKPOINT_DIR}/{CHECKPOINT_STATE_FILE}"
        patterns = (state, f"iter*/run*/{state}", f"w-*/{state}")
        return any(next(d.glob(pattern), None) is not None for pattern in patterns)

    return OutputKind(f"{method} training run", recognise)


# ---------------------------------------------------------------- checks

def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _nearest_existing_parent_is_dir(path: Path, field: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent} is a file, so nothing can be written under it", path=str(path),
                                 field=field)
            return


def existing_paths(values: Iterable[Any]) -> list[str]:
    """The entries of `values` (strings, paths, lists of them, None) that name something on disk."""
    out: list[str] = []
    for value in values:
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out.extend(existing_paths(value))
        elif isinstance(value, (str, os.PathLike)) and str(value) and os.path.lexists(value):
            out.append(str(value))
    return out


def config_input_paths(config: Any, exclude: Iterable[str] = ("output_dir", "embedding_cache")) -> list[str]:
    """Every field of a config dataclass whose value names an existing file or folder (data, models, ...)."""
    if not is_dataclass(config):
        return []
    skip = set(exclude)
    return existing_paths(getattr(config, f.name) for f in fields(config) if f.name not in skip)


def check_not_an_input(path: str | os.PathLike, inputs: Iterable[Any], *, field: str,
                       holds_inputs_too: bool = True) -> None:
    """InputError when `path` is one of the `inputs`, lies inside one, or (a folder output) holds one."""
    out = _resolved(path)
    for item in existing_paths(inputs):
        src = _resolved(item)
        same = out == src or (out.exists() and os.path.samefile(out, src))
        if same:
            raise InputError(f"the output is one of the inputs ({item}); choose another output path", path=str(path),
                             field=field)
        if src in out.parents:
            raise InputError(f"the output lies inside the input {item}; choose a path outside it", path=str(path),
                             field=field)
        if holds_inputs_too and out in src.parents:
            raise InputError(f"the output folder holds the input {item}, which writing it would delete; choose "
                             "another folder", path=str(path), field=field)


def _check_not_a_home(path: Path, original: str | os.PathLike, field: str) -> None:
    protected_folders = [(Path.cwd().resolve(), "the current folder")]
    try:
        protected_folders.append((Path.home().resolve(), "your home folder"))
    except (KeyError, RuntimeError):  # no home folder known
        pass
    for protected, what in protected_folders:
        if path == protected or path in protected.parents:
            name = what if path == protected else f"a parent of {what}"
            raise InputError(f"this is {name}, which an output folder replaces: choose a new folder for the output",
                             path=str(original), field=field)


def check_output_dir(path: str | os.PathLike, kind: OutputKind, *, inputs: Iterable[Any] = (),
                     overwrite: bool = False, field: str = "--output-dir") -> Path:
    """Check, touching nothing, that a `kind` folder may be written at `path`; return it as a Path.

    Allowed: a missing or empty folder, or one holding a previous output of the same kind (it is replaced, or a
    training run resumed). Any other folder only with `overwrite=True`. Never: a file, an input (or a folder holding
    or inside one), the current or home folder.
    """
    if path is None or not str(path).strip():
        raise InputError("an output directory is required", path="command line", field=field)
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError("this is a file, not a directory: give a folder path for the output (nothing was written)",
                         path=str(path), field=field)
    resolved = _resolved(target)
    _check_not_a_home(resolved, path, field)
    _nearest_existing_parent_is_dir(resolved, field)
    check_not_an_input(target, inputs, field=field)
    if target.is_dir() and not overwrite and any(target.iterdir()) and not kind.recognise(target):
        raise InputError(f"the folder is not empty and holds no previous {kind.description} output: nothing was "
                         "written. Choose a new or empty folder, or pass --overwrite (overwrite=True) to replace it "
                         "and delete what it holds", path=str(path), field=field)
    return target


def check_output_file(path: str | os.PathLike, *, inputs: Iterable[Any] = (), field: str = "--output") -> Path:
    """Check, touching nothing, that a file may be written at `path`: not a folder, not an input, not inside one."""
    if path is None or not str(path).strip():
        raise InputError("an output file is required", path="command line", field=field)
    target = Path(path).expanduser()
    if target.is_dir():
        raise InputError("this is a directory, not a file: give a file path for the output (nothing was written)",
                         path=str(path), field=field)
    _nearest_existing_parent_is_dir(_resolved(target), field)
    check_not_an_input(target, inputs, field=field, holds_inputs_too=False)
    return target


# ---------------------------------------------------------------- training runs

def claim_run_dir(path: str | os.PathLike, method: str, *, overwrite: bool = False, inputs: Iterable[Any] = (),
                  field: str = "output_dir") -> Path:
    """Check `path` as a `method` run folder, then make it one: with `overwrite`, a folder that is not empty is
    deleted first (the run starts over); the run marker is written. Returns the folder."""
    target = check_output_dir(path, training_run(method), inputs=inputs, overwrite=overwrite, field=field)
    if overwrite and target.is_dir() and any(target.iterdir()):
        if target.is_symlink():
            target.unlink()
        else:
            shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    marker = target / RUN_MARKER
    if not marker.is_file():
        from paretoalign.atomic_io import write_json_atomic

        write_json_atomic(marker, {"format": RUN_FORMAT, "method": method})
    return target
