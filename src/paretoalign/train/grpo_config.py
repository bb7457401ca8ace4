"""Configuration of GRPO (Shao et al. 2024) with one or several rewards, Dr. GRPO and dynamic reward weighting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from paretoalign.errors import InputError
from paretoalign.train.advantages import BASELINES
from paretoalign.train.grpo_loss import LOSS_TYPES
from paretoalign.train.online_config import OnlineTrainingConfig
from paretoalign.train.reward_weighting import WEIGHTING_MODES
from paretoalign.validation import positive_int


@dataclass
class GRPOConfig(OnlineTrainingConfig):
    """GRPO settings: the online fields plus the group size, PPO-style clipping, the k3 KL and reward weighting."""

    num_generations: int = field(
        default=4,
        metadata={"help": "G: responses sampled per prompt per step (>= 2: advantages are normalised within each "
                          "prompt's group)."})
    num_iterations: int = field(
        default=1,
        metadata={"help": "mu: optimisation epochs over each sampled batch; each epoch is one optimizer update "
                          "(max_steps counts sampled batches, so a run makes max_steps * mu updates)."})
    epsilon: float = field(
        default=0.2, metadata={"help": "Lower clip range: the ratio pi/pi_old is clipped below at 1 - epsilon."})
    epsilon_high: float | None = field(
        default=None,
        metadata={"help": "Upper clip range: the ratio is clipped above at 1 + epsilon_high (None: epsilon; DAPO's "
                          "clip-higher uses a larger value)."})
    beta: float = field(
        default=0.04,
        metadata={"help": "Coefficient of the per-token k3 KL estimate to the reference policy (0: no KL term and "
                          "no reference forward pass)."})
    loss_type: str = field(
        default="grpo",
        metadata={"help": "'grpo': each response's token losses averaged, then responses averaged; 'dr_grpo': token "
                          "losses summed over max_new_tokens (a constant), no std scaling of rewards."})
    scale_rewards: bool | None = field(
        default=None,
        metadata={"help": "Divide advantages by their group's std (None: true for grpo, false for dr_grpo, which "
                          "refuses true)."})
    baseline: str = field(
        default="mean",
        metadata={"help": "Group baseline: 'mean' (GRPO) or 'leave_one_out' (RLOO: the mean of the other samples)."})
    weighting: str = field(
        default="fixed",
        metadata={"help": "How the rewards' weights are chosen each step: fixed, hypervolume, gradient, pama or "
                          "maxmin (see train.reward_weighting)."})
    weighting_params: dict[str, Any] | None = field(
        default=None, metadata={"help": "Parameters of the weighting mode (its own names; see its help)."})
    batch_size: int = field(default=4, metadata={"help": "Prompts per step (each gets num_generations samples)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self.num_generations, "num_generations")
        if self.num_generations < 2:
            raise InputError(f"GRPO normalises rewards within each prompt's group of samples, which needs at least 2 "
                             f"samples per prompt: num_generations must be >= 2, got {self.num_generations}",
                             field="num_generations")
        positive_int(self.num_iterations, "num_iterations")
        for name in ("epsilon", "epsilon_high"):
            value = getattr(self, name)
            if value is None and name == "epsilon_high":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}", field=name)
        if self.epsilon >= 1:
            raise InputError(f"epsilon must be < 1 (the ratio is clipped below at 1 - epsilon), got {self.epsilon}",
                             field="epsilon")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not (0 <= self.beta < math.inf):
            raise InputError(f"beta must be a finite number >= 0, got {self.beta!r}", field="beta")
        if self.loss_type not in LOSS_TYPES:
            raise InputError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}", field="loss_type")
        if self.scale_rewards is not None and not isinstance(self.scale_rewards, bool):
            raise InputError(f"scale_rewards must be true, false or null, got {self.scale_rewards!r}",
                             field="scale_rewards")
        if self.loss_type == "dr_grpo" and self.scale_rewards:
            raise InputError("Dr. GRPO does not divide advantages by the group std: leave scale_rewards null or set "
                             "it false", field="scale_rewards")
        if self.baseline not in BASELINES:
            raise InputError(f"baseline must be one of {BASELINES}, got {self.baseline!r}", field="baseline")
        if not isinstance(self.weighting, str) or self.weighting not in WEIGHTING_MODES:
            raise InputError(f"weighting must be one of {WEIGHTING_MODES}, got {self.weighting!r}",
                             field="weighting")
        if self.weighting_params is not None and not isinstance(self.weighting_params, dict):
            raise InputError("weighting_params must be a mapping of the mode's parameters or null",
                             field="weighting_params")

    @property
    def upper_epsilon(self) -> float:
        """epsilon_high, or epsilon when unset."""
        return float(self.epsilon if self.epsilon_high is None else self.epsilon_high)

    @property
    def scale(self) -> bool:
        """Whether advantages are divided by the group std (the loss type's default when unset)."""
        return self.loss_type == "grpo" if self.scale_rewards is None else bool(self.scale_rewards)
