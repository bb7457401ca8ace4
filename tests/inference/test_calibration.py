"""InfAlign calibration, the exponential transform, the C^(N−1) identity and the calibration table file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.inference.calibration import (
    CalibrationTable,
    ExponentialTransform,
    bon_optimal_policy,
    bon_transform,
    calibrated_reward,
    exponential_transform,
    won_transform,
)
from paretoalign.inference.statistics import exact_bon_distribution

PROMPT = [{"role": "user", "content": "Say hi."}]


def _exact_calibrated(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """C(y) = P(R < R(y)) + ½ P(R = R(y)) under the discrete reference distribution p."""
    return np.array([p[r < v].sum() + 0.5 * p[r == v].sum() for v in r])


@pytest.mark.parametrize(("reward", "expected"), [(2.0, 0.5), (0.0, 0.0), (5.0, 1.0), (1.0, 0.125), (2.5, 0.75)])
def test_calibrated_reward_on_hand_made_references(reward, expected):
    assert calibrated_reward([1.0, 2.0, 2.0, 3.0], [reward])[0] == pytest.approx(expected)


def test_calibrated_reward_is_monotone_in_the_reward():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, size=40).astype(float)
    rewards = np.linspace(-1.0, 6.0, 57)
    assert np.all(np.diff(calibrated_reward(refs, rewards)) >= 0)


def test_calibrated_reward_keeps_the_shape_of_rewards():
    assert calibrated_reward([0.0, 1.0], np.zeros((2, 3))).shape == (2, 3)


@pytest.mark.parametrize(("refs", "rewards", "field"), [
    ([], [1.0], "reference_rewards"),
    ([1.0, float("nan")], [1.0], "reference_rewards"),
    ([1.0], [float("inf")], "rewards"),
])
def test_calibrated_reward_rejects_bad_input(refs, rewards, field):
    with pytest.raises(InputError) as err:
        calibrated_reward(refs, rewards)
    assert err.value.field == field


@pytest.mark.parametrize("t", [3.0, -3.0])
def test_exponential_transform_is_increasing_for_either_sign(t):
    assert np.all(np.diff(exponential_transform(np.linspace(0.0, 1.0, 11), t)) > 0)


def test_exponential_transform_value():
    assert exponential_transform(np.array([0.5]), -2.0)[0] == pytest.approx(-np.exp(-1.0))


def test_scaled_transform_is_a_positive_multiple_in_minus_one_to_one():
    u = np.linspace(0.0, 1.0, 11)
    raw, scaled = exponential_transform(u, 7.0), exponential_transform(u, 7.0, scaled=True)
    np.testing.assert_allclose(scaled / raw, np.full(u.size, np.exp(-7.0)))
    assert scaled.max() == pytest.approx(1.0)


def test_exponential_transform_rejects_zero_t():
    with pytest.raises(InputError) as err:
        exponential_transform([0.5], 0.0)
    assert err.value.field == "t"


def test_default_transforms_have_the_documented_signs():
    assert bon_transform(4).t == 10.0 and won_transform(4).t == -7.0


def test_exponential_transform_object_applies_phi():
    assert ExponentialTransform(t=2.0)(np.array([1.0]))[0] == pytest.approx(np.exp(2.0))


def test_c_power_policy_is_exact_best_of_2_even_with_ties():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(8))
    r = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(bon_optimal_policy(p, _exact_calibrated(p, r), 2), exact_bon_distribution(p, r, 2),
                               atol=1e-12)


def test_c_power_policy_differs_from_exact_best_of_n_on_a_coarse_support():
    p, r = np.array([0.5, 0.5]), np.array([0.0, 1.0])
    # Exact Bo3 puts 1 − 0.5³ = 0.875 on the better outcome; C = (0.25, 0.75) gives 0.75² / (0.25² + 0.75²) = 0.9.
    assert bon_optimal_policy(p, _exact_calibrated(p, r), 3)[1] == pytest.approx(0.9)
    assert exact_bon_distribution(p, r, 3)[1] == pytest.approx(0.875)


@pytest.mark.parametrize("n", [4, 16])
def test_c_power_policy_converges_to_exact_best_of_n_with_many_small_outcomes(n):
    distances = []
    for k in (20, 200, 2000):
        p = np.full(k, 1.0 / k)
        r = np.arange(k, dtype=float)
        approx = bon_optimal_policy(p, _exact_calibrated(p, r), n)
        distances.append(0.5 * np.abs(approx - exact_bon_distribution(p, r, n)).sum())
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 1e-5


def _table() -> CalibrationTable:
    table = CalibrationTable(weights={"helpfulness": 0.7, "verbosity": -0.3}, rm="rm-dir")
    table.add("p1", [3.0, 1.0, 2.0, 2.0], prompt=PROMPT)
    table.add("p2", [0.5, -1.0, 4.0, 0.0])
    return table


def test_table_calibrates_against_the_prompts_references():
    assert _table().calibrate("p1", [2.0, 0.0, 5.0]).tolist() == [0.5, 0.0, 1.0]


def test_table_transformed_applies_phi_to_calibrated_rewards():
    assert _table().transformed("p1", [2.0], 4.0)[0] == pytest.approx(np.exp(2.0))


def test_table_unknown_prompt_id_names_the_field():
    with pytest.raises(InputError) as err:
        _table().calibrate("missing", [1.0])
    assert err.value.field == "prompt_id"


def test_table_add_rejects_a_different_m():
    table = _table()
    with pytest.raises(InputError) as err:
        table.add("p3", [1.0, 2.0])
    assert err.value.field == "reference_rewards"


def test_table_round_trips_through_save_and_load(tmp_path):
    table = _table()
    path = tmp_path / "calibration.jsonl"
    table.save(path)
    loaded = CalibrationTable.load(path)
    assert (loaded.weights, loaded.rm, loaded.m, list(loaded)) == (table.weights, "rm-dir", 4, ["p1", "p2"])
    assert loaded.prompt("p1") == PROMPT and loaded.prompt("p2") is None
    for pid in ("p1", "p2"):
        np.testing.assert_array_equal(loaded.reference_rewards(pid), table.reference_rewards(pid))


def test_saved_file_starts_with_the_header(tmp_path):
    path = tmp_path / "calibration.jsonl"
    _table().save(path)
    header = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert header == {"format": "paretoalign.calibration", "version": 1,
                      "weights": {"helpfulness": 0.7, "verbosity": -0.3}, "m": 4, "rm": "rm-dir"}


HEADER = {"format": "paretoalign.calibration", "version": 1, "weights": None, "m": 2, "rm": None}
GOOD = {"id": "a", "prompt": PROMPT, "reference_rewards": [1.0, 2.0]}


@pytest.mark.parametrize(("lines", "line", "field"), [
    ([{**HEADER, "format": "something-else"}], 1, "format"),
    ([{**HEADER, "version": 2}], 1, "version"),
    ([HEADER, {"id": "a", "prompt": PROMPT}], 2, "reference_rewards"),
    ([HEADER, GOOD, {"prompt": PROMPT, "reference_rewards": [1.0, 2.0]}], 3, "id"),
    ([HEADER, {**GOOD, "reference_rewards": [1.0, "high"]}], 2, "reference_rewards"),
    ([HEADER, GOOD, GOOD], 3, "id"),
    ([HEADER, {**GOOD, "reference_rewards": [1.0, 2.0, 3.0]}], 2, "reference_rewards"),
    ([HEADER, {**GOOD, "prompt": [{"role": "robot", "content": "x"}]}], 2, "prompt"),
])
def test_load_names_file_line_and_field_of_bad_content(tmp_path, lines, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines), encoding="utf-8")
    with pytest.raises(InputError) as err:
        CalibrationTable.load(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)


def test_load_reports_malformed_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(HEADER) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        CalibrationTable.load(path)
    assert (err.value.path, err.value.line) == (str(path), 2)
