"""Rankings of sibling replies -> preference pairs (every pair of differently ranked replies to one prompt)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from paretoalign.data.conversation import EmptyFieldError, normalize_prompt, normalize_response, warn_skipped
from paretoalign.data.preference import check_limit, optional_id, optional_string, required_field
from paretoalign.data.ratings import rating_value
from paretoalign.data.records import location_error, read_records, split_location
from paretoalign.data.schema import Message, PreferencePair, RatedResponse
from paretoalign.data.splits import prompt_key
from paretoalign.errors import InputError


@dataclass
class _Ranked:
    prompt: list[Message]
    response: str
    rank: float
    group: str
    id: str | None
    subset: str | None
    source: str


def rankings_to_pairs(rows: Iterable[RatedResponse] | Iterable[dict], *, rank_field: str = "rank",
                      group_by: str = "prompt", lower_is_better: bool = True, objective: str | None = None,
                      prompt_field: str | None = None, response_field: str = "response",
                      subset_field: str | None = "subset", drop_empty: bool = False) -> list[PreferencePair]:
    """Every pair of differently ranked replies in a group -> a ``PreferencePair`` (chosen = the better rank).

    `rows` are ``RatedResponse``s (the rank is ``ratings[rank_field]``) or dicts with a prompt (`prompt_field`;
    ``None`` takes ``"messages"`` where a row has it, else ``"prompt"``), a reply (`response_field`) and a rank.
    Replies are grouped by their prompt conversation (``group_by="prompt"``) or, for dict rows, by the value of
    the field `group_by` (all replies of a group must then share one prompt). With `lower_is_better` rank 0 beats
    rank 1. Ties and identical reply texts produce no pair; replies without a rank are skipped; each of these is
    counted in a warning. ``margin`` is None; ``objective`` is set on every pair.
    """
    items: list[_Ranked] = []
    skipped_empty: list[str] = []
    for i, row in enumerate(rows):
        if isinstance(row, RatedResponse):
            if group_by != "prompt":
                raise InputError(f"group_by={group_by!r}: RatedResponse rows can only be grouped by 'prompt'")
            items.append(_Ranked(row.prompt, row.response, row.rating(rank_field), prompt_key(row.prompt), row.id,
                                 row.subset, row.source or f"rows[{i}]"))
        elif isinstance(row, dict):
            try:
                items.append(_ranked_from_row(row, f"rows[{i}]", rank_field=rank_field, group_by=group_by,
                                              prompt_field=prompt_field, response_field=response_field,
                                              subset_field=subset_field))
            except EmptyFieldError:
                if not drop_empty:
                    raise
                skipped_empty.append(f"rows[{i}]")
        else:
            raise InputError(f"rows[{i}] is a {type(row).__name__}; expected a RatedResponse or a dict")
    warn_skipped(skipped_empty, "with an empty prompt or reply (drop_empty=True)")
    return _pairs(items, lower_is_better=lower_is_better, objective=objective, rank_field=rank_field)


def load_ranked_pairs(source: Any, *, rank_field: str = "rank", response_field: str = "response",
                      prompt_field: str | None = None, group_by: str = "prompt", lower_is_better: bool = True,
                      objective: str | None = None, subset_field: str | None = "subset", split: str | None = None,
                      drop_empty: bool = False, limit: int | None = None,
                      prompt_format: str = "auto") -> list[PreferencePair]:
    """Read ranked replies from `source` (file path, ``datasets`` object or list of dicts) and turn them into pairs
    with ``rankings_to_pairs`` semantics. `prompt_field=None` uses ``"messages"`` where a row has it (OASST-style:
    the conversation up to the user turn), else ``"prompt"``. `limit` caps the number of pairs."""
    check_limit(limit)
    items: list[_Ranked] = []
    skipped_empty: list[str] = []
    for location, row in read_records(source, split=split):
        try:
            items.append(_ranked_from_row(row, location, rank_field=rank_field, group_by=group_by,
                                          prompt_field=prompt_field, response_field=response_field,
                                          subset_field=subset_field, prompt_format=prompt_format))
        except EmptyFieldError:
            if not drop_empty:
                raise
            skipped_empty.append(location)
    warn_skipped(skipped_empty, "with an empty prompt or reply (drop_empty=True)")
    pairs = _pairs(items, lower_is_better=lower_is_better, objective=objective, rank_field=rank_field)
    return pairs if limit is None else pairs[:limit]


def _ranked_from_row(row: dict, location: str, *, rank_field: str, group_by: str, prompt_field: str | None,
                     response_field: str, subset_field: str | None, prompt_format: str = "auto") -> _Ranked:
    if prompt_field is None:
        prompt_field = "messages" if row.get("messages") is not None else "prompt"
    prompt = normalize_prompt(required_field(row, prompt_field, location), field=prompt_field, location=location,
                              prompt_format=prompt_format)
    response = normalize_response(required_field(row, response_field, location), prompt=prompt,
                                  field=response_field, location=location)
    if group_by == "prompt":
        group = prompt_key(prompt)
    else:
        value = required_field(row, group_by, location)
        try:
            group = json.dumps(value, sort_keys=True)
        except TypeError:
            raise location_error(f"cannot group by a {type(value).__name__}", location, group_by) from None
    return _Ranked(prompt, response, rating_value(row.get(rank_field), location, rank_field), group,
                   optional_id(row, location), optional_string(row, subset_field, location) if subset_field else None,
                   location)


def _pairs(items: list[_Ranked], *, lower_is_better: bool, objective: str | None,
           rank_field: str) -> list[PreferencePair]:
    groups: dict[str, list[_Ranked]] = {}
    unranked = []
    for item in items:
        if math.isnan(item.rank):
            unranked.append(item.source)
        else:
            groups.setdefault(item.group, []).append(item)
    pairs: list[PreferencePair] = []
    ties = identical = 0
    for members in groups.values():
        first = members[0]
        for other in members[1:]:
            if prompt_key(other.prompt) != prompt_key(first.prompt):
                raise location_error(f"replies grouped together have different prompts (see also {first.source})",
                                     other.source)
        # Stable sort: best first; equal ranks keep file order.
        ordered = sorted(members, key=lambda m: m.rank if lower_is_better else -m.rank)
        for i, better in enumerate(ordered):
            for worse in ordered[i + 1:]:
                if better.rank == worse.rank:
                    ties += 1
                elif better.response.strip() == worse.response.strip():
                    identical += 1
                else:
                    pairs.append(_make_pair(better, worse, objective))
    warn_skipped(unranked, f"without a {rank_field!r} value (they cannot be compared)", stacklevel=4)
    if ties or identical:
        parts = [f"{ties} tied pair{'s' if ties != 1 else ''}"] if ties else []
        if identical:
            parts.append(f"{identical} pair{'s' if identical != 1 else ''} of identical replies")
        warnings.warn(f"rankings -> pairs: {' and '.join(parts)} produced no pair ({len(pairs)} pairs made)",
                      stacklevel=4)
    return pairs


def _make_pair(better: _Ranked, worse: _Ranked, objective: str | None) -> PreferencePair:
    path_a, _ = split_location(better.source)
    path_b, line_b = split_location(worse.source)
    source = f"{better.source} vs {line_b}" if path_a == path_b and line_b is not None else \
        f"{better.source} vs {worse.source}"
    return PreferencePair(
        prompt=better.prompt, chosen=better.response, rejected=worse.response, objective=objective, margin=None,
        id=f"{better.id}-vs-{worse.id}" if better.id is not None and worse.id is not None else None,
        subset=better.subset if better.subset == worse.subset else None, source=source)
