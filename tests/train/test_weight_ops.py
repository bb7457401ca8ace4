import math

import pytest
import torch
from torch import nn

from paretoalign.errors import InputError
from paretoalign.train.weight_ops import (
    check_compatible,
    ema_states,
    ema_update_,
    liti,
    merge_report,
    slerp,
    slerp_pair,
    task_vector,
)

INIT = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)


def st(delta, init=INIT, **extra):
    """A one-tensor state θ = init + delta (float64 so closed forms compare tightly)."""
    return {"w": init + torch.as_tensor(delta, dtype=init.dtype), **extra}


def delta_of(state, init=INIT):
    return state["w"] - init


def angle_deg(x, y):
    cos = float(torch.dot(x, y) / (x.norm() * y.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def test_slerp_of_orthogonal_unit_vectors_at_half_is_the_unit_bisector():
    out = slerp_pair(st([0, 0, 0]), st([1.0, 0, 0]), st([0, 1.0, 0]), 0.5)
    d = delta_of(out)
    torch.testing.assert_close(d, torch.tensor([1, 1, 0], dtype=torch.float64) / math.sqrt(2))
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-12)
    assert angle_deg(d, torch.tensor([1.0, 0, 0], dtype=torch.float64)) == pytest.approx(45.0, abs=1e-9)


def test_slerp_matches_the_closed_form_at_a_known_angle():
    init = st([0, 0, 0])
    b = [math.cos(math.radians(60)), math.sin(math.radians(60)), 0]
    out = slerp_pair(init, st([1.0, 0, 0]), st(b), 0.25)
    expected = torch.tensor([math.cos(math.radians(15)), math.sin(math.radians(15)), 0], dtype=torch.float64)
    torch.testing.assert_close(delta_of(out), expected, atol=1e-12, rtol=0)


def test_slerp_keeps_equal_norms_on_the_arc_and_moves_the_angle_linearly():
    g = torch.Generator().manual_seed(0)
    init = {"w": torch.randn(4, 25, generator=g, dtype=torch.float64)}
    d1, d2 = (torch.randn(4, 25, generator=g, dtype=torch.float64) for _ in range(2))
    d1, d2 = 2.5 * d1 / d1.norm(), 2.5 * d2 / d2.norm()
    omega = math.radians(angle_deg(d1.flatten(), d2.flatten()))
    for lam in (0.1, 0.3, 0.5, 0.8):
        out = slerp_pair(init, {"w": init["w"] + d1}, {"w": init["w"] + d2}, lam)
        d = (out["w"] - init["w"]).flatten()
        assert float(d.norm()) == pytest.approx(2.5, rel=1e-12)
        assert math.radians(angle_deg(d, d1.flatten())) == pytest.approx(lam * omega, abs=1e-9)


def test_slerp_endpoints_are_the_models_exactly():
    g = torch.Generator().manual_seed(1)
    init, a, b = ({"w": torch.randn(8, 8, generator=g)} for _ in range(3))
    assert torch.equal(slerp_pair(init, a, b, 0.0)["w"], a["w"])
    assert torch.equal(slerp_pair(init, a, b, 1.0)["w"], b["w"])


@pytest.mark.parametrize("scale", [3.0, -2.0])
def test_parallel_and_antiparallel_task_vectors_interpolate_linearly(scale):
    d1 = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    out = slerp_pair(st([0, 0, 0]), st(d1), st(scale * d1), 0.3)
    assert not torch.isnan(out["w"]).any()
    torch.testing.assert_close(delta_of(out), 0.7 * d1 + 0.3 * scale * d1, atol=1e-15, rtol=0)


def test_a_zero_task_vector_interpolates_linearly():
    d2 = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    out = slerp_pair(st([0, 0, 0]), st([0, 0, 0]), st(d2), 0.4)
    torch.testing.assert_close(delta_of(out), 0.4 * d2, atol=1e-15, rtol=0)


def test_fold_of_three_orthonormal_task_vectors_has_the_closed_form():
    e = torch.eye(3, dtype=torch.float64)
    init = st([0, 0, 0])
    out = slerp(init, [st(e[0]), st(e[1]), st(e[2])])
    # step 1 (lam 1/2, 90 deg): (e1+e2)/sqrt2; step 2 (lam 1/3, 90 deg): sin(60)·that + sin(30)·e3
    expected = math.sqrt(3 / 8) * (e[0] + e[1]) + 0.5 * e[2]
    torch.testing.assert_close(delta_of(out), expected, atol=1e-12, rtol=0)
    assert float(delta_of(out).norm()) == pytest.approx(1.0, abs=1e-12)
    swapped = slerp(init, [st(e[1]), st(e[0]), st(e[2])])
    torch.testing.assert_close(swapped["w"], out["w"], atol=1e-12, rtol=0)


def test_fold_of_nearly_parallel_task_vectors_is_their_mean():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(50, generator=g, dtype=torch.float64)
    init = {"w": torch.zeros(50, dtype=torch.float64)}
    deltas = [base + 1e-4 * torch.randn(50, generator=g, dtype=torch.float64) for _ in range(4)]
    out = slerp(init, [{"w": d} for d in deltas])
    torch.testing.assert_close(out["w"], torch.stack(deltas).mean(0), atol=1e-8, rtol=0)


def test_slerp_rejects_bad_counts_and_lambda():
    s = st([1.0, 0, 0])
    with pytest.raises(InputError, match="at least 2"):
        slerp(st([0, 0, 0]), [s])
    with pytest.raises(InputError, match="2 models only"):
        slerp(st([0, 0, 0]), [s, s, s], lam=0.5)
    with pytest.raises(InputError, match=r"lam must be in \[0, 1\]"):
        slerp_pair(st([0, 0, 0]), s, s, 1.5)


def test_low_precision_inputs_keep_their_dtype():
    g = torch.Generator().manual_seed(3)
    init, a, b = ({"w": torch.randn(16, generator=g).to(torch.bfloat16)} for _ in range(3))
    out = slerp_pair(init, a, b, 0.5)
    assert out["w"].dtype == torch.bfloat16
    # float64 arithmetic, one rounding at the end
    d1, d2, i = a["w"].double() - init["w"].double(), b["w"].double() - init["w"].double(), init["w"].double()
    omega = math.acos(float(torch.dot(d1, d2) / (d1.norm() * d2.norm())))
    ref = i + (math.sin(0.5 * omega) / math.sin(omega)) * (d1 + d2)
    assert torch.equal(out["w"], ref.to(torch.bfloat16))


def test_non_float_tensors_are_copied_and_must_match():
    pos = torch.arange(5)
    init = st([0, 0, 0], pos=pos)
    out = slerp_pair(init, st([1.0, 0, 0], pos=pos.clone()), st([0, 1.0, 0], pos=pos.clone()), 0.5)
    assert torch.equal(out["pos"], pos) and out["pos"].dtype == torch.int64
    with pytest.raises(InputError, match="'pos'.*model 2"):
        slerp_pair(init, st([1.0, 0, 0], pos=pos), st([0, 1.0, 0], pos=pos + 1), 0.5)


def test_check_compatible_names_the_model_and_tensor():
    ok = {"w": torch.zeros(3), "b": torch.zeros(2)}
    with pytest.raises(InputError, match="model 'B' lacks tensor 'b'"):
        check_compatible({"A": ok, "B": {"w": torch.zeros(3)}})
    with pytest.raises(InputError, match="'w' has shape \\(4,\\) in model 'B'"):
        check_compatible({"A": ok, "B": {"w": torch.zeros(4), "b": torch.zeros(2)}})
    with pytest.raises(InputError, match="'b' has dtype torch.float16 in model 'B'"):
        check_compatible({"A": ok, "B": {"w": torch.zeros(3), "b": torch.zeros(2, dtype=torch.float16)}})
    check_compatible({"A": ok, "B": {k: v + 1 for k, v in ok.items()}})


def test_task_vector_is_the_difference_of_float_tensors():
    init = st([0.0, 0, 0], pos=torch.arange(2))
    tv = task_vector(st([1.0, -2.0, 0.5], pos=torch.arange(2)), init)
    assert list(tv) == ["w"]
    torch.testing.assert_close(tv["w"], torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))


def test_liti_interpolates_between_init_and_target():
    init, target = st([0, 0, 0]), st([1.0, -2.0, 4.0])
    assert torch.equal(liti(init, target, 0.0)["w"], init["w"])
    assert torch.equal(liti(init, target, 1.0)["w"], target["w"])
    torch.testing.assert_close(liti(init, target, 0.3)["w"], 0.7 * init["w"] + 0.3 * target["w"], atol=1e-15, rtol=0)
    with pytest.raises(InputError, match="eta"):
        liti(init, target, 1.5)
    torch.testing.assert_close(liti(init, target, 1.5, allow_extrapolation=True)["w"],
                               -0.5 * init["w"] + 1.5 * target["w"], atol=1e-15, rtol=0)


def test_ema_states_arithmetic_and_rate_range():
    anchor, current = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, -2.0])}
    torch.testing.assert_close(ema_states(anchor, current, 0.25)["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal(ema_states(anchor, current, 1.0)["w"], current["w"])
    assert torch.equal(anchor["w"], torch.tensor([1.0, 2.0]))  # inputs untouched
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="mu"):
            ema_states(anchor, current, bad)


def test_ema_update_changes_only_the_given_parameters_in_place_without_grad():
    torch.manual_seed(0)
    anchor, current = nn.Linear(3, 2), nn.Linear(3, 2)
    w0, b0 = anchor.weight.detach().clone(), anchor.bias.detach().clone()
    weight_param = anchor.weight
    n = ema_update_(anchor, {"weight": current.weight}, 0.1)
    assert n == 1
    assert anchor.weight is weight_param
    torch.testing.assert_close(anchor.weight, 0.9 * w0 + 0.1 * current.weight.detach())
    assert torch.equal(anchor.bias, b0)
    assert anchor.weight.grad_fn is None and anchor.weight.requires_grad and anchor.weight.grad is None
    assert current.weight.grad is None


def test_ema_update_from_a_module_and_into_a_dict():
    torch.manual_seed(1)
    anchor, current = nn.Linear(3, 2), nn.Linear(3, 2)
    before = {k: v.detach().clone() for k, v in anchor.named_parameters()}
    assert ema_update_(anchor, current, 0.5) == 2
    for k, v in current.named_parameters():
        torch.testing.assert_close(dict(anchor.named_parameters())[k], 0.5 * before[k] + 0.5 * v.detach())
    table = {"w": torch.zeros(2)}
    ema_update_(table, {"w": torch.ones(2)}, 0.25)
    torch.testing.assert_close(table["w"], torch.full((2,), 0.25))


def test_ema_update_rejects_unknown_names_and_shapes():
    anchor = nn.Linear(3, 2)
    with pytest.raises(InputError, match="'lm_head.weight'"):
        ema_update_(anchor, {"lm_head.weight": torch.zeros(2, 3)}, 0.1)
    with pytest.raises(InputError, match="'weight' has shape"):
        ema_update_(anchor, {"weight": torch.zeros(3, 2)}, 0.1)


def test_merge_report_angles_norms_and_slerp_check():
    init = {"w": torch.zeros(3, dtype=torch.float64), "z": torch.zeros(2, dtype=torch.float64)}
    a = {"w": torch.tensor([2.0, 0, 0], dtype=torch.float64), "z": torch.zeros(2, dtype=torch.float64)}
    b = {"w": torch.tensor([0, 3.0, 0], dtype=torch.float64), "z": torch.ones(2, dtype=torch.float64)}
    merged = slerp_pair(init, a, b, 0.25)
    report = merge_report(init, a, b, merged=merged, lam=0.25)
    row = {r["name"]: r for r in report["tensors"]}
    assert row["w"]["angle_deg"] == pytest.approx(90.0) and row["w"]["cos"] == pytest.approx(0.0, abs=1e-12)
    assert (row["w"]["norm_a"], row["w"]["norm_b"]) == (2.0, 3.0)
    # unequal norms: the angle to δ_a is not λΩ, but δ_merged = sin(3Ω/4)/sin Ω · δ_a + sin(Ω/4)/sin Ω · δ_b
    assert (row["w"]["coef_a"], row["w"]["coef_b"]) == pytest.approx((math.sin(3 * math.pi / 8),
                                                                       math.sin(math.pi / 8)), abs=1e-12)
    assert row["w"]["norm_merged"] == pytest.approx(math.hypot(2 * math.sin(3 * math.pi / 8),
                                                               3 * math.sin(math.pi / 8)), abs=1e-12)
    assert row["z"]["angle_deg"] is None and row["z"]["norm_a"] == 0.0
    assert report["summary"]["zero_task_vectors"] == 1
    assert report["summary"]["mean_angle_deg"] == pytest.approx(90.0)
    assert report["summary"]["max_coef_error"] < 1e-12
