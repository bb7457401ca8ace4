import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from paretoalign.rewards.bradley_terry import fit_bt_head, fit_bt_weights


def planted_pairs(n=2000, d=10, scale=2.0, seed=0):
    """Differences D = h_w - h_l of pairs whose winner was drawn from sigma(w . (h_a - h_b))."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    w *= scale / np.linalg.norm(w)
    X = rng.standard_normal((n, d))
    a_wins = rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ w)))
    D = np.where(a_wins[:, None], X, -X)
    return D, w


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_recovers_planted_direction():
    D, w = planted_pairs()
    fit = fit_bt_head(D)
    assert fit.w.shape == (10,) and fit.w.dtype == np.float32
    assert cosine(fit.w, w) > 0.9
    # Accuracy of the true w on these pairs is the ceiling; the fitted head gets close to it.
    bayes = np.mean(D @ w > 0)
    assert fit.val_accuracy > 0.75 and fit.val_accuracy > bayes - 0.06
    assert fit.n_pairs == 2000 and fit.C in np.logspace(-3, 3, 13)
    assert len(fit.val_losses) == 13 and fit.val_loss == pytest.approx(min(fit.val_losses))


def test_loss_convention_matches_sklearn_on_symmetrised_data():
    # Ours: mean_j -log sigma(w.D_j) + |w|^2 / (2 C n)  ==  (C sum_j loss_j + |w|^2 / 2) / (C n).
    # sklearn on [D; -D] with labels [1; 0] sums each pair's loss twice, so its C is ours / 2.
    D, _ = planted_pairs(n=300, d=6, seed=2)
    C = 0.05
    fit = fit_bt_head(D, Cs=[C])
    X = np.vstack([D, -D])
    y = np.r_[np.ones(len(D)), np.zeros(len(D))]
    ref = LogisticRegression(C=C / 2, fit_intercept=False, tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(fit.w, ref.coef_[0], rtol=1e-4, atol=1e-6)


def test_margins_shift_the_fit():
    D, _ = planted_pairs(n=600, d=5, seed=3)
    plain = fit_bt_head(D, Cs=[1.0])
    margin = fit_bt_head(D, Cs=[1.0], margins=np.full(len(D), 2.0))
    # -log sigma(w.D - m) with m > 0 asks for larger score gaps: a longer w in about the same direction.
    assert np.linalg.norm(margin.w) > 1.2 * np.linalg.norm(plain.w)
    assert cosine(margin.w, plain.w) > 0.95
    assert np.mean(D @ margin.w) > np.mean(D @ plain.w)


def test_zero_margins_equal_no_margins():
    D, _ = planted_pairs(n=200, d=4, seed=4)
    np.testing.assert_array_equal(fit_bt_head(D).w, fit_bt_head(D, margins=np.zeros(200)).w)


def test_too_few_pairs_and_bad_margins():
    with pytest.raises(ValueError, match="'safety' has 3 preference pairs"):
        fit_bt_head(np.ones((3, 2)), name="safety")
    with pytest.raises(ValueError, match="margins"):
        fit_bt_head(np.ones((10, 2)), margins=np.ones(9))


def test_fixed_c_fit_equals_the_head_refitted_at_that_c():
    D, _ = planted_pairs(n=300, d=6, seed=5)
    margins = np.linspace(0.0, 1.0, 300)
    w = fit_bt_weights(D, 0.05, margins=margins)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, fit_bt_head(D, Cs=[0.05], margins=margins).w, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="C must be positive"):
        fit_bt_weights(D, 0.0)
    with pytest.raises(ValueError, match="'safety' has 3 preference pairs"):
        fit_bt_weights(np.ones((3, 2)), 1.0, name="safety")
