"""Rows of varied lengths for the embedding tests."""

from __future__ import annotations

import random

import pytest

WORDS = ("the quick brown fox jumps over the lazy dog how do i bake bread mix flour water salt yeast knead "
         "let it rise then bake paris is the capital of france please explain why because answer question "
         "hello thanks 0123456789 ! ? .").split()


def make_rows(n: int, seed: int = 0, max_words: int = 20) -> tuple[list[list[dict]], list[str]]:
    """n (prompt, response) rows: 1-3 user turns (with assistant turns between), 0..max_words words each."""
    rnd = random.Random(seed)

    def text(lo: int = 1) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(lo, max_words)))

    prompts, responses = [], []
    for _ in range(n):
        prompt = []
        if rnd.random() < 0.3:
            prompt.append({"role": "system", "content": text()})
        for turn in range(rnd.randint(1, 3)):
            if turn:
                prompt.append({"role": "assistant", "content": text()})
            prompt.append({"role": "user", "content": text()})
        prompts.append(prompt)
        responses.append(text(0))
    return prompts, responses


@pytest.fixture(scope="session")
def rows() -> tuple[list[list[dict]], list[str]]:
    """48 rows of 50 to 400 tokens (tiny tokenizer), one with an empty response."""
    prompts, responses = make_rows(48)
    responses[5] = ""
    return prompts, responses
