"""DPO: direct preference optimisation (Rafailov et al. 2023), and the pairwise loop MODPO reuses.

L = −log σ(β log π_θ(y_w|x)/π_ref(y_w|x) − β log π_θ(y_l|x)/π_ref(y_l|x)), averaged over pairs.

Supports:

- any causal LM, full fine-tune or LoRA (the reference is then the base with adapters off), TRL-style data
  (``prompt``/``chosen``/``rejected``, standard strings or conversational message lists), the bundled default pairs;
- a seeded pair order per epoch, gradient accumulation, clipping, metrics per step (loss, accuracy, reward margin,
  chosen/rejected implicit rewards), checkpoints every ``save_every`` steps and exact resume;
- `run_pairwise_training`, the same loop with any pairwise loss (MODPO passes its own).

Assumes log π(y|x) sums the response tokens' log-probs, the prompt rendered as at generation time and the response
followed by the reply-end token (`sequences.encode_pair`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.chat_format import as_messages
from paretoalign.errors import InputError
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.policy_setup import build_reference, initial_copy
from paretoalign.train.run import TrainingRun, check_run_dir, finish_run, start_run, warn_cut_rows, write_checkpoint
from paretoalign.train.sequences import Row, encode_pair, row_logprob_sums

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.train.policy_setup import Reference

PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]],
                    tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(policy chosen, policy rejected, ref chosen, ref rejected log-probs, pair indices) ->
(per-pair losses, chosen rewards, rejected rewards)."""


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards beta * log pi/pi_ref of chosen and rejected."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


@dataclass
class EncodedPair:
    """A preference pair as token rows."""

    chosen: Row
    rejected: Row
    truncated: int


def load_pairs(data: str | None, objective: str | None, max_pairs: int | None) -> list[PreferencePair]:
    """Preference pairs from `data` (None: the bundled default pairs), filtered by objective."""
    from paretoalign.data.bundled import DEFAULT_PAIRS_FILE, bundled_data_dir
    from paretoalign.data.preference import load_preference_pairs

    path = data if data is not None else str(bundled_data_dir() / DEFAULT_PAIRS_FILE)
    pairs = load_preference_pairs(path)
    if objective is not None:
        pairs = [p for p in pairs if p.objective == objective]
        if not pairs:
            raise InputError(f"no pair has objective {objective!r}", path=path, field="objective")
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    if not pairs:
        raise InputError("no preference pairs", path=path, field="data")
    return pairs


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_length: int, end_id: int | None
                 ) -> list[EncodedPair]:
    """Token rows of every pair; errors name the pair's source."""
    out = []
    for pair in pairs:
        messages = as_messages(pair.prompt)
        try:
            c = encode_pair(tokenizer, messages, pair.chosen, max_length, end_id)
            r = encode_pair(tokenizer, messages, pair.rejected, max_length, end_id)
        except InputError as exc:
            raise InputError(exc.reason, path=pair.source or None, field=exc.field) from None
        out.append(EncodedPair(c[:2], r[:2], int(c[2]) + int(r[2])))
    return out


def steps_for(num_examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of a run over `num_examples` for `epochs` (capped by max_steps)."""
    per_epoch = -(-num_examples // batch_size)
    total = per_epoch * epochs
    return min(total, max_steps) if max_steps is not None else total


def batch_indices(num_examples: int, batch_size: int, seed: int, start_step: int, total_steps: int
                  ) -> Iterator[tuple[int, list[int]]]:
    """(epoch, example indices) of each step from `start_step`; epoch e's order is a permutation seeded by (seed, e)."""
    per_epoch = -(-num_examples // batch_size)
    for step in range(start_step, total_steps):
        epoch, k = divmod(step, per_epoch)
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        yield epoch, order[k * batch_size:(k + 1) * batch_size].tolist()


def pair_logprobs(run: TrainingRun, reference: Reference, pairs: Sequence[EncodedPair]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy (with grad) and reference (no grad) log-probs of chosen and rejected, in one forward each."""
    rows = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    with reference.active() as ref_model:
        ref = row_logprob_sums(ref_model, rows, run.pad_id)
    policy = row_logprob_sums(run.model, rows, run.pad_id)
    n = len(pairs)
    return policy[:n], policy[n:], ref[:n].to(policy.device), ref[n:].to(policy.device)


def run_pairwise_training(method: str, config: DPOConfig, pairs: Sequence[PreferencePair], loss_fn: PairLoss, *,
                          model: CausalLM | None = None, tokenizer: Tokenizer | None = None,
                          extra_stats: dict[str, Any] | None = None,
                          overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train on preference pairs with a pairwise loss; returns (trained plain model, stats)."""
    check_run_dir(method, config, overwrite=overwrite)
    if not pairs:
        raise InputError("no preference pairs to train on", field="data")
    total = steps_for(len(pairs), config.batch_size, config.epochs, config.max_steps)
    needs_initial = not config.lora and config.reference is None
    initial = initial_copy(config, model) if needs_initial else None
    run = start_run(method, config, total, model=model, tokenizer=tokenizer, overwrite=overwrite)
    reference = build_reference(run.policy, config, initial)
    encoded = encode_pairs(run.tokenizer, pairs, config.max_length, run.end_id)
    cut_rows = sum(p.truncated for p in encoded)
    warn_cut_rows(run, method, cut_rows, len(encoded),
                  cut_pairs=sum(p.truncated > 0 for p in encoded))
    micro = config.micro_batch_size or config.batch_size
    for epoch, indices in batch_indices(len(encoded), config.batch_size, config.seed, run.step, total):
        mine = run.shard(indices)
        parts: dict[str, list[torch.Tensor]] = {"loss": [], "chosen": [], "rejected": []}
        for m in range(0, len(mine), micro):
            idx = mine[m:m + micro]
            pc, pr, rc, rr = pair_logprobs(run, reference, [encoded[i] for i in idx])
            losses, chosen, rejected = loss_fn(pc, pr, rc, rr, idx)
            run.backward(losses.sum() / len(mine))
            parts["loss"].append(losses.detach())
            parts["chosen"].append(chosen)
            parts["rejected"].append(rejected)
        norm = run.optimizer_step()
        loss, chosen, rejected = (torch.cat(parts[k]).float().cpu() for k in ("loss", "chosen", "rejected"))
        run.log({"epoch": epoch, "loss": float(loss.mean()), "accuracy": float((chosen > rejected).float().mean()),
                 "reward_margin": float((chosen - rejected).mean()), "chosen_reward": float(chosen.mean()),
                 "rejected_reward": float(rejected.mean()), "grad_norm": norm})
        if run.checkpoint_due():
            write_checkpoint(run)
    write_checkpoint(run)
    stats = {"num_pairs": len(encoded), "truncated_rows": cut_rows, "total_rows": 2 * len(encoded),
             "truncated_pairs": sum(p.truncated > 0 for p in encoded), **(extra_stats or {})}
    return finish_run(run, stats), stats


def train_dpo(config: DPOConfig, pairs: Sequence[PreferencePair] | None = None, *, model: CausalLM | None = None,
              tokenizer: Tokenizer | None = None, overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train a policy with DPO; returns (the trained plain model in eval mode, stats).

    ``config.output_dir`` must be missing, empty or a DPO run (resumed); any other folder only with `overwrite`
    (emptied, the run starts over). Checked before anything loads."""
    check_run_dir("dpo", config, overwrite=overwrite)
    if pairs is None:
        pairs = load_pairs(config.data, config.objective, config.max_pairs)

    def loss_fn(pc, pr, rc, rr, _idx):
        return dpo_loss(pc, pr, rc, rr, config.beta)

    return run_pairwise_training("dpo", config, pairs, loss_fn, model=model, tokenizer=tokenizer, overwrite=overwrite)
