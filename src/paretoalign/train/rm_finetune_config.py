"""Configuration of fine-tuned reward models: Bradley–Terry on an LM (bt_finetune) and GRM (Yang et al. 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.training_config import PolicyTrainingConfig
from paretoalign.validation import positive_float, positive_int, unit_interval

RM_METHODS = ("bt_finetune", "grm")
"""The `train-rm` methods this config serves (`armo`, the default, is `ArmoRMConfig`)."""
GRM_REGULARIZERS = ("sft", "sft_nll", "dpo", "dpo_noref")
SPLITS = ("train", "test")
RM_LORA_LEARNING_RATE = 5e-5
RM_FULL_FINETUNE_LEARNING_RATE = 1e-5
"""Full fine-tuning default: the scale TRL's RewardTrainer and the GRM paper's code use (policies: 1e-6)."""


@dataclass
class RMFinetuneConfig(PolicyTrainingConfig):
    """Settings of `train_reward_finetune`: the shared training fields plus the data, heads and loss."""

    method: str = field(
        default="bt_finetune",
        metadata={"help": "bt_finetune: causal LM backbone + linear score head, loss -log sigmoid(r_w - r_l [- m]). "
                          "grm: the same with the LM head kept and a text-generation regulariser on the same "
                          "hidden states, loss (1 - grm_alpha) L_BT + grm_alpha L_reg (Yang et al. 2024)."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "AdamW learning rate; None: 5e-5 with LoRA, 1e-5 for full fine-tuning."})
    reference: str | None = field(
        default=None,
        metadata={"help": "Only for grm_regularizer=dpo: the frozen reference LM (None: the initial backbone; with "
                          "LoRA the base with adapters switched off)."})
    data: str | None = field(
        default=None,
        metadata={"help": "Preference pairs (JSONL/JSON/CSV/Parquet with prompt, chosen, rejected and optional "
                          "objective, margin); None with no sources: the bundled default pairs."})
    sources: str | None = field(
        default=None,
        metadata={"help": "Instead of data: a YAML sources config, or 'shared' for all of the shared data (needs "
                          "shared_dir); only its pairs are used (rating sources are ignored)."})
    shared_dir: str | None = field(
        default=None, metadata={"help": "Folder '${shared}' in the sources config stands for (e.g. ../shared/data)."})
    split: str | None = field(
        default=None,
        metadata={"help": "Keep one side ('train' or 'test') of the project's held-out split of the pairs (by prompt); "
                          "None: all of them. Evaluate on 'test' after training on 'train'."})
    objective: str | None = field(
        default=None, metadata={"help": "Keep only pairs whose objective equals this (None: every pair)."})
    max_pairs: int | None = field(
        default=None, metadata={"help": "Use at most this many pairs (file order, before the validation slice)."})
    per_objective_heads: bool = field(
        default=False,
        metadata={"help": "False: one scalar reward head trained on every pair. True: one head (output) per "
                          "objective, and each pair's loss is on the head of its own objective."})
    objectives: list[str] | None = field(
        default=None,
        metadata={"help": "With per_objective_heads: the heads, in order (pairs of other objectives are left out); "
                          "None: the sorted objectives of the data."})
    use_margin: bool = field(
        default=False,
        metadata={"help": "Use each pair's 'margin' field m (0 where absent): loss -log sigmoid(r_w - r_l - m)."})
    epochs: int = field(default=1, metadata={"help": "Passes over the pairs (max_steps, when set, stops earlier)."})
    val_fraction: float = field(
        default=0.05,
        metadata={"help": "Fraction of the prompts held out (seeded, by prompt) as a validation slice, whose pair "
                          "accuracy is measured at the end and written to training.json; 0: none."})
    grm_alpha: float = field(
        default=0.01,
        metadata={"help": "GRM: weight alpha in [0, 1] of the regulariser, loss (1 - alpha) L_BT + alpha L_reg "
                          "(the paper's default 0.01; 0 is plain BT)."})
    grm_regularizer: str = field(
        default="sft",
        metadata={"help": "GRM regulariser on the kept LM head: 'sft' (the paper's: -log sigmoid(grm_beta log "
                          "pi(y_w|x)), log pi summed over the chosen reply's tokens), 'sft_nll' (the chosen reply's "
                          "mean token NLL), 'dpo' (-log sigmoid(grm_beta (log pi/pi_ref(y_w) - log pi/pi_ref(y_l)))) "
                          "or 'dpo_noref' (the same without pi_ref)."})
    grm_beta: float = field(
        default=0.1, metadata={"help": "GRM: beta of the 'sft', 'dpo' and 'dpo_noref' regularisers (paper: 0.1)."})

    def __post_init__(self) -> None:
        if self.method not in RM_METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of armo, {', '.join(RM_METHODS)}",
                             field="method")
        super().__post_init__()
        if self.split is not None and self.split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS} or null, got {self.split!r}", field="split")
        for name in ("data", "sources", "shared_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InputError(f"{name} must be a non-empty path or null", field=name)
        if self.data is not None and self.sources is not None:
            raise InputError("give data (a pairs file) or sources (a sources config), not both", field="sources")
        if self.sources == "shared" and not self.shared_dir:
            raise InputError("sources=shared needs shared_dir=DIR (the shared data folder, e.g. ../shared/data)",
                             field="shared_dir")
        if self.max_pairs is not None:
            positive_int(self.max_pairs, "max_pairs")
        positive_int(self.epochs, "epochs")
        if self.objectives is not None:
            if not self.per_objective_heads:
                raise InputError("objectives names the heads of per_objective_heads=true; with one scalar head, "
                                 "filter pairs with objective=NAME", field="objectives")
            if not self.objectives or len(set(self.objectives)) != len(self.objectives):
                raise InputError(f"objectives must list distinct names, got {self.objectives}", field="objectives")
        if not (isinstance(self.val_fraction, (int, float)) and not isinstance(self.val_fraction, bool)
                and math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}", field="val_fraction")
        unit_interval(self.grm_alpha, "grm_alpha")
        if self.grm_regularizer not in GRM_REGULARIZERS:
            raise InputError(f"grm_regularizer must be one of {', '.join(GRM_REGULARIZERS)}, got "
                             f"{self.grm_regularizer!r}", field="grm_regularizer")
        positive_float(self.grm_beta, "grm_beta")

    @property
    def effective_learning_rate(self) -> float:
        """The configured learning rate, else the reward-model default for LoRA or full fine-tuning."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return RM_LORA_LEARNING_RATE if self.lora else RM_FULL_FINETUNE_LEARNING_RATE
