import pytest

from paretoalign.data import load_preference_pairs
from paretoalign.errors import InputError
from tests.data.helpers import HH_MESSAGES, HH_PROMPT, write_json, write_jsonl, write_parquet

STANDARD = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "id": "p1", "subset": "math"}
USER = [{"role": "user", "content": "What is 2+2?"}]


def _only(pairs):
    assert len(pairs) == 1
    return pairs[0]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "parquet"])
def test_standard_rows_in_every_file_format(tmp_path, fmt):
    path = tmp_path / f"pairs.{fmt}"
    if fmt.startswith("jsonl"):
        write_jsonl(path, [STANDARD])
    elif fmt == "json":
        write_json(path, [STANDARD])
    else:
        write_parquet(path, [STANDARD])
    pair = _only(load_preference_pairs(path))
    assert pair.prompt == USER and pair.chosen == "4" and pair.rejected == "5"
    assert pair.id == "p1" and pair.subset == "math" and pair.source == f"{path}:1"
    assert pair.objective is None and pair.margin is None


def test_datasets_dataset_and_dict():
    import datasets

    ds = datasets.Dataset.from_list([STANDARD, {**STANDARD, "id": "p2"}])
    pairs = load_preference_pairs(ds, objective="helpfulness")
    assert [p.source for p in pairs] == ["dataset[0]", "dataset[1]"]
    assert {p.objective for p in pairs} == {"helpfulness"}
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([1])})
    assert [p.id for p in load_preference_pairs(dd, split="test")] == ["p2"]


def test_conversational_rows():
    row = {"prompt": [{"role": "system", "content": "Be brief."}, *USER],
           "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
    pair = _only(load_preference_pairs([row]))
    assert pair.prompt[0] == {"role": "system", "content": "Be brief."} and pair.chosen == "4"


def test_conversational_rows_in_parquet_and_datasets(tmp_path):
    import datasets

    row = {"prompt": USER, "chosen": [{"role": "assistant", "content": "4"}],
           "rejected": [{"role": "assistant", "content": "5"}], "margin": 0.5}
    for source in (write_parquet(tmp_path / "c.parquet", [row]), datasets.Dataset.from_list([row])):
        pair = _only(load_preference_pairs(source))
        assert (pair.prompt, pair.chosen, pair.rejected, pair.margin) == (USER, "4", "5", 0.5)


def test_conversational_reply_repeating_the_prompt_is_stripped():
    row = {"prompt": USER, "chosen": [*USER, {"role": "assistant", "content": "4"}],
           "rejected": [*USER, {"role": "assistant", "content": "5"}]}
    pair = _only(load_preference_pairs([row]))
    assert (pair.prompt, pair.chosen, pair.rejected) == (USER, "4", "5")


def test_several_assistant_messages_take_the_final_one():
    row = {**STANDARD, "chosen": [{"role": "assistant", "content": "Let me think."},
                                  {"role": "assistant", "content": "4"}]}
    assert _only(load_preference_pairs([row])).chosen == "4"


def test_implicit_prompt_conversations():
    base = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *USER]
    row = {"chosen": [*base, {"role": "assistant", "content": "4"}],
           "rejected": [*base, {"role": "assistant", "content": "5"}]}
    pair = _only(load_preference_pairs([row]))
    assert (pair.prompt, pair.chosen, pair.rejected) == (base, "4", "5")


def test_raw_anthropic_hh_rows_and_hh_prompts():
    raw = {"chosen": HH_PROMPT + " 4", "rejected": HH_PROMPT + " Five."}
    pair = _only(load_preference_pairs([raw]))
    assert (pair.prompt, pair.chosen, pair.rejected) == (HH_MESSAGES, "4", "Five.")
    pair = _only(load_preference_pairs([{"prompt": HH_PROMPT, "chosen": "4", "rejected": "5"}]))
    assert pair.prompt == HH_MESSAGES


def test_implicit_prompt_diverging_early_is_an_error():
    row = {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
           "rejected": "\n\nHuman: a\n\nAssistant: X\n\nHuman: c\n\nAssistant: d"}
    with pytest.raises(InputError, match="diverge"):
        load_preference_pairs([row])


def test_plain_strings_without_prompt_name_the_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [STANDARD, {"chosen": "4", "rejected": "5"}])
    with pytest.raises(InputError) as err:
        load_preference_pairs(path)
    assert err.value.field == "prompt" and err.value.line == 2 and err.value.path == str(path)


@pytest.mark.parametrize("field", ["chosen", "rejected"])
def test_missing_reply_field(tmp_path, field):
    row = dict(STANDARD)
    del row[field]
    path = write_jsonl(tmp_path / "x.jsonl", [row])
    with pytest.raises(InputError, match=f"missing required field '{field}'") as err:
        load_preference_pairs(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 1, field)


def test_custom_field_names():
    row = {"question": "Q?", "good": "yes", "bad": "no", "kind": "k"}
    pair = _only(load_preference_pairs([row], prompt_field="question", chosen_field="good", rejected_field="bad",
                                       subset_field="kind"))
    assert (pair.prompt[0]["content"], pair.chosen, pair.rejected, pair.subset) == ("Q?", "yes", "no", "k")


@pytest.mark.parametrize("field, value", [("prompt", "  "), ("chosen", ""), ("rejected", " \n"),
                                          ("prompt", []), ("chosen", [{"role": "assistant", "content": " "}])])
def test_empty_prompt_or_reply_is_an_error(field, value):
    with pytest.raises(InputError, match="empty") as err:
        load_preference_pairs([{**STANDARD, field: value}])
    assert err.value.field == field


def test_drop_empty_skips_with_a_counted_warning(tmp_path):
    rows = [STANDARD, {**STANDARD, "chosen": " "}, STANDARD, {**STANDARD, "prompt": ""}]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with pytest.warns(UserWarning, match=r"skipped 2 rows .*x\.jsonl:2, .*x\.jsonl:4"):
        pairs = load_preference_pairs(path, drop_empty=True)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:3"]


@pytest.mark.parametrize("bad", [
    {"prompt": [{"role": "robot", "content": "x"}]},
    {"prompt": [{"role": "user", "content": 3}]},
    {"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    {"prompt": 42},
    {"chosen": [{"role": "user", "content": "4"}]},
    {"chosen": [{"role": "assistant", "content": "3"}, {"role": "user", "content": "?"},
                {"role": "assistant", "content": "4"}]},
])
def test_bad_messages_are_errors(bad):
    with pytest.raises(InputError) as err:
        load_preference_pairs([{**STANDARD, **bad}])
    assert err.value.field == next(iter(bad))


def test_margin_objective_and_id_fields():
    rows = [{**STANDARD, "margin": 2, "objective": "honesty", "id": 7}]
    pair = _only(load_preference_pairs(rows))
    assert pair.margin == 2.0 and pair.objective == "honesty" and pair.id == "7"
    assert _only(load_preference_pairs(rows, objective="helpfulness")).objective == "helpfulness"


@pytest.mark.parametrize("margin", ["NaN", "Infinity", "-Infinity", '"1.0"', "true", "[1]"])
def test_bad_margin(tmp_path, margin):
    line = '{"prompt": "q", "chosen": "a", "rejected": "b", "margin": ' + margin + "}"
    path = write_jsonl(tmp_path / "x.jsonl", [], raw_lines=[line])
    with pytest.raises(InputError, match="finite number") as err:
        load_preference_pairs(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 1, "margin")


def test_limit():
    rows = [{**STANDARD, "id": str(i)} for i in range(5)]
    assert [p.id for p in load_preference_pairs(rows, limit=2)] == ["0", "1"]
    assert load_preference_pairs(rows, limit=0) == []
    with pytest.raises(InputError, match="limit"):
        load_preference_pairs(rows, limit=-1)
