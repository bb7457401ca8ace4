"""The InfAlign reward transform for training: calibrated rewards from a table, transforms, and errors."""

import math

import numpy as np
import pytest

from paretoalign.data.prompts import prompt_hash
from paretoalign.errors import InputError
from paretoalign.inference.calibration import CalibrationTable
from paretoalign.rewards.reward_model import RewardOutput
from paretoalign.train.reward_transform import CalibratedScorer, wrap_reward_transform

HI = [{"role": "user", "content": "Say hi."}]
BYE = [{"role": "user", "content": "Say bye."}]


class NumberScorer:
    """A scorer whose reward is the number written in the response; objectives (r, 2r)."""

    objective_names = ["a", "b"]

    def __init__(self):
        self.seen_weights = []

    def resolve_weights(self, weights):
        if weights is None:
            return None
        if isinstance(weights, dict):
            return np.array([weights.get("a", 0.0), weights.get("b", 0.0)])
        return np.asarray(weights, dtype=np.float64)

    def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
        self.seen_weights.append(weights)
        r = np.array([float(t) for t in responses])
        objectives = np.stack([r, 2 * r], axis=1)
        return RewardOutput(score=r, objectives=objectives, objectives_raw=objectives,
                            gating=np.full((len(r), 2), 0.5), baseline=None, objective_names=["a", "b"],
                            verbosity_contribution=np.zeros(len(r)))


@pytest.fixture
def table_path(tmp_path):
    table = CalibrationTable(weights=None, rm="number", m=4)
    table.add("hi", [1.0, 2.0, 2.0, 3.0], prompt=HI)
    table.add(prompt_hash(BYE), [0.0, 10.0, 20.0, 30.0])  # no stored messages: found by its hash
    path = tmp_path / "calibration.jsonl"
    table.save(path)
    return path


def test_calibrated_identity_with_mid_rank_ties(table_path):
    scorer = wrap_reward_transform(NumberScorer(), {"calibration": str(table_path), "transform": "identity"})
    assert isinstance(scorer, CalibratedScorer)
    out = scorer.score([HI, HI, HI, HI, "Say hi.", BYE], ["2", "1", "5", "0", "2.5", "15"])
    # refs 1, 2, 2, 3: C(2) = (1 + ½·2)/4; C(1) = ½/4; C(5) = 1; C(0) = 0; C(2.5) = 3/4; other prompt C(15) = 2/4
    np.testing.assert_allclose(out.score, [0.5, 0.125, 1.0, 0.0, 0.75, 0.5])
    assert np.all((out.score >= 0) & (out.score <= 1))
    np.testing.assert_allclose(out.objectives[:, 1], [4, 2, 10, 0, 5, 30])  # the wrapped scorer's columns
    assert out.verbosity_contribution is None
    assert scorer.objective_names == ["a", "b"]


def test_bon_won_and_exp_values(table_path):
    base = {"calibration": str(table_path)}
    bon = wrap_reward_transform(NumberScorer(), {**base, "transform": "bon", "n": 4})
    # t = 3·4 − 2 = 10: Φ(0.5) = e^5
    assert bon.score([HI], ["2"]).score[0] == pytest.approx(math.exp(5.0))
    scaled = wrap_reward_transform(NumberScorer(), {**base, "transform": "bon", "n": 4, "scaled": True})
    assert scaled.score([HI], ["5"]).score[0] == pytest.approx(1.0)  # e^{10·1 − 10}
    won = wrap_reward_transform(NumberScorer(), {**base, "transform": "won", "n": 2})
    # t = −3: Φ(u) = −e^{−3u}, increasing in u
    vals = won.score([HI, HI], ["1", "3"]).score
    np.testing.assert_allclose(vals, [-math.exp(-3 * 0.125), -math.exp(-3 * 0.875)])
    assert vals[1] > vals[0]
    exp = wrap_reward_transform(NumberScorer(), {**base, "transform": "exp", "t": 2.0})
    assert exp.score([HI], ["3"]).score[0] == pytest.approx(math.exp(2 * 0.875))


def test_unknown_prompt_names_the_calibration_file(table_path):
    scorer = wrap_reward_transform(NumberScorer(), {"calibration": str(table_path), "transform": "identity"})
    with pytest.raises(InputError) as e:
        scorer.score([HI, "Something else"], ["1", "2"])
    assert e.value.path == str(table_path) and "no reference rewards" in str(e.value)
    with pytest.raises(InputError) as e:
        scorer.check_prompts([HI, BYE, "Something else"])
    assert e.value.path == str(table_path) and "prompt 2" in str(e.value)


@pytest.mark.parametrize(("spec", "field"), [
    ({"transform": "bon", "n": 4}, "reward_transform.calibration"),
    ({"transform": "best", "calibration": "CAL"}, "reward_transform.transform"),
    ({"calibration": "CAL"}, "reward_transform.transform"),
    ({"transform": "bon", "calibration": "CAL"}, "reward_transform.n"),
    ({"transform": "bon", "n": 0, "calibration": "CAL"}, "reward_transform.n"),
    ({"transform": "bon", "n": 2.5, "calibration": "CAL"}, "reward_transform.n"),
    ({"transform": "exp", "calibration": "CAL"}, "reward_transform.t"),
    ({"transform": "exp", "t": 0, "calibration": "CAL"}, "reward_transform.t"),
    ({"transform": "exp", "t": 1.0, "n": 4, "calibration": "CAL"}, "reward_transform.n"),
    ({"transform": "identity", "scaled": True, "calibration": "CAL"}, "reward_transform.scaled"),
    ({"transform": "bon", "n": 4, "scaled": "yes", "calibration": "CAL"}, "reward_transform.scaled"),
    ({"transform": "bon", "n": 4, "beta": 1, "calibration": "CAL"}, "reward_transform.beta"),
])
def test_bad_spec_names_the_field(table_path, spec, field):
    spec = {k: (str(table_path) if v == "CAL" else v) for k, v in spec.items()}
    with pytest.raises(InputError) as e:
        wrap_reward_transform(NumberScorer(), spec)
    assert e.value.field == field


def test_missing_file_and_none_spec(tmp_path):
    inner = NumberScorer()
    assert wrap_reward_transform(inner, None) is inner
    with pytest.raises(InputError) as e:
        wrap_reward_transform(inner, {"calibration": str(tmp_path / "nope.jsonl"), "transform": "identity"})
    assert e.value.field == "reward_transform.calibration" and e.value.path == str(tmp_path / "nope.jsonl")


def test_weights_must_match_the_table(tmp_path):
    table = CalibrationTable(weights={"a": 1.0, "b": 0.0}, m=2)
    table.add("hi", [0.0, 1.0], prompt=HI)
    path = tmp_path / "cal.jsonl"
    table.save(path)
    inner = NumberScorer()
    scorer = wrap_reward_transform(inner, {"calibration": str(path), "transform": "identity"})
    scorer.score([HI], ["0.5"])
    assert inner.seen_weights[-1] == {"a": 1.0, "b": 0.0}  # the table's weights by default
    scorer.score([HI], ["0.5"], weights=[1.0, 0.0])
    with pytest.raises(InputError) as e:
        scorer.score([HI], ["0.5"], weights={"a": 0.5, "b": 0.5})
    assert e.value.field == "weights" and e.value.path == str(path)
