"""Settings of the online trainers (BOND, J-BOND, WARP, GRPO): prompts, the reward (one RM, or several rewards as a
`RewardSet` spec, optionally transformed), and how responses are sampled."""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.train.advantages import AGGREGATIONS
from paretoalign.train.training_config import PolicyTrainingConfig
from paretoalign.validation import positive_int


@dataclass
class OnlineTrainingConfig(PolicyTrainingConfig):
    """The shared training fields plus prompts, RM and sampling."""

    prompts: str | None = field(
        default=None,
        metadata={"help": "Prompt file (JSONL/JSON with a 'prompt' field, or .txt one per line); None: the distinct "
                          "prompts of the bundled default pairs."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many prompts (file order)."})
    reward_model: str = field(
        default="default",
        metadata={"help": "Reward model: `default` (the shipped one), a folder from train-rm, a Hugging Face "
                          "sequence-classification folder or hub id, or a reward-set file (.yaml/.json with a "
                          "`rewards` list); with `rewards` set, the RM that its `rm:` components read (loaded only "
                          "then)."})
    weights: dict[str, float] | None = field(
        default=None,
        metadata={"help": "Objective weights of the reward, e.g. {helpfulness: 0.7, harmlessness: 0.3}; None: the "
                          "RM's prompt-conditioned gating (with several rewards: the components' own weights)."})
    rewards: list[dict] | None = field(
        default=None,
        metadata={"help": "Several rewards (a RewardSet spec's `rewards` list): components {name, rm | checker | "
                          "function, weight, ...}, weights on the simplex; None: the reward model's score with "
                          "`weights`. With rewards set, `weights` name components."})
    aggregation: str = field(
        default="sum_then_normalize",
        metadata={"help": "How several rewards are combined: sum_then_normalize (normalise the weighted sum) or "
                          "normalize_then_sum (GDPO: the weighted sum of per-component normalised rewards)."})
    reward_transform: dict | None = field(
        default=None,
        metadata={"help": "InfAlign reward transform {calibration: path, transform: bon|won|exp|identity, n, t}; "
                          "None: the reward as it is."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per sampled response."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (1.0 samples the policy itself, as the methods assume)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0: off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0: off)."})
    max_steps: int | None = field(default=50, metadata={"help": "Optimizer steps."})

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self.max_new_tokens, "max_new_tokens")
        if self.max_prompts is not None:
            positive_int(self.max_prompts, "max_prompts")
        if self.max_steps is None:
            raise InputError("online training needs max_steps", field="max_steps")
        if self.weights is not None and not all(isinstance(v, (int, float)) for v in self.weights.values()):
            raise InputError("weights must map objective names to numbers", field="weights")
        if self.rewards is not None:
            if not isinstance(self.rewards, list) or not self.rewards:
                raise InputError("rewards must be a non-empty list of reward components (or null)", field="rewards")
            for i, component in enumerate(self.rewards):
                if not isinstance(component, dict):
                    raise InputError(f"each reward component must be a mapping, got {component!r}",
                                     field=f"rewards[{i}]")
        if self.aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}",
                             field="aggregation")
        if self.reward_transform is not None and not isinstance(self.reward_transform, dict):
            raise InputError("reward_transform must be a mapping {calibration, transform, ...} or null",
                             field="reward_transform")
        self.sampling_params()

    def sampling_params(self) -> SamplingParams:
        """The sampling settings (the seed is set per step by the rollout loop)."""
        try:
            return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                  max_new_tokens=self.max_new_tokens)
        except InputError as exc:
            raise InputError(exc.reason, field=exc.field or "sampling") from None
        except ValueError as exc:
            raise InputError(str(exc), field="sampling") from None
