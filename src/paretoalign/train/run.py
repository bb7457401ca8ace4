"""One training run's shared machinery: model + optimizer set-up, resume, optimizer steps, metrics, saving.

Supports:

- full fine-tuning or LoRA (`policy_setup`), AdamW, gradient accumulation, global-norm clipping;
- ``accelerate`` for device placement and backward (``accelerate launch`` shards every batch across processes; only
  the single-process CPU path is tested here);
- resume: `start_run` restores weights, optimizer state and the step from ``run_dir/checkpoint``; the trainers draw
  every random number from (seed, step), so a resumed run reproduces an uninterrupted one;
- metrics per step to ``run_dir/metrics.jsonl`` (and TensorBoard), a tqdm progress bar;
- saving the final policy as a plain transformers directory (LoRA merged, safetensors) to ``run_dir/policy``
  atomically, with the training record beside it.

Assumes one method per run directory; trainers compose these functions rather than subclass anything.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from paretoalign.atomic_io import atomic_directory, write_json_atomic
from paretoalign.embed.chat_format import pad_token_id
from paretoalign.errors import InputError
from paretoalign.output_paths import TRAINING_RECORD
from paretoalign.train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    check_resumable,
    config_record,
    load_checkpoint,
    restore_optimizer,
    restore_trainable_,
    save_checkpoint,
)
from paretoalign.train.metrics import MetricsLog
from paretoalign.train.policy_setup import (
    is_peft_model,
    load_policy_for_training,
    trainable_parameters,
    training_device,
)
from paretoalign.train.sequences import reply_end_token_id
from paretoalign.train.training_config import PolicyTrainingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from paretoalign.embed.protocols import CausalLM, Tokenizer

POLICY_DIR = "policy"
"""The saved policy inside a run directory (what `paretoalign front` and `merge` read)."""


@dataclass
class TrainingRun:
    """State of one run; trainers read and advance it."""

    method: str
    config: PolicyTrainingConfig
    model: torch.nn.Module
    """The module to run forward passes with gradients (accelerate-prepared: possibly a wrapper of `policy`)."""
    policy: CausalLM
    """The unwrapped policy (sampling, reference switch, effective weights, saving)."""
    tokenizer: Tokenizer
    optimizer: torch.optim.Optimizer
    accelerator: Any
    total_steps: int
    run_dir: Path | None
    metrics: MetricsLog
    step: int = 0
    checkpoint: Checkpoint | None = None
    pad_id: int = 0
    end_id: int | None = None
    started: float = field(default_factory=time.perf_counter)
    progress: Any = None

    @property
    def device(self) -> torch.device:
        """Where the policy's weights live."""
        return next(self.policy.parameters()).device

    @property
    def done(self) -> bool:
        """Whether every step has run."""
        return self.step >= self.total_steps

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This process's share of a batch (all of it in a single process)."""
        n, i = self.accelerator.num_processes, self.accelerator.process_index
        return list(items)[i::n]

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of `loss`."""
        self.accelerator.backward(loss)

    def optimizer_step(self) -> float | None:
        """Clip, step and zero the gradients; returns the pre-clip gradient norm when clipping."""
        norm = None
        params = list(trainable_parameters(self.policy).values())
        if self.config.max_grad_norm is not None:
            norm = float(self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return norm

    def log(self, record: dict[str, Any]) -> None:
        """Record this step's metrics, advance the progress bar, checkpoint when due."""
        record = {"step": self.step, **record, "elapsed_s": time.perf_counter() - self.started}
        if self.accelerator.is_main_process:
            self.metrics.log(record)
        if self.progress is not None:
            self.progress.update(1)
            shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "reward", "kl", "accuracy")}
            self.progress.set_postfix(shown)

    def checkpoint_due(self) -> bool:
        """Whether a checkpoint should be written after this step."""
        every = self.config.save_every
        return self.run_dir is not None and every is not None and self.step % every == 0 and not self.done


def warn_cut_rows(run: TrainingRun, method: str, cut_rows: int, num_pairs: int, *, cut_pairs: int | None = None,
                  rule: str = "prompt from the left first, then the response from the right") -> None:
    """One stderr line (main process only) when pair rows were longer than max_length and were cut by `rule`."""
    if not cut_rows or not run.accelerator.is_main_process:
        return
    pairs = "" if cut_pairs is None else f" ({cut_pairs:,} of {num_pairs:,} pairs)"
    print(f"{method}: {cut_rows:,} of {2 * num_pairs:,} rows{pairs} are longer than max_length="
          f"{run.config.max_length} tokens and were cut ({rule}); raise max_length to keep more", file=sys.stderr)


def check_run_dir(method: str, config: PolicyTrainingConfig, *, overwrite: bool = False) -> None:
    """InputError, before any work, unless ``config.output_dir`` may hold a `method` run: missing, empty or a run of
    the same method (resumed), or any folder with `overwrite` (then replaced). See `paretoalign.output_paths`."""
    if config.output_dir:
        from paretoalign.output_paths import check_output_dir, config_input_paths, training_run

        check_output_dir(config.output_dir, training_run(method), inputs=config_input_paths(config),
                         overwrite=overwrite, field="output_dir")


def claim_run(method: str, config: PolicyTrainingConfig, *, overwrite: bool = False) -> None:
    """Check ``config.output_dir`` again and mark it as a `method` run (with `overwrite`: emptied first)."""
    if config.output_dir:
        from paretoalign.output_paths import claim_run_dir, config_input_paths

        claim_run_dir(config.output_dir, method, overwrite=overwrite, inputs=config_input_paths(config))


def start_run(method: str, config: PolicyTrainingConfig, total_steps: int, *, model: CausalLM | None = None,
              tokenizer: Tokenizer | None = None, overwrite: bool = False, trainable_modules: Sequence[str] = ()
              ) -> TrainingRun:
    """Load the policy, build AdamW, and restore ``output_dir/checkpoint`` when resuming.

    ``output_dir`` is checked first (`check_run_dir`) and claimed (`claim_run`) once the policy has loaded; with
    `overwrite`, a folder that held anything (a previous run included) is emptied and the run starts over.
    `trainable_modules`: top-level modules trained in full even with LoRA (a reward head).
    """
    from accelerate import Accelerator

    if total_steps < 1:
        raise InputError(f"nothing to train: {total_steps} steps", field="max_steps")
    check_run_dir(method, config, overwrite=overwrite)
    policy, tokenizer = load_policy_for_training(config, model, tokenizer, trainable_modules=trainable_modules)
    params = list(trainable_parameters(policy).values())
    if not params:
        raise InputError("the policy has no trainable parameters", field="lora_target_modules")
    optimizer = torch.optim.AdamW(params, lr=config.effective_learning_rate, weight_decay=config.weight_decay)
    accelerator = Accelerator(cpu=training_device(config).type == "cpu")
    prepared, optimizer = accelerator.prepare(policy, optimizer)
    run_dir = Path(config.output_dir) if config.output_dir else None
    if run_dir is not None and accelerator.is_main_process:
        claim_run(method, config, overwrite=overwrite)
    accelerator.wait_for_everyone()
    checkpoint = load_checkpoint(run_dir) if run_dir is not None and config.resume else None
    step = 0
    if checkpoint is not None:
        check_resumable(checkpoint, config, run_dir)
        restore_trainable_(policy, checkpoint.trainable)
        restore_optimizer(optimizer, checkpoint.optimizer_tensors, checkpoint.optimizer_meta)
        step = checkpoint.step
    metrics = MetricsLog(run_dir if accelerator.is_main_process else None, resume_step=step,
                         tensorboard=config.tensorboard and accelerator.is_main_process)
    run = TrainingRun(method=method, config=config, model=prepared, policy=policy, tokenizer=tokenizer,
                      optimizer=optimizer, accelerator=accelerator, total_steps=total_steps, run_dir=run_dir,
                      metrics=metrics, step=step, checkpoint=checkpoint, pad_id=pad_token_id(tokenizer),
                      end_id=reply_end_token_id(tokenizer, policy))
    if checkpoint is not None:
        run.started -= checkpoint.elapsed_s  # elapsed_s (metrics, train_s) stays cumulative across resumes
        if accelerator.is_main_process:
            print(f"{method}: resuming from step {step} of {total_steps} ({run_dir / CHECKPOINT_DIR})",
                  file=sys.stderr)
    if config.progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        run.progress = tqdm(total=total_steps, initial=step, desc=method, unit="step")
    return run


def write_checkpoint(run: TrainingRun, *, method_state: dict[str, Any] | None = None,
                     tensor_groups: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Save a resumable checkpoint of the run (main process only)."""
    if run.run_dir is None or not run.accelerator.is_main_process:
        return
    save_checkpoint(run.run_dir, step=run.step, trainable=trainable_parameters(run.policy), optimizer=run.optimizer,
                    config=run.config, method_state=method_state, tensor_groups=tensor_groups,
                    elapsed_s=time.perf_counter() - run.started)


def merged_policy(policy: torch.nn.Module) -> torch.nn.Module:
    """A plain model with LoRA merged in (the peft wrapper is consumed), or the model itself."""
    return policy.merge_and_unload() if is_peft_model(policy) else policy


def save_policy(model: PreTrainedModel, tokenizer: Tokenizer, directory: str | Path, record: dict[str, Any]) -> Path:
    """Write a plain causal LM (safetensors), its tokenizer and `record` to `directory` atomically."""
    from paretoalign.embed.models import no_progress_bars

    with atomic_directory(directory) as tmp, no_progress_bars():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / TRAINING_RECORD, record)
    return Path(directory)


ModelSaver = Callable[[Any, Any, Path, dict[str, Any]], Path]
"""(model, tokenizer, directory, training record) -> the directory written."""


def finish_run(run: TrainingRun, stats: dict[str, Any], *, prepare: Callable[[Any], Any] | None = None,
               save: ModelSaver = save_policy, output_name: str = POLICY_DIR) -> Any:
    """Close logging, merge LoRA, save the policy to ``run_dir/policy``; returns the plain trained model.

    `prepare` turns the merged model into what is saved and returned (e.g. a sequence classifier), `save` writes it
    to ``run_dir/<output_name>``."""
    if run.progress is not None:
        run.progress.close()
    run.metrics.close()
    model = merged_policy(run.accelerator.unwrap_model(run.model))
    if prepare is not None:
        model = prepare(model)
    model.eval()
    stats = {**stats, "method": run.method, "steps": run.step, "train_s": time.perf_counter() - run.started}
    if run.run_dir is not None and run.accelerator.is_main_process:
        record = {"method": run.method, "config": config_record(run.config), "stats": stats}
        save(model, run.tokenizer, run.run_dir / output_name, record)
        write_json_atomic(run.run_dir / TRAINING_RECORD, record)
    return model
