import numpy as np
import pytest
from scipy.stats import spearmanr

from paretoalign.rewards.decorrelation import apply_transform, verbosity_transform


def reference_rewards(n=1500, seed=0):
    """Columns: strongly, weakly and negatively correlated with verbosity (last column)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n)
    R = np.column_stack([rng.standard_normal(n) + 0.8 * v, rng.standard_normal(n) + 0.2 * v,
                         rng.standard_normal(n) - 0.5 * v, v])
    return R


def rho(a, b):
    return spearmanr(a, b).statistic


def test_meets_threshold_with_smallest_lambda():
    R = reference_rewards()
    fit = verbosity_transform(R, 3)
    v = R[:, 3]
    assert fit.satisfied.all()
    assert fit.lambdas[3] == 0.0 and fit.lambdas[2] == 0.0  # already negatively correlated
    assert fit.lambdas[0] > fit.lambdas[1] > 0.0
    for i in range(3):
        lam = fit.lambdas[i]
        assert rho(R[:, i] - lam * v, v) <= 0.03
        assert fit.spearman_after[i] == pytest.approx(rho(R[:, i] - lam * v, v))
        assert fit.spearman_before[i] == pytest.approx(rho(R[:, i], v))
        if lam > 0:  # one grid step less fails
            assert rho(R[:, i] - round(lam - 0.01, 2) * v, v) > 0.03
    assert np.isnan(fit.spearman_before[3])


def test_transform_matrix_structure_and_application():
    R = reference_rewards()
    fit = verbosity_transform(R, 3)
    assert fit.T.dtype == np.float32
    expected = np.eye(4)
    expected[:3, 3] = -fit.lambdas[:3]
    np.testing.assert_allclose(fit.T, expected, rtol=1e-6)
    np.testing.assert_array_equal(fit.T[3], [0, 0, 0, 1])
    R2 = apply_transform(R, fit.T)
    np.testing.assert_allclose(R2[:, 0], R[:, 0] - fit.lambdas[0] * R[:, 3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(R2[:, 3], R[:, 3])


def test_verbosity_in_the_middle():
    R = reference_rewards()[:, [0, 3, 1]]
    fit = verbosity_transform(R, 1)
    assert fit.lambdas[1] == 0 and fit.T[1, 1] == 1 and fit.T[0, 1] == pytest.approx(-fit.lambdas[0])
    assert all(rho(apply_transform(R, fit.T)[:, i], R[:, 1]) <= 0.03 for i in (0, 2))


def test_unsatisfiable_objective_warns_and_takes_grid_max():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(300)
    R = np.column_stack([2.0 * v + 0.01 * rng.standard_normal(300), v])
    with pytest.warns(UserWarning, match="'helpfulness'"):
        fit = verbosity_transform(R, 1, objective_names=["helpfulness", "verbosity"])
    assert not fit.satisfied[0] and fit.satisfied[1]
    assert fit.lambdas[0] == 0.95 and fit.spearman_after[0] > 0.9


def test_custom_threshold_and_grid():
    R = reference_rewards()
    fit = verbosity_transform(R, 3, grid=[0.0, 0.5, 1.0], threshold=0.1)
    assert set(fit.lambdas[:3]) <= {0.0, 0.5, 1.0}
    assert all(fit.spearman_after[:3] <= 0.1)


def test_bad_inputs():
    with pytest.raises(ValueError, match="out of range"):
        verbosity_transform(np.zeros((10, 2)), 2)
    with pytest.raises(ValueError, match="constant"):
        verbosity_transform(np.ones((10, 2)), 1)


def test_lambda_grid_is_the_papers_by_default_and_checks_its_bound():
    from paretoalign.rewards.decorrelation import DEFAULT_GRID, lambda_grid

    assert DEFAULT_GRID[0] == 0.0 and DEFAULT_GRID[-1] == 0.95 and len(DEFAULT_GRID) == 96
    assert lambda_grid(3.0)[-1] == 3.0 and len(lambda_grid(3.0)) == 301
    with pytest.raises(ValueError, match="decorrelation_max_lambda must be in"):
        lambda_grid(-1.0, name="decorrelation_max_lambda")
