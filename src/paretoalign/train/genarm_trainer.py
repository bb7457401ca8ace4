"""GenARM autoregressive reward-model training (Xu et al. 2024) on the shared training loop.

The reward of a response is the log-likelihood of a causal LM pi_r, r(x, y) = beta_r * log pi_r(y | x), trained on
preference pairs with ``-log sigmoid(beta_r * (log pi_r(y_w | x) - log pi_r(y_l | x)))``. There is no reference
model: that is GenARM's parametrisation, and what lets ``pi_r`` guide decoding token by token
(`paretoalign.inference.guided_decoding`).

Supports:

- everything `paretoalign.train.run` gives DPO: full fine-tuning or LoRA (merged into the saved model), AdamW with
  gradient accumulation and clipping, a pair order seeded by (seed, epoch), ``accelerate``, checkpoints every
  ``save_every`` steps and exact resume, ``metrics.jsonl`` (loss, accuracy, margin
  beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x)), mean chosen / rejected log-probs, gradient norm);
- saving the trained RM as a plain transformers causal LM (safetensors + tokenizer) directly in ``output_dir``, next
  to the run's files, so ``guided --reward-lm OUTPUT_DIR`` loads it as before, with ``genarm_training.json``.

Assumes log pi_r(y | x) sums the response tokens' log-probs: the prompt rendered exactly as at generation time, the
response followed by the reply-end token (`sequences.encode_pair`), so the RM also learns when to stop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.data.schema import PreferencePair
from paretoalign.embed.chat_format import pad_token_id
from paretoalign.errors import InputError
from paretoalign.inference.guided_decoding import Prompt
from paretoalign.output_paths import GENARM_METHOD, GENARM_RECORD, RUN_MARKER
from paretoalign.train.dpo_trainer import EncodedPair, batch_indices, encode_pairs, steps_for
from paretoalign.train.genarm_config import GenARMConfig
from paretoalign.train.run import TrainingRun, check_run_dir, finish_run, start_run, warn_cut_rows, write_checkpoint
from paretoalign.train.sequences import encode_pair, reply_end_token_id, row_logprob_sums

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from paretoalign.embed.protocols import CausalLM, Tokenizer

METHOD = GENARM_METHOD
"""The method a GenARM run folder records."""
TRAINING_RECORD = GENARM_RECORD
"""Written beside the saved model, last: the config and the run's stats."""
MODEL_DIR = "."
"""Where the RM is saved inside the run folder: the run folder itself (`finish_run`'s output_name)."""


def response_logprob_sums(model: CausalLM, tokenizer: Tokenizer, prompts: Sequence[Prompt], responses: Sequence[str],
                          max_length: int = 512) -> torch.Tensor:
    """log pi(response | prompt) per row: the sum of the response tokens' log-probs (plus the reply-end token)."""
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses", field="responses")
    if not prompts:
        return torch.zeros(0)
    end_id = reply_end_token_id(tokenizer, model)
    rows = [encode_pair(tokenizer, p, r, max_length, end_id)[:2] for p, r in zip(prompts, responses, strict=True)]
    return row_logprob_sums(model, rows, pad_token_id(tokenizer))


def genarm_pair_losses(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, beta_r: float) -> torch.Tensor:
    """Per-pair -log sigmoid(beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x)))."""
    return -F.logsigmoid(beta_r * (chosen_logps - rejected_logps))


def genarm_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, beta_r: float) -> torch.Tensor:
    """Mean of -log sigmoid(beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x))) over pairs."""
    return genarm_pair_losses(chosen_logps, rejected_logps, beta_r).mean()


def save_reward_lm(model: PreTrainedModel, tokenizer: Tokenizer, directory: Path, record: dict[str, Any]) -> Path:
    """Write the RM (safetensors), its tokenizer and `record` into the run folder `directory`, keeping its other
    files (checkpoint/, metrics.jsonl); each file is replaced atomically, genarm_training.json last."""
    from paretoalign.embed.models import no_progress_bars

    directory = Path(directory)
    staging = directory / ".reward_lm"
    with atomic_directory(staging) as tmp, no_progress_bars():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    for item in sorted(staging.iterdir()):
        os.replace(item, directory / item.name)
    shutil.rmtree(staging, ignore_errors=True)
    write_json_atomic(directory / TRAINING_RECORD, record)
    return directory


def _is_previous_output(output_dir: str | None) -> bool:
    """Whether `output_dir` is what this trainer wrote before it ran on the shared loop (a model and its
    genarm_training.json, no run marker): replaced, as it was then."""
    folder = Path(output_dir) if output_dir else None
    return folder is not None and (folder / TRAINING_RECORD).is_file() and not (folder / RUN_MARKER).is_file()


def _train_step(run: TrainingRun, encoded: Sequence[EncodedPair], indices: list[int], micro: int, beta_r: float,
                epoch: int) -> None:
    """One optimizer step over this process's share of `indices`, accumulated over micro-batches, then logged."""
    mine = run.shard(indices)
    parts: dict[str, list[torch.Tensor]] = {"loss": [], "chosen": [], "rejected": []}
    for m in range(0, len(mine), micro):
        part = [encoded[i] for i in mine[m:m + micro]]
        logps = row_logprob_sums(run.model, [p.chosen for p in part] + [p.rejected for p in part], run.pad_id)
        chosen, rejected = logps[:len(part)], logps[len(part):]
        losses = genarm_pair_losses(chosen, rejected, beta_r)
        run.backward(losses.sum() / len(mine))
        parts["loss"].append(losses.detach())
        parts["chosen"].append(chosen.detach())
        parts["rejected"].append(rejected.detach())
    norm = run.optimizer_step()
    loss, chosen, rejected = (torch.cat(parts[k]).float().cpu() for k in ("loss", "chosen", "rejected"))
    run.log({"epoch": epoch, "loss": float(loss.mean()), "accuracy": float((chosen > rejected).float().mean()),
             "margin": float(beta_r * (chosen - rejected).mean()), "chosen_logp": float(chosen.mean()),
             "rejected_logp": float(rejected.mean()), "grad_norm": norm})


def train_autoregressive_rm(config: GenARMConfig, pairs: Sequence[PreferencePair], model: CausalLM | None = None,
                            tokenizer: Tokenizer | None = None, *, overwrite: bool = False
                            ) -> tuple[Any, dict[str, Any]]:
    """Train a GenARM autoregressive RM on preference pairs; returns (the plain model in eval mode, stats).

    ``config.output_dir`` must be missing, empty, a GenARM run (resumed) or a folder this trainer wrote before it
    ran on the shared loop (replaced); any other folder only with `overwrite` (emptied, the run starts over).
    Checked before anything loads. A `model` object (with its `tokenizer`) is trained in place; with LoRA the
    returned model is a new merged one. ``stats["steps"]`` lists the metrics of every step of the run."""
    overwrite = overwrite or _is_previous_output(config.output_dir)
    check_run_dir(METHOD, config, overwrite=overwrite)
    if not pairs:
        raise InputError("no preference pairs to train on", field="pairs")
    if config.lora and importlib.util.find_spec("peft") is None:
        raise InputError("lora=True needs the optional 'peft' package: run `pip install peft`, or set lora=False "
                         "for full fine-tuning", field="lora")
    total = steps_for(len(pairs), config.batch_size, config.epochs, config.max_steps)
    run = start_run(METHOD, config, total, model=model, tokenizer=tokenizer, overwrite=overwrite)
    encoded = encode_pairs(run.tokenizer, pairs, config.max_length, run.end_id)
    cut_rows = sum(p.truncated for p in encoded)
    warn_cut_rows(run, METHOD, cut_rows, len(encoded))
    micro = config.micro_batch_size or config.batch_size
    for epoch, indices in batch_indices(len(encoded), config.batch_size, config.seed, run.step, total):
        _train_step(run, encoded, indices, micro, config.beta_r, epoch)
        if run.checkpoint_due():
            write_checkpoint(run)
    write_checkpoint(run)
    stats: dict[str, Any] = {"num_pairs": len(encoded), "num_steps": run.step, "truncated_rows": cut_rows,
                             "total_rows": 2 * len(encoded), "truncated_pairs": sum(p.truncated > 0 for p in encoded),
                             "learning_rate": config.effective_learning_rate,
                             "output_dir": str(config.output_dir) if config.output_dir else None}
    trained = finish_run(run, stats, save=save_reward_lm, output_name=MODEL_DIR)
    return trained, {**stats, "steps": list(run.metrics.records)}
