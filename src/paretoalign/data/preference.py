"""Load preference pairs from TRL-style rows (standard, conversational, implicit prompt, raw Anthropic HH)."""

from __future__ import annotations

import math
from typing import Any

from paretoalign.data.conversation import (
    EmptyFieldError,
    is_conversation,
    normalize_prompt,
    normalize_response,
    split_implicit_prompt,
    warn_skipped,
)
from paretoalign.data.records import location_error, read_records
from paretoalign.data.schema import PreferencePair
from paretoalign.errors import InputError


def load_preference_pairs(source: Any, *, objective: str | None = None, prompt_field: str = "prompt",
                          chosen_field: str = "chosen", rejected_field: str = "rejected",
                          subset_field: str | None = "subset", split: str | None = None, drop_empty: bool = False,
                          limit: int | None = None, prompt_format: str = "auto") -> list[PreferencePair]:
    """Read preference pairs from `source` (a file path, a ``datasets.Dataset``/``DatasetDict`` or a list of
    dicts; see ``read_records``).

    Each row needs `chosen_field` and `rejected_field` and, unless chosen and rejected are full conversations
    sharing a prefix (TRL's implicit prompt, or raw Anthropic HH rows), `prompt_field`. Prompts and replies may be
    strings, HH text or conversational message lists (see ``paretoalign.data.conversation``). Optional row fields:
    ``objective`` (a string; the `objective` argument, when given, overrides it for every row), ``margin`` (a
    finite number), ``id`` and `subset_field`.

    An empty or whitespace-only prompt or reply raises ``InputError`` naming the field; with ``drop_empty=True``
    such rows are skipped with a warning giving their count and first locations. `limit` stops after that many
    pairs. `split` picks the split of a ``DatasetDict``.
    """
    check_limit(limit)
    pairs: list[PreferencePair] = []
    skipped: list[str] = []
    if limit == 0:
        return pairs
    for location, row in read_records(source, split=split):
        try:
            pair = pair_from_row(row, location, objective=objective, prompt_field=prompt_field,
                                 chosen_field=chosen_field, rejected_field=rejected_field,
                                 subset_field=subset_field, prompt_format=prompt_format)
        except EmptyFieldError:
            if not drop_empty:
                raise
            skipped.append(location)
            continue
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    warn_skipped(skipped, "with an empty prompt or reply (drop_empty=True)")
    return pairs


def pair_from_row(row: dict, location: str, *, objective: str | None = None, prompt_field: str = "prompt",
                  chosen_field: str = "chosen", rejected_field: str = "rejected",
                  subset_field: str | None = "subset", prompt_format: str = "auto") -> PreferencePair:
    """One row -> a ``PreferencePair`` (see ``load_preference_pairs``); raises ``InputError`` located at
    `location` (``EmptyFieldError`` for an empty prompt or reply)."""
    chosen_value = required_field(row, chosen_field, location)
    rejected_value = required_field(row, rejected_field, location)
    prompt_value = row.get(prompt_field)
    if prompt_value is None:
        if not (is_conversation(chosen_value) and is_conversation(rejected_value)):
            raise location_error(f"missing field {prompt_field!r} (a row may omit the prompt only when chosen and "
                                 "rejected are full conversations sharing it)", location, prompt_field)
        prompt, chosen, rejected = split_implicit_prompt(chosen_value, rejected_value, chosen_field=chosen_field,
                                                         rejected_field=rejected_field, location=location)
    else:
        prompt = normalize_prompt(prompt_value, field=prompt_field, location=location, prompt_format=prompt_format)
        chosen = normalize_response(chosen_value, prompt=prompt, field=chosen_field, location=location)
        rejected = normalize_response(rejected_value, prompt=prompt, field=rejected_field, location=location)
    if objective is None:
        objective = optional_string(row, "objective", location)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, objective=objective,
                          margin=_margin(row, location), id=optional_id(row, location),
                          subset=optional_string(row, subset_field, location) if subset_field else None,
                          source=location)


def required_field(row: dict, field: str, location: str) -> Any:
    """`row[field]`, or an ``InputError`` naming the missing field and the fields the row has."""
    value = row.get(field)
    if value is None:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise location_error(f"missing required field {field!r} (the row has fields: {present})", location, field)
    return value


def optional_string(row: dict, field: str, location: str) -> str | None:
    """`row[field]` as a string (ints accepted), or None when absent/null."""
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise location_error(f"expected a string, got {type(value).__name__}", location, field)
    return str(value)


def optional_id(row: dict, location: str) -> str | None:
    """The row's ``id`` as a string (string or integer ids), or None."""
    return optional_string(row, "id", location)


def _margin(row: dict, location: str) -> float | None:
    value = row.get("margin")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise location_error(f"expected a finite number, got {type(value).__name__} {value!r}", location, "margin")
    value = float(value)
    if not math.isfinite(value):
        raise location_error(f"expected a finite number, got {value}", location, "margin")
    return value


def check_limit(limit: int | None) -> None:
    """Raise ``InputError`` unless `limit` is None or a non-negative integer."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InputError(f"limit must be a non-negative integer or None, got {limit!r}", field="limit")
