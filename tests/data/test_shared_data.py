"""The real shared data (../shared/data) loads with the project's objective mapping; counts match the READMEs."""

import warnings
from collections import Counter

import pytest

from paretoalign.data import load_ranked_pairs, load_training_data, prompt_key, shared_data_config, split_pairs


def _load(shared_data, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_training_data(shared_data_config(shared_data, **kwargs))
    return data, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def loaded(shared_data):
    return _load(shared_data)


def test_shared_data_counts(loaded):
    data, messages = loaded
    by_dataset = Counter(p.subset.split("/")[0] for p in data.pairs)
    # HH 8516 minus the 11 empty replies; LLMBar 1200 minus its one empty reply.
    assert by_dataset == {"hh_rlhf": 8516 - 11, "hhh": 221, "llmbar": 1200 - 1, "oasst": 754, "alpacaeval": 3000,
                          "xstest": 976}
    assert any("skipped 11 rows" in m for m in messages) and any("skipped 1 row" in m for m in messages)
    subsets = Counter(p.subset for p in data.pairs)
    assert subsets["hhh/honest"] == 61 and subsets["hhh/helpful"] == 59 and subsets["hhh/harmless"] == 58
    assert subsets["hhh/other"] == 43 and subsets["hh_rlhf/harmless-base"] == 2312 - 4
    objectives = Counter(p.objective for p in data.pairs)
    assert objectives["honesty"] == 61 and objectives["instruction_following"] == 1199
    assert objectives["harmlessness"] == 2308 + 58 + 976
    assert len(data.ratings) == 360
    assert data.objectives() == sorted(["helpfulness", "harmlessness", "honesty", "instruction_following", "overall",
                                        "tc_understandability", "tc_naturalness", "tc_coherence", "tc_engagingness",
                                        "tc_groundedness", "tc_overall"])
    assert data.ratings[0].prompt[-1]["role"] == "user"


def test_shared_test_side(loaded, shared_data):
    data, _ = loaded
    test, _ = _load(shared_data, split="test")
    train_side, test_side = split_pairs(data.pairs, 0.3, 0)
    assert [p.source for p in test.pairs] == [p.source for p in test_side]
    assert 0.25 < len(test.pairs) / len(data.pairs) < 0.35
    assert not {prompt_key(p.prompt) for p in train_side} & {prompt_key(p.prompt) for p in test.pairs}


def test_oasst_rankings_give_the_pairs_file(loaded, shared_data):
    data, _ = loaded
    from_ranks = load_ranked_pairs(shared_data / "oasst_en100_ranked" / "oasst_en100_ranked_replies.jsonl")
    pairs_file = [p for p in data.pairs if p.subset == "oasst"]
    assert len(from_ranks) == 754

    def key(p):
        return prompt_key(p.prompt), p.chosen, p.rejected

    assert sorted(map(key, from_ranks)) == sorted(map(key, pairs_file))
