"""Rebuild a backbone from its `spec()`: the JSON-able reference saved beside every trained reward model."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from paretoalign.embed.backbone import Backbone
from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.embed.sentence_encoder import SentenceEncoderBackbone
from paretoalign.errors import InputError

BACKBONE_KINDS: dict[str, type] = {
    "causal_lm": CausalLMBackbone,
    "sentence_encoder": SentenceEncoderBackbone,
}


def load_backbone(spec: dict[str, Any], **overrides: Any) -> Backbone:
    """The backbone `spec` describes; `overrides` replace or add constructor arguments (e.g. batch_size)."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise InputError(f"a backbone spec is a dict with a 'kind', got {spec!r}", field="kind")
    kind = spec["kind"]
    if kind not in BACKBONE_KINDS:
        raise InputError(f"unknown backbone kind {kind!r}; known kinds: {', '.join(BACKBONE_KINDS)}", field="kind")
    cls = BACKBONE_KINDS[kind]
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    kwargs.update(overrides)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"a {kind!r} backbone takes no {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(accepted)}", field=unknown[0])
    if isinstance(kwargs.get("dtype"), str):
        dtype = getattr(torch, kwargs["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise InputError(f"unknown dtype {kwargs['dtype']!r} (e.g. 'float32', 'bfloat16')", field="dtype")
        kwargs["dtype"] = dtype
    return cls(**kwargs)
