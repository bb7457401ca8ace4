"""Prompts and chat text, the one module every layer uses: how a prompt is normalised to messages, rendered for
generation and tokenized, and the one text a (prompt, response) row is rendered to, for the embedding backbone AND
exported classifiers.

A prompt is a string (one user turn) or a list of ``{"role", "content"}`` messages (`as_messages`); for generation it
is rendered with the tokenizer's chat template and ``add_generation_prompt=True`` (the plain ``role: content``
format without a template: `render_prompt`).

`conversation_text` is the single place that decides how a row becomes text. A causal-LM backbone tokenizes
exactly this text (``add_special_tokens=False``); an exported Hugging Face sequence classifier must be fed the
same text, tokenized the same way, to reproduce the features it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paretoalign.data.schema import Message
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer

PLAIN_ASSISTANT_PREFIX = "assistant: "

PromptLike = str | Sequence[Message]


def as_messages(prompt: PromptLike, index: int | None = None) -> list[Message]:
    """A prompt as a message list; a string becomes one user message."""
    where = "" if index is None else f"prompt {index}: "
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError(f"{where}the prompt is empty", field="prompt")
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise InputError(f"{where}the prompt has no messages", field="prompt")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}each message needs 'role' and 'content', got {m!r}", field="prompt")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def eos_token_ids(tokenizer: Tokenizer, model: CausalLM | None = None) -> frozenset[int]:
    """The tokenizer's EOS id plus the model's ``generation_config.eos_token_id`` (an int or a list)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    return frozenset(ids)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The id used for padding (left-padded prompts, right-padded training rows): the pad token, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _render(tokenizer: Tokenizer, messages: list[Message]) -> str:
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return plain_text(messages, "")[0]


def _token_ids(tokenizer: Tokenizer, messages: list[Message]) -> list[int]:
    return list(tokenizer(_render(tokenizer, messages), add_special_tokens=False)["input_ids"])


def render_prompt(tokenizer: Tokenizer, prompt: PromptLike) -> str:
    """A prompt rendered with the tokenizer's chat template and the generation prompt (plain format without one)."""
    return _render(tokenizer, as_messages(prompt))


def prompt_token_ids(tokenizer: Tokenizer, prompt: PromptLike) -> list[int]:
    """Token ids of the rendered prompt (the template already holds any special tokens)."""
    return _token_ids(tokenizer, as_messages(prompt))


def encode_prompts(tokenizer: Tokenizer, context_length: int | None, prompts: Sequence[PromptLike],
                   max_new_tokens: int) -> list[list[int]]:
    """Token ids of every prompt; InputError for no prompts, an empty one, or one that leaves no room to generate."""
    if len(prompts) == 0:
        raise InputError("no prompts given", field="prompts")
    encoded = []
    for i, p in enumerate(prompts):
        ids = _token_ids(tokenizer, as_messages(p, i))  # normalised once, here
        if context_length is not None and len(ids) + max_new_tokens > context_length:
            raise InputError(f"prompt {i} is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it needs "
                             f"{len(ids) + max_new_tokens} positions but the model's context is {context_length}",
                             field="prompt")
        encoded.append(ids)
    return encoded


def has_chat_template(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer carries a chat template (a string, or a dict of named ones)."""
    return bool(getattr(tokenizer, "chat_template", None))


def plain_text(prompt: Sequence[Message], response: str) -> tuple[str, int]:
    """The fallback format for tokenizers without a chat template.

    One ``"<role>: <content>"`` line per prompt message, then ``"assistant: <response>"``; the reply starts
    right after ``"assistant: "``.
    """
    head = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + PLAIN_ASSISTANT_PREFIX
    return head + response, len(head)


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def conversation_text(tokenizer: Tokenizer, prompt: Sequence[Message], response: str) -> tuple[str, int]:
    """The chat-templated text of ``prompt + [assistant: response]`` and the character offset where the reply starts.

    The reply starts at ``len(G)``, where G is the prompt rendered with ``add_generation_prompt=True``, whenever
    the full text starts with G (every common template). Templates that render a past assistant turn differently
    from a generation prompt (e.g. ones that drop or insert reasoning tags) break that; then the boundary is
    the longest common prefix of the full text and G, moved back to where the response text begins if the
    response is found earlier. Everything before the boundary depends on the prompt only.

    Tokenizers without a chat template use `plain_text`.
    """
    messages = [dict(m) for m in prompt]
    if not has_chat_template(tokenizer):
        return plain_text(messages, response)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}],
                                         tokenize=False)
    generation = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if full.startswith(generation):
        return full, len(generation)
    boundary = _common_prefix_len(full, generation)
    if response:
        at = full.rfind(response)
        if 0 <= at < boundary:
            boundary = at
    return full, boundary
