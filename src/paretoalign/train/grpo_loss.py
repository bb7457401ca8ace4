"""The GRPO objective on per-token log-probabilities (Shao et al. 2024; Dr. GRPO, Liu et al. 2025).

Per response token t of sample i, with ρ_t = exp(log π_θ − log π_old) and the sample's advantage A_i:

    loss_t = −min(ρ_t A_i, clip(ρ_t, 1 − ε, 1 + ε_high) A_i) + β · k3_t,
    k3_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1   (an unbiased, non-negative KL estimate).

Aggregation: "grpo" averages each response's token losses, then averages over responses; "dr_grpo" sums each
response's token losses and divides by a constant (max_new_tokens) instead of its length, then averages over
responses. Supports per-row advantages (n,) and masks of any token width; log-probs are those of
`sequences.token_logprobs` (zero off the response).

Assumes old / reference log-probs carry no gradient (they are detached here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paretoalign.errors import InputError

LOSS_TYPES = ("grpo", "dr_grpo")


@dataclass
class GRPOLossTerms:
    """Per-response losses and the token statistics logged beside them."""

    losses: torch.Tensor
    """(n,) each response's loss (aggregated over its tokens by the loss type); the batch loss is their mean."""
    kl: torch.Tensor | None
    """(n,) each response's mean k3 over its tokens; None without a reference."""
    clipped: torch.Tensor
    """(n,) how many of each response's tokens had the clip active (the gradient through ρ cut off)."""
    tokens: torch.Tensor
    """(n,) each response's number of tokens."""


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """exp(ref − logp) − (ref − logp) − 1 per token (≥ 0, zero where the two agree)."""
    diff = ref_logp.detach() - logp
    return torch.exp(diff) - diff - 1.0


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              epsilon: float, epsilon_high: float | None = None, beta: float = 0.0,
              ref_logp: torch.Tensor | None = None, loss_type: str = "grpo",
              max_new_tokens: int | None = None) -> GRPOLossTerms:
    """GRPO per-response losses of token log-probs (n, T) under the policy, π_old and (β > 0) π_ref."""
    if loss_type not in LOSS_TYPES:
        raise InputError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}", field="loss_type")
    if beta > 0 and ref_logp is None:
        raise InputError("a KL term (beta > 0) needs the reference log-probs", field="beta")
    if loss_type == "dr_grpo" and not max_new_tokens:
        raise InputError("dr_grpo divides by max_new_tokens: give it", field="max_new_tokens")
    high = epsilon if epsilon_high is None else epsilon_high
    maskf = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).detach().unsqueeze(-1)
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = ratio * adv
    clipped_term = torch.clamp(ratio, 1.0 - epsilon, 1.0 + high) * adv
    per_token = -torch.minimum(unclipped, clipped_term)
    kl = None
    if beta > 0:
        kl_tok = k3(logp, ref_logp) * maskf
        per_token = per_token + beta * kl_tok
    tokens = maskf.sum(-1)
    summed = (per_token * maskf).sum(-1)
    losses = summed / tokens.clamp(min=1.0) if loss_type == "grpo" else summed / float(max_new_tokens)
    with torch.no_grad():
        active = ((ratio < 1.0 - epsilon) & (adv < 0)) | ((ratio > 1.0 + high) & (adv > 0))
        clipped = (active.to(logp.dtype) * maskf).sum(-1)
        if beta > 0:
            kl = kl_tok.detach().sum(-1) / tokens.clamp(min=1.0)
    return GRPOLossTerms(losses=losses, kl=kl, clipped=clipped, tokens=tokens)
