import math

import pytest

from paretoalign.data import load_ratings
from paretoalign.errors import InputError
from tests.data.helpers import write_jsonl, write_parquet

ROWS = [
    {"id": 1, "prompt": "q1", "response": "r1", "helpful": 4, "safe": 1.0, "note": "x", "flag": True},
    {"id": 2, "prompt": "q2", "response": "r2", "helpful": None, "safe": 0.5},
    {"id": 3, "prompt": "q3", "response": "r3", "helpful": "2.5"},
]


def test_every_numeric_column_by_default_and_missing_is_nan():
    rated = load_ratings(ROWS)
    assert [sorted(r.ratings) for r in rated] == [["helpful", "safe"]] * 3
    assert rated[0].ratings == {"helpful": 4.0, "safe": 1.0}
    assert math.isnan(rated[1].rating("helpful")) and rated[1].rating("safe") == 0.5
    assert rated[2].rating("helpful") == 2.5 and math.isnan(rated[2].rating("safe"))
    assert rated[0].id == "1" and rated[0].source == "rows[0]" and rated[0].prompt[0]["content"] == "q1"


def test_selected_attributes_and_parquet(tmp_path):
    path = write_parquet(tmp_path / "r.parquet", [{k: v for k, v in r.items() if k != "flag"} for r in ROWS[:2]])
    rated = load_ratings(path, attributes=["safe"])
    assert [r.ratings for r in rated] == [{"safe": 1.0}, {"safe": 0.5}]


def test_attribute_absent_everywhere_is_an_error():
    with pytest.raises(InputError, match="in no row") as err:
        load_ratings(ROWS, attributes=["helpful", "honest"])
    assert err.value.field == "honest"


@pytest.mark.parametrize("value, match", [("NaN", "finite"), ("Infinity", "finite"), ("-Infinity", "finite"),
                                          ("true", "boolean"), ('"good"', "string"), ('"nan"', "finite"),
                                          ("[3]", "number")])
def test_bad_rating_values_name_the_field(tmp_path, value, match):
    lines = ['{"prompt": "q", "response": "r", "score": 1}',
             '{"prompt": "q", "response": "r", "score": ' + value + "}"]
    path = write_jsonl(tmp_path / "x.jsonl", [], raw_lines=lines)
    with pytest.raises(InputError, match=match) as err:
        load_ratings(path, attributes=["score"])
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, "score")


def test_row_with_no_rating():
    rows = [{"prompt": "q", "response": "r", "score": 1}, {"prompt": "q", "response": "r", "score": None}]
    with pytest.raises(InputError, match="none of the rating columns") as err:
        load_ratings(rows, attributes=["score"])
    assert err.value.path == "rows[1]"
    with pytest.warns(UserWarning, match=r"skipped 1 row .*rows\[1\]"):
        assert len(load_ratings(rows, attributes=["score"], drop_empty=True)) == 1


def test_empty_response_and_missing_prompt():
    with pytest.raises(InputError, match="empty") as err:
        load_ratings([{"prompt": "q", "response": " ", "score": 1}])
    assert err.value.field == "response"
    with pytest.raises(InputError, match="missing required field 'prompt'"):
        load_ratings([{"response": "r", "score": 1}])
    with pytest.warns(UserWarning, match="skipped 1 row"):
        assert load_ratings([{"prompt": "q", "response": "", "score": 1}], drop_empty=True) == []


def test_turns_prompt_format():
    rated = load_ratings([{"prompt": "hi there \n hello \n how are you ? \n\n", "response": "fine", "s": 1}],
                         prompt_format="turns")
    assert rated[0].prompt == [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "how are you ?"}]
