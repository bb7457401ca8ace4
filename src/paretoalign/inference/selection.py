"""Scored candidates, THE Best-of-N pick rule, and the output rows.

The pick is the argmax (best) or argmin (worst) of the weighted final reward over FINISHED candidates; ties go to
the lowest candidate index. A prompt whose candidates all hit the token limit gets no pick (``selected`` is None).
Every Best-of-N pick in paretoalign uses this rule (`pick_index`, or `pick_indices` for a table of draws): the
`best_of_n` / `speculative_rejection` samplers and the front report's Best-of-N points (`eval.policy_eval`).
The one deliberate exception is BOND's distillation target (`train.bond_trainer.best_index`), which follows
π_BoN over every reference sample, truncated ones included (see there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.errors import InputError
from paretoalign.inference.engine import Candidate

if TYPE_CHECKING:
    from paretoalign.rewards.protocols import Scorer

SELECT_MODES = ("best", "worst")


def check_select(select: str) -> str:
    """'best' or 'worst'."""
    if select not in SELECT_MODES:
        raise InputError(f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}", field="select")
    return select


@dataclass
class ScoredCandidate:
    """A candidate with its reward: the weighted final score and the per-objective breakdown."""

    candidate: Candidate
    score: float | None = None
    objectives: dict[str, float] | None = None

    def row(self) -> dict[str, Any]:
        """The JSON form of the output contract."""
        c = self.candidate
        return {"response": c.text, "score": self.score, "objectives": self.objectives, "finished": c.finished,
                "tokens": c.num_tokens, "rejected_at": c.rejected_at}


@dataclass
class SelectionResult:
    """One prompt's candidates, the pick and the run's statistics."""

    prompt: list[Message]
    candidates: list[ScoredCandidate]
    selected: int | None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str | None:
        """The picked response text, or None when no candidate finished."""
        return None if self.selected is None else self.candidates[self.selected].candidate.text

    @property
    def pick(self) -> ScoredCandidate | None:
        """The picked candidate, if any."""
        return None if self.selected is None else self.candidates[self.selected]

    def row(self) -> dict[str, Any]:
        """Output fields (the caller adds the input fields)."""
        return {"response": self.response, "selected": self.selected,
                "candidates": [c.row() for c in self.candidates], "stats": dict(self.stats)}


def pick_index(scores: Sequence[float | None], finished: Sequence[bool], select: str = "best") -> int | None:
    """Index of the best (or worst) finished candidate; ties go to the lowest index; None if none finished."""
    check_select(select)
    best: int | None = None
    for i, (s, done) in enumerate(zip(scores, finished, strict=True)):
        if not done or s is None:
            continue
        if best is None or (s > scores[best] if select == "best" else s < scores[best]):
            best = i
    return best


def pick_indices(scores: Any, finished: Any, select: str = "best") -> list[int | None]:
    """`pick_index` of each row of a (prompts, candidates) table of scores and finished flags."""
    scores, finished = np.asarray(scores, dtype=np.float64), np.asarray(finished, dtype=bool)
    if scores.ndim != 2 or scores.shape != finished.shape:
        raise InputError(f"scores {scores.shape} and finished {finished.shape} must be the same (prompts, "
                         "candidates) table", field="scores")
    return [pick_index(list(row), list(done), select) for row, done in zip(scores, finished, strict=True)]


def score_candidates(reward_model: Scorer, prompt: list[Message], texts: Sequence[str], weights: Any,
                     batch_size: int | None = None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Weighted scores and per-objective breakdowns of responses to one prompt, in one batched RM call."""
    out = reward_model.score([prompt] * len(texts), list(texts), weights=weights, batch_size=batch_size)
    names = list(out.objective_names)
    breakdown = [{name: float(v) for name, v in zip(names, row, strict=True)} for row in np.asarray(out.objectives)]
    return np.asarray(out.score, dtype=np.float64), breakdown
