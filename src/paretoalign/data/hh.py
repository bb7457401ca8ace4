"""Anthropic HH-RLHF raw dialogue text <-> chat messages.

HH text looks like ``"\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: why?\\n\\nAssistant:"``: turns start with
``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"``. A ``Human:`` / ``Assistant:`` that is not preceded by a blank line is
part of the text of a turn, as in the original data.
"""

from __future__ import annotations

import re

from paretoalign.data.records import location_error
from paretoalign.data.schema import Message

_ROLES = {"Human": "user", "Assistant": "assistant"}
_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_START = re.compile(r"\s*Human:")


def is_hh_text(text: object) -> bool:
    """Whether `text` is an HH dialogue: it starts with a ``Human:`` turn and has an ``Assistant:`` turn."""
    return isinstance(text, str) and bool(_HH_START.match(text)) and "\n\nAssistant:" in text


def parse_hh_dialogue(text: str, *, location: str = "") -> list[Message]:
    """Split raw HH text into ``{"role", "content"}`` messages (roles user/assistant, contents stripped).

    A trailing empty ``Assistant:`` turn (the generation slot of an HH prompt) is dropped, so an HH prompt becomes
    a conversation ending with the user turn. Raises ``InputError`` (located at `location`) when the text has no
    ``Human:`` turn or has text before its first turn.
    """
    if not isinstance(text, str):
        raise location_error(f"expected HH dialogue text, got {type(text).__name__}", location)
    body = "\n\n" + text.lstrip()
    parts = _TURN.split(body)
    # parts = [before-first-turn, role, content, role, content, ...]
    if parts[0].strip():
        raise location_error("not HH dialogue text: it must start with a 'Human:' turn, found "
                             f"{_preview(parts[0])}", location)
    messages = [{"role": _ROLES[role], "content": content.strip()}
                for role, content in zip(parts[1::2], parts[2::2], strict=True)]
    if not any(m["role"] == "user" for m in messages):
        raise location_error(f"not HH dialogue text: no '\\n\\nHuman:' turn in {_preview(text)}", location)
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def _preview(text: str, limit: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")
