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

Memory: one live model holds θ_init. Each run's result stays on disk (its saved policy, or, without an output
directory, a temporary file of the weights it changed); SLERP and LITI stream over them one tensor at a time
(`weight_ops.stream_slerp_liti_`), writing θ_slerp and the η grid straight to safetensors files and θ_next into the
live model in place. A LoRA run whose live model is on the training device shares every weight it does not adapt
with it (its policy and its EMA anchor own copies of the adapted ones only).

Several rewards (``rewards`` in the config, or a reward-set file as the RM): each sample's component vector is
scalarised with this step's weights of the ``weighting`` mode (`reward_weighting`: fixed — the configured
weights —, hypervolume — times its meta-reward —, or maxmin — one-hot on the worst-served component); otherwise the
reward is the scorer's score (K = 1). Each step logs ``weights``; a run's checkpoint keeps the weighting's state.
The gradient modes (gradient, pama) are GRPO's only.

Assumes temperature-1 sampling and an RM whose score is comparable across prompts only through the
leave-one-out baseline (each prompt is its own baseline).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.embed.chat_format import encode_prompts
from paretoalign.errors import InputError
from paretoalign.train.checkpoint import check_resumable, config_record, load_checkpoint
from paretoalign.train.dpo_trainer import batch_indices
from paretoalign.train.policy_files import WEIGHTS_FILE
from paretoalign.train.policy_setup import (
    Reference,
    effective_weights,
    freeze,
    initial_copy,
    is_peft_model,
    load_plain_weights_,
    trained_weight_names,
    training_device,
)
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
from paretoalign.train.weight_ops import SafetensorsReader, SafetensorsWriter, ema_update_, stream_slerp_liti_

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.train.reward_weighting import RewardWeighting
    from paretoalign.train.rollout import Sample


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


def reward_weighting(config: WARPConfig, scorer: Scorer) -> tuple[RewardWeighting, RewardSource]:
    """(the run's weighting mode, the rewards it weights: `rollout.reward_source`)."""
    from accelerate import PartialState

    from paretoalign.train.reward_weighting import build_weighting

    source = reward_source(config, scorer)
    if config.weighting != "fixed" and PartialState().num_processes > 1:
        raise InputError(f"weighting={config.weighting!r} compares batch means, which would differ between "
                         "processes: run WARP in one process or use weighting=fixed", field="weighting")
    return build_weighting(config.weighting, source.weights, source.names, config.weighting_params), source


def step_rewards(weighting: RewardWeighting, source: RewardSource, samples: Sequence[Sample], k: int, step: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the training reward of each scored sample, the (n, K) reward matrix, this step's weights)."""
    matrix = source.matrix(samples)
    weights = np.asarray(weighting.step_weights(matrix, k, step), dtype=np.float64)
    reward = matrix[:, 0] * weights[0] if matrix.shape[1] == 1 else matrix @ weights
    scale = weighting.sample_scale(matrix, k)
    if scale is not None:
        reward = reward * np.asarray(scale, dtype=np.float64)
    return reward, matrix, weights


def run_dir_of(config: WARPConfig, iteration: int, run: int) -> Path | None:
    """Directory of RL run `run` of iteration `iteration` (None when nothing is saved)."""
    return Path(config.output_dir) / f"iter{iteration}" / f"run{run}" if config.output_dir else None


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


def copy_sharing(model: CausalLM, own: Collection[str] = ()) -> CausalLM:
    """A deep copy of a plain model that shares every parameter with `model` except those named in `own`."""
    owned = set(own)
    memo = {id(p): p for n, p in model.named_parameters(remove_duplicate=False) if n not in owned}
    for n, p in model.named_parameters(remove_duplicate=False):
        if n in owned:
            memo.pop(id(p), None)  # a tied weight is owned when any of its names is
    return copy.deepcopy(model, memo)


def _own_adapted_weights_(policy: CausalLM) -> None:
    """Give each LoRA-adapted base weight of `policy` its own copy (merging LoRA in writes to them in place)."""
    from peft.tuners.lora import LoraLayer

    for module in policy.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            base.weight = torch.nn.Parameter(base.weight.detach().clone(), requires_grad=False)


def _on_device(model: CausalLM, device: torch.device) -> bool:
    return all(p.device == device for p in model.parameters())


def _spill(model: CausalLM, names: Sequence[str], path: Path, name: str) -> SafetensorsReader:
    """Write the tensors `names` of a plain model to `path`, one at a time; a partial reader of them."""
    state = model.state_dict()
    with SafetensorsWriter(path, [(n, state[n].dtype, tuple(state[n].shape)) for n in names]) as writer:
        for n in names:
            writer.write(n, state[n])
    return SafetensorsReader([path], name=name, partial=True)


def rl_run(config: WARPConfig, init_model: CausalLM, tokenizer: Tokenizer, reward_model: Scorer, prompts: Sequence[Any],
           iteration: int, index: int, spill_dir: Path | None = None) -> SafetensorsReader:
    """One EMA-anchored REINFORCE run from `init_model`'s weights; returns a reader of the trained weights.

    The reader reads the saved policy (``run_dir/policy``), or, when nothing is saved, a file in `spill_dir` (a new
    temporary folder if None: the caller should pass one it removes) holding the weights the run trained."""
    sub, sub_dir = run_config(config, iteration, index)
    name = f"iteration {iteration} run {index}"
    if finished_run(sub, sub_dir):
        return SafetensorsReader.policy(sub_dir / POLICY_DIR, name=name)
    share = sub.lora and _on_device(init_model, training_device(sub))
    policy_model = copy_sharing(init_model) if share else copy.deepcopy(init_model)
    run = start_run(f"warp-i{iteration}-r{index}", sub, config.max_steps or 1, model=policy_model,
                    tokenizer=tokenizer)
    del policy_model
    trained_names = trained_weight_names(run.policy)
    if share and is_peft_model(run.policy):
        _own_adapted_weights_(run.policy)
    # the EMA only moves the trained weights: the anchor shares the others with the live model (same device only)
    anchor = Reference(copy_sharing(init_model, trained_names) if _on_device(init_model, run.device)
                       else copy.deepcopy(init_model))
    if run.checkpoint is not None and "anchor" in run.checkpoint.tensor_groups:
        saved = run.checkpoint.tensor_groups["anchor"]
        foreign = [n for n in saved if n not in trained_names]
        if foreign:  # the anchor shares every other weight with the live model: never write those
            raise InputError(f"the checkpoint's anchor has weight {foreign[0]!r}, which this run does not train",
                             path=str(sub_dir))
        load_plain_weights_(anchor.model, saved)
    anchor.model.to(run.device)
    prompt_ids, _ = fit_prompts(encode_prompts(tokenizer, None, prompts, config.max_new_tokens), config.max_length,
                                config.max_new_tokens)
    params = config.sampling_params()
    micro = config.micro_batch_size or config.batch_size
    k = config.samples_per_prompt
    weighting, source = reward_weighting(config, reward_model)
    if run.checkpoint is not None and "weighting" in run.checkpoint.method_state:
        weighting.load_state(run.checkpoint.method_state["weighting"])

    def anchor_state() -> dict[str, torch.Tensor]:
        named = dict(anchor.model.named_parameters())
        return {n: named[n] for n in trained_weight_names(run.policy)}

    for _, indices in batch_indices(len(prompts), config.batch_size, sub.seed, run.step, run.total_steps):
        mine = run.shard(indices)
        groups = sample_responses(run.policy, tokenizer, [prompt_ids[i] for i in mine], mine, k, params,
                                  seed=sub.seed, step=run.step, role="policy")
        flat = [s for g in groups for s in g]
        score_samples(reward_model, prompts, flat, config.weights)
        train_reward, matrix, _ = step_rewards(weighting, source, flat, k, run.step)
        id_map = {i: prompt_ids[i] for i in mine}
        stats: dict[str, list[float]] = {"loss": [], "kl": [], "shaped": []}
        for m in range(0, len(mine), micro):
            part = [s for g in groups[m:m + micro] for s in g]
            rows = sample_rows(part, id_map, config.max_length)
            logp = row_logprob_sums(run.model, rows, run.pad_id)
            with anchor.active() as anchor_model:
                anchor_logp = row_logprob_sums(anchor_model, rows, run.pad_id).to(logp.device)
            reward = torch.tensor(train_reward[m * k:m * k + len(part)], dtype=logp.dtype, device=logp.device)
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
                 "finished": sum(s.finished for s in flat) / max(len(flat), 1), "grad_norm": norm,
                 "weights": weighting.named_weights(), **weighting.metrics(),
                 **({f"reward/{n}": float(matrix[:, j].mean()) for j, n in enumerate(weighting.names)}
                    if source.multi else {}),
                 **({"train_reward": mean_finite(train_reward.tolist())} if config.weighting != "fixed" else {})})
        if run.checkpoint_due():
            write_checkpoint(run, method_state={"weighting": weighting.state()},
                             tensor_groups={"anchor": anchor_state()})
    write_checkpoint(run, method_state={"weighting": weighting.state()}, tensor_groups={"anchor": anchor_state()})
    trained = finish_run(run, {"num_prompts": len(prompts), "iteration": iteration, "run": index})
    if sub_dir is not None and run.accelerator.is_main_process:
        return SafetensorsReader.policy(sub_dir / POLICY_DIR, name=name)
    folder = Path(tempfile.mkdtemp(prefix="paretoalign-warp-")) if spill_dir is None else spill_dir
    return _spill(trained, trained_names, folder / f"iter{iteration}-run{index}.safetensors", name)


@contextmanager
def streamed_policy_dir(model: CausalLM, tokenizer: Tokenizer, directory: Path,
                        record: dict[str, Any]) -> Iterator[Path]:
    """Write a policy directory as `save_policy` does, except its weights: yields the path of the weights file,
    for the caller to stream; the directory appears (atomically) when the block succeeds."""
    from paretoalign.embed.models import no_progress_bars

    with atomic_directory(directory) as tmp:
        with no_progress_bars():
            model.save_pretrained(tmp, state_dict={})  # config.json and generation_config.json, no weights
            tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / TRAINING_RECORD, record)
        yield tmp / WEIGHTS_FILE


def merge_iteration_(config: WARPConfig, live: CausalLM, tokenizer: Tokenizer, runs: Sequence[SafetensorsReader],
                     iteration: int) -> dict[str, Any]:
    """SLERP of the runs and LITI toward θ_init = `live`'s weights, streamed into `live` in place; with an output
    directory, θ_slerp (and after the last iteration θ_η for each η of the grid) saved on the way. Returns the angle
    summary of runs 0 and 1."""
    lam = config.slerp_lambda if config.num_runs == 2 else None
    with ExitStack() as stack:
        outputs: dict[float | None, Path] = {}
        if config.output_dir:
            out = Path(config.output_dir)
            base = {"method": "warp", "config": config_record(config), "iteration": iteration}
            outputs[None] = stack.enter_context(streamed_policy_dir(live, tokenizer, out / f"iter{iteration}" / "slerp",
                                                                    {**base, "what": "slerp"}))
            if iteration == config.iterations - 1:
                for dirname, eta in {f"eta-{eta:g}": eta for eta in config.eta_grid}.items():
                    outputs[eta] = stack.enter_context(streamed_policy_dir(live, tokenizer, out / dirname,
                                                                           {**base, "eta": eta, "what": "liti"}))
        report = stream_slerp_liti_(live, runs, config.liti_eta, lam=lam, outputs=outputs)
    return report["summary"]


def train_warp(config: WARPConfig, prompts: Sequence[Any] | None = None, *, model: CausalLM | None = None,
               tokenizer: Tokenizer | None = None, reward_model: Scorer | str | os.PathLike | None = None,
               overwrite: bool = False) -> tuple[CausalLM, dict[str, Any]]:
    """Run WARP; returns (the final LITI policy as a plain model, stats with per-iteration merge summaries).

    ``config.output_dir``: missing, empty or a WARP run (resumed); any other folder only with `overwrite` (emptied,
    the run starts over). Checked before anything loads."""
    from paretoalign.embed.models import load_causal_lm

    check_run_dir("warp", config, overwrite=overwrite)
    prompts, reward_model = online_inputs(config, prompts, reward_model)
    reward_weighting(config, reward_model)  # bad weighting parameters fail before the run directory is claimed
    if model is None:
        loaded, tokenizer = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
        live = freeze(loaded)  # loaded here, so no one else holds it: it becomes the live model itself
        del loaded
    elif tokenizer is None:
        raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
    else:
        live = initial_copy(config, model)  # the caller's model is never changed
    claim_run("warp", config, overwrite=overwrite)
    iterations = []
    retrained = False
    with tempfile.TemporaryDirectory(prefix="paretoalign-warp-") as spill:
        for it in range(config.iterations):
            # once a run (re)trains, later iterations start from a new merge: their old checkpoints are stale
            it_config = dataclasses.replace(config, resume=False) if retrained else config
            retrained = retrained or not all(finished_run(*run_config(it_config, it, m))
                                             for m in range(config.num_runs))
            runs = [rl_run(it_config, live, tokenizer, reward_model, prompts, it, m, Path(spill))
                    for m in range(config.num_runs)]
            summary = merge_iteration_(config, live, tokenizer, runs, it)
            iterations.append({"iteration": it, "angle_summary": summary, "liti_eta": config.liti_eta})
    final = live
    stats = {"num_prompts": len(prompts), "iterations": iterations}
    if config.output_dir:
        record = {"method": "warp", "config": config_record(config), "stats": stats}
        save_policy(final, tokenizer, Path(config.output_dir) / POLICY_DIR, record)
        write_json_atomic(Path(config.output_dir) / TRAINING_RECORD, record)
    return final.eval(), stats
