"""Teacher-forced per-token log-probs of responses under a causal LM: the prompt is prefilled once and its KV cache
shared by every response (KL estimates, reference log-probs, policy evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM


def _forward(model: CausalLM, **kwargs: Any) -> Any:
    return model(use_cache=True, return_dict=True, **kwargs)


@torch.inference_mode()
def response_logprobs(model: CausalLM, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]]
                      ) -> list[np.ndarray]:
    """Per-token log-probs of `responses` after `prompt_ids` under `model` (prompt prefilled once, KV cache shared)."""
    if not prompt_ids:
        raise InputError("the prompt has no tokens", field="prompt")
    if not responses:
        return []
    lengths = [len(r) for r in responses]
    n, width = len(responses), max(lengths)
    p = len(prompt_ids)
    prefill = _forward(model, input_ids=torch.tensor([list(prompt_ids)]),
                       position_ids=torch.arange(p).unsqueeze(0), logits_to_keep=1)
    first = prefill.logits[:, -1].float().log_softmax(-1).expand(n, -1)
    out = [np.zeros(k, dtype=np.float64) for k in lengths]
    if width == 0:
        return out
    block = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, p + width), dtype=torch.long)
    mask[:, :p] = 1
    for i, r in enumerate(responses):
        block[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, p:p + len(r)] = 1
    logp_first = first.gather(-1, block[:, :1]).squeeze(-1)
    if width > 1:
        cache = prefill.past_key_values
        cache.batch_repeat_interleave(n)
        # Only the first width-1 tokens are inputs: each predicts the next; padding sits after every real token.
        rest = _forward(model, input_ids=block[:, :-1], attention_mask=mask[:, :-1],
                        position_ids=(p + torch.arange(width - 1)).unsqueeze(0).expand(n, -1),
                        past_key_values=cache)
        logp_rest = rest.logits.float().log_softmax(-1).gather(-1, block[:, 1:].unsqueeze(-1)).squeeze(-1)
    for i, k in enumerate(lengths):
        if k:
            out[i][0] = float(logp_first[i])
            if k > 1:
                out[i][1:] = logp_rest[i, :k - 1].double().numpy()
    return out

