"""Shared fixtures of the trainer tests: fresh tiny policies, toy pairs and prompts, a tiny reward model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paretoalign.data.schema import PreferencePair
from tests.inference.conftest import make_policy
from tests.rewards.model_factory import RecordingBackbone, random_model

CHOSEN = ["Mix flour, water, salt and yeast, then bake.", "Paris is the capital of France.",
          "Here is a clear answer with steps.", "Knead the dough and let it rise."]
REJECTED = ["sorry", "I cannot help with that request.", "no", "because"]
PROMPTS = ["How do I bake bread?", "Capital of France?", "hello there, explain why", "thanks, please answer"]
SMALL = {"model": "tiny", "max_length": 64, "lora_r": 4, "progress": False, "batch_size": 2}
"""Config fields every tiny training run shares (the model object is passed in, so `model` is only a label)."""
ONLINE = {**SMALL, "max_new_tokens": 8}


def toy_pairs(n: int = 4) -> list[PreferencePair]:
    """`n` preference pairs over short prompts (different lengths, so batches need padding)."""
    return [PreferencePair(prompt=[{"role": "user", "content": f"question {i} about {PROMPTS[i % 4]}"}],
                           chosen=CHOSEN[i % 4], rejected=REJECTED[i % 4], objective="helpfulness",
                           source=f"toy:{i + 1}") for i in range(n)]


def fresh_policy(arch: str = "llama"):
    """A new tiny random policy (model, tokenizer); each trainer call needs its own (LoRA wraps it in place)."""
    policy = make_policy(arch)
    return policy.model, policy.tokenizer


def tiny_reward_model():
    """A deterministic 4-objective RewardModel (helpfulness, harmlessness, honesty, verbosity)."""
    return random_model(backbone=RecordingBackbone())


def weights_of(model) -> dict[str, torch.Tensor]:
    """Detached copies of a plain model's state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-identical states (same names, same values)."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows without the wall-clock field."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"} for line in lines if line.strip()]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Every trainer test, and every module fixture, runs on one torch thread (repeatable, no oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
