"""The records every later stage consumes: preference pairs and rated responses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Message = dict[str, str]
"""One chat message: {"role": "system" | "user" | "assistant", "content": str}."""


@dataclass
class PreferencePair:
    """A prompt (conversation up to the reply) with a preferred and a dispreferred reply."""

    prompt: list[Message]
    chosen: str
    rejected: str
    objective: str | None = None
    margin: float | None = None
    id: str | None = None
    subset: str | None = None
    source: str = ""
    """Where the row came from, as "file:line" (or "dataset[index]")."""


@dataclass
class RatedResponse:
    """A prompt and one reply with absolute ratings per attribute (NaN = not rated)."""

    prompt: list[Message]
    response: str
    ratings: dict[str, float] = field(default_factory=dict)
    id: str | None = None
    subset: str | None = None
    source: str = ""

    def rating(self, name: str) -> float:
        """The rating of attribute `name`, NaN if missing."""
        return self.ratings.get(name, math.nan)


def prompt_text(prompt: list[Message]) -> str:
    """The last user turn of a prompt conversation (for display and length heuristics)."""
    for message in reversed(prompt):
        if message["role"] == "user":
            return message["content"]
    return prompt[-1]["content"] if prompt else ""
