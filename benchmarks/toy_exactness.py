"""Exactness of paretoalign's training losses on a tabular toy where the optimum is known in closed form.

The policy is a categorical distribution over K outcomes with float64 logits θ; log π_θ(outcome) plays the role of a
sequence log-prob. Our loss functions are used unchanged (`dpo_loss`, `modpo_loss`, `jeffreys_loss`, `log_quantile`,
`best_index`, `jbond_reward`, `leave_one_out_advantages`, `kl_regularized_reward`, `reinforce_loss`, `slerp_pair`,
`liti`, `ema_update_`, `merge_report`, `exact_bon_distribution`, `exact_kl`).

Sections (ALGORITHMS.md §3, §6–8):

1. DPO / MODPO: the expected loss over all ordered pairs drawn from π_ref × π_ref with Bradley–Terry labels
   σ(r0(y) − r0(y')) is minimised by L-BFGS; its optimum must be π_ref·exp(r0/β)/Z (MODPO with weights (w0, w1) and
   margin reward r1: π_ref·exp((w0 r0 + w1 r1)/β)/Z).
2. BOND / J-BOND: (a) exact checks by enumerating every tuple of reference samples — `best_index` over the tuples
   reproduces `exact_bon_distribution`, E[`log_quantile`] matches the binomial formula, and the expected gradient of
   `jeffreys_loss` (forward: best of N reference samples; backward: y ~ π_θ with reward (N−1)·log p̂≤(y)) equals the
   gradient of J_β = (1−β)·CE(π_BoN, π_θ) + β·(KL(π_θ‖π_ref) − E_π_θ[R̄]), R̄ = (N−1)·E[log p̂≤]; (b) training with
   exact expectations (enumerated, deterministic) and with Monte-Carlo samples (seeded), reporting KL(π_θ‖π_BoN) over
   steps for β ∈ {0, 0.5, 1} next to the exact minimiser π*_β of J_β (for β > 0 it is not π_BoN: the quantile is
   estimated from k samples and the outcomes are discrete); (c) J-BOND with a tabular EMA anchor, Best-of-2 of the
   anchor and `jbond_reward`, reporting KL(π_θ‖π_BoN(2^t)) over steps and which t is closest.
3. WARP REINFORCE with leave-one-out baselines and the KL-regularised reward against the fixed anchor π_ref: the exact
   expected gradient (enumerated groups) equals −∇(E[r] − β KL(π‖π_ref)); deterministic and Monte-Carlo training reach
   π_ref·exp(r/β)/Z.
4. SLERP / LITI / EMA identities for task vectors with known angles.

Prints a table per section and a PASS/FAIL line per section; writes toy_exactness.json and toy_exactness.png into
--out (default benchmarks/results). Run: ``.venv/bin/python benchmarks/toy_exactness.py`` (under 2 minutes on one
CPU thread). Exits 1 if any section fails.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from paretoalign.atomic_io import atomic_path, write_json_atomic
from paretoalign.inference.statistics import exact_bon_distribution, exact_kl
from paretoalign.train.bond_trainer import best_index, jbond_reward, jeffreys_loss, log_quantile
from paretoalign.train.dpo_trainer import dpo_loss
from paretoalign.train.modpo_trainer import modpo_loss
from paretoalign.train.warp_trainer import kl_regularized_reward, leave_one_out_advantages, reinforce_loss
from paretoalign.train.weight_ops import ema_update_, liti, merge_report, slerp_pair

DTYPE = torch.float64

TOL_DPO = 1e-6
"""Max |π_θ − π*| after L-BFGS on the exact expected DPO / MODPO loss."""
TOL_IDENTITY = 1e-10
"""Enumerated expectations and gradients against their closed forms (float64 round-off only)."""
TOL_EXACT_TRAIN = 1e-4
"""Max |π_θ − π*| after deterministic training (Adam, --exact-steps 1000) on exact expected gradients."""
TOL_MC_KL = 0.01
"""KL(π_θ ‖ predicted optimum) after Monte-Carlo training (sampling noise)."""
TOL_MC_PROB = 0.02
"""Max |π_θ − π*| after Monte-Carlo WARP REINFORCE (sampling noise)."""


@dataclass(frozen=True)
class Toy:
    """A tabular problem: reference probabilities and two distinct-valued rewards over K outcomes."""

    ref: torch.Tensor
    r0: torch.Tensor
    r1: torch.Tensor

    @property
    def log_ref(self) -> torch.Tensor:
        """log π_ref."""
        return self.ref.log()


def make_toy(k: int = 10, seed: int = 0) -> Toy:
    """A seeded toy: π_ref = softmax of Gaussian logits, r0 and r1 Gaussian with distinct values."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(torch.randn(k, generator=g, dtype=DTYPE), 0)
    r0 = torch.randn(k, generator=g, dtype=DTYPE)
    r1 = torch.randn(k, generator=g, dtype=DTYPE)
    if len(set(r0.tolist())) < k or len(set(r1.tolist())) < k:
        raise ValueError("rewards must be distinct; pick another seed")
    return Toy(ref, r0, r1)


def tilted(ref: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """π_ref·exp(r/β)/Z."""
    return torch.softmax(ref.log() + reward / beta, 0)


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p‖q) in nats (our `exact_kl`)."""
    return exact_kl(p.detach().numpy(), q.detach().numpy())


def max_abs(p: torch.Tensor, q: torch.Tensor) -> float:
    """max_y |p(y) − q(y)|."""
    return float((p.detach() - q.detach()).abs().max())


def probs(theta: torch.Tensor) -> torch.Tensor:
    """π_θ as a detached tensor."""
    return torch.softmax(theta.detach(), 0)


def fit_lbfgs(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta0: torch.Tensor, rounds: int = 20) -> torch.Tensor:
    """Logits minimising a smooth loss by L-BFGS with a strong-Wolfe line search."""
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=200, tolerance_grad=1e-15, tolerance_change=1e-18,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(theta)
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
        if float(theta.grad.abs().max()) < 1e-14:
            break
    return theta.detach()


# ---------------------------------------------------------------- 1. DPO and MODPO
def expected_pair_loss(theta: torch.Tensor, toy: Toy, beta: float, weights: Sequence[float] | None = None
                       ) -> torch.Tensor:
    """E over (y, y') ~ π_ref × π_ref, chosen = y with probability σ(r0(y) − r0(y')), of dpo_loss (or modpo_loss)."""
    k = toy.ref.numel()
    i, j = (t.reshape(-1) for t in torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"))
    # summing over all ordered (chosen i, rejected j) with weight p_i p_j σ(r_i − r_j) counts each draw (y, y')
    # once with y chosen (prob. p) and once with y' chosen (prob. 1 − p)
    w = toy.ref[i] * toy.ref[j] * torch.sigmoid(toy.r0[i] - toy.r0[j])
    logp, logref = F.log_softmax(theta, 0), toy.log_ref
    if weights is None:
        losses, _, _ = dpo_loss(logp[i], logp[j], logref[i], logref[j], beta)
    else:
        losses, _, _ = modpo_loss(logp[i], logp[j], logref[i], logref[j], toy.r1[i, None], toy.r1[j, None],
                                  weights, beta)
    return (w * losses).sum()


def pairwise_optimum(toy: Toy, beta: float, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Minimise the expected DPO/MODPO loss and compare with its closed-form optimum."""
    theta = fit_lbfgs(lambda t: expected_pair_loss(t, toy, beta, weights), toy.log_ref.clone())
    reward = toy.r0 if weights is None else weights[0] * toy.r0 + weights[1] * toy.r1
    target = tilted(toy.ref, reward, beta)
    pi = probs(theta)
    implicit = beta * (pi.log() - toy.log_ref)
    offset = implicit - reward
    return {"beta": beta, "weights": None if weights is None else list(weights),
            "max_abs_prob_error": max_abs(pi, target), "kl_target_to_policy": kl(target, pi),
            "implicit_reward_offset_spread": float(offset.max() - offset.min()),
            "policy": pi.tolist(), "target": target.tolist()}


# ---------------------------------------------------------------- 2. BOND and J-BOND
def expected_log_quantile(toy: Toy, reward: torch.Tensor, k: int) -> torch.Tensor:
    """E[log p̂≤(y)] of `log_quantile` with k reference samples: (1 + B)/(k + 1), B ~ Binomial(k, F≤(y))."""
    cdf = torch.stack([toy.ref[reward <= reward[y]].sum() for y in range(reward.numel())]).clamp(0.0, 1.0)
    b = torch.arange(k + 1, dtype=DTYPE)
    comb = torch.tensor([math.comb(k, int(m)) for m in b], dtype=DTYPE)
    pmf = comb * cdf[:, None] ** b * (1.0 - cdf[:, None]) ** (k - b)
    return (pmf * torch.log((1.0 + b) / (k + 1.0))).sum(-1)


def jeffreys_objective(theta: torch.Tensor, target: torch.Tensor, log_anchor: torch.Tensor,
                       backward_reward: torch.Tensor, beta: float) -> torch.Tensor:
    """J_β = (1−β)·CE(target, π_θ) + β·(KL(π_θ‖π_anchor) − E_π_θ[R̄]), written from the definitions."""
    logp = F.log_softmax(theta, 0)
    p = logp.exp()
    return (1.0 - beta) * -(target * logp).sum() + beta * (p * (logp - log_anchor - backward_reward)).sum()


def reference_tuples(ref: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered tuple of `size` outcomes, (K^size, size), and its probability under π_ref^size."""
    k = ref.numel()
    tuples = torch.tensor(list(itertools.product(range(k), repeat=size)), dtype=torch.long)
    return tuples, ref[tuples].prod(-1)


@dataclass
class Enumerated:
    """Everything of an exact BOND expectation that does not depend on θ: one row per reference tuple."""

    forward: torch.Tensor  # (T,) the tuple's Best-of-N outcome
    reward: torch.Tensor  # (T, K) backward reward of each policy outcome against the tuple
    weight: torch.Tensor  # (T,) probability of the tuple


def enumerate_bond(toy: Toy, n: int, k: int) -> Enumerated:
    """Best-of-N picks (`best_index` over the first n) and (n−1)·`log_quantile` rewards for every k-tuple."""
    tuples, weight = reference_tuples(toy.ref, k)
    ref_rewards = toy.r0[tuples]
    forward = tuples[torch.arange(len(tuples)), best_index(ref_rewards[:, :n])]
    kk = toy.ref.numel()
    policy_rewards = toy.r0.expand(len(tuples), kk)
    reward = (n - 1) * torch.stack([log_quantile(policy_rewards[:, y], ref_rewards) for y in range(kk)], -1)
    return Enumerated(forward, reward, weight)


def enumerate_jbond(toy: Toy, anchor: torch.Tensor, penalty: float = math.log(16)) -> Enumerated:
    """Best-of-2 anchor picks and `jbond_reward` of every policy outcome against every anchor pair."""
    tuples, weight = reference_tuples(anchor, 2)
    ref_rewards = toy.r0[tuples]
    forward = tuples[torch.arange(len(tuples)), best_index(ref_rewards)]
    kk = anchor.numel()
    reward = torch.stack([jbond_reward(toy.r0[y].expand(len(tuples)), ref_rewards, penalty) for y in range(kk)], -1)
    return Enumerated(forward, reward, weight)


def expected_jeffreys_loss(theta: torch.Tensor, table: Enumerated, log_anchor: torch.Tensor, beta: float,
                           gamma: float = 0.0) -> torch.Tensor:
    """E over reference tuples and y ~ π_θ (weight sg π_θ(y)) of our per-example `jeffreys_loss`."""
    logp = F.log_softmax(theta, 0)
    ratio = (logp - log_anchor).detach()
    kl_term = (logp.exp() * (logp - log_anchor)).sum() if gamma else torch.zeros((), dtype=DTYPE)
    losses = jeffreys_loss(logp[table.forward][:, None], logp[None, :], ratio[None, :], table.reward, kl_term,
                           beta, gamma)
    return (table.weight[:, None] * logp.detach().exp()[None, :] * losses).sum()


def bond_exact_checks(toy: Toy, n: int, seed: int, betas: Sequence[float]) -> dict[str, Any]:
    """Enumeration checks of best_index, log_quantile and the expected Jeffreys gradient (BOND and J-BOND)."""
    table = enumerate_bond(toy, n, n)
    enumerated_bon = torch.zeros_like(toy.ref).index_add_(0, table.forward, table.weight)
    bon = torch.as_tensor(exact_bon_distribution(toy.ref.numpy(), toy.r0.numpy(), n), dtype=DTYPE)
    quantile_enum = (table.weight[:, None] * table.reward).sum(0) / (n - 1)
    quantile_binomial = expected_log_quantile(toy, toy.r0, n)
    g = torch.Generator().manual_seed(seed + 17)
    theta = toy.log_ref + 0.5 * torch.randn(toy.ref.numel(), generator=g, dtype=DTYPE)
    grad_errors = {}
    for beta in betas:
        t1 = theta.clone().requires_grad_(True)
        (surrogate,) = torch.autograd.grad(expected_jeffreys_loss(t1, table, toy.log_ref, beta), t1)
        t2 = theta.clone().requires_grad_(True)
        (analytic,) = torch.autograd.grad(
            jeffreys_objective(t2, bon, toy.log_ref, (n - 1) * quantile_binomial, beta), t2)
        grad_errors[str(beta)] = float((surrogate - analytic).abs().max())
    # J-BOND: anchor = a perturbed π_ref, expected r_J = −log 16 · P(both anchor samples strictly better)
    anchor = torch.softmax(toy.log_ref + 0.3 * torch.randn(toy.ref.numel(), generator=g, dtype=DTYPE), 0)
    jtable = enumerate_jbond(toy, anchor)
    bo2 = torch.as_tensor(exact_bon_distribution(anchor.numpy(), toy.r0.numpy(), 2), dtype=DTYPE)
    r_j = expected_jbond_reward(anchor, toy.r0)
    t1 = theta.clone().requires_grad_(True)
    (surrogate,) = torch.autograd.grad(expected_jeffreys_loss(t1, jtable, anchor.log(), 0.5, gamma=0.1), t1)
    t2 = theta.clone().requires_grad_(True)
    analytic_loss = jeffreys_objective(t2, bo2, anchor.log(), r_j, 0.5)
    p2 = F.log_softmax(t2, 0)
    analytic_loss = analytic_loss + 0.1 * (p2.exp() * (p2 - anchor.log())).sum()
    (analytic,) = torch.autograd.grad(analytic_loss, t2)
    return {"n": n, "quantile_samples": n,
            "best_index_vs_exact_bon": max_abs(enumerated_bon, bon),
            "log_quantile_vs_binomial": max_abs(quantile_enum, quantile_binomial),
            "bond_gradient_error": grad_errors,
            "jbond_gradient_error": float((surrogate - analytic).abs().max())}


def expected_jbond_reward(anchor: torch.Tensor, reward: torch.Tensor, penalty: float = math.log(16)) -> torch.Tensor:
    """E[r_J(y)] = −penalty · P(both of two anchor samples have a higher reward than y)."""
    above = torch.stack([anchor[reward > reward[y]].sum() for y in range(reward.numel())])
    return -penalty * above**2


def jeffreys_optimum(toy: Toy, target: torch.Tensor, backward_reward: torch.Tensor, beta: float) -> torch.Tensor:
    """The minimiser π*_β of J_β over the tabular policy."""
    theta = fit_lbfgs(lambda t: jeffreys_objective(t, target, toy.log_ref, backward_reward, beta), toy.log_ref)
    return probs(theta)


def decayed_adam(theta: torch.Tensor, lr: float, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """Adam with a linear decay of the learning rate to 5% over `steps`."""
    opt = torch.optim.Adam([theta], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - 0.95 * min(s, steps) / max(steps, 1))
    return opt, sched


def train_bond(toy: Toy, n: int, beta: float, steps: int, *, batch: int = 256, quantile_samples: int = 16,
               lr: float = 0.05, seed: int = 0, every: int = 10, exact: Enumerated | None = None
               ) -> dict[str, Any]:
    """BOND on the tabular policy from θ = log π_ref; KL(π_θ‖π_BoN) every `every` steps.

    Monte-Carlo (default): per example k reference samples (the first n give the forward Best-of-N pick) and one
    y ~ π_θ with reward (n−1)·log p̂≤(y). With `exact`, the expectation over the enumerated table replaces sampling.
    """
    bon = torch.as_tensor(exact_bon_distribution(toy.ref.numpy(), toy.r0.numpy(), n), dtype=DTYPE)
    theta = toy.log_ref.clone().requires_grad_(True)
    opt, sched = decayed_adam(theta, lr, steps)
    g = torch.Generator().manual_seed(seed)
    curve = [(0, kl(probs(theta), bon))]
    for step in range(1, steps + 1):
        if exact is not None:
            loss = expected_jeffreys_loss(theta, exact, toy.log_ref, beta)
        else:
            logp = F.log_softmax(theta, 0)
            refs = torch.multinomial(toy.ref, batch * quantile_samples, replacement=True, generator=g)
            refs = refs.view(batch, quantile_samples)
            ys = torch.multinomial(logp.detach().exp(), batch, replacement=True, generator=g)
            ref_rewards = toy.r0[refs]
            forward = refs[torch.arange(batch), best_index(ref_rewards[:, :n])]
            reward = (n - 1) * log_quantile(toy.r0[ys], ref_rewards)
            ratio = (logp[ys] - toy.log_ref[ys]).detach()
            loss = jeffreys_loss(logp[forward], logp[ys], ratio, reward, torch.zeros(batch, dtype=DTYPE), beta,
                                 0.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == steps:
            curve.append((step, kl(probs(theta), bon)))
    return {"curve": curve, "policy": probs(theta)}


def bond_section(toy: Toy, n: int, steps: int, seed: int, betas: Sequence[float] = (0.0, 0.5, 1.0),
                 quantile_samples: int = 16, batch: int = 256, exact_steps: int = 1000, lr: float = 0.3
                 ) -> dict[str, Any]:
    """Exact checks, then exact and Monte-Carlo BOND runs per β against π_BoN and the predicted optimum π*_β."""
    checks = bond_exact_checks(toy, n, seed, betas)
    bon = torch.as_tensor(exact_bon_distribution(toy.ref.numpy(), toy.r0.numpy(), n), dtype=DTYPE)
    continuous = torch.softmax(toy.log_ref + (n - 1) * torch.log(
        torch.stack([toy.ref[toy.r0 <= v].sum() for v in toy.r0])), 0)
    table = enumerate_bond(toy, n, n)
    runs = {}
    for beta in betas:
        star_exact = jeffreys_optimum(toy, bon, (n - 1) * expected_log_quantile(toy, toy.r0, n), beta)
        star_mc = jeffreys_optimum(toy, bon, (n - 1) * expected_log_quantile(toy, toy.r0, quantile_samples), beta)
        ex = train_bond(toy, n, beta, exact_steps, lr=lr, seed=seed, exact=table, every=50)
        mc = train_bond(toy, n, beta, steps, batch=batch, quantile_samples=quantile_samples, lr=lr, seed=seed)
        runs[str(beta)] = {
            "exact": {"quantile_samples": n, "steps": exact_steps, "curve": ex["curve"],
                      "kl_to_optimum": kl(ex["policy"], star_exact),
                      "max_abs_to_optimum": max_abs(ex["policy"], star_exact),
                      "optimum_kl_to_bon": kl(star_exact, bon)},
            "monte_carlo": {"quantile_samples": quantile_samples, "steps": steps, "batch": batch, "curve": mc["curve"],
                            "kl_to_optimum": kl(mc["policy"], star_mc),
                            "max_abs_to_optimum": max_abs(mc["policy"], star_mc),
                            "optimum_kl_to_bon": kl(star_mc, bon)},
        }
    return {"n": n, "lr": lr, "checks": checks, "kl_ref_to_bon": kl(toy.ref, bon),
            "kl_continuous_formula_to_bon": kl(continuous, bon), "runs": runs}


def train_jbond(toy: Toy, steps: int, *, beta: float = 0.5, eta: float = 0.02, gamma: float = 0.0,
                batch: int = 256, lr: float = 0.05, seed: int = 0, every: int = 10, max_t: int = 7
                ) -> dict[str, Any]:
    """J-BOND on the tabular policy with an EMA anchor; KL(π_θ‖π_BoN(2^t)) for t = 0..max_t every `every` steps."""
    targets = {t: torch.as_tensor(exact_bon_distribution(toy.ref.numpy(), toy.r0.numpy(), 2**t), dtype=DTYPE)
               for t in range(max_t + 1)}
    theta = toy.log_ref.clone().requires_grad_(True)
    anchor = {"logits": toy.log_ref.clone()}
    opt = torch.optim.Adam([theta], lr=lr)
    g = torch.Generator().manual_seed(seed)

    def snapshot(step: int) -> dict[str, Any]:
        pi = probs(theta)
        kls = [kl(pi, targets[t]) for t in range(max_t + 1)]  # inf where π_BoN(2^t) underflows to 0
        return {"step": step, "kl_by_t": [v if math.isfinite(v) else None for v in kls],
                "closest_t": int(np.argmin(kls)),
                "expected_reward": float((pi * toy.r0).sum())}

    rows = [snapshot(0)]
    for step in range(1, steps + 1):
        logp = F.log_softmax(theta, 0)
        log_anc = F.log_softmax(anchor["logits"], 0)
        ys = torch.multinomial(logp.detach().exp(), batch, replacement=True, generator=g)
        pairs = torch.multinomial(log_anc.exp(), 2 * batch, replacement=True, generator=g).view(batch, 2)
        pair_rewards = toy.r0[pairs]
        forward = pairs[torch.arange(batch), best_index(pair_rewards)]
        reward = jbond_reward(toy.r0[ys], pair_rewards)
        ratio = (logp[ys] - log_anc[ys]).detach()
        kl_term = (logp.exp() * (logp - log_anc)).sum().expand(batch)
        loss = jeffreys_loss(logp[forward], logp[ys], ratio, reward, kl_term, beta, gamma).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update_(anchor, {"logits": theta.detach()}, eta)
        if step % every == 0 or step == steps:
            rows.append(snapshot(step))
    bo2 = targets[1]
    stage = {str(b): kl(jeffreys_optimum(toy, bo2, expected_jbond_reward(toy.ref, toy.r0), b), bo2)
             for b in (0.0, 0.5, 1.0)}
    return {"beta": beta, "eta": eta, "gamma": gamma, "batch": batch, "lr": lr, "rows": rows,
            "single_stage_optimum_kl_to_bo2": stage}


# ---------------------------------------------------------------- 3. WARP REINFORCE
def expected_reinforce_loss(theta: torch.Tensor, toy: Toy, beta: float, group: int) -> torch.Tensor:
    """E over every group of `group` samples of π_θ (weight sg Π π_θ) of mean REINFORCE loss with LOO advantages."""
    logp = F.log_softmax(theta, 0)
    tuples, weight = reference_tuples(logp.detach().exp(), group)
    shaped = kl_regularized_reward(toy.r0[tuples], logp[tuples], toy.log_ref[tuples], beta)
    losses = reinforce_loss(leave_one_out_advantages(shaped), logp[tuples])
    return (weight * losses.mean(-1)).sum()


def kl_regularized_objective(theta: torch.Tensor, toy: Toy, beta: float) -> torch.Tensor:
    """−(E_π[r] − β KL(π‖π_ref)), from the definitions."""
    logp = F.log_softmax(theta, 0)
    p = logp.exp()
    return -((p * toy.r0).sum() - beta * (p * (logp - toy.log_ref)).sum())


def train_warp(toy: Toy, beta: float, steps: int, *, groups: int = 64, group: int = 4, lr: float = 0.05,
               seed: int = 0, every: int = 10, exact: bool = False) -> dict[str, Any]:
    """REINFORCE (LOO baseline, KL-regularised reward, anchor π_ref) from θ = log π_ref; max |π_θ − π*| curve."""
    target = tilted(toy.ref, toy.r0, beta)
    theta = toy.log_ref.clone().requires_grad_(True)
    opt, sched = decayed_adam(theta, lr, steps)
    g = torch.Generator().manual_seed(seed)
    curve = [(0, max_abs(probs(theta), target))]
    for step in range(1, steps + 1):
        if exact:
            loss = expected_reinforce_loss(theta, toy, beta, group)
        else:
            logp = F.log_softmax(theta, 0)
            ys = torch.multinomial(logp.detach().exp(), groups * group, replacement=True, generator=g)
            ys = ys.view(groups, group)
            shaped = kl_regularized_reward(toy.r0[ys], logp[ys], toy.log_ref[ys], beta)
            loss = reinforce_loss(leave_one_out_advantages(shaped), logp[ys]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == steps:
            curve.append((step, max_abs(probs(theta), target)))
    pi = probs(theta)
    return {"curve": curve, "max_abs_error": max_abs(pi, target), "kl_policy_to_target": kl(pi, target),
            "policy": pi.tolist(), "target": target.tolist()}


def warp_section(toy: Toy, beta: float, steps: int, seed: int, exact_steps: int = 1000) -> dict[str, Any]:
    """Gradient identity of the expected REINFORCE loss, then exact and Monte-Carlo training toward π*."""
    g = torch.Generator().manual_seed(seed + 29)
    theta = toy.log_ref + 0.5 * torch.randn(toy.ref.numel(), generator=g, dtype=DTYPE)
    errors = {}
    for group in (2, 3):
        t1 = theta.clone().requires_grad_(True)
        (surrogate,) = torch.autograd.grad(expected_reinforce_loss(t1, toy, beta, group), t1)
        t2 = theta.clone().requires_grad_(True)
        (analytic,) = torch.autograd.grad(kl_regularized_objective(t2, toy, beta), t2)
        errors[str(group)] = float((surrogate - analytic).abs().max())
    ex = train_warp(toy, beta, exact_steps, group=2, lr=0.2, seed=seed, every=50, exact=True)
    mc = train_warp(toy, beta, steps, lr=0.05, seed=seed)
    return {"beta": beta, "gradient_error_by_group": errors, "exact": {"steps": exact_steps, **ex},
            "monte_carlo": {"steps": steps, "groups": 64, "group": 4, **mc}}


# ---------------------------------------------------------------- 4. SLERP, LITI, EMA
def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle between two vectors in radians (atan2 form, accurate at all angles)."""
    ua, ub = a / a.norm(), b / b.norm()
    return 2.0 * math.atan2(float((ua - ub).norm()), float((ua + ub).norm()))


def weight_ops_section(seed: int, dim: int = 64, angles_deg: Sequence[float] = (60.0, 90.0, 120.0),
                       lams: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[str, Any]:
    """SLERP angle/norm, linear-interpolation shrinkage, LITI scaling, EMA closed form, merge_report coefficients."""
    g = torch.Generator().manual_seed(seed + 41)
    init = {"w": torch.randn(dim, generator=g, dtype=DTYPE)}
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=DTYPE))
    u, v = q[:, 0], q[:, 1]
    norm = 2.5
    rows, worst = [], {"angle": 0.0, "norm": 0.0, "linear": 0.0, "liti": 0.0, "report": 0.0}
    for deg in angles_deg:
        omega = math.radians(deg)
        d1, d2 = norm * u, norm * (math.cos(omega) * u + math.sin(omega) * v)
        a, b = {"w": init["w"] + d1}, {"w": init["w"] + d2}
        for lam in lams:
            merged = slerp_pair(init, a, b, lam)
            dm = merged["w"] - init["w"]
            got = angle(d1, dm) if lam > 0 else 0.0
            row = {"omega_deg": deg, "lam": lam, "angle_to_d1_deg": math.degrees(got),
                   "expected_deg": lam * deg, "norm": float(dm.norm()), "expected_norm": norm}
            worst["angle"] = max(worst["angle"], abs(got - lam * omega))
            worst["norm"] = max(worst["norm"], abs(float(dm.norm()) - norm))
            if lam == 0.5:
                linear = liti(a, b, 0.5)["w"] - init["w"]
                row["linear_norm"] = float(linear.norm())
                row["expected_linear_norm"] = norm * math.cos(omega / 2)
                worst["linear"] = max(worst["linear"], abs(row["linear_norm"] - row["expected_linear_norm"]))
                report = merge_report(init, a, b, merged, lam)["summary"]
                worst["report"] = max(worst["report"], report["max_coef_error"])
                for eta in (0.1, 0.3, 0.7, 1.0):
                    scaled = float((liti(init, merged, eta)["w"] - init["w"]).norm())
                    worst["liti"] = max(worst["liti"], abs(scaled - eta * float(dm.norm())))
            rows.append(row)
    anchor = {"w": init["w"].clone()}
    target = init["w"] + norm * u
    mu, steps = 0.05, 40
    for _ in range(steps):
        ema_update_(anchor, {"w": target}, mu)
    expected = target + (1 - mu) ** steps * (init["w"] - target)
    worst["ema"] = float((anchor["w"] - expected).abs().max())
    return {"dim": dim, "norm": norm, "rows": rows, "max_errors": worst}


# ---------------------------------------------------------------- driver
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="Training steps of the BOND, J-BOND and WARP runs.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="Directory for toy_exactness.json and toy_exactness.png.")
    p.add_argument("--exact-steps", type=int, default=1000,
                   help="Adam steps of the BOND and WARP runs on exact (enumerated) expected gradients.")
    p.add_argument("--outcomes", type=int, default=10, help="K, the number of outcomes.")
    p.add_argument("--beta", type=float, default=0.5, help="β of DPO/MODPO and of WARP's KL-regularised reward.")
    p.add_argument("--n", type=int, default=4, help="N of BOND's Best-of-N target.")
    return p.parse_args(argv)


def status(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def print_dpo(dpo: dict[str, Any], modpo: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """Print section 1; returns its summary lines (name, passed, detail)."""
    print("\n== 1. DPO / MODPO optimum (exact expected loss, L-BFGS) ==")
    print(f"{'loss':<8}{'weights':>14}{'max|π_θ−π*|':>16}{'KL(π*‖π_θ)':>14}{'offset spread':>16}")
    lines = []
    for row in [dpo, *modpo]:
        name = "DPO" if row["weights"] is None else "MODPO"
        w = "-" if row["weights"] is None else f"({row['weights'][0]:.2f},{row['weights'][1]:.2f})"
        print(f"{name:<8}{w:>14}{row['max_abs_prob_error']:>16.3e}{row['kl_target_to_policy']:>14.3e}"
              f"{row['implicit_reward_offset_spread']:>16.3e}")
    worst = max(r["max_abs_prob_error"] for r in [dpo, *modpo])
    lines.append(("1 DPO/MODPO optimum", worst < TOL_DPO, f"max |Δπ| = {worst:.2e} (tol {TOL_DPO:.0e})"))
    return lines


def print_bond(bond: dict[str, Any], jbond: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Print section 2; returns its summary lines."""
    c = bond["checks"]
    print(f"\n== 2. BOND (N={bond['n']}) / J-BOND ==")
    print(f"enumeration: |best_index pick dist − exact_bon_distribution| = {c['best_index_vs_exact_bon']:.3e}; "
          f"|E[log_quantile] − binomial| = {c['log_quantile_vs_binomial']:.3e}")
    grads = ", ".join(f"β={b}: {e:.2e}" for b, e in c["bond_gradient_error"].items())
    print(f"max |∇E[jeffreys_loss] − ∇J_β|: {grads}; J-BOND (β=0.5, γ=0.1): {c['jbond_gradient_error']:.2e}")
    print(f"KL(π_ref‖π_BoN) = {bond['kl_ref_to_bon']:.5f}; KL(π_ref·p≤^(N−1)/Z ‖ π_BoN) = "
          f"{bond['kl_continuous_formula_to_bon']:.5f} (the continuous formula on discrete outcomes)")
    print(f"{'β':>5}{'mode':>13}{'k':>4}{'KL start':>11}{'KL mid':>11}{'KL end':>11}{'KL(π*_β‖BoN)':>15}"
          f"{'KL(π_θ‖π*_β)':>15}")
    halved, exact_ok, mc_ok = True, True, True
    for beta, run in bond["runs"].items():
        for mode in ("exact", "monte_carlo"):
            r = run[mode]
            curve = r["curve"]
            mid = curve[len(curve) // 2][1]
            print(f"{beta:>5}{mode:>13}{r['quantile_samples']:>4}{curve[0][1]:>11.5f}{mid:>11.5f}{curve[-1][1]:>11.5f}"
                  f"{r['optimum_kl_to_bon']:>15.5f}{r['kl_to_optimum']:>15.2e}")
            halved &= curve[-1][1] < 0.5 * curve[0][1]
            if mode == "exact":
                exact_ok &= r["max_abs_to_optimum"] < TOL_EXACT_TRAIN
            else:
                mc_ok &= r["kl_to_optimum"] < TOL_MC_KL
    identities = max(c["best_index_vs_exact_bon"], c["log_quantile_vs_binomial"], c["jbond_gradient_error"],
                     *c["bond_gradient_error"].values())
    rows = jbond["rows"]
    print(f"\nJ-BOND (β={jbond['beta']}, η={jbond['eta']}, γ={jbond['gamma']}, Adam lr={jbond['lr']}, "
          f"batch {jbond['batch']}): KL(π_θ‖π_BoN(2^t)) by step")
    ts = range(len(rows[0]["kl_by_t"]))
    print(f"{'step':>6}" + "".join(f"{'t=' + str(t):>9}" for t in ts) + f"{'closest t':>11}{'E[r]':>9}")
    for row in rows[:: max(1, len(rows) // 10)] + ([rows[-1]] if (len(rows) - 1) % max(1, len(rows) // 10) else []):
        print(f"{row['step']:>6}" + "".join(f"{v:>9.4f}" if v is not None else f"{'inf':>9}" for v in row["kl_by_t"])
              + f"{row['closest_t']:>11}{row['expected_reward']:>9.4f}")
    stage = ", ".join(f"β={b}: {v:.4f}" for b, v in jbond["single_stage_optimum_kl_to_bo2"].items())
    print(f"one stage with the anchor fixed at π_ref: KL(optimum of J_β with E[r_J] ‖ Best-of-2 of π_ref) = {stage}")
    closest = [r["closest_t"] for r in rows]
    print(f"closest t over the run: {closest[0]} → {max(closest)} (monotone: "
          f"{all(a <= b for a, b in zip(closest, closest[1:], strict=False))})")
    return [("2 BOND identities", identities < TOL_IDENTITY, f"max error {identities:.2e} (tol {TOL_IDENTITY:.0e})"),
            ("2 BOND exact training", exact_ok and halved,
             f"exact runs reach π*_β (max |Δπ| < {TOL_EXACT_TRAIN:.0e}); all runs halve KL to π_BoN: {halved}"),
            ("2 BOND Monte-Carlo", mc_ok, f"KL(π_θ‖π*_β) < {TOL_MC_KL} for every β"),
            ("2 J-BOND", True, f"info only: closest Best-of-2^t moves t = {closest[0]} → {closest[-1]}")]


def print_warp(warp: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Print section 3; returns its summary line."""
    print(f"\n== 3. WARP REINFORCE (β={warp['beta']}, anchor π_ref) ==")
    errs = ", ".join(f"group {k}: {v:.2e}" for k, v in warp["gradient_error_by_group"].items())
    print(f"max |∇E[reinforce_loss] − ∇(−E r + β KL)|: {errs}")
    print(f"{'mode':<13}{'steps':>7}{'max|π_θ−π*|':>16}{'KL(π_θ‖π*)':>14}")
    for mode in ("exact", "monte_carlo"):
        r = warp[mode]
        print(f"{mode:<13}{r['steps']:>7}{r['max_abs_error']:>16.3e}{r['kl_policy_to_target']:>14.3e}")
    grad = max(warp["gradient_error_by_group"].values())
    ok = (grad < TOL_IDENTITY and warp["exact"]["max_abs_error"] < TOL_EXACT_TRAIN
          and warp["monte_carlo"]["max_abs_error"] < TOL_MC_PROB)
    return [("3 WARP REINFORCE", ok, f"gradient {grad:.1e}, exact {warp['exact']['max_abs_error']:.1e} "
             f"(tol {TOL_EXACT_TRAIN:.0e}), MC {warp['monte_carlo']['max_abs_error']:.1e} (tol {TOL_MC_PROB})")]


def print_weight_ops(ops: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Print section 4; returns its summary line."""
    print(f"\n== 4. SLERP / LITI / EMA (d={ops['dim']}, |δ1| = |δ2| = {ops['norm']}) ==")
    print(f"{'Ω°':>6}{'λ':>6}{'∠(δ1,δ_λ)°':>14}{'λΩ°':>9}{'|δ_λ|':>12}{'|linear ½|':>13}{'|δ|cos(Ω/2)':>13}")
    for r in ops["rows"]:
        lin = f"{r['linear_norm']:>13.9f}{r['expected_linear_norm']:>13.9f}" if "linear_norm" in r else ""
        print(f"{r['omega_deg']:>6.0f}{r['lam']:>6.2f}{r['angle_to_d1_deg']:>14.9f}{r['expected_deg']:>9.3f}"
              f"{r['norm']:>12.9f}{lin}")
    w = ops["max_errors"]
    print("max errors: " + ", ".join(f"{k} {v:.1e}" for k, v in w.items()))
    worst = max(w.values())
    return [("4 SLERP/LITI/EMA", worst < TOL_IDENTITY, f"max identity error {worst:.1e} (tol {TOL_IDENTITY:.0e})")]


def plot(path: Path, dpo: dict[str, Any], modpo: list[dict[str, Any]], bond: dict[str, Any], jbond: dict[str, Any],
         warp: dict[str, Any]) -> None:
    """Four panels: DPO/MODPO optimum, BOND KL curves, J-BOND KL to Best-of-2^t, WARP error curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    a = ax[0, 0]
    for row, marker in zip([dpo, *modpo], "osd^v", strict=False):
        label = "DPO" if row["weights"] is None else f"MODPO w={tuple(round(x, 2) for x in row['weights'])}"
        a.scatter(row["target"], row["policy"], marker=marker, label=label, alpha=0.7)
    a.plot([0, 1], [0, 1], "k:", lw=1)
    a.set(xscale="log", yscale="log", xlabel="closed-form optimum π*(y)", ylabel="trained π_θ(y)",
          title="1. DPO/MODPO optimum")
    a.legend(fontsize=8)
    a = ax[0, 1]
    for (beta, run), color in zip(bond["runs"].items(), ["C0", "C1", "C2"], strict=False):
        for mode, style in (("monte_carlo", "-"), ("exact", "--")):
            steps, vals = zip(*run[mode]["curve"], strict=True)
            a.plot(steps, vals, style, color=color, label=f"β={beta} {mode.replace('_', ' ')}")
        if run["monte_carlo"]["optimum_kl_to_bon"] > 1e-6:
            a.axhline(run["monte_carlo"]["optimum_kl_to_bon"], color=color, ls=":", lw=1)
    a.set(yscale="log", xlabel="step", ylabel="KL(π_θ ‖ π_BoN)",
          title=f"2. BOND, N={bond['n']} (dotted: KL(π*_β‖π_BoN), MC)")
    a.set_ylim(bottom=1e-6)
    a.legend(fontsize=7)
    a = ax[1, 0]
    steps = [r["step"] for r in jbond["rows"]]
    for t in range(len(jbond["rows"][0]["kl_by_t"])):
        a.plot(steps, [np.nan if r["kl_by_t"][t] is None else r["kl_by_t"][t] for r in jbond["rows"]],
               label=f"N=2^{t}")
    a.set(yscale="log", xlabel="step", ylabel="KL(π_θ ‖ π_BoN(2^t))",
          title=f"2. J-BOND (η={jbond['eta']}, β={jbond['beta']})")
    a.set_ylim(1e-3, 1e2)
    a.legend(fontsize=7, ncol=2)
    a = ax[1, 1]
    for mode, style in (("monte_carlo", "-"), ("exact", "--")):
        steps, vals = zip(*warp[mode]["curve"], strict=True)
        a.plot(steps, vals, style, label=mode.replace("_", " "))
    a.set(yscale="log", xlabel="step", ylabel="max |π_θ − π_ref·e^{r/β}/Z|",
          title=f"3. WARP REINFORCE (β={warp['beta']})")
    a.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section, print tables and the summary, write the JSON and the plot; 1 if any section fails."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    toy = make_toy(args.outcomes, args.seed)
    print(f"toy: K={args.outcomes}, seed={args.seed}; π_ref = {[round(x, 4) for x in toy.ref.tolist()]}")
    print(f"r0 = {[round(x, 4) for x in toy.r0.tolist()]}\nr1 = {[round(x, 4) for x in toy.r1.tolist()]}")
    dpo = pairwise_optimum(toy, args.beta)
    modpo = [pairwise_optimum(toy, args.beta, w) for w in ((1.0, 0.0), (0.7, 0.3), (0.4, 0.6))]
    bond = bond_section(toy, args.n, args.steps, args.seed, exact_steps=args.exact_steps)
    jbond = train_jbond(toy, args.steps, seed=args.seed)
    warp = warp_section(toy, args.beta, args.steps, args.seed, exact_steps=args.exact_steps)
    ops = weight_ops_section(args.seed)
    summary = print_dpo(dpo, modpo) + print_bond(bond, jbond) + print_warp(warp) + print_weight_ops(ops)
    elapsed = time.perf_counter() - start
    print(f"\n== summary ({elapsed:.1f} s) ==")
    for name, ok, detail in summary:
        print(f"{status(ok)}  {name}: {detail}")
    result = {"config": {"outcomes": args.outcomes, "seed": args.seed, "steps": args.steps,
                         "exact_steps": args.exact_steps, "beta": args.beta, "n": args.n},
              "toy": {"ref": toy.ref.tolist(), "r0": toy.r0.tolist(), "r1": toy.r1.tolist()},
              "dpo": dpo, "modpo": modpo, "bond": bond, "jbond": jbond, "warp": warp, "weight_ops": ops,
              "summary": [{"section": n, "status": status(ok), "detail": d} for n, ok, d in summary],
              "seconds": elapsed}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "toy_exactness.json", result)
    plot(args.out / "toy_exactness.png", dpo, modpo, bond, jbond, warp)
    print(f"wrote {args.out / 'toy_exactness.json'} and {args.out / 'toy_exactness.png'}")
    return 0 if all(ok for _, ok, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
