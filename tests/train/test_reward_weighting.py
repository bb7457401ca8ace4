"""Reward weighting modes: hand examples for each rule, parameter checks, exact state round trips, and MaxMin on a
3-arm bandit."""

import json
import math

import numpy as np
import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.train.reward_weighting import WEIGHTING_MODES, build_weighting, hypervolume, min_norm_weights

NAMES = ["a", "b"]


def test_modes_registry():
    assert WEIGHTING_MODES == ("fixed", "hypervolume", "gradient", "pama", "maxmin")
    assert [build_weighting(m, [0.5, 0.5], NAMES, None).needs_gradients for m in WEIGHTING_MODES] == \
        [False, False, True, True, False]


def test_fixed_returns_configured_weights():
    w = build_weighting("fixed", [0.25, 0.75], NAMES, None)
    out = w.step_weights(np.array([[1.0, 0.0], [0.0, 1.0]]), 2, 0)
    np.testing.assert_array_equal(out, [0.25, 0.75])
    assert w.named_weights() == {"a": 0.25, "b": 0.75}
    assert w.sample_scale(np.zeros((2, 2)), 2) is None
    with pytest.raises(TypeError):
        w.mix_gradients([torch.zeros(3), torch.zeros(3)], 0)


@pytest.mark.parametrize(("mode", "weights", "params", "field"), [
    ("nope", [0.5, 0.5], None, "weighting"),
    ("fixed", [0.6, 0.6], None, "weights"),
    ("fixed", [1.5, -0.5], None, "weights"),
    ("fixed", [1.0], None, "weights"),
    ("fixed", [0.5, 0.5], {"base": 1.0}, "weighting_params.base"),
    ("hypervolume", [0.5, 0.5], {"gain": -1.0}, "weighting_params.gain"),
    ("hypervolume", [0.5, 0.5], {"base": "big"}, "weighting_params.base"),
    ("gradient", [0.5, 0.5], {"step_size": 0}, "weighting_params.step_size"),
    ("gradient", [0.5, 0.5], {"accumulation_steps": 1.5}, "weighting_params.accumulation_steps"),
    ("gradient", [0.5, 0.5], {"accumulation_steps": True}, "weighting_params.accumulation_steps"),
    ("maxmin", [0.5, 0.5], {"normalize": 1}, "weighting_params.normalize"),
    ("pama", [0.5, 0.5], {"lr": 1}, "weighting_params.lr"),
])
def test_bad_configuration_names_the_field(mode, weights, params, field):
    with pytest.raises(InputError) as e:
        build_weighting(mode, weights, NAMES, params)
    assert e.value.field == field


def test_hypervolume_of_hand_fronts():
    ref = np.zeros(2)
    assert hypervolume(np.array([[1.0, 2.0]]), ref) == pytest.approx(2.0)
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), ref) == pytest.approx(3.0)
    assert hypervolume(np.array([[1.0, 2.0], [0.5, 0.5]]), ref) == pytest.approx(2.0)  # dominated point adds nothing
    assert hypervolume(np.array([[3.0, -1.0]]), ref) == 0.0  # does not dominate the reference
    # 3-D: two unit-overlapping boxes 2x1x1 and 1x2x1 -> 2 + 2 - 1
    assert hypervolume(np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]), np.zeros(3)) == pytest.approx(3.0)


def test_hypervolume_mode_meta_reward():
    w = build_weighting("hypervolume", [0.5, 0.5], NAMES, None)

    def m(contribution: float) -> float:  # the meta-reward at base 0.5, gain 1.5
        return 0.5 + 1.5 * math.tanh(contribution)

    # step 0: nothing to compare with; the mean (0, 0) starts the archive, meta-reward 1
    np.testing.assert_array_equal(w.step_weights(np.array([[0.0, 0.0], [0.0, 0.0]]), 2, 0), [0.5, 0.5])
    np.testing.assert_array_equal(w.sample_scale(np.zeros((2, 2)), 2), [1.0, 1.0])
    # step 1: mean (1, 2); range (1, 2) -> reference (-0.1, -0.2); it adds 1.1*2.2 - 0.1*0.2 of a 1.1*2.2 box
    w.step_weights(np.array([[1.0, 2.0], [1.0, 2.0]]), 2, 1)
    np.testing.assert_allclose(w.reference(), [-0.1, -0.2])
    assert w.contribution == pytest.approx(2.40 / 2.42)
    np.testing.assert_allclose(w.sample_scale(np.zeros((3, 2)), 2), [m(2.40 / 2.42)] * 3)
    assert w.front == [[1.0, 2.0]]  # (0, 0) is dominated now
    # step 2: mean (2, 1); reference (-0.2, -0.2); adds (2 - 1) * (1 + 0.2) of a 2.2*2.2 box
    w.step_weights(np.array([[2.0, 0.0], [2.0, 2.0]]), 2, 2)
    assert w.contribution == pytest.approx(1.2 / 4.84)
    assert w.sample_scale(np.zeros((1, 2)), 2)[0] == pytest.approx(m(1.2 / 4.84))
    # step 3: a dominated mean adds nothing: meta-reward = base, the archive is unchanged
    w.step_weights(np.array([[0.5, 0.5]]), 1, 3)
    assert w.contribution == 0.0 and w.sample_scale(np.zeros((1, 2)), 1)[0] == pytest.approx(0.5)
    assert sorted(w.front) == [[1.0, 2.0], [2.0, 1.0]]
    np.testing.assert_array_equal(w.last_weights, [0.5, 0.5])
    assert w.metrics() == {"weighting/meta_reward": pytest.approx(0.5), "weighting/hv_contribution": 0.0,
                           "weighting/front_size": 2.0}
    assert build_weighting("fixed", [0.5, 0.5], NAMES, None).metrics() == {}


def test_hypervolume_a_good_first_batch_does_not_freeze_the_meta_reward():
    # the first mean is better than later ones in b; a later mean better in a is still non-dominated and rewarded
    w = build_weighting("hypervolume", [0.5, 0.5], NAMES, {"margin": 0.0})
    w.step_weights(np.array([[0.5, 1.0]]), 1, 0)
    w.step_weights(np.array([[0.9, 0.2]]), 1, 1)
    # reference = nadir (0.5, 0.2); (0.9, 0.2) adds zero width in b at margin 0 ...
    assert w.contribution == 0.0
    w.step_weights(np.array([[1.0, 0.6]]), 1, 2)
    # ... (1.0, 0.6) adds (1.0 - 0.5) * (0.6 - 0.2) of the (1.0 - 0.5) * (1.0 - 0.2) box
    assert w.contribution == pytest.approx(0.5 * 0.4 / (0.5 * 0.8))
    assert w.scale > 0.5
    # scale-free: the same run with the second objective in other units gives the same contributions
    v = build_weighting("hypervolume", [0.5, 0.5], NAMES, {"margin": 0.0})
    for step, r in enumerate([[0.5, 1.0], [0.9, 0.2], [1.0, 0.6]]):
        v.step_weights(np.array([[r[0], 100.0 * r[1] - 7.0]]), 1, step)
    assert v.contribution == pytest.approx(w.contribution)


def test_gradient_mode_hand_update():
    w = build_weighting("gradient", [0.5, 0.5], NAMES, {"step_size": 0.1})
    g = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]
    # Gram [[1, 1], [1, 2]] -> influence (2, 3); w ∝ 0.5·exp(0.2), 0.5·exp(0.3)
    out = w.mix_gradients(g, 0)
    e = np.exp([0.2, 0.3])
    np.testing.assert_allclose(out, e / e.sum())
    np.testing.assert_allclose(w.step_weights(np.zeros((2, 2)), 2, 1), e / e.sum())
    # without the self term: influence (1, 1) -> unchanged weights
    other = build_weighting("gradient", [0.25, 0.75], NAMES, {"include_self": False})
    np.testing.assert_allclose(other.mix_gradients(g, 0), [0.25, 0.75])


def test_gradient_mode_accumulates():
    w = build_weighting("gradient", [0.5, 0.5], NAMES, {"accumulation_steps": 2})
    g1 = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])]   # influence (1, 0)
    g2 = [torch.tensor([0.0, 0.0]), torch.tensor([0.0, 3.0])]   # influence (0, 9)
    np.testing.assert_allclose(w.mix_gradients(g1, 0), [0.5, 0.5])  # not yet
    e = np.exp([0.5, 4.5])
    np.testing.assert_allclose(w.mix_gradients(g2, 0), e / e.sum())


def _pair_closed_form(g1, g2):
    lam = np.dot(g2 - g1, g2) / np.dot(g1 - g2, g1 - g2)
    return float(np.clip(lam, 0, 1))


def test_pama_min_norm_two_objectives():
    w = build_weighting("pama", [0.5, 0.5], NAMES, None)
    # orthogonal gradients of equal norm -> equal weights
    np.testing.assert_allclose(w.mix_gradients([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0])], 0), [0.5, 0.5])
    # the segment's min-norm point: g1 = (1, 0), g2 = (0, 3): λ = 9/10
    g1, g2 = np.array([1.0, 0.0]), np.array([0.0, 3.0])
    out = w.mix_gradients([torch.tensor(g1), torch.tensor(g2)], 0)
    np.testing.assert_allclose(out, [0.9, 0.1])
    assert out[0] == pytest.approx(_pair_closed_form(g1, g2))
    # one gradient is the other's multiple: all weight on the shorter
    np.testing.assert_allclose(w.mix_gradients([torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0])], 0), [1.0, 0.0])
    # the min-norm point at a vertex: g1 = (1, 0), g2 = (1, 2): ⟨g2 − g1, g2⟩ / ‖g1 − g2‖² = 4 / 4 -> λ = 1
    np.testing.assert_allclose(w.mix_gradients([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 2.0])], 0), [1.0, 0.0])
    # normalised: g1 = (1, 0), g2 = (0, 3) become orthonormal -> equal weights
    wn = build_weighting("pama", [0.5, 0.5], NAMES, {"normalize_gradients": True})
    np.testing.assert_allclose(wn.mix_gradients([torch.tensor(g1), torch.tensor(g2)], 0), [0.5, 0.5])


def test_min_norm_three_objectives_hand_and_random():
    # three orthogonal gradients of norms 1, 2, 3: λ_k ∝ 1/‖g_k‖² -> (36, 9, 4)/49
    gram = np.diag([1.0, 4.0, 9.0])
    np.testing.assert_allclose(min_norm_weights(gram), np.array([36, 9, 4]) / 49)
    rng = np.random.default_rng(3)
    for _ in range(20):
        g = rng.normal(size=(3, 5))
        lam = min_norm_weights(g @ g.T)
        assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0)
        best = lam @ g @ g.T @ lam
        grid = rng.dirichlet(np.ones(3), size=2000)
        assert best <= np.min(np.einsum("ij,jk,ik->i", grid, g @ g.T, grid)) + 1e-9


def test_maxmin_one_hot_and_ties():
    w = build_weighting("maxmin", [0.5, 0.3, 0.2], ["x", "y", "z"], None)
    np.testing.assert_array_equal(w.step_weights(np.array([[1.0, 0.2, 0.5], [1.0, 0.0, 0.5]]), 2, 0), [0, 1, 0])
    np.testing.assert_array_equal(w.step_weights(np.array([[0.1, 0.1, 0.1]]), 1, 1), [1, 0, 0])  # tie -> lowest
    assert w.named_weights() == {"x": 1.0, "y": 0.0, "z": 0.0}


def test_maxmin_normalize_compares_standardised_means():
    w = build_weighting("maxmin", [0.5, 0.5], NAMES, {"normalize": True})
    # objective a lives around 100, b around 0; raw means would always pick b
    w.step_weights(np.array([[100.0, 0.0], [102.0, 2.0]]), 2, 0)
    out = w.step_weights(np.array([[99.0, 3.0], [99.0, 3.0]]), 2, 1)
    # running stats over 4 rows: a mean 100, std sqrt(1.5); b mean 2, std sqrt(1.5) -> a is below its history
    np.testing.assert_array_equal(out, [1, 0])
    np.testing.assert_allclose(w.mean, [100.0, 2.0])
    np.testing.assert_allclose(w.m2 / w.count, [1.5, 1.5])
    raw = build_weighting("maxmin", [0.5, 0.5], NAMES, None)
    np.testing.assert_array_equal(raw.step_weights(np.array([[99.0, 3.0]]), 1, 1), [0, 1])


@pytest.mark.parametrize("mode", WEIGHTING_MODES)
def test_state_round_trip_resumes_exactly(mode):
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(4, 2)) + 0.3 * t for t in range(6)]
    grads = [[torch.tensor(rng.normal(size=3)), torch.tensor(rng.normal(size=3))] for _ in range(6)]

    def run(w, steps):
        outs = []
        for t in steps:
            out = w.step_weights(batches[t], 2, t)
            scale = w.sample_scale(batches[t], 2)
            if w.needs_gradients:
                out = w.mix_gradients(grads[t], t)
            outs.append((out.tolist(), None if scale is None else scale.tolist()))
        return outs

    params = {"gradient": {"accumulation_steps": 2, "step_size": 0.3}, "maxmin": {"normalize": True}}.get(mode)
    full = build_weighting(mode, [0.4, 0.6], NAMES, params)
    expected = run(full, range(6))
    first = build_weighting(mode, [0.4, 0.6], NAMES, params)
    run(first, range(3))
    saved = json.loads(json.dumps(first.state()))
    resumed = build_weighting(mode, [0.4, 0.6], NAMES, params)
    resumed.load_state(saved)
    assert run(resumed, range(3, 6)) == expected[3:]
    assert resumed.state() == full.state()


def test_load_state_refuses_another_mode():
    state = build_weighting("fixed", [0.5, 0.5], NAMES, None).state()
    with pytest.raises(InputError) as e:
        build_weighting("maxmin", [0.5, 0.5], NAMES, None).load_state(state)
    assert e.value.field == "weighting"


def _bandit(mode: str, steps: int = 400, seed: int = 0) -> np.ndarray:
    """Softmax policy over 3 arms; two groups (80 % majority, 20 % minority) with known per-arm rewards."""
    group_rewards = np.array([[1.0, 0.0, 0.6],    # majority
                              [0.0, 1.0, 0.6]])   # minority
    population = np.array([0.8, 0.2])
    weighting = build_weighting(mode, population, ["majority", "minority"], None)
    rng = np.random.default_rng(seed)
    logits = np.zeros(3)
    for step in range(steps):
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        arms = rng.choice(3, size=32, p=probs)
        rewards = group_rewards[:, arms].T                 # (n, 2): every group's reward of each sample
        w = weighting.step_weights(rewards, 32, step)
        scalar = rewards @ w
        adv = scalar - scalar.mean()
        grad = np.zeros(3)
        for a, g in zip(arms, adv, strict=True):
            grad += g * (np.eye(3)[a] - probs)
        logits += 0.5 * grad / len(arms)
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


def test_maxmin_bandit_helps_the_minority():
    group_rewards = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.6]])
    pooled = _bandit("fixed")
    maxmin = _bandit("maxmin")
    assert pooled[0] > 0.9          # the population-weighted reward's best arm: the majority's
    assert maxmin[2] > 0.8          # the max-min arm: 0.6 for both groups
    minority_pooled = float(group_rewards[1] @ pooled)
    minority_maxmin = float(group_rewards[1] @ maxmin)
    assert minority_pooled < 0.15 and minority_maxmin > 0.5
    assert min(group_rewards @ maxmin) > min(group_rewards @ pooled) + 0.3
