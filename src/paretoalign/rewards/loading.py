"""One loader for every reward-model reference the commands accept.

`load_reward_model(reference)` dispatches on what the reference names:

- ``default``: the reward model shipped inside the package (`paretoalign.rewards.shipped`);
- a folder whose config.json has our format (`RewardModel.save_pretrained`): a `RewardModel`;
- a folder or hub id whose config.json names a ``*ForSequenceClassification`` architecture: a
  `SequenceClassifierRM` (one objective per label; see `paretoalign.rewards.hf_classifier`);
- a ``.yaml`` / ``.yml`` / ``.json`` FILE with a top-level ``rewards`` list: a `reward_set.RewardSet` (several
  rewards: RM objectives, verifiable checkers, user functions), its own ``reward_model`` key loaded by this same
  function (so it may be any of these kinds);
- anything else: InputError naming the reference.

`inspect_reward_model` makes the same decision from the files alone (no model loads; a reward-set file is read and
its components checked, which imports the modules of its user functions), so commands check their reward model
before any model loads. A missing path is tried as a hub id only when it looks like one (``owner/name``, with no
local folder ``owner``); its config.json is then fetched (cache or network). Folder and hub references are handled
by `paretoalign.rewards.model_loading`.
"""

from __future__ import annotations

import os
from pathlib import Path

from paretoalign.errors import InputError
from paretoalign.rewards import model_loading
from paretoalign.rewards.hf_classifier import SequenceClassifierRM
from paretoalign.rewards.model_loading import HINT, PARETOALIGN, SEQUENCE_CLASSIFIER, RewardModelReference
from paretoalign.rewards.reward_model import RewardModel
from paretoalign.rewards.reward_set import REWARD_SET_SUFFIXES, RewardSet, check_spec, read_spec_file

__all__ = ["HINT", "PARETOALIGN", "REWARD_SET", "SEQUENCE_CLASSIFIER", "RewardModelReference", "inspect_reward_model",
           "is_reward_set_file", "load_reward_model", "reward_model_inputs"]

REWARD_SET = "reward_set"


def is_reward_set_file(reference: str | os.PathLike) -> bool:
    """Whether `reference` names an existing .yaml / .yml / .json file (read as a reward set)."""
    path = Path(str(reference)).expanduser()
    return path.suffix.lower() in REWARD_SET_SUFFIXES and path.is_file()


def _nested(reference: str, spec: dict, seen: tuple[str, ...]) -> str | None:
    """The reward model a reward-set file names (None when it names none); InputError for a file naming itself."""
    nested = spec.get("reward_model")
    if nested is None:
        return None
    key = str(Path(reference).expanduser().resolve())
    if is_reward_set_file(nested) and str(Path(str(nested)).expanduser().resolve()) in (*seen, key):
        raise InputError("a reward set names itself (directly or through others) as its reward_model",
                         path=reference, field="reward_model")
    return str(nested)


def inspect_reward_model(reference: str | os.PathLike, *, field: str = "reward_model",
                         trust_remote_code: bool = False, _seen: tuple[str, ...] = ()) -> RewardModelReference:
    """Check a reward-model reference from its files alone (no model loads) and say what it names.

    InputError (naming `field` and the path) for: the shipped model missing, a missing folder, a file that is no
    reward set, a folder without config.json, one of another kind, an unreadable safetensors file, a classifier
    folder that asks to run its own code without `trust_remote_code`, and a reward-set file with a bad component
    or a bad reward_model of its own.
    """
    text = str(reference)
    if not is_reward_set_file(text):
        return model_loading.inspect_reward_model(text, field=field, trust_remote_code=trust_remote_code)
    spec = read_spec_file(text)
    check_spec(spec, path=text)
    nested = _nested(text, spec, _seen)
    if nested is not None:
        try:
            inspect_reward_model(nested, field="reward_model", trust_remote_code=trust_remote_code,
                                 _seen=(*_seen, str(Path(text).expanduser().resolve())))
        except InputError as exc:
            where = exc.path if exc.line is None else f"{exc.path}:{exc.line}"
            raise InputError(f"its reward model {nested!r} cannot be used: {where}: {exc.reason}", path=text,
                             field="reward_model") from None
    return RewardModelReference(text, str(Path(text).expanduser()), REWARD_SET)


def load_reward_model(reference: str | os.PathLike, *, trust_remote_code: bool = False,
                      field: str = "reward_model") -> RewardModel | SequenceClassifierRM | RewardSet:
    """The reward model a reference names (see the module); `trust_remote_code` is the caller's choice."""
    if not is_reward_set_file(reference):
        return model_loading.load_reward_model(reference, trust_remote_code=trust_remote_code, field=field)
    ref = inspect_reward_model(reference, field=field, trust_remote_code=trust_remote_code)
    spec = read_spec_file(ref.location)
    nested = spec.get("reward_model")
    rm = None
    if nested is not None and check_spec(spec, path=ref.location).needs_reward_model:
        rm = load_reward_model(str(nested), trust_remote_code=trust_remote_code, field="reward_model")
    return RewardSet.from_spec(spec, reward_model=rm, path=ref.location, trust_remote_code=trust_remote_code)


def reward_model_inputs(directory: str | os.PathLike, *, _seen: tuple[str, ...] = ()) -> list[str]:
    """A saved reward model folder (``default``: the shipped one) and the local backbone model its config.json names
    (read, nothing loaded): the inputs an output must not overwrite. For a reward-set file: the file and the inputs
    of its reward model."""
    if not is_reward_set_file(directory):
        return model_loading.reward_model_inputs(directory)
    key = str(Path(str(directory)).expanduser().resolve())
    if key in _seen:
        return []  # a reward set naming itself: refused by the inspection
    try:
        nested = read_spec_file(str(directory)).get("reward_model")
    except InputError:
        nested = None  # the inspection that follows reports the bad file
    inner = reward_model_inputs(str(nested), _seen=(*_seen, key)) if isinstance(nested, str) else []
    return [str(directory), *inner]
