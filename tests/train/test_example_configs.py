"""The example configs in examples/configs load into their method's config class."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoalign.config_loading import load_config
from paretoalign.train.bond_config import BONDConfig
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.modpo_config import MODPOConfig
from paretoalign.train.warp_config import WARPConfig

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


@pytest.mark.parametrize(("name", "cls"), [("dpo.yaml", DPOConfig), ("modpo.yaml", MODPOConfig),
                                           ("jbond.yaml", BONDConfig), ("warp.yaml", WARPConfig)])
def test_example_config_loads(name, cls):
    config = load_config(cls, CONFIGS / name, ["max_steps=3"])
    assert isinstance(config, cls)
    assert config.max_steps == 3


def test_example_modpo_weights_sum_to_one():
    config = load_config(MODPOConfig, CONFIGS / "modpo.yaml")
    assert abs(sum(config.weights) - 1) < 1e-9
    assert len(config.weights) == 1 + len(config.margin_objectives)
