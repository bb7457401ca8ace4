"""Rows to score with a reward model: single responses {prompt, response} and preference pairs {prompt, chosen,
rejected}, mixed in one file."""

from __future__ import annotations

import os
from typing import Any, Literal

from paretoalign.data.records import location_error, read_records
from paretoalign.errors import InputError

ScoreRowKind = Literal["single", "pair"]


def read_score_rows(path: str | os.PathLike) -> list[tuple[str, dict[str, Any], ScoreRowKind]]:
    """Rows of a scoring input with their location and kind ('single' or 'pair'); InputError naming the location of
    a row without its fields, or the file when it has no rows."""
    rows: list[tuple[str, dict[str, Any], ScoreRowKind]] = []
    for location, row in read_records(path):
        is_pair = "chosen" in row or "rejected" in row
        required = ("prompt", "chosen", "rejected") if is_pair else ("prompt", "response")
        for key in required:
            if key not in row:
                raise location_error("missing field", location, key)
        rows.append((location, row, "pair" if is_pair else "single"))
    if not rows:
        raise InputError("no rows to score", path=str(path))
    return rows
