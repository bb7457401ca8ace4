"""The pure parts of benchmarks/bench_rm_vs_trl.py: the stratified training draw and the TRL row encoding."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.chat_format import conversation_text
from tests.tiny import make_tokenizer

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rm_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_rm_vs_trl", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_pairs(counts: dict[str, int]) -> list[PreferencePair]:
    return [PreferencePair(prompt=[{"role": "user", "content": f"{name} {i}"}], chosen="a", rejected="b",
                           objective=name, id=f"{name}-{i}") for name, n in counts.items() for i in range(n)]


def test_draw_is_stratified_and_deterministic(bench):
    pairs = make_pairs({"big": 900, "mid": 300, "rare": 30})
    drawn = bench.draw_train_pairs(pairs, 200, seed=0)
    assert len(drawn) == 200 and len({p.id for p in drawn}) == 200
    counts = Counter(p.objective for p in drawn)
    assert counts["rare"] >= bench.MIN_PAIRS_PER_OBJECTIVE
    assert counts["big"] > counts["mid"] > counts["rare"]
    assert [p.id for p in bench.draw_train_pairs(pairs, 200, seed=0)] == [p.id for p in drawn]
    assert [p.id for p in bench.draw_train_pairs(pairs, 200, seed=1)] != [p.id for p in drawn]
    assert len(bench.draw_train_pairs(pairs, 5000, seed=0)) == len(pairs)
    small = bench.draw_train_pairs(make_pairs({"x": 3, "y": 100}), 50, seed=0)
    assert Counter(p.objective for p in small) == {"x": 3, "y": 47}


def test_causal_rows_are_our_backbone_text_cut_from_the_left(bench):
    tok = make_tokenizer()
    prompt = [{"role": "user", "content": "How do I bake bread? " * 20}]
    encode = bench.RowEncoder("causal_lm", tok, max_length=32)
    ids = encode(prompt, "Mix flour and water.")
    full = tok(conversation_text(tok, prompt, "Mix flour and water.")[0], add_special_tokens=False)["input_ids"]
    assert len(full) > 32 and ids == full[-32:]
    short = bench.RowEncoder("causal_lm", tok, max_length=10_000)(prompt, "ok")
    assert len(short) == len(tok(conversation_text(tok, prompt, "ok")[0], add_special_tokens=False)["input_ids"])


class WordTokenizer:
    """Whitespace 'tokens' numbered by length, with BERT's [CLS]=101 / [SEP]=102."""

    cls_token_id, sep_token_id = 101, 102

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.split()]}


def test_text_pair_rows_keep_the_prompt_end_and_the_reply_start(bench):
    encode = bench.RowEncoder("sentence_encoder", WordTokenizer(), max_length=13)  # 10 tokens of text
    prompt = [{"role": "user", "content": "a bb ccc dddd eeeee ffffff ggggggg"}]  # "user:" + 7 words = 8 tokens
    ids = encode(prompt, "x yy zzz wwww vvvvv uuuuuu")  # 6 reply tokens
    assert len(ids) == 13 and ids[0] == 101 and ids[-1] == 102
    sep = ids.index(102)
    # Both sides are longer than half the budget: each keeps half (the prompt its end, the reply its start).
    assert ids[1:sep] == [3, 4, 5, 6, 7]
    assert ids[sep + 1:-1] == [1, 2, 3, 4, 5]
    # A short prompt leaves the rest of the budget to the reply, and the other way round.
    short_prompt = encode([{"role": "user", "content": "hi"}], " ".join(["r"] * 40))
    assert short_prompt == [101, 5, 2, 102] + [1] * 8 + [102]
    assert encode(prompt, "ok") == [101, 5, 1, 2, 3, 4, 5, 6, 7, 102, 2, 102]
    long_prompt = [{"role": "user", "content": " ".join(["p"] * 30) + " end"}]
    assert encode(long_prompt, "ok") == [101] + [1] * 8 + [3, 102, 2, 102]
    short = encode([{"role": "user", "content": "hi"}], "ok")
    assert short == [101, 5, 2, 102, 2, 102]
