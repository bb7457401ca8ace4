"""The project's held-out split: deterministic, by prompt, so one prompt never sits on both sides.

``heldout_split(prompt_key(prompt), fraction=0.3, seed=0)`` is THE split of the project: the bundled training
data holds only "train" rows, and evaluation on the shared data uses the "test" rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import TypeVar

from paretoalign.data.schema import Message, PreferencePair, RatedResponse
from paretoalign.errors import InputError

DEFAULT_HELDOUT_FRACTION = 0.3
DEFAULT_SEED = 0

T = TypeVar("T", PreferencePair, RatedResponse)


def prompt_key(prompt: list[Message]) -> str:
    """Canonical JSON of a prompt conversation (roles and whitespace-stripped contents): equal for equal prompts
    whatever their input form (plain string, HH text or message list)."""
    return json.dumps([[m["role"], m["content"].strip()] for m in prompt], ensure_ascii=False,
                      separators=(",", ":"))


def heldout_split(key: str, *, fraction: float = DEFAULT_HELDOUT_FRACTION, seed: int = DEFAULT_SEED) -> str:
    """``"test"`` for about `fraction` of keys, else ``"train"``: sha256 of the seed and `key`, so the answer is
    the same on every machine and run. Pass ``prompt_key(prompt)`` to keep all rows of a prompt together."""
    check_fraction(fraction)
    digest = hashlib.sha256(f"{int(seed)}\x1f{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if u < fraction else "train"


def split_of(prompt: list[Message], *, fraction: float = DEFAULT_HELDOUT_FRACTION, seed: int = DEFAULT_SEED) -> str:
    """``heldout_split`` of a prompt conversation."""
    return heldout_split(prompt_key(prompt), fraction=fraction, seed=seed)


def split_pairs(pairs: Iterable[PreferencePair], fraction: float = DEFAULT_HELDOUT_FRACTION,
                seed: int = DEFAULT_SEED) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, test) pairs by ``heldout_split`` of their prompts; order within each side is kept."""
    return _split(pairs, fraction, seed)


def split_ratings(ratings: Iterable[RatedResponse], fraction: float = DEFAULT_HELDOUT_FRACTION,
                  seed: int = DEFAULT_SEED) -> tuple[list[RatedResponse], list[RatedResponse]]:
    """(train, test) rated replies by ``heldout_split`` of their prompts; order within each side is kept."""
    return _split(ratings, fraction, seed)


def check_fraction(fraction: float) -> None:
    """Raise ``InputError`` unless 0 <= `fraction` <= 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise InputError(f"the held-out fraction must be a number in [0, 1], got {fraction!r}",
                         field="heldout_fraction")


def _split(rows: Iterable[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    check_fraction(fraction)
    train: list[T] = []
    test: list[T] = []
    cache: dict[str, str] = {}
    for row in rows:
        key = prompt_key(row.prompt)
        side = cache.get(key)
        if side is None:
            side = cache[key] = heldout_split(key, fraction=fraction, seed=seed)
        (test if side == "test" else train).append(row)
    return train, test
