"""BOND and J-BOND: distilling Best-of-N into the policy (Sessa et al. 2024).

Target π_BoN ∝ π_ref · p≤(y)^{N−1}, p≤(y) = P_{y'~π_ref}[R(y') ≤ R(y)]; loss = Jeffreys divergence
(1−β)·KL(π_BoN‖π) + β·KL(π‖π_BoN):

- forward term: −log π_θ(y_BoN), maximum likelihood on a Best-of-N sample of the anchor/reference;
- backward term: policy gradient −sg(r(y) − log π_θ(y)/π_anc(y)) · log π_θ(y) on y ~ π_θ;
- an optional γ·KL(π_θ‖π_anc), exact over the vocabulary at each sampled prefix, summed over tokens.

Variants:

- **J-BOND** (``variant='jbond'``): per prompt y ~ π_θ, y'_1, y'_2 ~ π_anc; forward on the better of y'_1, y'_2;
  r_J(y) = −log 16 if R(y) < min(R(y'_1), R(y'_2)) else 0; after each step the anchor moves by EMA
  θ_anc ← (1−η)θ_anc + ηθ (iterated Best-of-2 approximates Best-of-2^t at constant cost).
- **BOND** (``variant='bond'``): a fixed anchor π_ref; k reference samples per prompt give the Monte-Carlo
  quantile p̂≤(y) = (1 + #{j: R(y'_j) ≤ R(y)}) / (k + 1) (y counted among the samples, so log p̂≤ is finite), the
  backward reward (N−1)·log p̂≤(y), and the forward term's Best-of-N (the best of the first N of them).

The forward term's Best-of-N is taken over EVERY sample, truncated ones included (`best_index`) — deliberately not
`paretoalign bon`'s rule (the best FINISHED sample, `inference.selection.pick_index`): the target π_BoN is defined
over the sampler's outputs, cut or not, and the backward reward's quantile p̂≤ ranks those same samples, so both
terms of J_β must see one distribution; restricting the forward pick to finished samples would distil a different,
conditioned target, and a prompt with no finished anchor sample would have no forward target at all.

Supports LoRA or full fine-tuning, seeded sampling per (seed, step), checkpoints with the anchor, exact resume.
Assumes temperature-1 sampling (the distributions above are those of the policy itself) and an RM whose score
ranks responses to the same prompt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from paretoalign.train.bond_config import BONDConfig
from paretoalign.train.dpo_trainer import batch_indices
from paretoalign.train.policy_setup import (
    Reference,
    build_reference,
    effective_weights,
    initial_copy,
    load_plain_weights_,
    trained_weight_names,
)
from paretoalign.train.rollout import (
    Sample,
    fit_prompts,
    mean_finite,
    online_inputs,
    sample_responses,
    sample_rows,
    score_samples,
)
from paretoalign.train.run import TrainingRun, check_run_dir, finish_run, start_run, write_checkpoint
from paretoalign.train.sequences import collate_rows, forward_logits, sequence_logprob_sums, token_kl
from paretoalign.train.weight_ops import ema_update_

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.rewards.protocols import Scorer


def jbond_reward(policy_rewards: torch.Tensor, anchor_rewards: torch.Tensor, penalty: float = math.log(16)
                 ) -> torch.Tensor:
    """r_J: −penalty where the policy sample is worse than every anchor sample of its prompt, else 0."""
    worse = policy_rewards < anchor_rewards.min(dim=-1).values
    return torch.where(worse, torch.full_like(policy_rewards, -penalty), torch.zeros_like(policy_rewards))


def log_quantile(policy_rewards: torch.Tensor, reference_rewards: torch.Tensor) -> torch.Tensor:
    """log p̂≤(y) = log((1 + #{j: R(y'_j) ≤ R(y)}) / (k + 1)) for each row; reference_rewards is (rows, k)."""
    k = reference_rewards.shape[-1]
    below = (reference_rewards <= policy_rewards.unsqueeze(-1)).sum(-1).to(torch.float64)
    return torch.log((1.0 + below) / (k + 1.0)).to(policy_rewards.dtype)


def best_index(rewards: torch.Tensor) -> torch.Tensor:
    """Index of the highest reward per row over every sample, finished or not (ties: the lowest index).

    BOND's target π_BoN, not `paretoalign bon`'s pick among finished samples (see the module docstring)."""
    return torch.argmax(rewards, dim=-1)


def jeffreys_loss(forward_logp: torch.Tensor, sample_logp: torch.Tensor, sample_log_ratio: torch.Tensor,
                  sample_reward: torch.Tensor, kl: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Per-example (1−β)(−log π(y_BoN)) + β(−sg(r(y) − log π/π_anc(y)) · log π(y)) + γ·KL."""
    coefficient = (sample_reward - sample_log_ratio).detach()
    return (1.0 - beta) * (-forward_logp) + beta * (-coefficient * sample_logp) + gamma * kl


def _policy_terms(run: TrainingRun, anchor: Any, forward_rows, sample_rows_, need_kl: bool):
    """log π_θ of forward and sample rows (grad), log π_anc of sample rows, and KL(π_θ‖π_anc) per sample row."""
    rows = list(forward_rows) + list(sample_rows_)
    batch = collate_rows(rows, run.pad_id)
    logits = forward_logits(run.model, batch)
    batch = batch.to(logits.device)
    logps = sequence_logprob_sums(logits, batch.input_ids, batch.response_mask)
    sample_batch = collate_rows(list(sample_rows_), run.pad_id)
    with anchor.active() as anchor_model:
        anchor_logits = forward_logits(anchor_model, sample_batch)
    sample_batch = sample_batch.to(anchor_logits.device)
    anchor_logps = sequence_logprob_sums(anchor_logits, sample_batch.input_ids, sample_batch.response_mask)
    nf = len(forward_rows)
    kl = torch.zeros(len(sample_rows_), device=logits.device)
    if need_kl:
        width = sample_batch.input_ids.shape[1]
        kl = token_kl(logits[nf:, :width], anchor_logits.to(logits.device), sample_batch)
    return logps[:nf], logps[nf:], anchor_logps.to(logits.device), kl


def _anchor_state(run: TrainingRun, anchor: Reference) -> dict[str, torch.Tensor]:
    params = dict(anchor.model.named_parameters())
    return {name: params[name] for name in trained_weight_names(run.policy)}


def train_bond(config: BONDConfig, prompts: Sequence[Any] | None = None, *, model: CausalLM | None = None,
               tokenizer: Tokenizer | None = None, reward_model: Scorer | str | os.PathLike | None = None,
               overwrite: bool = False) -> tuple[CausalLM, dict[str, Any]]:
    """Train a policy with J-BOND or BOND; returns (the trained plain model in eval mode, stats).

    ``config.output_dir``: missing, empty or a run of the same variant (resumed); any other folder only with
    `overwrite` (emptied, the run starts over). Checked before anything loads."""
    check_run_dir(config.variant, config, overwrite=overwrite)
    prompts, reward_model = online_inputs(config, prompts, reward_model)
    jbond = config.variant == "jbond"
    initial = initial_copy(config, model) if (jbond or (not config.lora and config.reference is None)) else None
    run = start_run(config.variant, config, config.max_steps or 1, model=model, tokenizer=tokenizer,
                    overwrite=overwrite)
    if jbond:
        anchor = Reference(initial.to(run.device))
        if run.checkpoint is not None and "anchor" in run.checkpoint.tensor_groups:
            load_plain_weights_(anchor.model, run.checkpoint.tensor_groups["anchor"])
    else:
        anchor = build_reference(run.policy, config, initial)
    from paretoalign.embed.chat_format import encode_prompts

    prompt_ids, cut = fit_prompts(encode_prompts(run.tokenizer, None, prompts, config.max_new_tokens),
                                  config.max_length, config.max_new_tokens)
    params = config.sampling_params()
    micro = config.micro_batch_size or config.batch_size
    n_anchor = 2 if jbond else config.quantile_samples
    top_n = 2 if jbond else config.n
    for _, indices in batch_indices(len(prompts), config.batch_size, config.seed, run.step, run.total_steps):
        mine = run.shard(indices)
        ids = [prompt_ids[i] for i in mine]
        policy_samples = sample_responses(run.policy, run.tokenizer, ids, mine, config.samples_per_prompt, params,
                                          seed=config.seed, step=run.step, role="policy")
        with anchor.active() as anchor_model:
            anchor_samples = sample_responses(anchor_model, run.tokenizer, ids, mine, n_anchor, params,
                                              seed=config.seed, step=run.step, role="anchor")
        flat = [s for g in policy_samples for s in g] + [s for g in anchor_samples for s in g]
        score_samples(reward_model, prompts, flat, config.weights)
        log: dict[str, list[float]] = {"loss": [], "log_ratio": [], "backward_reward": [], "kl": []}
        for m in range(0, len(mine), micro):
            part = range(m, min(m + micro, len(mine)))
            forward: list[Sample] = []
            samples: list[Sample] = []
            rewards = []
            for j in part:
                anchor_r = torch.tensor([s.reward for s in anchor_samples[j]], dtype=torch.float64)
                # the Best-of-N target over all anchor samples, truncated ones too (not the finished-only bon pick)
                forward.append(anchor_samples[j][int(best_index(anchor_r[:top_n]))])
                pol_r = torch.tensor([s.reward for s in policy_samples[j]], dtype=torch.float64)
                if jbond:
                    r = jbond_reward(pol_r, anchor_r.expand(len(pol_r), -1), config.jbond_penalty)
                else:
                    r = (config.n - 1) * log_quantile(pol_r, anchor_r.expand(len(pol_r), -1))
                samples.extend(policy_samples[j])
                rewards.append(r)
            id_map = {i: prompt_ids[i] for i in mine}
            f_logp, s_logp, a_logp, kl = _policy_terms(
                run, anchor, sample_rows(forward, id_map, config.max_length),
                sample_rows(samples, id_map, config.max_length), config.gamma > 0)
            reward = torch.cat(rewards).to(s_logp)
            log_ratio = (s_logp - a_logp).detach()
            f_full = f_logp.repeat_interleave(config.samples_per_prompt)
            losses = jeffreys_loss(f_full, s_logp, log_ratio, reward, kl, config.beta, config.gamma)
            run.backward(losses.sum() / (len(mine) * config.samples_per_prompt))
            log["loss"] += losses.detach().cpu().tolist()
            log["log_ratio"] += log_ratio.cpu().tolist()
            log["backward_reward"] += reward.cpu().tolist()
            log["kl"] += kl.detach().cpu().tolist()
        norm = run.optimizer_step()
        if jbond:
            ema_update_(anchor.model, effective_weights(run.policy), config.anchor_ema)
        pol = [s for g in policy_samples for s in g]
        anc = [s for g in anchor_samples for s in g]
        run.log({"loss": mean_finite(log["loss"]), "reward": mean_finite([s.reward for s in pol]),
                 "anchor_reward": mean_finite([s.reward for s in anc]),
                 "best_anchor_reward": mean_finite([max(s.reward for s in g[:top_n]) for g in anchor_samples]),
                 "kl_anchor_mc": mean_finite(log["log_ratio"]), "token_kl": mean_finite(log["kl"]),
                 "backward_reward": mean_finite(log["backward_reward"]),
                 "finished": sum(s.finished for s in pol) / max(len(pol), 1), "grad_norm": norm})
        if run.checkpoint_due():
            write_checkpoint(run, tensor_groups={"anchor": _anchor_state(run, anchor)} if jbond else None)
    write_checkpoint(run, tensor_groups={"anchor": _anchor_state(run, anchor)} if jbond else None)
    stats = {"num_prompts": len(prompts), "variant": config.variant, "prompts_cut": cut}
    return finish_run(run, stats), stats
