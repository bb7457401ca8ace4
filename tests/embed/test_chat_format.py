"""conversation_text: the one rendering of a row, and where the reply starts in it."""

from __future__ import annotations

from paretoalign.embed.chat_format import PLAIN_ASSISTANT_PREFIX, conversation_text, plain_text
from tests.tiny import make_tokenizer

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I bake bread?"}]


def test_chat_template_text_and_reply_offset():
    tok = make_tokenizer()
    text, start = conversation_text(tok, PROMPT, "Knead, rise, bake.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHow do I bake bread?<|im_end|>\n"
                    "<|im_start|>assistant\nKnead, rise, bake.<|im_end|>\n")
    generation = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert start == len(generation) and text[start:].startswith("Knead")


def test_empty_response_still_has_a_reply_part():
    text, start = conversation_text(make_tokenizer(), PROMPT, "")
    assert text[start:] == "<|im_end|>\n"


def test_plain_fallback_without_chat_template():
    tok = make_tokenizer()
    tok.chat_template = None
    text, start = conversation_text(tok, PROMPT, "Knead.")
    assert text == "system: Be brief.\nuser: How do I bake bread?\n" + PLAIN_ASSISTANT_PREFIX + "Knead."
    assert text[start:] == "Knead."
    assert (text, start) == plain_text(PROMPT, "Knead.")


def test_template_whose_past_reply_differs_from_the_generation_prompt():
    # The generation prompt opens a "<think>" block that a finished assistant turn does not have: the full
    # text does not start with it, so the boundary falls back to the longest common prefix.
    tok = make_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>{% endif %}")
    text, start = conversation_text(tok, PROMPT, "Knead.")
    assert text.endswith("<|im_start|>assistant\nKnead.<|im_end|>\n")
    assert text[start:] == "Knead.<|im_end|>\n"
    # A response that itself begins like the generation suffix: the boundary moves back to where it starts.
    text, start = conversation_text(tok, PROMPT, "<thinking")
    assert text[start:] == "<thinking<|im_end|>\n"
