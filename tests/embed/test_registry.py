"""load_backbone: spec() -> load_backbone -> the same backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.embed.registry import load_backbone
from paretoalign.errors import InputError


def test_causal_lm_round_trip(tiny_gpt2_dir, rows):
    original = CausalLMBackbone(str(tiny_gpt2_dir), max_length=128)
    spec = original.spec()
    rebuilt = load_backbone(spec)
    assert isinstance(rebuilt, CausalLMBackbone) and rebuilt.spec() == spec
    assert rebuilt.fingerprint == original.fingerprint
    a, b = original.embed(*rows), rebuilt.embed(*rows)
    np.testing.assert_array_equal(a.response, b.response)
    np.testing.assert_array_equal(a.prompt, b.prompt)


def test_overrides_and_dtype_strings(tiny_llama_dir):
    spec = CausalLMBackbone(str(tiny_llama_dir)).spec()
    backbone = load_backbone(spec, batch_size=3, dtype="bfloat16")
    assert backbone.batch_size == 3 and backbone.dtype == torch.bfloat16
    assert backbone.spec()["dtype"] == "bfloat16"
    with pytest.raises(InputError, match="dtype"):
        load_backbone(spec, dtype="float99")


def test_bad_specs():
    with pytest.raises(InputError, match="unknown backbone kind 'nope'.*causal_lm"):
        load_backbone({"kind": "nope"})
    with pytest.raises(InputError, match="kind"):
        load_backbone({"model": "x"})
    with pytest.raises(InputError, match="takes no 'colour'"):
        load_backbone({"kind": "causal_lm", "model": "x", "colour": "red"})
