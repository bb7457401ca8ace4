"""GenARM autoregressive reward model training (Xu et al. 2024).

The reward of a response is the log-likelihood of a causal LM pi_r, r(x, y) = beta_r * log pi_r(y | x), trained on
preference pairs with ``-log sigmoid(beta_r * (log pi_r(y_w | x) - log pi_r(y_l | x)))``. There is no reference
model: that is GenARM's parametrisation, and what lets ``pi_r`` guide decoding token by token
(`paretoalign.inference.guided_decoding`).

Supports:

- full fine-tuning (no extra dependency) or LoRA adapters through the optional ``peft`` package, merged into the
  saved model so it loads as a plain causal LM;
- AdamW with gradient accumulation (`micro_batch_size`), global-norm clipping, a seeded pair order, and a metrics
  record per optimizer step (loss, accuracy, mean margin beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x)));
- saving the model (safetensors), tokenizer and a training record to `output_dir` atomically.

Assumes:

- log pi_r(y | x) sums the log-probabilities of the response tokens only: the prompt is rendered exactly as at
  generation time (chat template with its generation prompt, see
  `paretoalign.inference.guided_decoding.prompt_token_ids`), the response is tokenized on its own and followed by
  the token that ends a reply (the template's end-of-turn token when it is an EOS token, else the tokenizer's EOS),
  so the RM also learns when to stop;
- rows longer than `max_length` lose prompt tokens from the left first, then response tokens from the right;
- batches are right-padded; padding never reaches a real token through causal attention, and position ids are
  given explicitly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.data.schema import PreferencePair
from paretoalign.embed.models import load_causal_lm
from paretoalign.errors import InputError
from paretoalign.inference.guided_decoding import Prompt
from paretoalign.inference.policy import as_messages
from paretoalign.rewards.genarm_config import GenARMConfig
from paretoalign.train.sequences import (  # noqa: F401  (encode_pair, sequence_logprob_sums: public here too)
    encode_pair,
    pad_token_id,
    reply_end_token_id,
    row_logprob_sums,
    sequence_logprob_sums,
)

TRAINING_RECORD = "genarm_training.json"
"""Written beside the saved model: the config and the per-step metrics."""


def response_logprob_sums(model, tokenizer, prompts: Sequence[Prompt], responses: Sequence[str],
                          max_length: int = 512) -> torch.Tensor:
    """log pi(response | prompt) per row: the sum of the response tokens' log-probs (plus the reply-end token)."""
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses", field="responses")
    if not prompts:
        return torch.zeros(0)
    end_id = reply_end_token_id(tokenizer, model)
    rows = [encode_pair(tokenizer, p, r, max_length, end_id)[:2] for p, r in zip(prompts, responses, strict=True)]
    return row_logprob_sums(model, rows, pad_token_id(tokenizer))


def genarm_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, beta_r: float) -> torch.Tensor:
    """Mean of -log sigmoid(beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x))) over pairs."""
    return -F.logsigmoid(beta_r * (chosen_logps - rejected_logps)).mean()


def _wrap_lora(model, config: GenARMConfig):
    if importlib.util.find_spec("peft") is None:
        raise InputError("lora=True needs the optional 'peft' package: run `pip install peft`, or set lora=False "
                         "for full fine-tuning", field="lora")
    from peft import LoraConfig

    from paretoalign.train.policy_setup import peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=config.lora_target_modules)
    return peft_model(model, lora)


def _config_record(config: GenARMConfig) -> dict[str, Any]:
    record = dataclasses.asdict(config)
    record["effective_learning_rate"] = config.effective_learning_rate
    return record


def train_autoregressive_rm(config: GenARMConfig, pairs: Sequence[PreferencePair], model=None,
                            tokenizer=None, *, overwrite: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train a GenARM autoregressive RM on preference pairs; return (the model in eval mode, training stats).

    A `model` object passed in is trained in place (with LoRA, the returned model is a new merged one).
    `config.output_dir` is checked before anything loads (missing, empty or a previous one; else InputError unless
    `overwrite`; see `paretoalign.output_paths`).
    """
    if config.output_dir:
        from paretoalign.output_paths import GENARM, check_output_dir, config_input_paths

        check_output_dir(config.output_dir, GENARM, inputs=config_input_paths(config), overwrite=overwrite,
                         field="output_dir")
    if not pairs:
        raise InputError("no preference pairs to train on", field="pairs")
    if model is None:
        model, loaded_tokenizer = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code)
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    elif tokenizer is None:
        raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
    device = torch.device(config.device) if config.device else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    model.to(device)
    torch.manual_seed(config.seed)
    if config.lora:
        model = _wrap_lora(model, config)
    model.train(config.dropout)

    end_id = reply_end_token_id(tokenizer, model)
    encoded = []
    truncated = 0
    for pair in pairs:
        messages = as_messages(pair.prompt)
        try:
            chosen = encode_pair(tokenizer, messages, pair.chosen, config.max_length, end_id)
            rejected = encode_pair(tokenizer, messages, pair.rejected, config.max_length, end_id)
        except InputError as exc:
            raise InputError(exc.reason, path=pair.source or None, field=exc.field) from None
        truncated += int(chosen[2]) + int(rejected[2])
        encoded.append((chosen[:2], rejected[:2]))

    lr = config.effective_learning_rate
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=config.weight_decay)
    order_rng = torch.Generator().manual_seed(config.seed)
    pad_id = pad_token_id(tokenizer)
    micro = config.micro_batch_size or config.batch_size
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    progress = None
    if config.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, desc="GenARM RM", unit="step")
    history: list[dict[str, float]] = []
    step = 0
    while step < total_steps:
        epoch = step // steps_per_epoch
        order = torch.randperm(len(encoded), generator=order_rng).tolist()
        for start in range(0, len(order), config.batch_size):
            if step >= total_steps:
                break
            batch = [encoded[i] for i in order[start: start + config.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            chosen_all, rejected_all = [], []
            for m in range(0, len(batch), micro):
                part = batch[m: m + micro]
                logps = row_logprob_sums(model, [c for c, _ in part] + [r for _, r in part], pad_id)
                chosen, rejected = logps[: len(part)], logps[len(part):]
                (genarm_loss(chosen, rejected, config.beta_r) * (len(part) / len(batch))).backward()
                chosen_all.append(chosen.detach())
                rejected_all.append(rejected.detach())
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            step += 1
            chosen_t, rejected_t = torch.cat(chosen_all).cpu(), torch.cat(rejected_all).cpu()
            history.append({
                "step": step, "epoch": epoch,
                "loss": float(genarm_loss(chosen_t, rejected_t, config.beta_r)),
                "accuracy": float((chosen_t > rejected_t).float().mean()),
                "margin": float(config.beta_r * (chosen_t - rejected_t).mean()),
                "chosen_logp": float(chosen_t.mean()), "rejected_logp": float(rejected_t.mean()),
            })
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{history[-1]['loss']:.4f}", acc=f"{history[-1]['accuracy']:.2f}")
    if progress is not None:
        progress.close()

    if config.lora:
        model = model.merge_and_unload()
    model.eval()
    stats: dict[str, Any] = {"steps": history, "num_pairs": len(encoded), "num_steps": step,
                             "truncated_rows": truncated, "learning_rate": lr,
                             "output_dir": str(config.output_dir) if config.output_dir else None}
    if config.output_dir:
        save_autoregressive_rm(model, tokenizer, config.output_dir,
                               record={"config": _config_record(config), "stats": stats}, overwrite=overwrite)
    return model, stats


def save_autoregressive_rm(model, tokenizer, output_dir: str | Path, record: dict[str, Any] | None = None, *,
                           overwrite: bool = False) -> Path:
    """Write model (safetensors), tokenizer and the training record (`record`, {} when None) to `output_dir`
    atomically; the record file marks the folder as ours (a folder holding anything else: InputError unless
    `overwrite`)."""
    from paretoalign.output_paths import GENARM, check_output_dir

    check_output_dir(output_dir, GENARM, overwrite=overwrite, field="output_dir")
    from paretoalign.embed.models import no_progress_bars

    with atomic_directory(output_dir) as tmp, no_progress_bars():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / TRAINING_RECORD, record if record is not None else {})
    return Path(output_dir)
