import itertools

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.eval.pareto import dominates, pareto_front


def test_dominates_needs_one_strictly_better_axis():
    assert dominates([2, 2], [1, 2])
    assert not dominates([1, 2], [2, 2])
    assert not dominates([1, 2], [2, 1]) and not dominates([2, 1], [1, 2])
    assert not dominates([1, 1], [1, 1])


def test_dominates_on_a_minimised_axis():
    # (reward, KL): higher reward and lower KL are better
    assert dominates([1.0, 0.5], [1.0, 1.0], maximize=[True, False])
    assert not dominates([1.0, 1.0], [1.0, 0.5], maximize=[True, False])


def test_dominates_rejects_mismatched_axes():
    with pytest.raises(InputError, match="axes"):
        dominates([1, 2], [1, 2, 3])


def test_front_2d():
    points = [[1, 5], [2, 4], [3, 3], [2, 2], [0, 5]]
    assert pareto_front(points, [True, True]).tolist() == [True, True, True, False, False]


def test_front_3d():
    points = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert pareto_front(np.array(points), [True, True, True]).tolist() == [False, False, True, False, True]


def test_identical_points_are_both_on_the_front():
    assert pareto_front([[1, 1], [1, 1], [0, 0]], [True, True]).tolist() == [True, True, False]


def test_a_tie_on_one_axis_with_a_loss_on_the_other_is_dominated():
    assert pareto_front([[1, 2], [1, 1]], [True, True]).tolist() == [True, False]


def test_reward_kl_front_minimises_kl():
    points = [[1.0, 0.0], [2.0, 1.0], [1.5, 2.0], [2.0, 1.0], [0.5, 0.0]]  # (reward, KL)
    assert pareto_front(points, [True, False]).tolist() == [True, True, False, True, False]


def test_front_matches_pairwise_dominance_on_random_points_with_ties():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 4, size=(40, 3)).astype(float)
    maximize = [True, False, True]
    mask = pareto_front(points, maximize)
    for i in range(len(points)):
        dominated = any(dominates(points[j], points[i], maximize) for j in range(len(points)) if j != i)
        assert mask[i] == (not dominated)
    assert mask.any()


def test_no_front_point_dominates_another():
    rng = np.random.default_rng(1)
    points = rng.standard_normal((30, 2))
    front = points[pareto_front(points, [True, True])]
    for a, b in itertools.permutations(front, 2):
        assert not dominates(a, b)


def test_nan_row_is_an_input_error():
    with pytest.raises(InputError, match=r"point\(s\) \[1\] contain NaN"):
        pareto_front([[1, 2], [np.nan, 1]], [True, True])


@pytest.mark.parametrize("points, maximize", [([[1, 2]], [True]), ([1, 2, 3], [True])])
def test_bad_shapes_are_input_errors(points, maximize):
    with pytest.raises(InputError):
        pareto_front(points, maximize)


def test_no_points_give_an_empty_mask():
    assert pareto_front(np.zeros((0, 2)), [True, False]).shape == (0,)
