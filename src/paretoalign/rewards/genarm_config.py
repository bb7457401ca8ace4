"""Configuration of the GenARM autoregressive reward model trainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.training_config import positive_float, positive_int

PAPER_LORA_LEARNING_RATE = 5e-4
"""The GenARM paper's learning rate for its LoRA-trained autoregressive RMs."""
FULL_FINETUNE_LEARNING_RATE = 1e-5
"""Default learning rate when every weight is trained (5e-4 would wreck a fully fine-tuned LM)."""


@dataclass
class GenARMConfig:
    """Every setting of `train_autoregressive_rm`; YAML files and `key=value` overrides fill these fields."""

    model: str = field(
        default="smollm2",
        metadata={"help": "Causal LM the autoregressive RM starts from: an alias ('smollm2', 'gemma3-270m'), a local "
                          "directory, a .gguf file or a hub id. It must share the tokenizer of the base LM it will "
                          "guide."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the trained RM (safetensors + tokenizer) is written (None: not saved)."})
    beta_r: float = field(
        default=0.05,
        metadata={"help": "Temperature beta_r of the loss -log sigmoid(beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x))) "
                          "(the paper uses 0.05)."})
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW learning rate; None: 5e-4 with LoRA (the paper's setting), 1e-5 for full "
                          "fine-tuning."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    epochs: int = field(default=1, metadata={"help": "Passes over the pairs (the paper trains for one epoch)."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (None: run all epochs)."})
    batch_size: int = field(default=32, metadata={"help": "Preference pairs per optimizer step (the paper: 32)."})
    micro_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per forward pass; gradients are accumulated up to batch_size (None: batch_size)."})
    max_length: int = field(
        default=512,
        metadata={"help": "Token budget per (prompt, response); the prompt is cut from the left first, then the "
                          "response from the right."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the global gradient norm to this value (None: no clipping)."})
    dropout: bool = field(
        default=False,
        metadata={"help": "Keep the model's dropout active while training (False: train in eval mode, as TRL's DPO "
                          "trainer does by default)."})
    lora: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters (needs the optional 'peft' package) and merge them into the saved "
                          "model; False: full fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch (only with dropout=True)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names LoRA adapts (None: peft's default for the architecture)."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation of LoRA weights and the pair order."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the model's repository."})
    device: str | None = field(
        default=None, metadata={"help": "Torch device to train on (None: CUDA if available, else CPU)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise InputError(f"model must be a non-empty string, got {self.model!r}", field="model")
        positive_float(self.beta_r, "beta_r")
        if self.learning_rate is not None:
            positive_float(self.learning_rate, "learning_rate")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"weight_decay must be >= 0, got {self.weight_decay}", field="weight_decay")
        positive_int(self.epochs, "epochs")
        if self.max_steps is not None:
            positive_int(self.max_steps, "max_steps")
        positive_int(self.batch_size, "batch_size")
        if self.micro_batch_size is not None:
            positive_int(self.micro_batch_size, "micro_batch_size")
        positive_int(self.max_length, "max_length")
        if self.max_length < 2:
            raise InputError(f"max_length must be >= 2 (one prompt and one response token), got {self.max_length}",
                             field="max_length")
        if self.max_grad_norm is not None:
            positive_float(self.max_grad_norm, "max_grad_norm")
        if self.lora:
            positive_int(self.lora_r, "lora_r")
            positive_float(self.lora_alpha, "lora_alpha")
            if not (0.0 <= self.lora_dropout < 1.0):
                raise InputError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}", field="lora_dropout")

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate used: the configured one, else the default for LoRA or full fine-tuning."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return PAPER_LORA_LEARNING_RATE if self.lora else FULL_FINETUNE_LEARNING_RATE

