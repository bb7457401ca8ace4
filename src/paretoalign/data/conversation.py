"""Prompt and response normalisation: every accepted input form -> ``list[Message]`` prompts and ``str`` replies.

Accepted prompt forms (``prompt_format="auto"``):

- a plain string -> ``[{"role": "user", "content": s}]``;
- raw Anthropic HH text (``"\\n\\nHuman: ...\\n\\nAssistant:"``) -> its turns (see ``hh.parse_hh_dialogue``);
- a TRL conversational list of ``{"role", "content"}`` messages (roles system/user/assistant, string contents).

``prompt_format="turns"`` reads a string as dialogue turns separated by newlines, alternating speakers and ending
with the user turn (Topical-Chat style histories).

A prompt conversation must contain a user message and end with one (the reply being judged comes next).
A reply is a string, or a conversational list of assistant messages whose final one is the reply; a list may repeat
the prompt messages as a prefix (TRL conversational rows often do), which is stripped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from paretoalign.data.hh import is_hh_text, parse_hh_dialogue
from paretoalign.data.records import location_error
from paretoalign.data.schema import Message
from paretoalign.errors import InputError

ROLES = ("system", "user", "assistant")
PROMPT_FORMATS = ("auto", "turns")


class EmptyFieldError(InputError):
    """An empty or whitespace-only prompt or reply; loaders skip these rows when ``drop_empty=True``."""


def _empty_error(message: str, location: str, field: str) -> EmptyFieldError:
    base = location_error(message, location, field)
    return EmptyFieldError(base.reason, path=base.path, line=base.line, field=field)


def normalize_messages(value: Any, *, field: str, location: str = "") -> list[Message]:
    """Validate a conversational list: each item a ``{"role", "content"}`` object with a known role and a string
    content. Returns clean copies holding only ``role`` and ``content``."""
    if not isinstance(value, (list, tuple)):
        raise location_error(f"expected a list of messages, got {type(value).__name__}", location, field)
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise location_error(f"message {i} is a {type(message).__name__}, expected an object with 'role' and "
                                 "'content'", location, field)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise location_error(f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}", location,
                                 field)
        if not isinstance(content, str):
            raise location_error(f"message {i} ({role}) has content of type {type(content).__name__}; expected a "
                                 "string", location, field)
        messages.append({"role": role, "content": content})
    return messages


def turns_to_messages(text: str) -> list[Message]:
    """Newline-separated dialogue turns -> alternating user/assistant messages, the last turn being the user's.

    Turns are stripped and blank lines dropped: ``"a \\n b \\n c"`` -> user "a", assistant "b", user "c".
    """
    turns = [turn.strip() for turn in text.split("\n")]
    turns = [turn for turn in turns if turn]
    n = len(turns)
    return [{"role": "user" if (n - 1 - i) % 2 == 0 else "assistant", "content": turn} for i, turn in enumerate(turns)]


def normalize_prompt(value: Any, *, field: str = "prompt", location: str = "",
                     prompt_format: str = "auto") -> list[Message]:
    """Any accepted prompt form -> a validated prompt conversation ending with a user message.

    Raises ``EmptyFieldError`` when the prompt has no text, ``InputError`` for anything else unusable."""
    if prompt_format not in PROMPT_FORMATS:
        raise InputError(f"unknown prompt_format {prompt_format!r}; expected one of {', '.join(PROMPT_FORMATS)}")
    if isinstance(value, str):
        if prompt_format == "turns":
            messages = turns_to_messages(value)
        elif is_hh_text(value):
            messages = parse_hh_dialogue(value, location=location)
        else:
            messages = [{"role": "user", "content": value}]
    elif isinstance(value, (list, tuple)):
        messages = normalize_messages(value, field=field, location=location)
    else:
        raise location_error(f"expected a string or a list of messages, got {type(value).__name__}", location,
                             field)
    return check_prompt(messages, field=field, location=location)


def check_prompt(messages: list[Message], *, field: str = "prompt", location: str = "") -> list[Message]:
    """Check that a prompt conversation has text and ends with a user message; return it."""
    if not any(m["content"].strip() for m in messages):
        raise _empty_error("empty prompt", location, field)
    if messages[-1]["role"] != "user":
        raise location_error(f"the prompt conversation must end with a user message (the reply comes next); it "
                             f"ends with a {messages[-1]['role']} message", location, field)
    return messages


def normalize_response(value: Any, *, prompt: Sequence[Message] = (), field: str = "response",
                       location: str = "") -> str:
    """A reply given as a string, or as a conversational list of assistant messages (optionally preceded by a
    repeat of `prompt`), -> the text of the final one. Raises ``EmptyFieldError`` for an empty reply and
    ``InputError`` when the list holds user/system turns that are not the prompt."""
    if isinstance(value, str):
        reply = value
    elif isinstance(value, (list, tuple)):
        messages = normalize_messages(value, field=field, location=location)
        if len(messages) > len(prompt) and _same_messages(messages[:len(prompt)], prompt):
            messages = messages[len(prompt):]
        if not messages:
            raise _empty_error("empty reply (no messages)", location, field)
        if messages[-1]["role"] != "assistant":
            raise location_error(f"the last message must be the assistant reply, got a {messages[-1]['role']} "
                                 "message", location, field)
        if any(m["role"] != "assistant" for m in messages):
            raise location_error(f"{len(messages)} messages beyond the prompt, not all from the assistant; expected "
                                 "the assistant reply, optionally preceded by the exact prompt messages", location,
                                 field)
        reply = messages[-1]["content"]
    else:
        raise location_error(f"expected a string or a list of messages, got {type(value).__name__}", location,
                             field)
    if not reply.strip():
        raise _empty_error("empty reply", location, field)
    return reply


def is_conversation(value: Any) -> bool:
    """Whether `value` is a full conversation (a message list or HH text) rather than a bare reply string."""
    return isinstance(value, (list, tuple)) or is_hh_text(value)


def split_implicit_prompt(chosen: Any, rejected: Any, *, chosen_field: str = "chosen",
                          rejected_field: str = "rejected", location: str = "") -> tuple[list[Message], str, str]:
    """TRL's implicit-prompt rows: two full conversations sharing a prefix -> (prompt, chosen reply, rejected reply).

    Each conversation is a message list or HH text; the longest common message prefix is the prompt and what
    follows on each side must be a single assistant reply."""
    sides = []
    for value, field in ((chosen, chosen_field), (rejected, rejected_field)):
        if isinstance(value, str):
            if not is_hh_text(value):
                raise location_error("a row without a prompt needs full conversations (message lists or HH text) "
                                     "in chosen and rejected", location, field)
            sides.append(parse_hh_dialogue(value, location=location))
        else:
            sides.append(normalize_messages(value, field=field, location=location))
    c, r = sides
    k = 0
    while k < min(len(c), len(r)) and _same_messages(c[k:k + 1], r[k:k + 1]):
        k += 1
    if k == len(c) == len(r):
        raise location_error("chosen and rejected are the same conversation", location, chosen_field)
    prompt = c[:k]
    if not prompt:
        raise location_error("chosen and rejected share no prompt messages", location, chosen_field)
    replies = []
    for rest, field in ((c[k:], chosen_field), (r[k:], rejected_field)):
        if not rest:
            raise _empty_error("empty reply (the conversation ends with the shared prompt)", location, field)
        if len(rest) > 1 or rest[0]["role"] != "assistant":
            raise location_error(f"chosen and rejected diverge before their final assistant reply (at message "
                                 f"{k + 1}); a preference pair needs one shared prompt", location, field)
        if not rest[0]["content"].strip():
            raise _empty_error("empty reply", location, field)
        replies.append(rest[0]["content"])
    check_prompt(prompt, field=chosen_field, location=location)
    return prompt, replies[0], replies[1]


def _same_messages(a: Sequence[Message], b: Sequence[Message]) -> bool:
    return len(a) == len(b) and all(x["role"] == y["role"] and x["content"].strip() == y["content"].strip()
                                    for x, y in zip(a, b, strict=False))


def warn_skipped(locations: list[str], reason: str, *, stacklevel: int = 3, show: int = 5) -> None:
    """Warn that rows at `locations` were skipped for `reason`, listing the first `show` of them."""
    if not locations:
        return
    shown = ", ".join(locations[:show]) + (", ..." if len(locations) > show else "")
    warnings.warn(f"skipped {len(locations)} row{'s' if len(locations) != 1 else ''} {reason}: {shown}",
                  stacklevel=stacklevel)
