"""Configuration of BOND and J-BOND (Sessa et al. 2024): Best-of-N distillation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.train.online_config import OnlineTrainingConfig
from paretoalign.validation import positive_int, unit_interval

VARIANTS = ("jbond", "bond")


@dataclass
class BONDConfig(OnlineTrainingConfig):
    """BOND settings: the online fields plus the variant, Jeffreys mix, N, anchor and KL strength."""

    variant: str = field(
        default="jbond",
        metadata={"help": "'jbond': J-BOND, Best-of-2 of an EMA anchor with the -log 16 backward reward; 'bond': "
                          "plain BOND toward Best-of-N of the fixed reference with Monte-Carlo quantiles p<=."})
    beta: float = field(
        default=0.5,
        metadata={"help": "Jeffreys mix: (1-beta) * forward KL (SFT on Best-of-N samples) + beta * backward KL "
                          "(policy gradient), beta in [0, 1]."})
    gamma: float = field(
        default=0.0,
        metadata={"help": "Weight of the extra KL(pi || anchor) regulariser (J-BOND) or KL(pi || pi_ref) (BOND), "
                          "summed over response tokens (exact over the vocabulary at each sampled prefix)."})
    n: int = field(
        default=4,
        metadata={"help": "BOND only: the N of the Best-of-N target (J-BOND always distils Best-of-2 of its anchor)."})
    quantile_samples: int = field(
        default=8,
        metadata={"help": "BOND only: reference samples per prompt for the Monte-Carlo estimate of p<=(y) "
                          "(>= n; the first n also give the forward term's Best-of-N sample)."})
    anchor_ema: float = field(
        default=0.02,
        metadata={"help": "J-BOND only: EMA rate eta of the anchor, theta_anc <- (1-eta) theta_anc + eta theta."})
    jbond_penalty: float = field(
        default=math.log(16),
        metadata={"help": "J-BOND only: backward reward is -jbond_penalty when the policy sample is worse than both "
                          "anchor samples, else 0 (the paper: log 16)."})
    samples_per_prompt: int = field(default=1, metadata={"help": "Policy samples per prompt per step."})
    batch_size: int = field(default=4, metadata={"help": "Prompts per optimizer step."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise InputError(f"variant must be one of {VARIANTS}, got {self.variant!r}", field="variant")
        unit_interval(self.beta, "beta")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise InputError(f"gamma must be >= 0, got {self.gamma}", field="gamma")
        positive_int(self.n, "n")
        positive_int(self.quantile_samples, "quantile_samples")
        positive_int(self.samples_per_prompt, "samples_per_prompt")
        if self.variant == "bond":
            if self.n < 2:
                raise InputError(f"BOND needs n >= 2, got {self.n}", field="n")
            if self.quantile_samples < self.n:
                raise InputError(f"quantile_samples ({self.quantile_samples}) must be >= n ({self.n})",
                                 field="quantile_samples")
        if self.variant == "jbond" and self.reference is not None:
            raise InputError("J-BOND's reference is the initial policy, where its EMA anchor starts: leave reference "
                             "null (train from the reference by setting model), or use variant=bond",
                             field="reference")
        unit_interval(self.anchor_ema, "anchor_ema", open_low=True)
        if not (math.isfinite(self.jbond_penalty) and self.jbond_penalty >= 0):
            raise InputError(f"jbond_penalty must be >= 0, got {self.jbond_penalty}", field="jbond_penalty")
