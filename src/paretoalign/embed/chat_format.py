"""The one text a (prompt, response) row is rendered to, for the embedding backbone AND exported classifiers.

`conversation_text` is the single place that decides how a row becomes text. A causal-LM backbone tokenizes
exactly this text (``add_special_tokens=False``); an exported Hugging Face sequence classifier must be fed the
same text, tokenized the same way, to reproduce the features it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

from paretoalign.data.schema import Message

PLAIN_ASSISTANT_PREFIX = "assistant: "


def has_chat_template(tokenizer) -> bool:
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


def conversation_text(tokenizer, prompt: Sequence[Message], response: str) -> tuple[str, int]:
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
