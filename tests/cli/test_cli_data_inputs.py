"""The data helpers behind `score` and `eval-rm --shared-heldout` (paretoalign.data.score_rows, .heldout)."""

from __future__ import annotations

import pytest

from paretoalign.data.heldout import sample_per_dataset
from paretoalign.data.schema import PreferencePair
from paretoalign.data.score_rows import read_score_rows
from paretoalign.errors import InputError
from tests.cli.conftest import write_jsonl


def test_score_rows_are_single_responses_or_pairs_with_their_line(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r"},
                                                 {"id": "x", "prompt": "p", "chosen": "a", "rejected": "b"}])
    rows = read_score_rows(path)
    assert [(location, kind) for location, _, kind in rows] == [(f"{path}:1", "single"), (f"{path}:2", "pair")]
    assert rows[1][1]["id"] == "x"


@pytest.mark.parametrize(("row", "field"), [({"prompt": "p"}, "response"), ({"response": "r"}, "prompt"),
                                            ({"prompt": "p", "chosen": "a"}, "rejected")])
def test_a_score_row_without_its_fields_names_the_line_and_field(row, field, tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r"}, row])
    with pytest.raises(InputError) as err:
        read_score_rows(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, field)


def test_an_empty_scoring_file_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match="no rows to score"):
        read_score_rows(path)


def pairs(dataset: str, n: int) -> list[PreferencePair]:
    return [PreferencePair([{"role": "user", "content": f"{dataset} {i}"}], "a", "b", id=f"{dataset}-{i}",
                           subset=f"{dataset}/part") for i in range(n)]


def test_sample_per_dataset_caps_each_dataset_with_a_seed():
    data = pairs("zeta", 10) + pairs("alpha", 3) + pairs("mid", 6)
    picked = sample_per_dataset(data, 4, seed=0)
    ids = [p.id for p in picked]
    assert ids[:3] == ["alpha-0", "alpha-1", "alpha-2"]  # a dataset that fits stays whole, in order
    assert [i.split("-")[0] for i in ids] == ["alpha"] * 3 + ["mid"] * 4 + ["zeta"] * 4  # datasets by name
    assert len(set(ids)) == len(ids)
    assert [p.id for p in sample_per_dataset(data, 4, seed=0)] == ids
    assert [p.id for p in sample_per_dataset(data, 4, seed=1)] != ids
    assert sample_per_dataset(data, None, seed=0) == data
