"""Settings of the online trainers (BOND, J-BOND, WARP): prompts, the reward model, and how responses are sampled."""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.inference.sampling_params import SamplingParams
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
        metadata={"help": "Reward model: `default` (the shipped one), a folder from train-rm, or a Hugging Face "
                          "sequence-classification folder or hub id."})
    weights: dict[str, float] | None = field(
        default=None,
        metadata={"help": "Objective weights of the reward, e.g. {helpfulness: 0.7, harmlessness: 0.3}; None: the "
                          "RM's prompt-conditioned gating."})
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
