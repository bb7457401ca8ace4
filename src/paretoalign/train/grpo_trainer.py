"""GRPO with one or several rewards (Shao et al. 2024), Dr. GRPO, leave-one-out baselines and dynamic weighting.

Each step (one sampled batch):

1. ``batch_size`` prompts (`dpo_trainer.batch_indices`), G = ``num_generations`` samples each from the current
   policy, seeded by (seed, step);
2. scoring: a reward matrix (n, K) — the components of a `RewardSet` (``rewards`` in the config, or a reward-set
   file as ``reward_model``), else K = 1 with the scorer's score (user ``weights`` or the RM's gating; an InfAlign
   transform, when set, gives that single score);
3. the weighting mode (`reward_weighting`) picks this step's weights w on the simplex; advantages are
   `advantages.aggregate_advantages` of the matrix (``aggregation``: sum then normalise, or normalise then sum),
   each sample's rewards first multiplied by the mode's per-sample scale when it has one (the hypervolume
   meta-reward: a reward multiplier, so after per-group std scaling a factor common to a group cancels);
4. π_old per-token log-probs (no gradient; with μ = 1 they are the current ones detached, so ρ = 1 exactly) and,
   with β > 0, the reference's (LoRA: the adapters switched off);
5. μ = ``num_iterations`` epochs over the batch in micro-batches of ``micro_batch_size`` prompts, each epoch ONE
   optimizer update of the `grpo_loss` objective (as TRL does). ``max_steps`` counts sampled batches: a run makes
   max_steps × μ updates, and a checkpoint always falls between batches, so resume is exact.

Gradient weighting modes (``needs_gradients``: gradient, pama): the loss of each objective k (its own per-objective
advantages, each with the shared β·k3 term) gives a flat gradient g_k of the trainable weights
(`torch.autograd.grad`, K backward passes per micro-batch over one forward pass); the mode's `mix_gradients`
returns λ and the update uses Σ_k λ_k g_k (single process only: these gradients are not all-reduced).

Logged per step: loss, reward (the scorer's score), ``reward/<component>`` means, weights {name: w}, kl (mean k3 to
the reference; null when β = 0), clip_fraction (tokens where the clip cut the gradient), finished fraction, mean
response tokens, grad_norm (mean pre-clip norm of the step's μ updates). The checkpoint's method_state holds the
weighting's state.

Assumes temperature-1 sampling (ρ and k3 are ratios of the sampler's own distribution) and responses cut at
max_new_tokens trained on as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from paretoalign.errors import InputError
from paretoalign.train.advantages import aggregate_advantages, per_objective_advantages
from paretoalign.train.dpo_trainer import batch_indices
from paretoalign.train.grpo_config import GRPOConfig
from paretoalign.train.grpo_loss import GRPOLossTerms, grpo_loss
from paretoalign.train.policy_setup import build_reference, initial_copy, trainable_parameters
from paretoalign.train.rollout import (
    RewardSource,
    fit_prompts,
    mean_finite,
    online_inputs,
    reward_source,
    sample_responses,
    sample_rows,
    score_samples,
)
from paretoalign.train.run import TrainingRun, check_run_dir, finish_run, start_run, write_checkpoint
from paretoalign.train.sequences import Row, row_token_logprobs

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.train.reward_weighting import RewardWeighting

DEFAULT_AGGREGATION = "sum_then_normalize"


def grpo_reward_source(config: GRPOConfig, scorer: Scorer) -> RewardSource:
    """`rollout.reward_source`, refusing a config aggregation that disagrees with a reward-set file's own."""
    source = reward_source(config, scorer)
    if source.multi and config.rewards is None and config.aggregation not in (DEFAULT_AGGREGATION,
                                                                             source.aggregation):
        raise InputError(f"aggregation={config.aggregation!r} disagrees with the reward set's own "
                         f"{source.aggregation!r}: set it in one place", field="aggregation")
    return source


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat float32 vector of per-parameter gradients (zeros where a parameter got none)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float() for g, p in zip(grads, params,
                                                                                                   strict=True)])


def _set_grads_(params: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat gradient vector into the parameters' .grad."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n


@dataclass
class _Part:
    """One micro-batch of the step: its sample slice, token rows and the fixed per-token log-probs."""

    start: int
    stop: int
    rows: list[Row]
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None


class _Stats:
    """Token and loss statistics accumulated over a step's epochs."""

    def __init__(self) -> None:
        self.kl: list[float] = []
        self.clipped = 0.0
        self.tokens = 0.0

    def add(self, terms: GRPOLossTerms) -> None:
        self.clipped += float(terms.clipped.sum())
        self.tokens += float(terms.tokens.sum())
        if terms.kl is not None:
            self.kl += terms.kl.detach().cpu().tolist()


def _step_advantages(config: GRPOConfig, source: RewardSource, weighting: RewardWeighting, rewards: np.ndarray,
                     step: int) -> tuple[np.ndarray, np.ndarray]:
    """(advantages (n, C): one column, or one per objective in gradient modes; this step's weights (K,))."""
    group = config.num_generations
    weights = np.asarray(weighting.step_weights(rewards, group, step), dtype=np.float64)
    scale = weighting.sample_scale(rewards, group)
    if scale is not None:  # a multiplier of each sample's reward, so of every component: (r·m)·w = m (r·w)
        rewards = rewards * np.asarray(scale, dtype=np.float64).reshape(-1, 1)
    if weighting.needs_gradients:
        return per_objective_advantages(rewards, group, scale=config.scale, baseline=config.baseline), weights
    adv = aggregate_advantages(rewards, weights, group, aggregation=source.aggregation, scale=config.scale,
                               baseline=config.baseline)
    return adv[:, None], weights


def _epoch(run: TrainingRun, config: GRPOConfig, parts: Sequence[_Part], adv: torch.Tensor, gradient_mode: bool,
           stats: _Stats) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """One pass over the batch: accumulates the gradient (or per-objective flat gradients); returns the per-column
    batch losses (C,) and, in gradient mode, the K flat gradients."""
    n_total = adv.shape[0]
    columns = adv.shape[1]
    params = list(trainable_parameters(run.policy).values())
    losses = torch.zeros(columns, dtype=torch.float64)
    grads: list[torch.Tensor] | None = None
    for part in parts:
        logp, mask = row_token_logprobs(run.model, part.rows, run.pad_id)
        old = logp.detach() if part.old is None else part.old.to(logp.device)
        ref = None if part.ref is None else part.ref.to(logp.device)
        part_losses = []
        for c in range(columns):
            terms = grpo_loss(logp, old, adv[part.start:part.stop, c].to(logp.device), mask, epsilon=config.epsilon,
                              epsilon_high=config.upper_epsilon, beta=config.beta, ref_logp=ref,
                              loss_type=config.loss_type, max_new_tokens=config.max_new_tokens)
            stats.add(terms)
            part_losses.append(terms.losses.sum() / n_total)
            losses[c] += float(part_losses[-1].detach())
        if not gradient_mode:
            run.backward(part_losses[0])
            continue
        flat = [_flat(torch.autograd.grad(loss, params, retain_graph=c < columns - 1, allow_unused=True), params)
                for c, loss in enumerate(part_losses)]
        grads = flat if grads is None else [a + b for a, b in zip(grads, flat, strict=True)]
    return losses, grads


def train_grpo(config: GRPOConfig, prompts: Sequence[Any] | None = None, *, model: CausalLM | None = None,
               tokenizer: Tokenizer | None = None, reward_model: Scorer | str | os.PathLike | None = None,
               overwrite: bool = False) -> tuple[CausalLM, dict[str, Any]]:
    """Train a policy with GRPO; returns (the trained plain model in eval mode, stats).

    ``config.output_dir``: missing, empty or a GRPO run (resumed); any other folder only with `overwrite` (emptied,
    the run starts over). Inputs, rewards and the weighting are checked before the folder is claimed."""
    from accelerate import PartialState

    from paretoalign.embed.chat_format import encode_prompts
    from paretoalign.train.reward_weighting import build_weighting

    check_run_dir("grpo", config, overwrite=overwrite)
    prompts, scorer = online_inputs(config, prompts, reward_model)
    source = grpo_reward_source(config, scorer)
    weighting = build_weighting(config.weighting, source.weights, source.names, config.weighting_params)
    if weighting.needs_gradients and PartialState().num_processes > 1:
        raise InputError(f"weighting={config.weighting!r} mixes per-objective gradients, which runs in a single "
                         "process only", field="weighting")
    initial = initial_copy(config, model) if config.beta > 0 and not config.lora and config.reference is None \
        else None
    run = start_run("grpo", config, config.max_steps or 1, model=model, tokenizer=tokenizer, overwrite=overwrite)
    reference = build_reference(run.policy, config, initial) if config.beta > 0 else None
    del initial
    if run.checkpoint is not None and "weighting" in run.checkpoint.method_state:
        weighting.load_state(run.checkpoint.method_state["weighting"])
    prompt_ids, cut = fit_prompts(encode_prompts(run.tokenizer, None, prompts, config.max_new_tokens),
                                  config.max_length, config.max_new_tokens)
    params = config.sampling_params()
    micro = config.micro_batch_size or config.batch_size
    group = config.num_generations
    mu = config.num_iterations
    trainable = list(trainable_parameters(run.policy).values())
    for _, indices in batch_indices(len(prompts), config.batch_size, config.seed, run.step, run.total_steps):
        step = run.step
        mine = run.shard(indices)
        groups = sample_responses(run.policy, run.tokenizer, [prompt_ids[i] for i in mine], mine, group, params,
                                  seed=config.seed, step=step, role="policy")
        flat = [s for g in groups for s in g]
        score_samples(scorer, prompts, flat, config.weights)
        rewards = source.matrix(flat)
        adv_np, weights = _step_advantages(config, source, weighting, rewards, step)
        adv = torch.tensor(adv_np, dtype=torch.float32)
        id_map = {i: prompt_ids[i] for i in mine}
        parts = []
        for m in range(0, len(mine), micro):
            start, stop = m * group, min(m + micro, len(mine)) * group
            part = _Part(start, stop, sample_rows(flat[start:stop], id_map, config.max_length))
            with torch.no_grad():
                if mu > 1:
                    part.old = row_token_logprobs(run.model, part.rows, run.pad_id)[0]
                if reference is not None:
                    with reference.active() as ref_model:
                        part.ref = row_token_logprobs(ref_model, part.rows, run.pad_id)[0]
            parts.append(part)
        stats = _Stats()
        epoch_losses, norms, mixes = [], [], []
        for _ in range(mu):
            losses, grads = _epoch(run, config, parts, adv, weighting.needs_gradients, stats)
            if grads is not None:
                lam = np.asarray(weighting.mix_gradients(grads, step), dtype=np.float64)
                _set_grads_(trainable, sum(float(lam[k]) * grads[k] for k in range(len(grads))))
                mixes.append(lam)
                epoch_losses.append(float(lam @ losses.numpy()))
            else:
                epoch_losses.append(float(losses[0]))
            norms.append(run.optimizer_step())
        run.step = step + 1  # max_steps counts sampled batches: the batch's μ updates advance the run by one step
        used = mixes[-1] if mixes else weights
        record: dict[str, Any] = {
            "loss": mean_finite(epoch_losses), "reward": mean_finite([s.reward for s in flat]),
            **{f"reward/{name}": float(rewards[:, k].mean()) for k, name in enumerate(source.names)},
            "weights": {name: float(used[k]) for k, name in enumerate(source.names)},
            "kl": mean_finite(stats.kl) if reference is not None else None,
            "clip_fraction": stats.clipped / stats.tokens if stats.tokens else 0.0,
            "finished": sum(s.finished for s in flat) / max(len(flat), 1),
            "response_tokens": float(np.mean([len(s.response_ids) for s in flat])),
            "grad_norm": mean_finite([n for n in norms if n is not None]) if norms[0] is not None else None,
        }
        record.update(weighting.metrics())
        if mixes:
            record["step_weights"] = {name: float(weights[k]) for k, name in enumerate(source.names)}
        run.log(record)
        if run.checkpoint_due():
            write_checkpoint(run, method_state={"weighting": weighting.state()})
    write_checkpoint(run, method_state={"weighting": weighting.state()})
    stats_out = {"num_prompts": len(prompts), "prompts_cut": cut, "objectives": source.names,
                 "weighting": config.weighting, "aggregation": source.aggregation,
                 "optimizer_updates": run.step * mu}
    return finish_run(run, stats_out), stats_out
