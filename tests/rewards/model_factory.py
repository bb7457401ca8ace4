"""Random reward models and recording backbones for the rewards tests."""

from __future__ import annotations

import numpy as np
import torch

from paretoalign.embed.backbone import Features
from paretoalign.rewards.gating import GatingNetwork
from paretoalign.rewards.reward_model import RewardModel

NAMES = ["helpfulness", "harmlessness", "honesty", "verbosity"]
KINDS = {"helpfulness": "bradley_terry", "harmlessness": "bradley_terry", "honesty": "ridge", "verbosity": "length"}


def random_model(d: int = 16, dp: int = 8, *, seed: int = 0, spec: dict | None = None, backbone=None,
                 hidden=(8,)) -> RewardModel:
    """A RewardModel with random heads, a verbosity transform, a random gating network and scale 1.7."""
    rng = np.random.default_rng(seed)
    k = len(NAMES)
    W = rng.standard_normal((k, d)).astype(np.float32)
    T = np.eye(k, dtype=np.float32)
    T[: k - 1, k - 1] = -np.array([0.2, 0.0, 0.35][: k - 1], dtype=np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gating = GatingNetwork(dp, k, hidden=hidden, dropout=0.1, temperature=2.0)
    with torch.no_grad():
        gating.scale.fill_(1.7)
    return RewardModel(objective_names=NAMES, objective_kinds=KINDS, W=W, T=T, gating=gating,
                       baseline_w=rng.standard_normal(d).astype(np.float32),
                       backbone_spec=spec or {"kind": "sentence_encoder", "model": "none"},
                       metadata={"note": "random", "value": np.float64(0.5)}, backbone=backbone)


def random_features(n: int, d: int = 16, dp: int = 8, seed: int = 1) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.standard_normal((n, d)).astype(np.float32) * 3,
                    rng.standard_normal((n, dp)).astype(np.float32))


class RecordingBackbone:
    """Deterministic features from the text; remembers the prompts it was given."""

    fingerprint = "recording"
    feature_dim = 16
    prompt_feature_dim = 8

    def __init__(self) -> None:
        self.prompts: list = []

    def _vec(self, text: str, dim: int) -> np.ndarray:
        rng = np.random.default_rng(sum(text.encode()) + 7 * len(text))
        return rng.standard_normal(dim).astype(np.float32)

    def embed(self, prompts, responses, *, batch_size=None, progress=False) -> Features:
        self.prompts.extend(prompts)
        resp = np.stack([self._vec(str(p) + r, self.feature_dim) for p, r in zip(prompts, responses, strict=True)])
        prm = np.stack([self._vec(str(p), self.prompt_feature_dim) for p in prompts])
        return Features(resp, prm)

    def spec(self):
        return {"kind": "recording"}


def random_llama_rm(tiny_llama_dir) -> RewardModel:
    """A 3-objective RewardModel with random heads on a tiny Llama backbone (export and classifier round trips)."""
    from paretoalign.embed.causal_lm import CausalLMBackbone

    backbone = CausalLMBackbone(str(tiny_llama_dir), max_length=256)
    rng = np.random.default_rng(0)
    names = ["helpfulness", "harmlessness", "verbosity"]
    T = np.eye(3, dtype=np.float32)
    T[:2, 2] = [-0.3, -0.1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gating = GatingNetwork(backbone.prompt_feature_dim, 3, hidden=(8,))
    return RewardModel(names, {"helpfulness": "bradley_terry", "harmlessness": "ridge", "verbosity": "length"},
                       W=rng.standard_normal((3, backbone.feature_dim)).astype(np.float32), T=T, gating=gating,
                       baseline_w=rng.standard_normal(backbone.feature_dim).astype(np.float32),
                       backbone_spec=backbone.spec(), backbone=backbone)
