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
CALLER_ONLY = {"tokenizer", "cache_dir"}
"""Constructor arguments a (possibly stored) spec may not set: an object, and where files get written."""


def load_backbone(spec: dict[str, Any], *, trust_remote_code: bool = False, **overrides: Any) -> Backbone:
    """The backbone `spec` describes; `overrides` replace or add constructor arguments (e.g. batch_size).

    `trust_remote_code` is the CALLER's choice (the user's flag or API argument); a ``trust_remote_code`` stored
    in `spec` (read from a saved model) is ignored, so a shared model directory can never turn it on.
    """
    if not isinstance(spec, dict) or "kind" not in spec:
        raise InputError(f"a backbone spec is a dict with a 'kind', got {spec!r}", field="kind")
    kind = spec["kind"]
    if kind not in BACKBONE_KINDS:
        raise InputError(f"unknown backbone kind {kind!r}; known kinds: {', '.join(BACKBONE_KINDS)}", field="kind")
    cls = BACKBONE_KINDS[kind]
    kwargs = {k: v for k, v in spec.items() if k not in ("kind", "trust_remote_code")}
    objects = sorted(set(kwargs) & CALLER_ONLY)
    if objects:
        raise InputError(f"a backbone spec cannot set {', '.join(map(repr, objects))} (pass it to load_backbone)",
                         field=objects[0])
    kwargs.update(overrides)
    kwargs["trust_remote_code"] = trust_remote_code is True
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
