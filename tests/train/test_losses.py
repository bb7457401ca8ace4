import math

import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.train.bond_trainer import best_index, jbond_reward, jeffreys_loss, log_quantile
from paretoalign.train.dpo_trainer import dpo_loss
from paretoalign.train.modpo_trainer import modpo_loss
from paretoalign.train.warp_trainer import kl_regularized_reward, leave_one_out_advantages, reinforce_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def neg_log_sigmoid(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))


# ------------------------------------------------------------------ DPO / MODPO
PC, PR, RC, RR = t(-3.0, -10.0), t(-5.0, -4.0), t(-4.0, -8.0), t(-4.5, -6.0)


def test_dpo_loss_and_implicit_rewards_match_a_hand_computation():
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.5)
    # pair 0: 0.5 * (-3 + 4) - 0.5 * (-5 + 4.5) = 0.75; pair 1: 0.5 * (-10 + 8) - 0.5 * (-4 + 6) = -2
    assert losses.tolist() == pytest.approx([neg_log_sigmoid(0.75), neg_log_sigmoid(-2.0)], abs=1e-12)
    assert chosen.tolist() == pytest.approx([0.5, -1.0])
    assert rejected.tolist() == pytest.approx([-0.25, 1.0])


def test_dpo_loss_gradient_reaches_only_the_policy_log_probs():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    losses, chosen, _ = dpo_loss(pc, pr, RC, RR, beta=0.5)
    losses.sum().backward()
    margin = t(0.75, -2.0)
    d_margin = -torch.sigmoid(-margin)  # d/dm of -log sigmoid(m)
    torch.testing.assert_close(pc.grad, 0.5 * d_margin)
    torch.testing.assert_close(pr.grad, -0.5 * d_margin)
    assert not chosen.requires_grad


def test_modpo_loss_with_two_objectives_matches_a_hand_computation():
    mc, mr = t(1.0, 0.0).view(2, 1), t(3.0, -1.0).view(2, 1)
    losses, chosen, rejected = modpo_loss(PC, PR, RC, RR, mc, mr, [0.25, 0.75], beta=0.5)
    # DPO margins 0.75 and -2; margin rewards 0.75 * (1 - 3) = -1.5 and 0.75 * (0 + 1) = 0.75; divided by w_0
    expected = [neg_log_sigmoid((0.75 + 1.5) / 0.25), neg_log_sigmoid((-2.0 - 0.75) / 0.25)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert chosen.tolist() == pytest.approx([0.5, -1.0]) and rejected.tolist() == pytest.approx([-0.25, 1.0])


def test_modpo_loss_with_three_objectives_matches_a_hand_computation():
    mc = t(1.0, 2.0, 0.5, -1.0).view(2, 2)
    mr = t(0.0, 4.0, 0.5, 1.0).view(2, 2)
    w = [0.5, 0.3, 0.2]
    losses, _, _ = modpo_loss(PC, PR, RC, RR, mc, mr, w, beta=0.5)
    m0 = 0.3 * (1.0 - 0.0) + 0.2 * (2.0 - 4.0)   # -0.1
    m1 = 0.3 * (0.5 - 0.5) + 0.2 * (-1.0 - 1.0)  # -0.4
    expected = [neg_log_sigmoid((0.75 - m0) / 0.5), neg_log_sigmoid((-2.0 - m1) / 0.5)]
    assert losses.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_modpo_with_all_weight_on_the_pair_objective_is_exactly_dpo(k):
    g = torch.Generator().manual_seed(k)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 4 for _ in range(4))
    mc, mr = torch.randn(5, k - 1, generator=g) * 9, torch.randn(5, k - 1, generator=g) * 9
    modpo = modpo_loss(pc, pr, rc, rr, mc, mr, [1.0] + [0.0] * (k - 1), beta=0.1)
    dpo = dpo_loss(pc, pr, rc, rr, beta=0.1)
    for a, b in zip(modpo, dpo, strict=True):
        assert torch.equal(a, b)


def test_modpo_gradient_scales_with_one_over_w0():
    pc = PC.clone().requires_grad_()
    zeros = torch.zeros(2, 1, dtype=torch.float64)
    modpo_loss(pc, PR, RC, RR, zeros, zeros, [0.25, 0.75], beta=0.5)[0].sum().backward()
    margin = t(0.75, -2.0) / 0.25
    torch.testing.assert_close(pc.grad, -torch.sigmoid(-margin) * 0.5 / 0.25)


# ------------------------------------------------------------------ BOND / J-BOND
def test_jbond_reward_penalises_only_samples_strictly_worse_than_both_anchor_samples():
    policy = t(0.0, 1.0, 2.0, 1.0, 5.0)
    anchor = t(1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 0.0, 6.0).view(5, 2)
    r = jbond_reward(policy, anchor)
    # worse than both; tie with the min; between; tie with both; better than one
    assert r.tolist() == pytest.approx([-math.log(16), 0.0, 0.0, 0.0, 0.0])


def test_jbond_reward_uses_the_given_penalty():
    assert jbond_reward(t(0.0), t(1.0, 2.0).view(1, 2), penalty=2.5).tolist() == [-2.5]


def test_log_quantile_counts_reference_samples_at_or_below_the_sample():
    policy = t(2.0, -5.0, 10.0)
    reference = t(1.0, 2.0, 3.0, 4.0).expand(3, 4)
    out = log_quantile(policy, reference)
    # (1 + #{<= y}) / (k + 1): ties count as below
    assert out.tolist() == pytest.approx([math.log(3 / 5), math.log(1 / 5), math.log(5 / 5)], abs=1e-12)
    assert out.dtype == policy.dtype


def test_best_index_breaks_ties_toward_the_lowest_index():
    assert best_index(t(1.0, 3.0, 3.0, 0.0, 3.0).view(1, 5)).tolist() == [1]
    assert best_index(t(2.0, 2.0, -1.0, 5.0).view(2, 2)).tolist() == [0, 1]


def test_jeffreys_loss_matches_a_hand_computation():
    loss = jeffreys_loss(forward_logp=t(-2.0, -1.0), sample_logp=t(-3.0, -4.0), sample_log_ratio=t(0.5, -0.25),
                         sample_reward=t(-math.log(16), 0.0), kl=t(0.1, 0.2), beta=0.25, gamma=2.0)
    expected0 = 0.75 * 2.0 + 0.25 * (-(-math.log(16) - 0.5) * -3.0) + 2.0 * 0.1
    expected1 = 0.75 * 1.0 + 0.25 * (-(0.0 + 0.25) * -4.0) + 2.0 * 0.2
    assert loss.tolist() == pytest.approx([expected0, expected1], abs=1e-12)


def test_jeffreys_loss_stops_gradients_through_the_reward_and_the_log_ratio():
    forward, sample = t(-2.0, -1.0).requires_grad_(), t(-3.0, -4.0).requires_grad_()
    ratio, reward, kl = t(0.5, -0.25).requires_grad_(), t(-1.0, 0.0).requires_grad_(), t(0.1, 0.2).requires_grad_()
    beta, gamma = 0.25, 2.0
    loss = jeffreys_loss(forward, sample, ratio, reward, kl, beta, gamma).sum()
    g_forward, g_sample, g_ratio, g_reward, g_kl = torch.autograd.grad(
        loss, [forward, sample, ratio, reward, kl], allow_unused=True)
    assert g_ratio is None and g_reward is None
    torch.testing.assert_close(g_forward, torch.full_like(forward, -(1 - beta)))
    torch.testing.assert_close(g_sample, -beta * (reward - ratio).detach())
    torch.testing.assert_close(g_kl, torch.full_like(kl, gamma))


@pytest.mark.parametrize(("beta", "forward_grad", "uses_sample"), [(0.0, -1.0, False), (1.0, 0.0, True)])
def test_jeffreys_loss_ends_are_pure_forward_and_pure_backward(beta, forward_grad, uses_sample):
    forward, sample = t(-2.0).requires_grad_(), t(-3.0).requires_grad_()
    jeffreys_loss(forward, sample, t(0.5), t(-1.0), t(0.0), beta, 0.0).sum().backward()
    assert forward.grad.tolist() == [forward_grad]
    assert (float(sample.grad) != 0.0) is uses_sample


# ------------------------------------------------------------------ WARP
def test_leave_one_out_advantages_match_a_hand_computation_and_sum_to_zero_per_prompt():
    rewards = t(1.0, 2.0, 6.0, 0.0, 0.0, 4.0).view(2, 3)
    adv = leave_one_out_advantages(rewards)
    assert adv.tolist() == [[-3.0, -1.5, 4.5], [-2.0, -2.0, 4.0]]
    # A_i = r_i - (S - r_i)/(k - 1), so sum_i A_i = S - (kS - S)/(k - 1) = 0
    torch.testing.assert_close(adv.sum(-1), torch.zeros(2, dtype=torch.float64))


def test_leave_one_out_with_two_samples_is_the_reward_difference():
    assert leave_one_out_advantages(t(1.0, 4.0)).tolist() == [-3.0, 3.0]


def test_leave_one_out_needs_two_samples():
    with pytest.raises(InputError) as err:
        leave_one_out_advantages(t(1.0).view(1, 1))
    assert err.value.field == "samples_per_prompt"


def test_kl_regularized_reward_is_detached_and_matches_a_hand_computation():
    logp = t(-3.0, -2.0).requires_grad_()
    out = kl_regularized_reward(t(1.0, 0.5), logp, t(-2.0, -2.5), beta=0.1)
    assert out.tolist() == pytest.approx([1.0 - 0.1 * (-1.0), 0.5 - 0.1 * 0.5])
    assert not out.requires_grad


def test_reinforce_loss_gradient_is_minus_the_advantage_and_skips_the_advantage():
    adv, logp = t(2.0, -1.0).requires_grad_(), t(-3.0, -5.0).requires_grad_()
    loss = reinforce_loss(adv, logp)
    assert loss.tolist() == [6.0, -5.0]
    g_adv, g_logp = torch.autograd.grad(loss.sum(), [adv, logp], allow_unused=True)
    assert g_adv is None
    assert g_logp.tolist() == [-2.0, 1.0]
