"""RewardSet: several rewards (RM objectives, checkers, prompt constraints, user functions) as one Scorer."""

import json
import math
import re

import numpy as np
import pytest

from paretoalign.cli import main
from paretoalign.data.prompts import read_prompts
from paretoalign.errors import InputError
from paretoalign.rewards.loading import REWARD_SET, inspect_reward_model, load_reward_model, reward_model_inputs
from paretoalign.rewards.reward_model import RewardOutput
from paretoalign.rewards.reward_set import RewardSet
from paretoalign.rewards.verifiable import PromptConstraints
from paretoalign.rewards.verifiable import word_count as count_words

# ---------------------------------------------------------------- user reward functions (imported by reference)
CALLS = []


def exclamations(prompts, completions, *, weight=1.0):
    CALLS.append((prompts, completions))
    return [weight * c.count("!") for c in completions]


def raises(prompts, completions):
    raise RuntimeError("boom")


def returns_nan(prompts, completions):
    return [math.nan] * len(completions)


def returns_short(prompts, completions):
    return [1.0] * (len(completions) - 1)


def returns_text(prompts, completions):
    return ["high"] * len(completions)


NOT_CALLABLE = 3


class FakeRM:
    """A Scorer with known objectives: helpfulness = #words, harmlessness = -#'!'; own score = 10 * helpfulness."""

    objective_names = ["helpfulness", "harmlessness"]

    def __init__(self):
        self.calls = []

    def resolve_weights(self, weights):
        return None

    def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
        self.calls.append((len(responses), batch_size))
        obj = np.array([[len(r.split()), -r.count("!")] for r in responses], dtype=np.float64).reshape(-1, 2)
        return RewardOutput(score=10.0 * obj[:, 0], objectives=obj, objectives_raw=obj.copy(),
                            gating=np.full(obj.shape, 0.5), baseline=None, objective_names=list(self.objective_names))


SPEC = {"aggregation": "normalize_then_sum", "rewards": [
    {"name": "help", "rm": "helpfulness", "weight": 0.4},
    {"rm": "score", "weight": 0.1},
    {"name": "brief", "checker": "word_count", "max": 3, "weight": 0.2},
    {"checker": "avoid_keywords", "keywords": ["sorry"], "weight": 0.2},
    {"function": "tests.test_reward_set:exclamations", "args": {"weight": 2.0}, "weight": 0.1},
]}
PROMPTS = ["Hi", [{"role": "user", "content": "Tell me"}], "Hi", "Why?"]
RESPONSES = ["Hello there!", "Sorry, I cannot do that", "ok", "Because!! it is"]


def test_components_are_scored_and_the_score_is_the_weighted_sum():
    rm = FakeRM()
    rs = RewardSet.from_spec(SPEC, reward_model=rm)
    assert rs.objective_names == ["help", "score", "brief", "avoid_keywords", "exclamations"]
    assert rs.aggregation == "normalize_then_sum"
    np.testing.assert_array_equal(rs.weights, [0.4, 0.1, 0.2, 0.2, 0.1])
    out = rs.score(PROMPTS, RESPONSES, batch_size=7)
    expected = np.array([[2, 20, 1, 1, 2], [5, 50, 0, 0, 0], [1, 10, 1, 1, 0], [3, 30, 1, 1, 4]], dtype=np.float64)
    np.testing.assert_array_equal(out.objectives, expected)
    np.testing.assert_array_equal(out.objectives_raw, expected)
    by_hand = [sum(w * v for w, v in zip(rs.weights, row, strict=True)) for row in expected]
    assert out.score.tolist() == by_hand  # exactly: summed in component order
    np.testing.assert_allclose(out.score, expected @ rs.weights, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out.gating, np.tile(rs.weights, (4, 1)))
    assert out.baseline is None and out.verbosity_contribution is None
    assert out.objective_names == rs.objective_names
    assert rm.calls == [(4, 7)]  # one RM call for both rm components, batch_size passed through
    assert CALLS[-1] == ([[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me"}],
                          [{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Why?"}]], RESPONSES)


def test_weights_override_by_name_or_vector():
    rs = RewardSet.from_spec(SPEC, reward_model=FakeRM())
    assert rs.resolve_weights(None) is None
    np.testing.assert_array_equal(rs.resolve_weights({"brief": 1.0}), [0, 0, 1, 0, 0])
    out = rs.score(PROMPTS, RESPONSES, weights={"brief": 0.5, "help": 0.5})
    np.testing.assert_array_equal(out.score, 0.5 * out.objectives[:, 2] + 0.5 * out.objectives[:, 0])
    np.testing.assert_array_equal(out.gating[0], [0.5, 0, 0.5, 0, 0])
    out = rs.score(PROMPTS, RESPONSES, weights=[0, 0, 0, 0, 1])
    np.testing.assert_array_equal(out.score, out.objectives[:, 4])
    with pytest.raises(InputError) as err:
        rs.resolve_weights({"helpfulness": 1.0})  # the RM's name, not the component's
    assert err.value.field == "weights"


def test_rows_do_not_depend_on_the_batch_they_are_in():
    rs = RewardSet.from_spec(SPEC, reward_model=FakeRM())
    whole = rs.score(PROMPTS, RESPONSES)
    for i in range(len(RESPONSES)):
        alone = rs.score([PROMPTS[i]], [RESPONSES[i]])
        np.testing.assert_array_equal(alone.objectives[0], whole.objectives[i])
        assert alone.score[0] == whole.score[i]
    reordered = rs.score(PROMPTS[::-1], RESPONSES[::-1])
    np.testing.assert_array_equal(reordered.score, whole.score[::-1])
    empty = rs.score([], [])
    assert empty.objectives.shape == (0, 5) and empty.score.shape == (0,)


def test_a_set_of_checkers_needs_no_reward_model_and_scores_partial_text():
    rs = RewardSet.from_spec({"rewards": [{"checker": "regex", "pattern": "^Yes"}, {"checker": "sentence_count",
                                                                                   "max": 1}]})
    assert rs.reward_model is None
    np.testing.assert_array_equal(rs.weights, [0.5, 0.5])  # no weight given: equal weights
    out = rs.score(["q", "q", "q"], ["Yes", "Yes. No. Maybe", "No"])
    np.testing.assert_array_equal(out.objectives, [[1, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(out.score, [1.0, 0.5, 0.5])


def test_prompt_constraints_score_the_fraction_met(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a", "constraints": [
        {"checker": "include_keywords", "keywords": ["cat"]}, {"checker": "word_count", "max": 2},
        {"checker": "regex", "pattern": "!$"}]}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    rows = read_prompts(str(path))
    rs = RewardSet.from_spec({"rewards": [{"checker": "prompt_constraints", "weight": 1.0}]})
    with pytest.raises(InputError) as err:
        rs.probe()  # nothing attached yet
    assert err.value.field == "rewards[0].checker"
    rs.attach_prompts(rows)
    rs.probe()
    out = rs.score(["a", "a", "a"], ["cat!", "a cat here", "dog"])
    np.testing.assert_array_equal(out.objectives[:, 0], [1.0, 1 / 3, 1 / 3])
    with pytest.raises(InputError) as err:
        rs.score(["a", "b"], ["cat", "cat"])
    assert err.value.field == "rewards[0].checker" and "row 1: prompt has no constraints" in err.value.reason
    with pytest.raises(InputError) as err:
        rs.check_prompts([r.messages for r in rows])
    assert "prompt 1 has no constraints" in err.value.reason
    rs.check_prompts([rows[0].messages])
    assert len(PromptConstraints.from_rows(rows)) == 1


@pytest.mark.parametrize(("rewards", "field", "words"), [
    ([{"checker": "shout", "weight": 1}], "rewards[0].checker", "unknown checker"),
    ([{"checker": "word_count", "max": 3, "maxi": 2, "weight": 1}], "rewards[0].maxi", "unknown parameter"),
    ([{"checker": "regex", "weight": 1}], "rewards[0].pattern", "needs this parameter"),
    ([{"checker": "word_count", "min": 4, "max": 3, "weight": 1}], "rewards[0].max", "below min"),
    ([{"checker": "regex", "pattern": "[", "weight": 1}], "rewards[0].pattern", "regular expression"),
    ([{"checker": "json", "schema": {"type": 3}, "weight": 1}], "rewards[0].schema", "JSON Schema"),
    ([{"checker": "json", "weight": 0.5}, {"checker": "regex", "pattern": "a", "weight": 0.4}], "rewards[1].weight",
     "simplex"),
    ([{"checker": "json", "weight": 1.2}, {"checker": "regex", "pattern": "a", "weight": -0.2}], "rewards[1].weight",
     "simplex"),
    ([{"checker": "json", "weight": "heavy"}], "rewards[0].weight", "finite number"),
    ([{"checker": "json", "weight": 1}, {"checker": "regex", "pattern": "a"}], "rewards[1].weight",
     "every reward a weight"),
    ([{"checker": "json", "weight": 0.5}, {"checker": "json", "weight": 0.5}], "rewards[1].name", "duplicate"),
    ([{"name": "x", "checker": "json", "weight": 0.5}, {"name": "x", "rm": "helpfulness", "weight": 0.5}],
     "rewards[1].name", "duplicate"),
    ([{"rm": "kindness", "weight": 1}], "rewards[0].rm", "helpfulness, harmlessness"),
    ([{"rm": "helpfulness", "checker": "json", "weight": 1}], "rewards[0]", "rm and checker"),
    ([{"weight": 1}], "rewards[0]", "exactly one of"),
    ([{"rm": "helpfulness", "keywords": ["a"], "weight": 1}], "rewards[0].keywords", "unknown key"),
    ([{"function": "tests.test_reward_set:exclamations", "args": [1], "weight": 1}], "rewards[0].args", "mapping"),
    (["json"], "rewards[0]", "is an object"),
    ([{"function": "no_such_module_xyz:fn", "weight": 1}], "rewards[0].function", "cannot import"),
    ([{"function": "tests.test_reward_set:missing", "weight": 1}], "rewards[0].function", "no attribute"),
    ([{"function": "tests.test_reward_set:NOT_CALLABLE", "weight": 1}], "rewards[0].function", "not a function"),
    ([{"function": "tests.test_reward_set", "weight": 1}], "rewards[0].function", "'module:function'"),
])
def test_bad_components_name_their_field(rewards, field, words):
    with pytest.raises(InputError) as err:
        RewardSet.from_spec({"rewards": rewards}, reward_model=FakeRM())
    assert err.value.field == field
    assert words in err.value.reason


@pytest.mark.parametrize(("spec", "field"), [
    ({"rewards": []}, "rewards"),
    ({"rewards": [{"checker": "json"}], "aggregation": "mean"}, "aggregation"),
    ({"rewards": [{"checker": "json"}], "weights": [1]}, "weights"),
    ({"rewards": [{"rm": "helpfulness"}]}, "reward_model"),  # an rm component and no reward model
])
def test_bad_spec_keys_name_their_field(spec, field):
    with pytest.raises(InputError) as err:
        RewardSet.from_spec(spec)
    assert err.value.field == field


def test_a_field_prefix_names_the_trainer_config_fields():
    with pytest.raises(InputError) as err:
        RewardSet.from_spec({"rewards": [{"checker": "json", "weight": 0.3}]}, field_prefix="config")
    assert err.value.field == "config.rewards[0].weight"


@pytest.mark.parametrize(("function", "words"), [
    ("raises", "raised RuntimeError: boom"),
    ("returns_nan", "finite numbers"),
    ("returns_short", "returned 0 values for 1 completions"),
    ("returns_text", "rewards are numbers"),
])
def test_a_bad_user_function_fails_at_probe_naming_the_field(function, words):
    rs = RewardSet.from_spec({"rewards": [{"checker": "json", "weight": 0.5},
                                          {"function": f"tests.test_reward_set:{function}", "weight": 0.5}]})
    with pytest.raises(InputError) as err:
        rs.probe()
    assert err.value.field == "rewards[1].function" and words in err.value.reason
    with pytest.raises(InputError) as err:
        rs.score(["q"], ["{}"])
    assert err.value.field == "rewards[1].function"


def test_a_user_module_beside_the_reward_set_file_imports(tmp_path):
    (tmp_path / "my_rewards_beside.py").write_text("def longer(prompts, completions, *, per=1):\n"
                                                   "    return [per * len(c) for c in completions]\n")
    path = tmp_path / "set.yaml"
    path.write_text("rewards:\n  - function: my_rewards_beside:longer\n    args: {per: 2}\n")
    rs = RewardSet.from_file(path)
    assert rs.objective_names == ["longer"]
    np.testing.assert_array_equal(rs.score(["q"], ["abc"]).score, [6.0])


def test_load_reward_model_reads_a_reward_set_file(tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("aggregation: sum_then_normalize\nrewards:\n"
                    "  - {name: brief, checker: word_count, max: 60, weight: 0.7}\n"
                    "  - {checker: json, weight: 0.3}\n")
    ref = inspect_reward_model(str(path))
    assert ref.kind == REWARD_SET
    rs = load_reward_model(str(path))
    assert isinstance(rs, RewardSet) and rs.objective_names == ["brief", "json"]
    np.testing.assert_array_equal(rs.score(["q"], ['{"a": 1}']).score, [1.0])
    assert reward_model_inputs(str(path)) == [str(path)]


def test_a_bad_reward_set_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("rewards:\n  - {checker: json, weight: 0.5}\n  - {checker: word_count, min: 9, max: 2, "
                    "weight: 0.5}\n")
    with pytest.raises(InputError) as err:
        inspect_reward_model(str(path), field="--rm")
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 3, "rewards[1].max")
    path.write_text("aggregation: sum_then_normalize\n")
    with pytest.raises(InputError) as err:
        load_reward_model(str(path))
    assert err.value.field == "rewards"
    path.write_text("rewards: [\n")
    with pytest.raises(InputError) as err:
        load_reward_model(str(path))
    assert err.value.path == str(path) and err.value.line is not None


def test_a_reward_set_with_a_missing_reward_model_fails_on_inspection(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"reward_model": str(tmp_path / "no-rm"),
                                "rewards": [{"rm": "helpfulness", "weight": 1.0}]}))
    with pytest.raises(InputError) as err:
        inspect_reward_model(str(path))
    assert err.value.field == "reward_model" and "no such reward model folder" in err.value.reason
    path.write_text(json.dumps({"reward_model": str(path), "rewards": [{"rm": "helpfulness", "weight": 1.0}]}))
    with pytest.raises(InputError) as err:
        inspect_reward_model(str(path))
    assert "names itself" in err.value.reason
    assert reward_model_inputs(str(path)) == [str(path)]


# ---------------------------------------------------------------- the bon command with a reward-set file
STOPS = ["--stop", "e", "--stop", "a", "--stop", "o"]


def test_bon_with_a_checker_reward_set_picks_a_satisfying_response(tiny_llama_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    constraint = {"checker": "regex", "pattern": "[a-z]{2}"}
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "p1", "prompt": "How do I bake bread?", "constraints": [constraint]},
        {"id": "p2", "prompt": "Capital of France?", "constraints": [constraint]}]))
    rset = tmp_path / "set.yaml"
    rset.write_text("rewards:\n  - {name: brief, checker: word_count, max: 1, weight: 0.6}\n"
                    "  - {checker: prompt_constraints, weight: 0.4}\n")
    out = tmp_path / "out.jsonl"
    rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(rset), "--prompts", str(prompts), "--n", "8",
               "--output", str(out), "--max-new-tokens", "8", "--quiet", *STOPS])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2"]
    for row in rows:
        finished = [c for c in row["candidates"] if c["finished"]]
        for c in row["candidates"]:
            brief = 1.0 if count_words(c["response"]) <= 1 else 0.0
            vowel = 1.0 if re.search("[a-z]{2}", c["response"]) else 0.0
            assert c["objectives"] == {"brief": brief, "prompt_constraints": vowel}
            assert c["score"] == pytest.approx(0.6 * brief + 0.4 * vowel, abs=1e-12)
        chosen = row["candidates"][row["selected"]]
        assert chosen["score"] == max(c["score"] for c in finished)
        if any(set(c["objectives"].values()) == {1.0} for c in finished):  # some candidate satisfies both checkers
            assert set(chosen["objectives"].values()) == {1.0}
    # the candidates differ, so the pick is a real choice (the tiny policy's seeded samples)
    assert any(len({c["score"] for c in r["candidates"] if c["finished"]}) > 1 for r in rows)


def test_bon_refuses_prompts_without_constraints_before_sampling(tiny_llama_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "no constraints"}) + "\n")
    rset = tmp_path / "set.yaml"
    rset.write_text("rewards:\n  - {checker: prompt_constraints}\n")
    out = tmp_path / "out.jsonl"
    rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(rset), "--prompts", str(prompts), "--n", "2",
               "--output", str(out), "--quiet"])
    assert rc == 2 and "prompt 0 has no constraints" in capsys.readouterr().err
    assert not out.exists()


def test_a_reward_set_may_read_another_reward_set_as_its_reward_model(tmp_path):
    inner = tmp_path / "inner.yaml"
    inner.write_text("rewards:\n  - {name: short, checker: word_count, max: 1}\n")
    outer = tmp_path / "outer.yaml"
    outer.write_text(f"reward_model: {inner}\nrewards:\n  - {{rm: short, weight: 0.5}}\n"
                     "  - {rm: score, weight: 0.5}\n")
    rs = load_reward_model(str(outer))
    assert isinstance(rs.reward_model, RewardSet) and rs.objective_names == ["short", "score"]
    np.testing.assert_array_equal(rs.score(["q", "q"], ["one", "two words"]).objectives, [[1, 1], [0, 0]])
    assert reward_model_inputs(str(outer)) == [str(outer), str(inner)]
