import numpy as np
import pytest
import torch

from paretoalign.rewards.gating import GatingNetwork, rowwise_matmul, train_gating


def test_output_is_on_the_simplex():
    torch.manual_seed(0)
    net = GatingNetwork(12, 5, hidden=(16, 16)).eval()
    g = net(torch.randn(30, 12) * 5)
    assert g.shape == (30, 5)
    assert torch.all(g >= 0)
    torch.testing.assert_close(g.sum(dim=1), torch.ones(30))


def test_higher_temperature_is_closer_to_uniform():
    torch.manual_seed(0)
    sharp = GatingNetwork(6, 4, hidden=(8,), temperature=0.1).eval()
    soft = GatingNetwork(6, 4, hidden=(8,), temperature=10.0).eval()
    soft.load_state_dict(sharp.state_dict())
    x = torch.randn(50, 6) * 3
    with torch.no_grad():
        spread = [float((net(x) - 0.25).abs().max()) for net in (sharp, soft)]
        logits = sharp.mlp(x)
        torch.testing.assert_close(soft(x), torch.softmax(logits / 10.0, dim=-1))
    assert spread[1] < spread[0]


def test_numpy_weights_match_torch_eval_forward():
    torch.manual_seed(1)
    net = GatingNetwork(10, 3, hidden=(7, 5), dropout=0.5, temperature=3.0).eval()
    x = np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(net.weights_numpy(x), expected, atol=1e-6)


def test_rowwise_matmul_is_batch_independent():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 300))
    M = rng.standard_normal((300, 7))
    full = rowwise_matmul(X, M)
    np.testing.assert_allclose(full, X @ M, rtol=1e-12, atol=1e-10)
    for lo, hi in [(0, 1), (3, 4), (5, 71), (64, 150), (149, 150)]:
        np.testing.assert_array_equal(rowwise_matmul(X[lo:hi], M), full[lo:hi])


def prompt_dependent_problem(n, seed):
    """Two objectives; the prompt's type (feature 0 = +-1) says which one decides the preference."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    h_x = rng.standard_normal((n, 4)).astype(np.float32) * 0.3
    h_x[:, 0] = np.where(kind == 0, 1.0, -1.0)
    r_w = rng.standard_normal((n, 2))
    r_l = rng.standard_normal((n, 2))
    # On the deciding objective the chosen reply is better by a positive gap; the other objective is noise.
    gap = np.abs(rng.standard_normal(n)) + 0.1
    rows = np.arange(n)
    r_w[rows, kind] = r_l[rows, kind] + gap
    return h_x, r_w, r_l


def test_training_learns_prompt_dependent_weights():
    h_x, r_w, r_l = prompt_dependent_problem(1200, seed=0)
    fit = train_gating(h_x, r_w, r_l, hidden=(32,), dropout=0.0, steps=400, batch_size=256, lr=1e-2, seed=0)
    hist = fit.history
    assert hist["final_train_loss"] < hist["initial_train_loss"] - 0.1
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert not fit.network.training

    h_t, rw_t, rl_t = prompt_dependent_problem(2000, seed=1)
    with torch.no_grad():
        g = fit.network(torch.from_numpy(h_t)).numpy()
    diff = rw_t - rl_t
    gated_acc = np.mean((g * diff).sum(axis=1) > 0)
    angles = np.linspace(0, 2 * np.pi, 361)
    fixed_acc = max(np.mean(diff @ np.array([np.cos(a), np.sin(a)]) > 0) for a in angles)
    assert gated_acc > fixed_acc + 0.05
    assert gated_acc > 0.9
    # The gate puts the weight on the deciding objective.
    assert g[h_t[:, 0] > 0, 0].mean() > 0.7 and g[h_t[:, 0] < 0, 1].mean() > 0.7


def test_training_is_deterministic_and_leaves_global_rng_alone():
    h_x, r_w, r_l = prompt_dependent_problem(300, seed=2)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = train_gating(h_x, r_w, r_l, hidden=(8,), steps=30, batch_size=64, seed=7)
    after = torch.rand(1)
    b = train_gating(h_x, r_w, r_l, hidden=(8,), steps=30, batch_size=64, seed=7)
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.network.state_dict().items(), b.network.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a.history["val_loss"] == b.history["val_loss"]
    c = train_gating(h_x, r_w, r_l, hidden=(8,), steps=30, batch_size=64, seed=8)
    assert not torch.equal(c.network.mlp[0].weight, a.network.mlp[0].weight)


def test_history_and_settings():
    h_x, r_w, r_l = prompt_dependent_problem(100, seed=3)
    fit = train_gating(h_x, r_w, r_l, hidden=(4, 4), dropout=0.3, temperature=5.0, steps=40, val_fraction=0.2)
    h = fit.history
    assert h["n_val"] == 20 and h["n_train"] == 80 and h["steps"] == 40
    assert h["step"][0] == 0 and h["step"][-1] == 40
    assert len(h["step"]) == len(h["train_loss"]) == len(h["val_loss"]) == len(h["val_accuracy"])
    assert fit.network.config() == {"hidden": [4, 4], "dropout": 0.3, "temperature": 5.0}
    no_val = train_gating(h_x, r_w, r_l, hidden=(4,), steps=5, val_fraction=0.0)
    assert no_val.history["n_val"] == 0 and np.isnan(no_val.history["final_val_loss"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="r_w, r_l"):
        train_gating(np.zeros((5, 3)), np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="temperature"):
        GatingNetwork(3, 2, temperature=0)


def _noisy_pairs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 20)).astype(np.float32)
    rw = rng.standard_normal((n, 3))
    rl = rng.standard_normal((n, 3))
    return h, rw, rl  # pure noise: any fit beyond the start overfits


def test_restore_best_returns_the_lowest_validation_loss_checkpoint():
    h, rw, rl = _noisy_pairs()
    fit = train_gating(h, rw, rl, hidden=(64, 64), dropout=0.0, steps=300, batch_size=32, lr=1e-2, val_fraction=0.3)
    best = int(np.argmin(fit.history["val_loss"]))
    assert fit.history["best_step"] == fit.history["step"][best]
    assert fit.history["final_val_loss"] == pytest.approx(min(fit.history["val_loss"]), abs=1e-6)


def test_without_restore_best_the_last_step_is_kept():
    h, rw, rl = _noisy_pairs()
    fit = train_gating(h, rw, rl, hidden=(64, 64), dropout=0.0, steps=300, batch_size=32, lr=1e-2, val_fraction=0.3,
                       restore_best=False)
    assert fit.history["best_step"] == 300
    assert fit.history["final_val_loss"] == pytest.approx(fit.history["val_loss"][-1], abs=1e-6)
    assert fit.history["final_val_loss"] > min(fit.history["val_loss"])


def test_unconditioned_gating_gives_every_prompt_the_same_weights():
    h_x, r_w, r_l = prompt_dependent_problem(600, seed=3)
    fit = train_gating(h_x, r_w, r_l, hidden=(16,), dropout=0.0, steps=200, batch_size=128, lr=1e-2, seed=0,
                       method="none")
    net = fit.network
    assert not net.conditioned and net.config()["conditioned"] is False
    g = net.weights_numpy(h_x[:50])
    np.testing.assert_allclose(g, np.broadcast_to(g[0], g.shape), atol=0)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(h_x[:50])).double().numpy(), g, atol=1e-6)
    # One fixed vector cannot fit a prompt-dependent problem as well as the prompt-conditioned gate.
    cond = train_gating(h_x, r_w, r_l, hidden=(16,), dropout=0.0, steps=200, batch_size=128, lr=1e-2, seed=0)
    assert cond.history["final_val_loss"] < fit.history["final_val_loss"] - 0.05


def test_pro_gating_regresses_onto_the_preferred_replys_normalised_rewards():
    rng = np.random.default_rng(4)
    n = 800
    h_x = rng.standard_normal((n, 4)).astype(np.float32)
    # The preferred reply's rewards, per prompt, peak on objective 0 when h_0 > 0 and on objective 1 otherwise.
    r_w = np.where(h_x[:, :1] > 0, [[2.0, -2.0]], [[-2.0, 2.0]]).astype(np.float32)
    r_l = np.zeros_like(r_w)
    fit = train_gating(h_x, r_w, r_l, hidden=(16,), dropout=0.0, temperature=1.0, steps=800, batch_size=128,
                       lr=1e-2, seed=0, method="pro")
    g = fit.network.weights_numpy(h_x)
    target = np.exp(r_w) / np.exp(r_w).sum(axis=1, keepdims=True)
    assert np.abs(g - target).mean() < 0.05
    # s comes from the BT loss alone: every pair has a positive gated margin here, so s grows past its start of 1.
    assert fit.history["method"] == "pro" and fit.history["scale"] > 1.0
    with pytest.raises(ValueError, match="gating method"):
        train_gating(h_x, r_w, r_l, steps=1, method="softmax")
