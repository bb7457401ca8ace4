import pytest

from paretoalign.data import RatedResponse, load_ranked_pairs, rankings_to_pairs
from tests.data.helpers import write_jsonl

MSG = [{"role": "user", "content": "Q1"}]


def _replies():
    return [
        {"id": "a", "messages": MSG, "prompt": "Q1", "response": "A", "rank": 1},
        {"id": "b", "messages": MSG, "prompt": "Q1", "response": "B", "rank": 0},
        {"id": "c", "messages": MSG, "prompt": "Q1", "response": "C", "rank": 2},
        {"id": "d", "prompt": "Q2", "response": "D", "rank": 0},
        {"id": "e", "prompt": "Q2", "response": "E", "rank": 0},
    ]


def test_every_differently_ranked_pair_lower_is_better():
    with pytest.warns(UserWarning, match="1 tied pair"):
        pairs = rankings_to_pairs(_replies(), objective="overall")
    assert [(p.chosen, p.rejected) for p in pairs] == [("B", "A"), ("B", "C"), ("A", "C")]
    assert all(p.prompt == MSG and p.margin is None and p.objective == "overall" for p in pairs)
    assert pairs[0].id == "b-vs-a"


def test_higher_is_better_reverses_the_direction():
    with pytest.warns(UserWarning, match="tied"):
        pairs = rankings_to_pairs(_replies(), lower_is_better=False)
    assert [(p.chosen, p.rejected) for p in pairs] == [("C", "A"), ("C", "B"), ("A", "B")]


def test_rated_responses_grouped_by_prompt():
    rows = [RatedResponse(prompt=MSG, response=t, ratings={"rank": r}, source=f"f:{i}")
            for i, (t, r) in enumerate([("x", 2.0), ("y", 1.0), ("z", float("nan"))])]
    rows.append(RatedResponse(prompt=[{"role": "user", "content": "other"}], response="w", ratings={"rank": 0.0}))
    with pytest.warns(UserWarning, match=r"skipped 1 row without a 'rank'"):
        pairs = rankings_to_pairs(rows)
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [("y", "x", "f:1 vs 0")]


def test_load_ranked_pairs_from_file_uses_messages_then_prompt(tmp_path):
    path = write_jsonl(tmp_path / "ranks.jsonl", _replies())
    with pytest.warns(UserWarning, match="tied"):
        pairs = load_ranked_pairs(path, objective="overall")
    assert len(pairs) == 3 and pairs[0].source == f"{path}:2 vs 1"
    with pytest.warns(UserWarning, match="tied"):
        assert len(load_ranked_pairs(path, limit=2)) == 2


def test_identical_replies_make_no_pair():
    rows = [{"prompt": "Q", "response": "same", "rank": 0}, {"prompt": "Q", "response": "same ", "rank": 1}]
    with pytest.warns(UserWarning, match="identical"):
        assert rankings_to_pairs(rows) == []
