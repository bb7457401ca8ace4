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
