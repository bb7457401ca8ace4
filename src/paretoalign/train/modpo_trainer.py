"""MODPO: multi-objective DPO (Zhou et al. 2023) for any number of objectives.

L = −log σ( (1/w_0) [β log π_θ/π_ref(y_w) − β log π_θ/π_ref(y_l) − w_{1:}ᵀ (r_{1:}(x, y_w) − r_{1:}(x, y_l))] ).

Supports:

- margin rewards r_{1:} from our multi-objective RM's per-objective heads (the de-correlated rewards r'), or
  implicit DPO rewards β_i log π_i(y|x)/π_ref(y|x) of policies trained on the other objectives' pairs;
- any number of margin objectives; the margins are computed once, before training (they do not change);
- everything DPO's loop supports (`dpo_trainer.run_pairwise_training`): LoRA, resume, metrics. With w = (1, 0, …) the
  loss is exactly DPO's.

Assumes the pairs are the w_0 objective's preferences, and that the RM (or each margin policy) scores the same
(prompt, response) text the policy is trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.chat_format import as_messages, pad_token_id
from paretoalign.errors import InputError
from paretoalign.train.dpo_trainer import encode_pairs, load_pairs, run_pairwise_training
from paretoalign.train.modpo_config import MODPOConfig
from paretoalign.train.run import check_run_dir, claim_run
from paretoalign.train.sequences import reply_end_token_id, row_logprob_sums

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.rewards.protocols import Scorer


def modpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, margin_chosen: torch.Tensor, margin_rejected: torch.Tensor,
               weights: Sequence[float], beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair MODPO losses and the implicit rewards of chosen and rejected; margins are (pairs, k − 1)."""
    w = torch.as_tensor(list(weights), dtype=policy_chosen.dtype, device=policy_chosen.device)
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    margin = (margin_chosen - margin_rejected).to(w) @ w[1:]
    return -F.logsigmoid((chosen - rejected - margin) / w[0]), chosen.detach(), rejected.detach()


def reward_model_margins(reward_model: Scorer, pairs: Sequence[PreferencePair], objectives: Sequence[str]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) per-objective rewards r' of the RM for `objectives`, each (pairs, len(objectives))."""
    names = list(reward_model.objective_names)
    unknown = [o for o in objectives if o not in names]
    if unknown:
        raise InputError(f"the reward model has no objective(s) {unknown}; it has {names}",
                         field="margin_objectives")
    columns = [names.index(o) for o in objectives]
    prompts = [as_messages(p.prompt) for p in pairs]
    chosen = reward_model.score(prompts, [p.chosen for p in pairs]).objectives[:, columns]
    rejected = reward_model.score(prompts, [p.rejected for p in pairs]).objectives[:, columns]
    return chosen, rejected


@torch.no_grad()
def implicit_reward_margins(policy_dirs: Sequence[str], betas: Sequence[float], reference: CausalLM,
                            tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_length: int,
                            batch_size: int = 8, trust_remote_code: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) implicit rewards beta_i * log pi_i/pi_ref of each margin policy, (pairs, k − 1) each."""
    from paretoalign.embed.models import load_causal_lm

    end_id = reply_end_token_id(tokenizer, reference)
    pad = pad_token_id(tokenizer)
    encoded = encode_pairs(tokenizer, pairs, max_length, end_id)
    rows = [p.chosen for p in encoded] + [p.rejected for p in encoded]

    def logps(model: CausalLM) -> np.ndarray:
        parts = [row_logprob_sums(model, rows[i:i + batch_size], pad) for i in range(0, len(rows), batch_size)]
        return torch.cat(parts).double().cpu().numpy()

    ref = logps(reference)
    columns = []
    for path, beta in zip(policy_dirs, betas, strict=True):
        try:
            model, _ = load_causal_lm(path, trust_remote_code=trust_remote_code)
        except InputError as exc:
            raise InputError(f"cannot load margin policy: {exc}", path=path, field="margin_policies") from None
        columns.append(beta * (logps(model.to(next(reference.parameters()).device)) - ref))
        del model
    values = np.stack(columns, axis=1)
    n = len(encoded)
    return values[:n], values[n:]


def compute_margins(config: MODPOConfig, pairs: Sequence[PreferencePair], reward_model: Scorer | None = None,
                    tokenizer: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed margin rewards of every pair for config.margin_objectives."""
    if not config.margin_objectives:
        empty = np.zeros((len(pairs), 0))
        return empty, empty
    if config.margin_source == "reward_model":
        if reward_model is None:
            from paretoalign.inference.best_of_n import load_reward_model

            reward_model = load_reward_model(config.reward_model, trust_remote_code=config.trust_remote_code)
        return reward_model_margins(reward_model, pairs, config.margin_objectives)
    from paretoalign.embed.models import load_causal_lm

    reference, loaded_tokenizer = load_causal_lm(config.reference or config.model,
                                                 trust_remote_code=config.trust_remote_code)
    betas = config.margin_betas or [config.beta] * len(config.margin_objectives)
    return implicit_reward_margins(config.margin_policies or [], betas, reference, tokenizer or loaded_tokenizer,
                                   pairs, config.max_length, trust_remote_code=config.trust_remote_code)


def train_modpo(config: MODPOConfig, pairs: Sequence[PreferencePair] | None = None, *, model: CausalLM | None = None,
                tokenizer: Tokenizer | None = None, reward_model: Scorer | None = None,
                margins: tuple[np.ndarray, np.ndarray] | None = None,
                overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train a policy with MODPO; returns (the trained plain model in eval mode, stats).

    `margins` (chosen, rejected), each (pairs, k − 1), skips computing them. ``config.output_dir``: as in
    `train_dpo` (a MODPO run is resumed; another folder only with `overwrite`).
    """
    check_run_dir("modpo", config, overwrite=overwrite)
    if pairs is None:
        pairs = load_pairs(config.data, config.objective, config.max_pairs)
    if margins is None:
        margins = compute_margins(config, pairs, reward_model, tokenizer)
    chosen_m, rejected_m = (torch.as_tensor(np.asarray(m, dtype=np.float64), dtype=torch.float32) for m in margins)
    k = len(config.margin_objectives)
    if chosen_m.shape != (len(pairs), k) or rejected_m.shape != (len(pairs), k):
        raise InputError(f"margins must be ({len(pairs)}, {k}) each, got {tuple(chosen_m.shape)} and "
                         f"{tuple(rejected_m.shape)}", field="margins")

    def loss_fn(pc, pr, rc, rr, idx):
        return modpo_loss(pc, pr, rc, rr, chosen_m[idx].to(pc.device), rejected_m[idx].to(pc.device),
                          config.weights, config.beta)

    diff = (chosen_m - rejected_m).mean(0).tolist() if k else []
    extra = {"weights": list(config.weights), "margin_objectives": list(config.margin_objectives),
             "mean_margin_difference": dict(zip(config.margin_objectives, diff, strict=True))}
    return run_pairwise_training("modpo", config, pairs, loss_fn, model=model, tokenizer=tokenizer,
                                 extra_stats=extra, overwrite=overwrite)


def sweep_directory(output_dir: str, weights: Sequence[float]) -> str:
    """The run directory of one weighting of a sweep: output_dir/w-0.6-0.2-0.2."""
    return str(Path(output_dir) / ("w-" + "-".join(f"{w:g}" for w in weights)))


def train_modpo_sweep(config: MODPOConfig, pairs: Sequence[PreferencePair] | None = None, *,
                      reward_model: Scorer | None = None, overwrite: bool = False) -> list[dict[str, Any]]:
    """Train one MODPO policy per weighting of config.sweep_weights (margins computed once); returns their stats.

    ``config.output_dir`` (holding one run folder per weighting) is checked first, as in `train_modpo`."""
    check_run_dir("modpo", config, overwrite=overwrite)
    if not config.sweep_weights:
        raise InputError("sweep_weights is empty", field="sweep_weights")
    if pairs is None:
        pairs = load_pairs(config.data, config.objective, config.max_pairs)
    margins = compute_margins(config, pairs, reward_model)
    claim_run("modpo", config, overwrite=overwrite)
    results = []
    for weights in config.sweep_weights:
        sub = dataclasses.replace(config, weights=list(weights), sweep_weights=None,
                                  output_dir=sweep_directory(config.output_dir, weights) if config.output_dir else None)
        _, stats = train_modpo(sub, pairs, margins=margins)
        results.append({"weights": list(weights), "output_dir": sub.output_dir, **stats})
    return results
