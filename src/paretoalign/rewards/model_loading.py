"""Reward-model folders and hub ids: what a reference to one names, and loading it.

`load_reward_model(reference)` dispatches on what the reference names:

- ``default``: the reward model shipped inside the package (`paretoalign.rewards.shipped`);
- a folder whose config.json has our format (`RewardModel.save_pretrained`): a `RewardModel`;
- a folder or hub id whose config.json names a ``*ForSequenceClassification`` architecture: a
  `SequenceClassifierRM` (one objective per label; see `paretoalign.rewards.hf_classifier`);
- anything else: InputError naming the reference.

Reward-set files (several rewards, `paretoalign.rewards.reward_set`) are the other reference kind; the loader of
every kind is `paretoalign.rewards.loading`, which builds on this module (kept apart so that a reward set can load
its own reward model without an import cycle).

`inspect_reward_model` makes the same decision from the files alone (nothing loads), so commands check their
reward model before any model loads. A missing path is tried as a hub id only when it looks like one
(``owner/name``, with no local folder ``owner``); its config.json is then fetched (cache or network).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from paretoalign.atomic_io import read_json_or_none
from paretoalign.errors import InputError
from paretoalign.output_paths import existing_paths
from paretoalign.rewards.hf_classifier import SequenceClassifierRM, is_sequence_classifier_config, read_config_json
from paretoalign.rewards.reward_model import CONFIG_FILE, FORMAT, RewardModel
from paretoalign.rewards.shipped import DEFAULT_RM_ALIAS, resolve_rm_reference

PARETOALIGN = "paretoalign"
SEQUENCE_CLASSIFIER = "sequence_classifier"
HINT = ("give a reward model folder from `paretoalign train-rm` (or `paretoalign demo`), `default` for the shipped "
        "one, a Hugging Face sequence-classification model folder or hub id, or a reward-set file (.yaml/.yml/.json "
        "with a `rewards` list)")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass(frozen=True)
class RewardModelReference:
    """What a reward-model reference names: the folder (or hub id) and its kind."""

    reference: str
    """As the user gave it."""
    location: str
    """The folder or hub id to load (``default`` resolved)."""
    kind: str
    """`PARETOALIGN`, `SEQUENCE_CLASSIFIER` or (a reward-set file) `paretoalign.rewards.loading.REWARD_SET`."""


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.fullmatch(text)) and not Path(text.split("/", 1)[0]).exists()


def _hub_config(repo_id: str, field: str) -> dict:
    """The config.json of a hub repository: from the local hub cache, else fetched (one quick probe first, so that a
    mistyped local path fails at once when offline instead of after the download's retries)."""
    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, CONFIG_FILE)
    if isinstance(cached, str):
        return read_config_json(Path(cached))
    try:
        if constants.HF_HUB_OFFLINE:
            raise ConnectionError("offline mode (HF_HUB_OFFLINE) and not in the local hub cache")
        HfApi().model_info(repo_id, timeout=10)
        local = hf_hub_download(repo_id, CONFIG_FILE)
    except Exception as exc:  # offline, unknown repository, gated model: all mean "cannot use this reference"
        raise InputError(f"no such reward model folder, and no hub repository with a config.json could be reached "
                         f"under this id ({type(exc).__name__}); {HINT}", path=repo_id, field=field) from None
    return read_config_json(Path(local))


def _kind_of(config: dict, where: str, field: str) -> str:
    if config.get("format") == FORMAT:
        return PARETOALIGN
    if is_sequence_classifier_config(config):
        return SEQUENCE_CLASSIFIER
    raise InputError(f"neither a paretoalign reward model nor a Hugging Face sequence classifier: config.json has "
                     f"format {config.get('format')!r} and architectures {config.get('architectures')!r} (expected "
                     f"format {FORMAT!r}, or an architecture ending in 'ForSequenceClassification'); {HINT}",
                     path=where, field=field)


def inspect_reward_model(reference: str | os.PathLike, *, field: str = "reward_model",
                         trust_remote_code: bool = False) -> RewardModelReference:
    """Check a reward-model reference from its files alone (no model loads) and say what it names.

    InputError (naming `field` and the path) for: the shipped model missing, a missing folder, a file, a folder
    without config.json, one of another kind, an unreadable safetensors file, and a classifier folder that asks to
    run its own code without `trust_remote_code`.
    """
    from paretoalign.embed.models import REMOTE_CODE_HINT, check_model_files, check_remote_code

    text = str(reference)
    if text == DEFAULT_RM_ALIAS:
        location = resolve_rm_reference(text)
        if not (Path(location) / CONFIG_FILE).is_file():
            raise InputError(f"the shipped default reward model is missing from this installation (expected in "
                             f"{location}); reinstall paretoalign, or {HINT}", path=text, field=field)
    else:
        location = text
    path = Path(location).expanduser()
    if not path.exists():
        if text != DEFAULT_RM_ALIAS and _looks_like_hub_id(text):
            config = _hub_config(text, field)
            kind = _kind_of(config, text, field)
            if kind == SEQUENCE_CLASSIFIER and "auto_map" in config and trust_remote_code is not True:
                raise InputError(f"the hub model asks to run its own Python code (an 'auto_map' in its config.json); "
                                 f"{REMOTE_CODE_HINT}", path=text, field=field)
            return RewardModelReference(text, text, kind)
        raise InputError(f"no such reward model folder: {HINT}", path=text, field=field)
    if not path.is_dir():
        raise InputError(f"is a file, not a reward model folder: {HINT}", path=text, field=field)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"no reward model here (no {CONFIG_FILE}): {HINT}", path=text, field=field)
    kind = _kind_of(read_config_json(config_path), str(config_path), field)
    if kind == SEQUENCE_CLASSIFIER:
        check_remote_code(path, trust_remote_code=trust_remote_code is True,
                          context=f"the sequence-classifier reward model given as {field}")
    check_model_files(path)
    return RewardModelReference(text, str(path), kind)


def load_reward_model(reference: str | os.PathLike, *, trust_remote_code: bool = False,
                      field: str = "reward_model") -> RewardModel | SequenceClassifierRM:
    """The reward model a reference names (see the module); `trust_remote_code` is the caller's choice."""
    ref = inspect_reward_model(reference, field=field, trust_remote_code=trust_remote_code)
    if ref.kind == PARETOALIGN:
        return RewardModel.from_pretrained(ref.location, trust_remote_code=trust_remote_code is True)
    return SequenceClassifierRM.from_pretrained(ref.location, trust_remote_code=trust_remote_code is True)


def reward_model_inputs(directory: str | os.PathLike) -> list[str]:
    """A saved reward model folder (``default``: the shipped one) and the local backbone model its config.json names
    (read, nothing loaded): the inputs an output must not overwrite."""
    directory = resolve_rm_reference(str(directory))
    out = [str(directory)]
    config = read_json_or_none(Path(directory) / CONFIG_FILE)
    backbone = config.get("backbone") if isinstance(config, dict) else None
    if isinstance(backbone, dict):
        out.extend(existing_paths([backbone.get("model")]))
    return out
