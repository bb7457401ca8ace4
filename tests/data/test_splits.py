from collections import Counter

import pytest

from paretoalign.data import PreferencePair, heldout_split, prompt_key, split_pairs, split_ratings
from paretoalign.data.schema import RatedResponse
from paretoalign.errors import InputError


def _prompt(i):
    return [{"role": "user", "content": f"question {i}"}]


def test_deterministic_and_about_the_fraction():
    keys = [prompt_key(_prompt(i)) for i in range(2000)]
    sides = [heldout_split(k) for k in keys]
    assert sides == [heldout_split(k, fraction=0.3, seed=0) for k in keys]
    assert 0.26 < Counter(sides)["test"] / len(keys) < 0.34
    assert sides != [heldout_split(k, seed=1) for k in keys]
    assert {heldout_split(k, fraction=0.0) for k in keys} == {"train"}
    assert {heldout_split(k, fraction=1.0) for k in keys} == {"test"}
    # Pinned values: the split must never change across versions (the bundled data relies on it).
    assert [heldout_split(prompt_key(_prompt(i))) for i in range(8)] == PINNED


PINNED = ["test", "train", "train", "train", "train", "test", "test", "train"]


def test_prompt_key_ignores_surrounding_whitespace_and_form():
    assert prompt_key([{"role": "user", "content": " hi\n"}]) == prompt_key([{"role": "user", "content": "hi"}])
    assert prompt_key(_prompt(1)) != prompt_key([{"role": "system", "content": "question 1"}])


def test_rows_sharing_a_prompt_share_a_side():
    pairs = [PreferencePair(prompt=_prompt(i % 50), chosen=f"c{i}", rejected=f"r{i}") for i in range(500)]
    train, test = split_pairs(pairs, 0.3, 0)
    assert len(train) + len(test) == 500 and train and test
    assert not {prompt_key(p.prompt) for p in train} & {prompt_key(p.prompt) for p in test}
    rated = [RatedResponse(prompt=p.prompt, response=p.chosen) for p in pairs]
    r_train, r_test = split_ratings(rated, 0.3, 0)
    assert [r.response for r in r_test] == [p.chosen for p in test]


def test_bad_fraction():
    with pytest.raises(InputError):
        heldout_split("k", fraction=1.5)
