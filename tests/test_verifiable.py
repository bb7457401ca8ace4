"""Verifiable checkers: each accepts and rejects on hand-made responses; every bad spec names its field."""

import json

import pytest

from paretoalign.data.prompts import read_prompts
from paretoalign.errors import InputError
from paretoalign.rewards.verifiable import (
    CHECKERS,
    PromptConstraints,
    build_checker,
    final_number,
    sentence_count,
    word_count,
)


def check(spec, response):
    return build_checker(spec, where="rewards[1]")(response)


@pytest.mark.parametrize(("spec", "accepted", "rejected"), [
    ({"checker": "include_keywords", "keywords": ["Paris", "France"]},
     ["Paris is in FRANCE.", "france, paris"], ["Parisian food in France", "Only Paris."]),
    ({"checker": "include_keywords", "keywords": ["Paris"], "case_sensitive": True}, ["I love Paris"], ["paris"]),
    ({"checker": "include_keywords", "keywords": ["cat", "dog"], "mode": "any"}, ["a dog!", "Cat."],
     ["cats and dogs", "a bird"]),
    ({"checker": "include_keywords", "keywords": ["C++"]}, ["I write C++ daily"], ["I write C daily"]),
    ({"checker": "avoid_keywords", "keywords": ["sorry", "as an AI"]}, ["Sure, here it is.", "Sorryness is fine"],
     ["I am SORRY.", "As an AI, I cannot"]),
    ({"checker": "avoid_keywords", "keywords": ["Sorry"], "case_sensitive": True}, ["sorry"], ["Sorry!"]),
    ({"checker": "word_count", "min": 2, "max": 3}, ["two words", "one two three"], ["one", "one two three four"]),
    ({"checker": "word_count", "max": 0}, ["", "   "], ["word"]),
    ({"checker": "sentence_count", "min": 2}, ["Hi. How are you?", "Pi is 3.14. Yes!"], ["Pi is 3.14.", "One"]),
    ({"checker": "sentence_count", "max": 1}, ["Just one sentence without an end", "Only 3.5 here."],
     ["A. B.", "Wow! Really?"]),
    ({"checker": "json"}, ['{"a": 1}', "[1, 2]", "  3 ", '```json\n{"a": 1}\n```'], ["{a: 1}", "", "The answer"]),
    ({"checker": "json", "allow_code_fence": False}, ['{"a": 1}'], ['```json\n{"a": 1}\n```']),
    ({"checker": "json", "keys": ["name", "age"]}, ['{"name": "x", "age": 3, "more": 1}'],
     ['{"name": "x"}', '["name", "age"]', "not json"]),
    ({"checker": "json", "schema": {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}},
                                    "required": ["age"]}},
     ['{"age": 3}', '```\n{"age": 0}\n```'], ['{"age": -1}', '{"age": "3"}', '{"name": "x"}', "[]"]),
    ({"checker": "regex", "pattern": r"\d{3}-\d{4}"}, ["call 555-1234 now"], ["call 55-1234"]),
    ({"checker": "regex", "pattern": r"yes|no", "mode": "fullmatch"}, ["yes", "no"], ["yes!", "maybe no"]),
    ({"checker": "regex", "pattern": r"^answer:", "ignore_case": True}, ["ANSWER: 3"], ["the answer: 3"]),
    ({"checker": "final_number", "reference": 1234}, ["so 1,234", "first 7 then 1234.0", "1234.0000001"],
     ["1234 then 7", "12,34", "no number", "1235"]),
    ({"checker": "final_number", "reference": "-2.5"}, ["x = -2.5.", "-2.50"], ["2.5", "-2.4"]),
    ({"checker": "final_number", "reference": "1,000,000"}, ["It costs $1,000,000."], ["It costs $1,000,001."]),
    ({"checker": "final_number", "reference": 0.5}, ["1/2 = 0.5", "= .5"], ["0.6"]),
])
def test_each_checker_accepts_and_rejects(spec, accepted, rejected):
    checker = build_checker(spec, where="constraints[0]")
    assert [checker(r) for r in accepted] == [True] * len(accepted)
    assert [checker(r) for r in rejected] == [False] * len(rejected)
    assert checker.name == spec["checker"]


def test_every_registered_checker_is_covered_and_declares_its_params():
    assert set(CHECKERS) == {"include_keywords", "avoid_keywords", "word_count", "sentence_count", "json", "regex",
                             "final_number"}
    assert all(p.help for spec in CHECKERS.values() for p in spec.params)


def test_counting_helpers():
    assert word_count("  a b\tc\nd ") == 4
    assert sentence_count("One. Two! Three? Four...") == 4
    assert sentence_count("...") == 0
    assert final_number("from -3 to 12,500.75") == 12500.75
    assert final_number("1,2,3") == 3.0
    assert final_number("none") is None


def test_bound_args_are_the_given_ones_with_defaults():
    checker = build_checker({"checker": "include_keywords", "keywords": ["a"]}, where="x")
    assert checker.args == {"keywords": ["a"], "mode": "all", "case_sensitive": False}


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"checker": "shout"}, "rewards[1].checker", "unknown checker 'shout'"),
    ({"keywords": ["a"]}, "rewards[1].checker", "unknown checker None"),
    ({"checker": "word_count", "max": 3, "maximum": 4}, "rewards[1].maximum", "unknown parameter"),
    ({"checker": "regex"}, "rewards[1].pattern", "needs this parameter"),
    ({"checker": "word_count"}, "rewards[1].min", "give min, max or both"),
    ({"checker": "word_count", "min": 5, "max": 2}, "rewards[1].max", "below min"),
    ({"checker": "sentence_count", "min": -1}, "rewards[1].min", ">= 0"),
    ({"checker": "word_count", "max": 2.5}, "rewards[1].max", "must be a integer or null"),
    ({"checker": "word_count", "max": True}, "rewards[1].max", "got bool"),
    ({"checker": "regex", "pattern": "(unclosed"}, "rewards[1].pattern", "not a valid regular expression"),
    ({"checker": "regex", "pattern": "a", "mode": "match"}, "rewards[1].mode", "'search' or 'fullmatch'"),
    ({"checker": "json", "schema": {"type": "no-such-type"}}, "rewards[1].schema", "not a valid JSON Schema"),
    ({"checker": "json", "schema": "object"}, "rewards[1].schema", "must be a object or null"),
    ({"checker": "json", "keys": []}, "rewards[1].keys", "non-empty list of strings"),
    ({"checker": "include_keywords", "keywords": []}, "rewards[1].keywords", "at least one keyword"),
    ({"checker": "include_keywords", "keywords": ["a", " "]}, "rewards[1].keywords", "keyword 1"),
    ({"checker": "include_keywords", "keywords": "a"}, "rewards[1].keywords", "must be a list"),
    ({"checker": "include_keywords", "keywords": ["a"], "mode": "most"}, "rewards[1].mode", "'all' or 'any'"),
    ({"checker": "final_number", "reference": "about ten"}, "rewards[1].reference", "finite number"),
    ({"checker": "final_number", "reference": float("nan")}, "rewards[1].reference", "finite number"),
])
def test_bad_specs_name_their_field(spec, field, words):
    with pytest.raises(InputError) as err:
        check(spec, "text")
    assert err.value.field == field
    assert words in err.value.reason


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prompt_file_constraints_are_read_and_looked_up_by_prompt(tmp_path):
    path = write_prompts(tmp_path / "p.jsonl", [
        {"prompt": "Name a city.", "constraints": [{"checker": "include_keywords", "keywords": ["Paris"]},
                                                  {"checker": "word_count", "max": 3}]},
        {"prompt": [{"role": "user", "content": "No constraints here"}]},
        {"prompt": "Reply in JSON.", "constraints": [{"checker": "json"}]},
    ])
    rows = read_prompts(path)
    constraints = PromptConstraints.from_rows(rows)
    assert len(constraints) == 2
    city = constraints.checkers([{"role": "user", "content": " Name a city. "}])  # same prompt key: stripped
    assert [c.name for c in city] == ["include_keywords", "word_count"]
    assert [c("Paris.") for c in city] == [True, True]
    assert [c("It is Lyon, not Paris") for c in city] == [True, False]
    assert constraints.checkers(rows[1].messages) is None
    assert constraints.checkers(rows[2].messages)[0]('{"ok": true}') is True


@pytest.mark.parametrize(("constraints", "line_field", "words"), [
    ([{"checker": "word_count", "max": 1, "min": 4}], "constraints[0].max", "below min"),
    ([{"checker": "json"}, {"checker": "regex"}], "constraints[1].pattern", "needs this parameter"),
    ([{"checker": "json"}, {"checker": "nope"}], "constraints[1].checker", "unknown checker"),
])
def test_a_bad_constraint_names_file_line_and_field(tmp_path, constraints, line_field, words):
    path = write_prompts(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "bad", "constraints": constraints}])
    rows = read_prompts(path)  # the shape is fine: the checker's own parameters are checked when built
    with pytest.raises(InputError) as err:
        PromptConstraints.from_rows(rows)
    assert (err.value.path, err.value.line, err.value.field) == (path, 2, line_field)
    assert words in err.value.reason


@pytest.mark.parametrize(("constraints", "field"), [
    ("word_count", "constraints"),
    ([], "constraints"),
    (["word_count"], "constraints[0]"),
    ([{"checker": "json"}, {"max": 3}], "constraints[1].checker"),
    ([{"checker": 5}], "constraints[0].checker"),
])
def test_the_prompt_file_reader_checks_the_constraints_shape(tmp_path, constraints, field):
    path = write_prompts(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": "bad", "constraints": constraints}])
    with pytest.raises(InputError) as err:
        read_prompts(path)
    assert (err.value.path, err.value.line, err.value.field) == (path, 2, field)


def test_one_prompt_given_different_constraints_is_refused(tmp_path):
    path = write_prompts(tmp_path / "p.jsonl", [
        {"prompt": "same", "constraints": [{"checker": "json"}]},
        {"prompt": "same", "constraints": [{"checker": "json"}]},
        {"prompt": "same", "constraints": [{"checker": "word_count", "max": 2}]},
    ])
    with pytest.raises(InputError) as err:
        PromptConstraints.from_rows(read_prompts(path))
    assert (err.value.line, err.value.field) == (3, "constraints")
    assert f"{path}:1" in err.value.reason
