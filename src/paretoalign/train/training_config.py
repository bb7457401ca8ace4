"""Settings every policy trainer shares (model, reference, LoRA, optimizer, checkpoints, logging)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.validation import non_negative_float, positive_float, positive_int

LORA_LEARNING_RATE = 5e-5
"""Default learning rate with LoRA adapters."""
FULL_FINETUNE_LEARNING_RATE = 1e-6
"""Default learning rate when every weight is trained."""


@dataclass
class PolicyTrainingConfig:
    """Fields common to DPO, MODPO, BOND and WARP; each method's config adds its own."""

    model: str = field(
        default="smollm2",
        metadata={"help": "Policy to train: an alias ('smollm2', 'gemma3-270m'), a local directory, a .gguf file or "
                          "a hub id."})
    reference: str | None = field(
        default=None,
        metadata={"help": "Reference policy pi_ref (frozen): None means the initial policy itself (with LoRA it is "
                          "the base model with adapters switched off, so no second copy is held in memory)."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the trained policy, checkpoints and metrics.jsonl are written."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW learning rate; None: 5e-5 with LoRA, 1e-6 for full fine-tuning."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (None: the method's own default)."})
    batch_size: int = field(default=8, metadata={"help": "Examples (pairs or prompts) per optimizer step."})
    micro_batch_size: int | None = field(
        default=None,
        metadata={"help": "Examples per forward pass; gradients are accumulated up to batch_size (None: batch_size)."})
    max_length: int = field(
        default=512,
        metadata={"help": "Token budget per (prompt, response) row; prompts are cut from the left first."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the global gradient norm to this value (None: no clipping)."})
    lora: bool = field(
        default=True,
        metadata={"help": "Train LoRA adapters (peft) and merge them into the saved policy; False: full fine-tune."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scaling alpha."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names LoRA adapts (None: peft's default for the architecture)."})
    seed: int = field(
        default=0,
        metadata={"help": "Seed of LoRA initialisation, data order and sampling; every random draw is a function of "
                          "(seed, step), so a resumed run reproduces an uninterrupted one."})
    save_every: int | None = field(
        default=None,
        metadata={"help": "Write a resumable checkpoint every this many steps (None: only at the end)."})
    resume: bool = field(
        default=True,
        metadata={"help": "Continue from output_dir/checkpoint when it exists (False: start over)."})
    tensorboard: bool = field(
        default=False,
        metadata={"help": "Also log metrics to TensorBoard in output_dir/tensorboard (needs the 'tensorboard' "
                          "package); metrics always go to output_dir/metrics.jsonl."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the model's repository."})
    device: str | None = field(
        default=None,
        metadata={"help": "Torch device (None: accelerate's choice: CUDA if available, else CPU)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self) -> None:
        for name in ("model",):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a non-empty string, got {value!r}", field=name)
        if self.reference is not None and (not isinstance(self.reference, str) or not self.reference):
            raise InputError("reference must be a non-empty model reference or null (the initial policy)",
                             field="reference")
        if self.learning_rate is not None:
            positive_float(self.learning_rate, "learning_rate")
        non_negative_float(self.weight_decay, "weight_decay")
        for name in ("max_steps", "micro_batch_size", "save_every"):
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        positive_int(self.batch_size, "batch_size")
        positive_int(self.max_length, "max_length")
        if self.max_length < 2:
            raise InputError(f"max_length must be >= 2, got {self.max_length}", field="max_length")
        if self.max_grad_norm is not None:
            positive_float(self.max_grad_norm, "max_grad_norm")
        if self.lora:
            positive_int(self.lora_r, "lora_r")
            positive_float(self.lora_alpha, "lora_alpha")

    @property
    def effective_learning_rate(self) -> float:
        """The configured learning rate, else the default for LoRA or full fine-tuning."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return LORA_LEARNING_RATE if self.lora else FULL_FINETUNE_LEARNING_RATE
