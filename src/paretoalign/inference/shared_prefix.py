"""Shared-prefix attention: the N candidates of a prompt attend to ONE copy of the prompt's keys and values.

Without it, the prompt's KV cache is repeated N times and every decoding step reads N copies of it (on CPU,
SmolLM2 with an 800-token prompt at N = 32 spends most of a step there). Here the prompt's KV stays one tensor per
prompt; each step computes the candidates' attention scores against it in one matrix product per prompt, scores
against their own generated tokens from a small per-candidate cache, and one softmax over both parts. The result
is the same attention, so the logits equal those of the repeated cache up to float rounding (tests check it).

Supports decoder-only models whose attention calls transformers' attention interface with ``module.layer_idx``,
no sliding window, no logit soft-capping and no attention sinks; `supports_shared_prefix` lists the tested ones.
Decoding steps feed one token per candidate (query length 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM

ATTENTION_NAME = "paretoalign_shared_prefix"
TESTED_MODEL_TYPES = frozenset({"llama", "gpt2"})
"""Architectures whose logits under shared-prefix attention are checked against the plain cache in the tests."""


def supports_shared_prefix(model: CausalLM) -> bool:
    """Whether `model` is an architecture shared-prefix attention is tested on, without sliding windows or caps."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in TESTED_MODEL_TYPES:
        return False
    return not any(getattr(cfg, key, None) for key in ("sliding_window", "attn_logit_softcapping"))


@dataclass
class SharedPrefix:
    """The prompts' keys/values per layer (P, kv_heads, L, head_dim), their padding mask and each row's prompt."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    """(P, L) bool: True on real prompt tokens (prompts are left-padded to a common length L)."""
    row_prompt: torch.Tensor
    """(rows,) the prompt index of each batch row."""

    def __post_init__(self) -> None:
        self._groups: list[tuple[int, Any]] | None = None

    def select_rows(self, idx: torch.Tensor) -> None:
        """Keep batch rows `idx` (the generated-token cache is selected the same way by the caller)."""
        self.row_prompt = self.row_prompt[idx]
        self._groups = None

    def groups(self) -> list[tuple[int, Any]]:
        """(prompt, rows) pairs; rows is a slice when one prompt owns the whole batch."""
        if self._groups is None:
            prompts = torch.unique(self.row_prompt).tolist()
            if len(prompts) == 1:
                self._groups = [(prompts[0], slice(None))]
            else:
                self._groups = [(p, torch.nonzero(self.row_prompt == p).squeeze(-1)) for p in prompts]
        return self._groups


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                            shared_prefix: SharedPrefix | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row over [its prompt's shared KV ; the row's own generated KV]."""
    if shared_prefix is None:
        raise RuntimeError("shared-prefix attention was called without the shared prefix")
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise RuntimeError(f"shared-prefix attention decodes one token per row, got {q_len}")
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    prefix_k = shared_prefix.keys[module.layer_idx]
    prefix_v = shared_prefix.values[module.layer_idx]
    length = prefix_k.shape[2]
    # Query head h uses key/value head h // group (the repeat_kv convention).
    q = query.reshape(rows, kv_heads, group, dim)
    own = torch.matmul(q, key.transpose(-1, -2)) * scale  # (rows, kv, group, t)
    out = query.new_empty(rows, heads, dim)
    for p, sel in shared_prefix.groups():
        qp = q[sel]
        n = qp.shape[0]
        flat = qp.permute(1, 0, 2, 3).reshape(kv_heads, n * group, dim)
        pre = torch.matmul(flat, prefix_k[p].transpose(-1, -2)) * scale  # (kv, n*group, L): the prompt read once
        pre = pre.masked_fill(~shared_prefix.mask[p], float("-inf"))
        pre = pre.reshape(kv_heads, n, group, length).permute(1, 0, 2, 3)
        weights = torch.cat([pre, own[sel]], dim=-1).softmax(dim=-1, dtype=torch.float32).to(query.dtype)
        w_pre = weights[..., :length].permute(1, 0, 2, 3).reshape(kv_heads, n * group, length)
        o = torch.matmul(w_pre, prefix_v[p]).reshape(kv_heads, n, group, dim).permute(1, 0, 2, 3)
        o = o + torch.matmul(weights[..., length:], value[sel])
        out[sel] = o.reshape(n, heads, dim)
    return out.unsqueeze(1), None  # (rows, q_len=1, heads, dim), the layout attention modules expect


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


_register()


@contextmanager
def attention_implementation(model: CausalLM, name: str) -> Iterator[None]:
    """Run `model` with attention implementation `name`, restoring the previous one afterwards."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous
