"""Configuration of MODPO training (Zhou et al. 2023)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.validation import positive_float

MARGIN_SOURCES = ("reward_model", "implicit")


@dataclass
class MODPOConfig(DPOConfig):
    """MODPO settings: DPO's plus the objective weights and where the margin rewards come from.

    `objective` names the objective whose preference pairs train the policy (weight w_0); `margin_objectives` name
    the others, whose rewards r_1: enter as a margin.
    """

    objective: str | None = field(
        default="helpfulness",
        metadata={"help": "Objective whose preference pairs are used (its weight is weights[0]); pairs are filtered "
                          "by their 'objective' field (null: every pair)."})
    margin_objectives: list[str] = field(
        default_factory=lambda: ["harmlessness"],
        metadata={"help": "The other objectives: their rewards r_1: give the margin. With margin_source="
                          "'reward_model', names of the RM's objectives; with 'implicit', labels of margin_policies."})
    weights: list[float] = field(
        default_factory=lambda: [0.5, 0.5],
        metadata={"help": "w in the simplex: [w_0 for `objective`, then one per margin objective]; must sum to 1, "
                          "w_0 > 0. Sweep it to trace a front."})
    margin_source: str = field(
        default="reward_model",
        metadata={"help": "'reward_model': per-objective rewards of our multi-objective RM; 'implicit': beta_i * "
                          "log pi_i/pi_ref of DPO-trained policies (margin_policies)."})
    reward_model: str = field(
        default="default",
        metadata={"help": "Reward model (margin_source='reward_model'): a folder from train-rm, `default` (the "
                          "shipped one), or a Hugging Face sequence-classification folder or hub id (labels as "
                          "objectives)."})
    margin_policies: list[str] | None = field(
        default=None,
        metadata={"help": "One DPO-trained policy directory per margin objective (margin_source='implicit')."})
    sweep_weights: list[list[float]] | None = field(
        default=None,
        metadata={"help": "Train one policy per weighting (each like `weights`) into output_dir/w-<w_0>-<w_1>-…, "
                          "sharing the margin computation: a front from one command. None: train `weights` only."})
    margin_betas: list[float] | None = field(
        default=None,
        metadata={"help": "The beta each margin policy was trained with (implicit reward scale; default: beta)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.margin_objectives, list) or not all(
                isinstance(n, str) and n for n in self.margin_objectives):
            raise InputError("margin_objectives must be a list of names", field="margin_objectives")
        if len(set(self.margin_objectives)) != len(self.margin_objectives):
            raise InputError("margin_objectives repeats a name", field="margin_objectives")
        check_simplex(self.weights, 1 + len(self.margin_objectives))
        if self.sweep_weights is not None:
            if not isinstance(self.sweep_weights, list) or not self.sweep_weights:
                raise InputError("sweep_weights must be a non-empty list of weightings", field="sweep_weights")
            for w in self.sweep_weights:
                try:
                    check_simplex(w, 1 + len(self.margin_objectives))
                except InputError as exc:
                    raise InputError(f"{exc.reason} (in sweep_weights)", field="sweep_weights") from None
        if self.margin_source not in MARGIN_SOURCES:
            raise InputError(f"margin_source must be one of {MARGIN_SOURCES}, got {self.margin_source!r}",
                             field="margin_source")
        if self.margin_source == "implicit":
            if not self.margin_policies or len(self.margin_policies) != len(self.margin_objectives):
                raise InputError(f"margin_source='implicit' needs one margin policy per margin objective "
                                 f"({len(self.margin_objectives)}), got {self.margin_policies!r}",
                                 field="margin_policies")
            if self.margin_betas is not None:
                if len(self.margin_betas) != len(self.margin_objectives):
                    raise InputError("margin_betas needs one value per margin policy", field="margin_betas")
                for b in self.margin_betas:
                    positive_float(b, "margin_betas")


def check_simplex(weights: list[float], size: int) -> None:
    """Raise InputError unless `weights` has `size` entries, each >= 0, w_0 > 0, summing to 1."""
    if not isinstance(weights, list) or len(weights) != size:
        raise InputError(f"weights needs {size} values (w_0 for the pair objective, then one per margin "
                         f"objective), got {weights!r}", field="weights")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0
           for w in weights):
        raise InputError(f"weights must be finite numbers >= 0, got {weights}", field="weights")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise InputError(f"weights must sum to 1, got {weights} (sum {sum(weights):.6g})", field="weights")
    if weights[0] <= 0:
        raise InputError("weights[0] (the pair objective's weight) must be > 0: MODPO divides by it",
                         field="weights")
