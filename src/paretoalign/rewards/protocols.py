"""`Scorer`: what every user of a reward model needs of it, whichever kind it is.

Satisfied by `reward_model.RewardModel` (the trained multi-objective model) and by
`hf_classifier.SequenceClassifierRM` (a Hugging Face sequence classifier, one objective per label); Best-of-N, the
calibration, the online trainers, MODPO's margins, RewardBench scoring and the commands take either through it.
Annotations only: importing this module loads neither torch nor a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from paretoalign.data.schema import Message
    from paretoalign.rewards.reward_model import RewardOutput, Weights


class Scorer(Protocol):
    """A reward model as its users see it: its objectives, a check of user weights, and batched scoring."""

    objective_names: list[str]

    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as a (k,) vector in objective order (None: the model's own combination); InputError for
        weights the model does not accept."""
        ...

    def score(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """Scores of (prompt, response) rows: the weighted final reward and the per-objective breakdown."""
        ...
