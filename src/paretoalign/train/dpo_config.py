"""Configuration of DPO training (Rafailov et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.training_config import PolicyTrainingConfig
from paretoalign.validation import positive_float, positive_int


@dataclass
class DPOConfig(PolicyTrainingConfig):
    """DPO settings: the shared training fields plus the data and beta."""

    data: str | None = field(
        default=None,
        metadata={"help": "Preference pairs (JSONL/JSON/CSV/Parquet with prompt, chosen, rejected; standard or "
                          "conversational); None: the bundled default pairs."})
    objective: str | None = field(
        default=None,
        metadata={"help": "Keep only pairs whose 'objective' field equals this (None: every pair)."})
    max_pairs: int | None = field(default=None, metadata={"help": "Use at most this many pairs (file order)."})
    beta: float = field(
        default=0.1,
        metadata={"help": "KL strength beta: the implicit reward is beta * log pi/pi_ref; smaller moves further."})
    epochs: int = field(default=1, metadata={"help": "Passes over the pairs (max_steps, when set, stops earlier)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_float(self.beta, "beta")
        positive_int(self.epochs, "epochs")
        if self.max_pairs is not None:
            positive_int(self.max_pairs, "max_pairs")
        if self.data is not None and (not isinstance(self.data, str) or not self.data):
            raise InputError("data must be a file path or null (the bundled pairs)", field="data")
