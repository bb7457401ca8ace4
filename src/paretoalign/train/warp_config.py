"""Configuration of WARP (Ramé et al. 2024): weight averaged rewarded policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paretoalign.errors import InputError
from paretoalign.train.online_config import OnlineTrainingConfig
from paretoalign.train.reward_weighting import WEIGHTING_MODES, WEIGHTING_SPECS
from paretoalign.validation import positive_float, positive_int, unit_interval


@dataclass
class WARPConfig(OnlineTrainingConfig):
    """WARP settings: the online fields plus M runs, the EMA anchor, SLERP, LITI and iterations."""

    num_runs: int = field(default=2, metadata={"help": "M: independent RL runs per iteration, merged by SLERP."})
    iterations: int = field(
        default=1, metadata={"help": "WARP iterations: each starts from the previous iteration's LITI policy."})
    samples_per_prompt: int = field(
        default=4, metadata={"help": "Samples per prompt per step (>= 2: REINFORCE's leave-one-out baseline)."})
    kl_beta: float = field(
        default=0.1,
        metadata={"help": "beta of the KL-regularised reward R(y) - beta * (log pi(y) - log pi_ema(y))."})
    ema_rate: float = field(
        default=0.01, metadata={"help": "mu: the anchor follows theta_ema <- (1-mu) theta_ema + mu theta each step."})
    slerp_lambda: float = field(
        default=0.5, metadata={"help": "lambda of SLERP for M = 2 (M > 2: an equal-weight iterative fold)."})
    liti_eta: float = field(
        default=0.5,
        metadata={"help": "eta of LITI: theta_eta = (1-eta) theta_init + eta theta_slerp, the next iteration's init "
                          "and the saved policy."})
    eta_grid: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        metadata={"help": "After the last iteration, also save theta_eta for each of these eta (run_dir/eta-<eta>): "
                          "the reward-KL front over eta (`paretoalign front`)."})
    batch_size: int = field(default=4, metadata={"help": "Prompts per optimizer step."})
    weighting: str = field(
        default="fixed",
        metadata={"help": "How several rewards (a reward set's components) are weighted each step: fixed (the "
                          "configured weights), hypervolume or maxmin (see train.reward_weighting); the gradient "
                          "modes (gradient, pama) are GRPO-only."})
    weighting_params: dict[str, Any] | None = field(
        default=None, metadata={"help": "Parameters of the weighting mode (its own names; see its help)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self.num_runs, "num_runs")
        if self.num_runs < 2:
            raise InputError(f"WARP merges M >= 2 runs, got num_runs={self.num_runs}", field="num_runs")
        positive_int(self.iterations, "iterations")
        positive_int(self.samples_per_prompt, "samples_per_prompt")
        if self.samples_per_prompt < 2:
            raise InputError("the leave-one-out baseline needs samples_per_prompt >= 2", field="samples_per_prompt")
        positive_float(self.kl_beta, "kl_beta")
        unit_interval(self.ema_rate, "ema_rate", open_low=True)
        unit_interval(self.slerp_lambda, "slerp_lambda")
        unit_interval(self.liti_eta, "liti_eta")
        if not isinstance(self.eta_grid, list):
            raise InputError("eta_grid must be a list of numbers in [0, 1]", field="eta_grid")
        for eta in self.eta_grid:
            unit_interval(eta, "eta_grid")
        if not isinstance(self.weighting, str) or self.weighting not in WEIGHTING_MODES:
            raise InputError(f"unknown weighting mode {self.weighting!r}; choose one of {', '.join(WEIGHTING_MODES)}",
                             field="weighting")
        if WEIGHTING_SPECS[self.weighting].needs_gradients:
            raise InputError(f"weighting={self.weighting!r} mixes per-objective gradients, which WARP's REINFORCE "
                             "does not compute: use fixed, hypervolume or maxmin (or train with grpo)",
                             field="weighting")
        if self.weighting_params is not None and not isinstance(self.weighting_params, dict):
            raise InputError("weighting_params must be a mapping of the mode's parameters or null",
                             field="weighting_params")
