"""Configuration of GenARM autoregressive reward-LM training (Xu et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.training_config import PolicyTrainingConfig
from paretoalign.validation import positive_float, positive_int

PAPER_LORA_LEARNING_RATE = 5e-4
"""The GenARM paper's learning rate for its LoRA-trained autoregressive RMs."""
FULL_FINETUNE_LEARNING_RATE = 1e-5
"""Default learning rate when every weight is trained (5e-4 would wreck a fully fine-tuned LM)."""


@dataclass
class GenARMConfig(PolicyTrainingConfig):
    """GenARM settings: the shared training fields (GenARM's own defaults) plus beta_r and epochs."""

    model: str = field(
        default="smollm2",
        metadata={"help": "Causal LM the autoregressive RM starts from: an alias ('smollm2', 'gemma3-270m'), a local "
                          "directory, a .gguf file or a hub id. It must share the tokenizer of the base LM it will "
                          "guide."})
    reference: str | None = field(
        default=None,
        metadata={"help": "Not used: GenARM's loss has no reference model (must stay null)."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Run folder: the trained RM (a plain transformers model: safetensors + tokenizer, LoRA "
                          "merged), genarm_training.json, checkpoints and metrics.jsonl (None: not saved)."})
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW learning rate; None: 5e-4 with LoRA (the paper's setting), 1e-5 for full "
                          "fine-tuning."})
    batch_size: int = field(default=32, metadata={"help": "Preference pairs per optimizer step (the paper: 32)."})
    lora: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters (needs the optional 'peft' package) and merge them into the saved "
                          "model; False: full fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha."})
    beta_r: float = field(
        default=0.05,
        metadata={"help": "Temperature beta_r of the loss -log sigmoid(beta_r * (log pi_r(y_w|x) - log pi_r(y_l|x))) "
                          "(the paper uses 0.05)."})
    epochs: int = field(default=1, metadata={"help": "Passes over the pairs (the paper trains for one epoch; "
                                                     "max_steps, when set, stops earlier)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference is not None:
            raise InputError("GenARM trains without a reference model: leave reference unset (null)",
                             field="reference")
        positive_float(self.beta_r, "beta_r")
        positive_int(self.epochs, "epochs")

    @property
    def effective_learning_rate(self) -> float:
        """The configured learning rate, else the GenARM default for LoRA or full fine-tuning."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return PAPER_LORA_LEARNING_RATE if self.lora else FULL_FINETUNE_LEARNING_RATE
