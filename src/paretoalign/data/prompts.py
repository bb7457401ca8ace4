"""Prompt files for generation: rows with a ``prompt`` (string, HH dialogue or message list) plus any fields.

An optional ``constraints`` field (a list of checker specs, the prompt's own verifiable constraints) is shape-checked
here; `paretoalign.rewards.verifiable.PromptConstraints` builds the checkers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from paretoalign.data.conversation import normalize_prompt
from paretoalign.data.records import location_error, read_records
from paretoalign.data.schema import Message
from paretoalign.data.splits import prompt_key
from paretoalign.errors import InputError

MAX_PROMPT_CHARS = 100_000
"""The longest prompt (characters over all its messages) a prompt file may hold: about 25 000 tokens, past the
context of every model paretoalign ships; a longer one is almost surely a mistake (a whole file pasted into one
field) and is refused naming its file and line, before any model loads."""


def check_prompt_length(messages: list[Message], location: str, field: str = "prompt") -> None:
    """InputError at `location` when a prompt is longer than MAX_PROMPT_CHARS characters."""
    size = sum(len(m["content"]) for m in messages)
    if size > MAX_PROMPT_CHARS:
        raise location_error(f"the prompt is {size:,} characters, over the limit of {MAX_PROMPT_CHARS:,} (no "
                             "shipped model's context holds that much); shorten it", location, field)


def check_constraints(value: Any, location: str) -> None:
    """The shape of a row's optional ``constraints``: a non-empty list of objects, each naming a string "checker"
    (the checkers themselves are built, and their parameters checked, by `paretoalign.rewards.verifiable`)."""
    if value is None:
        return
    if not isinstance(value, list) or not value:
        raise location_error(f"constraints must be a non-empty list of checker specs ({{\"checker\": name, ...}}), "
                             f"got {'an empty list' if value == [] else type(value).__name__}", location, "constraints")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise location_error(f"a constraint is an object with a \"checker\" name, got {type(item).__name__}",
                                 location, f"constraints[{i}]")
        if not isinstance(item.get("checker"), str) or not item["checker"].strip():
            raise location_error("a constraint names its checker as a string (\"checker\": \"word_count\", ...)",
                                 location, f"constraints[{i}].checker")


@dataclass
class PromptRow:
    """One input row: where it came from, its fields as given, and its prompt as messages."""

    location: str
    row: dict[str, Any]
    messages: list[Message]

    @property
    def prompt_id(self) -> str:
        """The row's ``id`` field if it has one, else a hash of the prompt messages."""
        if "id" in self.row and self.row["id"] is not None:
            return str(self.row["id"])
        return prompt_hash(self.messages)


def prompt_hash(messages: list[Message]) -> str:
    """A stable id of a prompt's content: 16 hex digits of the sha256 of `splits.prompt_key`."""
    return hashlib.sha256(prompt_key(messages).encode("utf-8")).hexdigest()[:16]


def read_prompts(path: str) -> list[PromptRow]:
    """Every row of a JSONL / JSON / Parquet prompt file (or a bare-string-per-line .txt), in order."""
    rows = []
    if str(path).endswith(".txt"):
        rows = _read_txt(path)
    else:
        for location, row in read_records(path):
            if "prompt" not in row:
                raise location_error("missing field", location, "prompt")
            rows.append(PromptRow(location, row, normalize_prompt(row["prompt"], location=location)))
    if not rows:
        raise InputError("the prompt file has no rows", path=str(path), field="prompt")
    for r in rows:
        check_prompt_length(r.messages, r.location)
        check_constraints(r.row.get("constraints"), r.location)
    ids = {}
    for r in rows:
        if "id" in r.row and r.row["id"] is not None:
            if r.prompt_id in ids:
                raise location_error(f"duplicate id {r.prompt_id!r} (first at {ids[r.prompt_id]})", r.location, "id")
            ids[r.prompt_id] = r.location
    return rows


def _read_txt(path: str) -> list[PromptRow]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the prompt file: {exc}", path=str(path)) from exc
    rows = []
    for i, line in enumerate(lines, start=1):
        if line.strip():
            location = f"{path}:{i}"
            rows.append(PromptRow(location, {"prompt": line}, normalize_prompt(line, location=location)))
    return rows
