"""Small, fast versions of benchmarks/toy_exactness.py: our training losses reach known optima on a tabular toy."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "toy_exactness.py"


@pytest.fixture(scope="module")
def te():
    """The benchmark module, imported from its file."""
    spec = importlib.util.spec_from_file_location("toy_exactness", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_exactness"] = module
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    return module


@pytest.fixture(scope="module")
def toy(te):
    return te.make_toy(8, seed=1)


def test_dpo_expected_loss_optimum_is_tilted_reference(te, toy):
    result = te.pairwise_optimum(toy, beta=0.5)
    assert result["max_abs_prob_error"] < 1e-6
    # the check discriminates: the optimum for another β is far away
    other = te.tilted(toy.ref, toy.r0, 1.0)
    assert te.max_abs(torch.tensor(result["policy"], dtype=torch.float64), other) > 1e-2


def test_modpo_optimum_tilts_by_weighted_rewards(te, toy):
    result = te.pairwise_optimum(toy, beta=0.5, weights=(0.7, 0.3))
    assert result["max_abs_prob_error"] < 1e-6
    dpo_target = te.tilted(toy.ref, toy.r0, 0.5)
    assert te.max_abs(torch.tensor(result["policy"], dtype=torch.float64), dpo_target) > 1e-2


def test_enumerated_bond_identities(te):
    checks = te.bond_exact_checks(te.make_toy(6, seed=2), n=3, seed=0, betas=(0.0, 0.5, 1.0))
    assert checks["best_index_vs_exact_bon"] < 1e-12
    assert checks["log_quantile_vs_binomial"] < 1e-12
    assert max(checks["bond_gradient_error"].values()) < 1e-10
    assert checks["jbond_gradient_error"] < 1e-10


def test_bond_monte_carlo_halves_kl_to_best_of_n(te, toy):
    run = te.train_bond(toy, n=4, beta=0.5, steps=80, batch=128, quantile_samples=8, lr=0.3, seed=0, every=20)
    start, end = run["curve"][0][1], run["curve"][-1][1]
    assert start > 0.1
    assert end < 0.5 * start


def test_bond_exact_training_reaches_jeffreys_optimum(te):
    small = te.make_toy(6, seed=2)
    n, beta = 3, 1.0
    bon = torch.as_tensor(te.exact_bon_distribution(small.ref.numpy(), small.r0.numpy(), n), dtype=torch.float64)
    star = te.jeffreys_optimum(small, bon, (n - 1) * te.expected_log_quantile(small, small.r0, n), beta)
    run = te.train_bond(small, n, beta, steps=300, lr=0.3, exact=te.enumerate_bond(small, n, n), every=100)
    assert te.max_abs(run["policy"], star) < 1e-4


def test_warp_reinforce_expected_gradient_and_optimum(te, toy):
    theta = toy.log_ref + 0.3
    t1 = theta.clone().requires_grad_(True)
    (surrogate,) = torch.autograd.grad(te.expected_reinforce_loss(t1, toy, 0.5, 2), t1)
    t2 = theta.clone().requires_grad_(True)
    (analytic,) = torch.autograd.grad(te.kl_regularized_objective(t2, toy, 0.5), t2)
    assert torch.allclose(surrogate, analytic, atol=1e-12, rtol=0)
    run = te.train_warp(toy, 0.5, steps=300, group=2, lr=0.2, exact=True, every=100)
    assert run["max_abs_error"] < 1e-4


def test_slerp_angle_norm_and_liti_identities(te):
    ops = te.weight_ops_section(seed=0, dim=16, angles_deg=(60.0, 90.0, 120.0), lams=(0.25, 0.5))
    assert max(ops["max_errors"].values()) < 1e-10
    half = [r for r in ops["rows"] if r["lam"] == 0.5]
    for row in half:
        assert row["angle_to_d1_deg"] == pytest.approx(row["omega_deg"] / 2, abs=1e-9)
        assert row["norm"] == pytest.approx(ops["norm"], abs=1e-12)
        assert row["linear_norm"] == pytest.approx(ops["norm"] * math.cos(math.radians(row["omega_deg"]) / 2),
                                                   abs=1e-12)


def test_cli_writes_json_and_plot(te, tmp_path):
    te.main(["--steps", "20", "--exact-steps", "20", "--outcomes", "6", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "toy_exactness.json").read_text())
    sections = {row["section"]: row["status"] for row in result["summary"]}
    assert sections["1 DPO/MODPO optimum"] == "PASS"
    assert sections["4 SLERP/LITI/EMA"] == "PASS"
    assert len(result["bond"]["runs"]) == 3
    assert (tmp_path / "toy_exactness.png").read_bytes()[:4] == b"\x89PNG"
