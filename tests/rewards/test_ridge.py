import numpy as np
import pytest
from sklearn.linear_model import Ridge

from paretoalign.rewards.ridge import fit_ridge_heads


def planted(n=300, d=20, k=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((n, d))
    W = rng.standard_normal((k, d))
    R = H @ W.T + noise * rng.standard_normal((n, k))
    return H, W, R


def test_recovers_planted_linear_map_with_small_alpha():
    H, W, R = planted()
    fit = fit_ridge_heads(H, R)
    assert fit.W.shape == (3, 20) and fit.W.dtype == np.float32
    np.testing.assert_allclose(fit.W, W, atol=1e-3)
    assert np.all(fit.alphas == 1e-4)
    assert np.all(fit.val_r2 > 0.9999)
    assert list(fit.n_rows) == [300, 300, 300]


def test_noisy_ratings_pick_larger_alpha():
    H, _, R_clean = planted(n=60, d=40, k=1, seed=3)
    R_noisy = R_clean + 8.0 * np.random.default_rng(4).standard_normal(R_clean.shape)
    clean = fit_ridge_heads(H, R_clean)
    noisy = fit_ridge_heads(H, R_noisy)
    assert clean.alphas[0] == 1e-4
    assert noisy.alphas[0] >= 10.0
    assert noisy.val_mse[0] > clean.val_mse[0]


def test_nan_rows_are_masked_per_objective():
    H, W, R = planted(n=200)
    rng = np.random.default_rng(1)
    missing = rng.random(200) < 0.4
    R[missing, 1] = np.nan
    fit = fit_ridge_heads(H, R)
    assert list(fit.n_rows) == [200, int((~missing).sum()), 200]
    np.testing.assert_allclose(fit.W[1], W[1], atol=1e-3)
    # Objective 1 is fitted exactly as if only its rated rows had been given.
    alone = fit_ridge_heads(H[~missing], R[~missing, 1:2])
    np.testing.assert_array_equal(alone.W[0], fit.W[1])
    assert alone.alphas[0] == fit.alphas[1]


def test_final_head_equals_sklearn_ridge_without_intercept():
    H, _, R = planted(n=80, d=10, k=1, noise=0.5)
    fit = fit_ridge_heads(H, R, alphas=[3.0])
    ref = Ridge(alpha=3.0, fit_intercept=False).fit(H, R[:, 0])
    np.testing.assert_allclose(fit.W[0], ref.coef_, rtol=1e-5, atol=1e-6)


def test_val_split_is_seeded():
    H, _, R = planted(n=50, d=30, k=2, noise=2.0)
    a = fit_ridge_heads(H, R, seed=5)
    b = fit_ridge_heads(H, R, seed=5)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.val_mse, b.val_mse)


def test_too_few_rated_rows_names_the_objective():
    H, _, R = planted(n=30, k=2)
    R[4:, 1] = np.nan
    with pytest.raises(ValueError, match="'clarity' has 4 rated rows"):
        fit_ridge_heads(H, R, objective_names=["coherence", "clarity"])
    with pytest.raises(ValueError, match="objective 1"):
        fit_ridge_heads(H, R)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same n"):
        fit_ridge_heads(np.zeros((10, 3)), np.zeros((9, 1)))
