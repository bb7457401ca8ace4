"""(prompt, response) token rows and their log-probabilities under a causal LM, with gradients.

Supports:

- encoding text pairs the way the policy will see them at generation time (chat template with its generation prompt,
  the response tokenized on its own and followed by the token that ends a reply), or taking sampled token ids as is;
- collating rows into one right-padded batch with explicit position ids (`collate_rows`), and per-row sums of
  response-token log-probs (`row_logprob_sums`), per-token log-probs, and per-token full-vocabulary KL between two
  models on the same rows (`token_kl`).

Assumes:

- rows longer than `max_length` lose prompt tokens from the left first, then response tokens from the right;
- padding sits after every real token, so causal attention never lets it reach a real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from paretoalign.embed.chat_format import PromptLike, conversation_text, eos_token_ids, prompt_token_ids
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer

Row = tuple[list[int], int]
"""Token ids of prompt + response, and how many of them are prompt tokens."""


def reply_end_token_id(tokenizer: Tokenizer, model: CausalLM | None = None) -> int | None:
    """The token that ends a reply: the chat template's end-of-turn token when it is an EOS token, else EOS."""
    eos = eos_token_ids(tokenizer, model)
    full, start = conversation_text(tokenizer, [{"role": "user", "content": "x"}], "y")
    tail_ids = []
    if full[start:].startswith("y"):
        tail_ids = tokenizer(full[start + 1:], add_special_tokens=False)["input_ids"]
    if tail_ids and tail_ids[0] in eos:
        return int(tail_ids[0])
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return min(eos) if eos else None


def encode_pair(tokenizer: Tokenizer, prompt: PromptLike, response: str, max_length: int,
                end_id: int | None) -> tuple[list[int], int, bool]:
    """(token ids, number of prompt tokens, whether anything was cut) of one prompt + response row."""
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    if not prompt_ids:
        raise InputError("a prompt renders to no tokens", field="prompt")
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if end_id is not None:
        response_ids.append(end_id)
    return fit_row(prompt_ids, response_ids, max_length)


def fit_row(prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int) -> tuple[list[int], int, bool]:
    """Cut a row to `max_length`: prompt from the left first, then the response from the right."""
    if max_length < 2:
        raise InputError(f"max_length must be >= 2, got {max_length}", field="max_length")
    cut = len(prompt_ids) + len(response_ids) > max_length
    response = list(response_ids)[: max_length - 1]
    prompt = list(prompt_ids)[-(max_length - len(response)):]
    return prompt + response, len(prompt), cut


@dataclass
class RowBatch:
    """Right-padded rows ready for one forward pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor
    """True on response tokens (the ones whose log-probs count)."""

    def to(self, device: torch.device) -> RowBatch:
        """The same batch on `device`."""
        return RowBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.position_ids,
                                                 self.response_mask)))


def collate_rows(rows: Sequence[Row], pad_id: int) -> RowBatch:
    """One right-padded batch of encoded rows."""
    if not rows:
        raise InputError("no rows to collate", field="rows")
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    response = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (ids, n_prompt) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        response[i, n_prompt: len(ids)] = True
    positions = torch.arange(length, dtype=torch.long).unsqueeze(0).expand(len(rows), -1).contiguous()
    return RowBatch(input_ids, attention, positions, response)


def forward_logits(model: CausalLM | torch.nn.Module, batch: RowBatch) -> torch.Tensor:
    """Logits (rows, length, vocab) of `model` on the batch."""
    batch = batch.to(next(model.parameters()).device)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 use_cache=False).logits


def token_logprobs(logits: torch.Tensor, batch: RowBatch) -> torch.Tensor:
    """log p(token) of every predicted token (rows, length − 1); zero where not a response token."""
    targets = batch.input_ids[:, 1:].to(logits.device)
    mask = batch.response_mask[:, 1:].to(logits.device)
    logps = logits[:, :-1].float().log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def sequence_logprob_sums(logits: torch.Tensor, input_ids: torch.Tensor,
                          response_mask: torch.Tensor) -> torch.Tensor:
    """Per-row sum of log p(token) over the tokens where `response_mask` is True (logits at t predict t + 1)."""
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].bool()
    picked = logits[:, :-1][mask].float().log_softmax(dim=-1)
    token_logps = picked.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    row = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(-1).expand_as(mask)[mask]
    sums = torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, row.to(token_logps.device), token_logps)


def row_logprob_sums(model: CausalLM | torch.nn.Module, rows: Sequence[Row], pad_id: int) -> torch.Tensor:
    """log pi(response | prompt) per encoded row, in one right-padded forward pass (gradients flow if enabled)."""
    batch = collate_rows(rows, pad_id)
    logits = forward_logits(model, batch)
    batch = batch.to(logits.device)
    return sequence_logprob_sums(logits, batch.input_ids, batch.response_mask)


def row_token_logprobs(model: CausalLM | torch.nn.Module, rows: Sequence[Row], pad_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each predicted token (rows, length − 1), zero off the response; the response-token mask) of encoded
    rows in one right-padded forward pass (gradients flow if enabled)."""
    batch = collate_rows(rows, pad_id)
    logits = forward_logits(model, batch)
    batch = batch.to(logits.device)
    return token_logprobs(logits, batch), batch.response_mask[:, 1:]


def token_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, batch: RowBatch) -> torch.Tensor:
    """Per-row sum over response positions of the full-vocabulary KL(p(·|prefix) ‖ q(·|prefix))."""
    mask = batch.response_mask[:, 1:].to(logits_p.device)
    logp = logits_p[:, :-1].float().log_softmax(-1)
    logq = logits_q[:, :-1].float().log_softmax(-1).to(logp.device)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    return (per_token * mask).sum(-1)
