"""WARP: weight averaged rewarded policies (Ramé et al. 2024).

Each iteration:

1. **EMA anchor RL** — M independent runs from θ_init, each maximising E[R] − β KL(π_θ‖π_ema) with REINFORCE and a
   leave-one-out baseline: per prompt k samples, r̃_i = R(y_i) − β (log π_θ(y_i) − log π_ema(y_i)) (no gradient
   through r̃), advantage A_i = r̃_i − mean_{j≠i} r̃_j, loss −mean(A_i · log π_θ(y_i)); after every step
   θ_ema ← (1−μ) θ_ema + μ θ.
2. **SLERP** of the task vectors δ_m = θ_m − θ_init, per tensor (`weight_ops.slerp`).
3. **LITI** θ_η = (1−η) θ_init + η θ_slerp, the next iteration's θ_init.

Supports LoRA or full fine-tuning per run (runs differ by seed: LoRA initialisation and samples), M ≥ 2,
several iterations, resume (a run already trained for max_steps is read back from its saved policy, a shorter one
continues from its checkpoint), and saving θ_η over an η grid after the last iteration for the reward–KL front.

Assumes temperature-1 sampling and an RM whose score is comparable across prompts only through the
leave-one-out baseline (each prompt is its own baseline).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from paretoalign.atomic_io import write_json_atomic
from paretoalign.errors import InputError
from paretoalign.inference.policy import encode_prompts
from paretoalign.train.checkpoint import check_resumable, config_record, load_checkpoint
from paretoalign.train.dpo_trainer import batch_indices
from paretoalign.train.policy_setup import (
    Reference,
    effective_weights,
    initial_copy,
    load_plain_weights_,
    plain_state,
    trained_weight_names,
)
from paretoalign.train.rollout import (
    fit_prompts,
    mean_finite,
    online_inputs,
    sample_responses,
    sample_rows,
    score_samples,
)
from paretoalign.train.run import (
    POLICY_DIR,
    TRAINING_RECORD,
    check_run_dir,
    claim_run,
    finish_run,
    save_policy,
    start_run,
    write_checkpoint,
)
from paretoalign.train.sequences import row_logprob_sums
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.weight_ops import ema_update_, liti, slerp


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = r_i − mean_{j≠i} r_j along the last axis (k ≥ 2 samples of one prompt)."""
    k = rewards.shape[-1]
    if k < 2:
        raise InputError("the leave-one-out baseline needs at least 2 samples per prompt", field="samples_per_prompt")
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def kl_regularized_reward(reward: torch.Tensor, policy_logp: torch.Tensor, anchor_logp: torch.Tensor,
                          beta: float) -> torch.Tensor:
    """R(y) − β (log π(y) − log π_anchor(y)), detached."""
    return (reward - beta * (policy_logp - anchor_logp)).detach()


def reinforce_loss(advantages: torch.Tensor, policy_logp: torch.Tensor) -> torch.Tensor:
    """Per-sample REINFORCE loss −sg(A) · log π(y)."""
    return -advantages.detach() * policy_logp


def run_dir_of(config: WARPConfig, iteration: int, run: int) -> Path | None:
    """Directory of RL run `run` of iteration `iteration` (None when nothing is saved)."""
    return Path(config.output_dir) / f"iter{iteration}" / f"run{run}" if config.output_dir else None


def saved_run_state(template: Any, directory: Path) -> dict[str, torch.Tensor]:
    """The full state dict of a finished run's saved policy (tied weights filled in as the template ties them)."""
    from paretoalign.train.policy_files import load_policy_state

    model = copy.deepcopy(template)
    result = model.load_state_dict(load_policy_state(directory)[0], strict=False)
    pointers = {p.data_ptr() for n, p in model.state_dict().items() if n not in result.missing_keys}
    untied = [k for k in result.missing_keys if model.state_dict()[k].data_ptr() not in pointers]
    if result.unexpected_keys or untied:
        raise InputError(f"saved run does not match the model (unexpected {result.unexpected_keys[:3]}, missing "
                         f"{untied[:3]})", path=str(directory))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_config(config: WARPConfig, iteration: int, index: int) -> tuple[WARPConfig, Path | None]:
    """(config, directory) of RL run `index` of iteration `iteration`: its own seed and output directory."""
    sub_dir = run_dir_of(config, iteration, index)
    sub = dataclasses.replace(config, output_dir=str(sub_dir) if sub_dir else None,
                              seed=config.seed * 1000 + iteration * 100 + index)
    return sub, sub_dir


def finished_run(sub: WARPConfig, sub_dir: Path | None) -> bool:
    """Whether run directory `sub_dir` holds a policy trained with this config for at least max_steps steps."""
    if sub_dir is None or not sub.resume or not (sub_dir / TRAINING_RECORD).is_file():
        return False
    checkpoint = load_checkpoint(sub_dir)
    if checkpoint is None or not (sub_dir / POLICY_DIR).is_dir():
        return False
    check_resumable(checkpoint, sub, sub_dir)
    return checkpoint.step >= (sub.max_steps or 1)


def rl_run(config: WARPConfig, init_model: Any, tokenizer: Any, reward_model: Any, prompts: Sequence[Any],
           iteration: int, index: int) -> dict[str, torch.Tensor]:
    """One EMA-anchored REINFORCE run from `init_model`'s weights; returns the trained plain state dict."""
    sub, sub_dir = run_config(config, iteration, index)
    if finished_run(sub, sub_dir):
        return saved_run_state(init_model, sub_dir / POLICY_DIR)
    policy_model = copy.deepcopy(init_model)
    anchor = Reference(copy.deepcopy(init_model))
    run = start_run(f"warp-i{iteration}-r{index}", sub, config.max_steps or 1, model=policy_model,
                    tokenizer=tokenizer)
    if run.checkpoint is not None and "anchor" in run.checkpoint.tensor_groups:
        load_plain_weights_(anchor.model, run.checkpoint.tensor_groups["anchor"])
    anchor.model.to(run.device)
    prompt_ids, _ = fit_prompts(encode_prompts(tokenizer, None, prompts, config.max_new_tokens), config.max_length,
                                config.max_new_tokens)
    params = config.sampling_params()
    micro = config.micro_batch_size or config.batch_size
    k = config.samples_per_prompt

    def anchor_state() -> dict[str, torch.Tensor]:
        named = dict(anchor.model.named_parameters())
        return {n: named[n] for n in trained_weight_names(run.policy)}

    for _, indices in batch_indices(len(prompts), config.batch_size, sub.seed, run.step, run.total_steps):
        mine = run.shard(indices)
        groups = sample_responses(run.policy, tokenizer, [prompt_ids[i] for i in mine], mine, k, params,
                                  seed=sub.seed, step=run.step, role="policy")
        flat = [s for g in groups for s in g]
        score_samples(reward_model, prompts, flat, config.weights)
        id_map = {i: prompt_ids[i] for i in mine}
        stats: dict[str, list[float]] = {"loss": [], "kl": [], "shaped": []}
        for m in range(0, len(mine), micro):
            part = [s for g in groups[m:m + micro] for s in g]
            rows = sample_rows(part, id_map, config.max_length)
            logp = row_logprob_sums(run.model, rows, run.pad_id)
            with anchor.active() as anchor_model:
                anchor_logp = row_logprob_sums(anchor_model, rows, run.pad_id).to(logp.device)
            reward = torch.tensor([s.reward for s in part], dtype=logp.dtype, device=logp.device)
            shaped = kl_regularized_reward(reward, logp, anchor_logp, config.kl_beta)
            adv = leave_one_out_advantages(shaped.view(-1, k)).view(-1)
            losses = reinforce_loss(adv, logp)
            run.backward(losses.sum() / (len(mine) * k))
            stats["loss"] += losses.detach().cpu().tolist()
            stats["kl"] += (logp - anchor_logp).detach().cpu().tolist()
            stats["shaped"] += shaped.cpu().tolist()
        norm = run.optimizer_step()
        ema_update_(anchor.model, effective_weights(run.policy), config.ema_rate)
        run.log({"iteration": iteration, "run": index, "loss": mean_finite(stats["loss"]),
                 "reward": mean_finite([s.reward for s in flat]), "kl": mean_finite(stats["kl"]),
                 "shaped_reward": mean_finite(stats["shaped"]),
                 "finished": sum(s.finished for s in flat) / max(len(flat), 1), "grad_norm": norm})
        if run.checkpoint_due():
            write_checkpoint(run, tensor_groups={"anchor": anchor_state()})
    write_checkpoint(run, tensor_groups={"anchor": anchor_state()})
    trained = finish_run(run, {"num_prompts": len(prompts), "iteration": iteration, "run": index})
    return plain_state(trained)


def _model_with(template: Any, state: dict[str, torch.Tensor]) -> Any:
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    return model


def train_warp(config: WARPConfig, prompts: Sequence[Any] | None = None, *, model: Any = None, tokenizer: Any = None,
               reward_model: Any = None, overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Run WARP; returns (the final LITI policy as a plain model, stats with per-iteration merge summaries).

    ``config.output_dir``: missing, empty or a WARP run (resumed); any other folder only with `overwrite` (emptied,
    the run starts over). Checked before anything loads."""
    from paretoalign.embed.models import load_causal_lm
    from paretoalign.train.weight_ops import merge_report

    check_run_dir("warp", config, overwrite=overwrite)
    prompts, reward_model = online_inputs(config, prompts, reward_model)
    if model is None:
        model, tokenizer = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
    elif tokenizer is None:
        raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
    template = initial_copy(config, model)
    for p in template.parameters():
        p.requires_grad_(False)
    theta_init = {k: v.detach().clone() for k, v in template.state_dict().items()}
    claim_run("warp", config, overwrite=overwrite)
    iterations = []
    retrained = False
    for it in range(config.iterations):
        init_model = _model_with(template, theta_init)
        # once a run (re)trains, later iterations start from a new merge: their old checkpoints are stale
        it_config = dataclasses.replace(config, resume=False) if retrained else config
        retrained = retrained or not all(finished_run(*run_config(it_config, it, m)) for m in range(config.num_runs))
        states = [rl_run(it_config, init_model, tokenizer, reward_model, prompts, it, m)
                  for m in range(config.num_runs)]
        lam = config.slerp_lambda if config.num_runs == 2 else None
        theta_slerp = slerp(theta_init, states, lam)
        summary = merge_report(theta_init, states[0], states[1])["summary"] if len(states) >= 2 else {}
        theta_next = liti(theta_init, theta_slerp, config.liti_eta)
        iterations.append({"iteration": it, "angle_summary": summary, "liti_eta": config.liti_eta})
        if config.output_dir:
            record = {"method": "warp", "config": config_record(config), "iteration": it, "what": "slerp"}
            save_policy(_model_with(template, theta_slerp), tokenizer,
                        Path(config.output_dir) / f"iter{it}" / "slerp", record)
        if it == config.iterations - 1 and config.output_dir:
            for eta in config.eta_grid:
                record = {"method": "warp", "config": config_record(config), "iteration": it, "eta": eta,
                          "what": "liti"}
                save_policy(_model_with(template, liti(theta_init, theta_slerp, eta)), tokenizer,
                            Path(config.output_dir) / f"eta-{eta:g}", record)
        theta_init = theta_next
    final = _model_with(template, theta_init)
    stats = {"num_prompts": len(prompts), "iterations": iterations}
    if config.output_dir:
        record = {"method": "warp", "config": config_record(config), "stats": stats}
        save_policy(final, tokenizer, Path(config.output_dir) / POLICY_DIR, record)
        write_json_atomic(Path(config.output_dir) / TRAINING_RECORD, record)
    return final.eval(), stats
