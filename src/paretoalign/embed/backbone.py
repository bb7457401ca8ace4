"""The interface every embedding backbone implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from paretoalign.data.schema import Message


@dataclass
class Features:
    """Frozen features for n (prompt, response) rows, float32."""

    response: np.ndarray
    """h(x, y): shape (n, feature_dim) — the conversation including the response."""
    prompt: np.ndarray
    """h(x): shape (n, prompt_feature_dim) — the prompt alone, at the start of the reply."""

    def __len__(self) -> int:
        return int(self.response.shape[0])

    def take(self, index: np.ndarray | Sequence[int]) -> Features:
        """The rows at `index`."""
        idx = np.asarray(index, dtype=np.int64)
        return Features(self.response[idx], self.prompt[idx])


@runtime_checkable
class Backbone(Protocol):
    """A frozen encoder of (prompt conversation, response) rows."""

    fingerprint: str
    """Identifies the weights and every featurization setting; the embedding cache is keyed by it."""
    feature_dim: int
    prompt_feature_dim: int

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
              batch_size: int | None = None, progress: bool = False) -> Features:
        """Features of each (prompt, response) row, in input order."""
        ...

    def spec(self) -> dict[str, Any]:
        """A JSON-able reference from which `load_backbone` rebuilds this backbone."""
        ...


class TruncationWarning(UserWarning):
    """Rows were cut to fit a backbone's max_length (one warning per embed() call, with counts)."""


@dataclass
class TruncationStats:
    """How many rows of the last embed() call had their prompt or response cut to fit max_length."""

    rows: int = 0
    prompt_truncated: int = 0
    """Rows whose prompt was cut from the left (the start of the conversation dropped)."""
    response_truncated: int = 0
    """Rows whose response was cut (causal LM: its first tokens dropped; sentence encoder: its end dropped)."""

    def __add__(self, other: TruncationStats) -> TruncationStats:
        return TruncationStats(self.rows + other.rows, self.prompt_truncated + other.prompt_truncated,
                               self.response_truncated + other.response_truncated)

    def message(self, max_length: int, response_cut: str = "") -> str | None:
        """The warning text, or None when nothing was truncated."""
        parts = []
        if self.prompt_truncated:
            parts.append(f"truncated the prompt of {self.prompt_truncated}/{self.rows} rows from the left")
        if self.response_truncated:
            cut = f" ({response_cut})" if response_cut else ""
            parts.append(f"truncated the response of {self.response_truncated}/{self.rows} rows{cut}")
        return "; ".join(parts) + f" to fit max_length={max_length} tokens" if parts else None
