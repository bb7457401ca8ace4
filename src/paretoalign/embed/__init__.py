"""Embedding backbones: frozen features h(x, y) and h(x) for the reward heads."""

from __future__ import annotations

import importlib
from typing import Any

from paretoalign.embed.backbone import Backbone, Features, TruncationStats, TruncationWarning

# Heavy modules (torch, transformers) load on first use of one of their names.
_LAZY = {
    "CausalLMBackbone": "paretoalign.embed.causal_lm",
    "SentenceEncoderBackbone": "paretoalign.embed.sentence_encoder",
    "EmbeddingCache": "paretoalign.embed.cache",
    "cache_key": "paretoalign.embed.cache",
    "embed_with_cache": "paretoalign.embed.cached",
    "conversation_text": "paretoalign.embed.chat_format",
    "resolve_model": "paretoalign.embed.models",
    "load_backbone": "paretoalign.embed.registry",
}

__all__ = ["Backbone", "Features", "TruncationStats", "TruncationWarning", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
