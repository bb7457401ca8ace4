"""Load absolute (per-attribute) ratings of replies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from paretoalign.data.conversation import EmptyFieldError, normalize_prompt, normalize_response, warn_skipped
from paretoalign.data.preference import check_limit, optional_id, optional_string, required_field
from paretoalign.data.records import location_error, read_records
from paretoalign.data.schema import RatedResponse
from paretoalign.errors import InputError

NON_RATING_FIELDS = frozenset({
    "id", "idx", "index", "row_id", "prompt_id", "tree_id", "conversation_id", "message_id", "parent_id",
    "subset", "split", "source", "messages", "prompt", "response", "chosen", "rejected", "objective",
})
"""Fields never taken as ratings when ``attributes=None`` (besides the prompt, response and subset fields)."""


def load_ratings(source: Any, *, attributes: Sequence[str] | None = None, prompt_field: str = "prompt",
                 response_field: str = "response", subset_field: str | None = "subset", split: str | None = None,
                 drop_empty: bool = False, limit: int | None = None,
                 prompt_format: str = "auto") -> list[RatedResponse]:
    """Read rated replies from `source` (a file path, a ``datasets.Dataset``/``DatasetDict`` or a list of dicts).

    `attributes` names the numeric columns to keep; ``None`` keeps every column holding a number in some row,
    except the prompt/response/subset fields and id-like fields (``NON_RATING_FIELDS``). Every returned
    ``RatedResponse.ratings`` has all the attributes as keys: a missing, null or empty-string value is NaN (not
    rated). A NaN or infinite value, a boolean or a non-numeric string raises ``InputError`` naming the field;
    numeric strings are parsed. A row with none of the attributes rated, or with an empty prompt or reply, raises
    ``InputError`` unless ``drop_empty=True`` (then it is skipped with a warning). An attribute present in no row
    raises ``InputError``.
    """
    check_limit(limit)
    records = list(read_records(source, split=split))
    if attributes is None:
        excluded = NON_RATING_FIELDS | {prompt_field, response_field} | ({subset_field} if subset_field else set())
        seen: dict[str, None] = {}
        for _, row in records:
            for key, value in row.items():
                if key not in excluded and _is_number(value):
                    seen.setdefault(key, None)
        attributes = list(seen)
        if not attributes:
            raise InputError(f"no numeric rating columns found in {_describe(records)}; pass attributes=")
    else:
        if isinstance(attributes, str):
            attributes = [attributes]
        attributes = list(dict.fromkeys(attributes))
        if not attributes:
            raise InputError("attributes is empty; name at least one rating column (or pass None for all)")
        for name in attributes:
            if not any(name in row for _, row in records):
                raise InputError(f"rating column {name!r} is in no row of {_describe(records)}", field=name)
    results: list[RatedResponse] = []
    skipped_empty: list[str] = []
    skipped_unrated: list[str] = []
    for location, row in records:
        if limit is not None and len(results) >= limit:
            break
        try:
            prompt = normalize_prompt(required_field(row, prompt_field, location), field=prompt_field,
                                      location=location, prompt_format=prompt_format)
            response = normalize_response(required_field(row, response_field, location), prompt=prompt,
                                          field=response_field, location=location)
        except EmptyFieldError:
            if not drop_empty:
                raise
            skipped_empty.append(location)
            continue
        ratings = {name: rating_value(row.get(name), location, name) for name in attributes}
        if all(math.isnan(v) for v in ratings.values()):
            if not drop_empty:
                raise location_error(f"none of the rating columns {attributes} has a value in this row (pass "
                                     "drop_empty=True to skip such rows)", location, attributes[0])
            skipped_unrated.append(location)
            continue
        results.append(RatedResponse(prompt=prompt, response=response, ratings=ratings,
                                     id=optional_id(row, location),
                                     subset=optional_string(row, subset_field, location) if subset_field else None,
                                     source=location))
    warn_skipped(skipped_empty, "with an empty prompt or reply (drop_empty=True)")
    warn_skipped(skipped_unrated, f"with none of {attributes} rated (drop_empty=True)")
    return results


def rating_value(value: Any, location: str, field: str) -> float:
    """A rating cell -> float; None/missing/"" -> NaN. Rejects NaN/inf, booleans and non-numeric strings."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, bool):
        raise location_error(f"expected a number, got the boolean {str(value).lower()}", location, field)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise location_error(f"expected a number, got the string {value!r}", location, field) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise location_error(f"expected a number, got {type(value).__name__}", location, field)
    if not math.isfinite(number):
        raise location_error(f"expected a finite number, got {value!r} (write null for a missing rating)",
                             location, field)
    return number


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(records: list[tuple[str, dict]]) -> str:
    if not records:
        return "the source (it has no rows)"
    path, _, _ = records[0][0].rpartition(":")
    return path or "the source"
