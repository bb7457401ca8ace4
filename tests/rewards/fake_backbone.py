"""A deterministic bag-of-words backbone for pipeline tests (no model weights)."""

from __future__ import annotations

import zlib

import numpy as np

from paretoalign.data.schema import prompt_text
from paretoalign.embed.backbone import Features


def _bag(text: str, dim: int) -> np.ndarray:
    vec = np.zeros(dim, dtype=np.float32)
    for word in text.lower().split():
        vec[zlib.crc32(word.encode()) % dim] += 1.0
    vec[-1] = 1.0  # a constant feature, as LM hidden states have
    return vec


class HashingBackbone:
    """Features are hashed word counts of the response (h(x,y)) and of the last user turn (h(x))."""

    fingerprint = "hashing-backbone-v1"
    feature_dim = 48
    prompt_feature_dim = 24

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, prompts, responses, *, batch_size=None, progress=False) -> Features:
        self.calls += 1
        resp = np.stack([_bag(r, self.feature_dim) for r in responses])
        prm = np.stack([_bag(prompt_text(p), self.prompt_feature_dim) for p in prompts])
        return Features(resp, prm)

    def spec(self):
        raise NotImplementedError("the hashing backbone lives in memory only")
