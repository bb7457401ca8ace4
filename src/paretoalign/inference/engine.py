"""The transformers sampling engine: N candidates per prompt from ONE prompt prefill, generated in chunks.

Supports:
- several prompts per batch (left-padded once for the prefill); each prompt's KV cache is computed once and
  shared by its N candidates: with shared-prefix attention (`shared_prefix`, on by default for the tested
  architectures) they all read ONE copy of it; otherwise it is repeated per candidate (never recomputed);
- temperature / top-k / top-p / max new tokens / stop strings / EOS, one seeded generator per candidate
  (a candidate's tokens do not depend on the batch it is in, see `sampling_params`);
- incremental generation (`step(k)` runs at most k more tokens) and pruning (`prune`) so a caller can score
  partial responses and drop candidates (Speculative Rejection); finished and pruned rows leave the batch;
- per-token log-probs under the sampling distribution and under the unmodified policy (temperature 1), and
  under a reference model after the fact (`reference_logprobs`), for Monte-Carlo KL estimates;
- progress: an optional callback receives the token budget used up (N x prompts x max_new_tokens in all: a
  generated token counts one, a candidate that stops or is pruned early counts its unused tokens), for a bar.
- a logits hook (`LogitsHook`): it reads the prompts after the policy's prefill, changes the policy's next-token
  logits before every sampling step (temperature / top-k / top-p then apply as usual), drops the rows that finish
  or are pruned and is fed the chosen tokens; reward-guided decoding (GenARM, `guided_decoding.GenARMHook`) is one.

Assumes a decoder-only transformers model whose forward takes ``position_ids``, ``attention_mask``,
``past_key_values`` (a cache with ``batch_repeat_interleave`` / ``batch_select_indices``) and ``logits_to_keep``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from paretoalign.embed.chat_format import pad_token_id
from paretoalign.inference.logprobs import response_logprobs
from paretoalign.inference.sampling_params import SamplingParams, candidate_seed, next_tokens
from paretoalign.inference.shared_prefix import (
    ATTENTION_NAME,
    SharedPrefix,
    attention_implementation,
    supports_shared_prefix,
)

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer

FINISHED_REASONS = ("eos", "stop")


class DecodingPolicy(Protocol):
    """What the engine needs of a policy (`paretoalign.inference.policy.Policy` is one): the transformers model and
    tokenizer, the tokens that end a response, and how response tokens become text."""

    model: CausalLM
    tokenizer: Tokenizer

    @property
    def eos_token_ids(self) -> frozenset[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(eq=False)
class Candidate:
    """One sampled response (possibly partial) and its bookkeeping."""

    prompt_index: int
    index: int
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    """log-prob of each token under the distribution it was drawn from (temperature / top-k / top-p applied)."""
    policy_logprobs: list[float] = field(default_factory=list)
    """log-prob of each token under the unmodified policy (temperature 1)."""
    adjusted_logprobs: list[float] = field(default_factory=list)
    """log-prob of each token under the hook's logits at temperature 1 (before top-k/top-p); empty without a hook."""
    finish_reason: str | None = None
    """"eos" or "stop" (finished), "length" (cut at max_new_tokens), None while generating or once rejected."""
    rejected_at: int | None = None
    """Number of tokens it had when a caller pruned it, else None."""
    text: str = ""
    generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        """Whether the response ended on its own (EOS or a stop string), not by the token limit or pruning."""
        return self.finish_reason in FINISHED_REASONS

    @property
    def active(self) -> bool:
        """Whether it is still being generated."""
        return self.finish_reason is None and self.rejected_at is None

    @property
    def num_tokens(self) -> int:
        """Tokens generated for it (an EOS token counts)."""
        return len(self.token_ids)


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def stop_tail(params: SamplingParams) -> int:
    """Tokens at the end of a response whose text is searched for a stop string after each new token."""
    return max((len(s) for s in params.stop), default=0) + 8


def finish_reason(policy: DecodingPolicy, c: Candidate, eos: frozenset[int], params: SamplingParams,
                  tail: int) -> str | None:
    """"eos", "stop" or "length" once `c`'s latest token ends it, else None (keep generating)."""
    if c.token_ids[-1] in eos:
        return "eos"
    if params.stop and any(s in policy.decode(c.token_ids[-tail:]) for s in params.stop):
        return "stop"
    return "length" if c.num_tokens >= params.max_new_tokens else None


def finish(policy: DecodingPolicy, c: Candidate, reason: str, stops: Sequence[str]) -> None:
    """End `c` for `reason`: its text decoded from the whole token list (cut before a stop string)."""
    c.finish_reason = reason
    text = policy.decode(c.token_ids)
    c.text = _cut_at_stop(text, stops) if reason == "stop" else text
    c.generator = None


class LogitsHook(Protocol):
    """Changes the next-token distribution of a `CandidateGenerator` (reward-guided decoding, search).

    The batch holds n rows per prompt, prompt-major (row p*n + j is candidate j of the p-th prompt) until rows
    leave it. Per step the generator calls `adjust`, samples, then `select` (only when rows left the batch: finished
    or pruned) and `step` with the tokens of the rows still generating. All calls run under ``torch.inference_mode``.
    """

    def prefill(self, prompt_ids: Sequence[Sequence[int]], n: int) -> None:
        """Read the prompts once (called after the policy's prefill, before the first token); resets any state."""

    def adjust(self, logits: torch.Tensor, rows: Sequence[Candidate]) -> torch.Tensor:
        """Logits (rows, vocab) to sample the next token from, given the policy's (not to be changed in place);
        `rows`: the active candidates, in batch order."""

    def select(self, keep: Sequence[int]) -> None:
        """Keep only batch rows `keep` (positions in the current batch), in that order; may be empty."""

    def step(self, tokens: torch.Tensor) -> None:
        """The tokens (rows,) just chosen for the rows still generating (after `select`), in batch order."""


def _left_padded(prompt_ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the prompts left-padded to a common length."""
    lengths = [len(p) for p in prompt_ids]
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


class KVBatch:
    """One model over the candidate rows: the prompts prefilled once (left-padded), then one token per row and step.

    With `shared_prefix` the n rows of a prompt read ONE copy of its keys/values (`shared_prefix.SharedPrefix`);
    otherwise the prompt cache is repeated per row (never recomputed). `logits` (rows, vocab) float32 holds every
    row's next-token logits. Call it under ``torch.inference_mode`` (the generator does).
    """

    def __init__(self, model: CausalLM, prompt_ids: Sequence[Sequence[int]], n: int, pad_id: int,
                 shared_prefix: bool) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        ids, mask = _left_padded(prompt_ids, pad_id)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        padded = bool((mask == 0).any())
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        out = model(input_ids=ids, attention_mask=mask if padded else None, position_ids=positions,
                    use_cache=True, return_dict=True, logits_to_keep=1)
        self.logits: torch.Tensor = out.logits[:, -1].float().repeat_interleave(n, dim=0)
        self.prefix: SharedPrefix | None = None
        if shared_prefix:
            from transformers import DynamicCache

            cache = out.past_key_values
            row_prompt = torch.arange(len(prompt_ids), device=self.device).repeat_interleave(n)
            self.prefix = SharedPrefix(keys=[layer.keys for layer in cache.layers],
                                       values=[layer.values for layer in cache.layers], mask=mask.bool(),
                                       row_prompt=row_prompt)
            self.cache = DynamicCache()  # holds only the generated tokens, one row per candidate
            self.mask = None
        else:
            self.cache = out.past_key_values
            if n > 1:
                self.cache.batch_repeat_interleave(n)
            self.mask = mask.repeat_interleave(n, dim=0) if padded else None
        self.prompt_len = torch.tensor([len(p) for p in prompt_ids], dtype=torch.long,
                                       device=self.device).repeat_interleave(n)
        self.fed = 0
        """Tokens fed per row so far."""

    def select(self, keep: Sequence[int]) -> None:
        """Keep only rows `keep` (positions in the current batch, at least one), in that order."""
        idx = torch.tensor(list(keep), dtype=torch.long, device=self.device)
        if self.cache.get_seq_length() > 0:  # with a shared prefix it is empty until the first decoding step
            self.cache.batch_select_indices(idx)
        if self.prefix is not None:
            self.prefix.select_rows(idx)
        self.logits = self.logits[idx.to(self.logits.device)]
        self.prompt_len = self.prompt_len[idx]
        if self.mask is not None:
            self.mask = self.mask[idx]

    def feed(self, tokens: torch.Tensor) -> None:
        """One forward step on `tokens` (rows, 1), every row's latest token; `logits` then predicts the next one."""
        tokens = tokens.to(self.device)
        self.fed += 1
        if self.mask is not None:
            self.mask = torch.cat([self.mask, torch.ones_like(tokens)], dim=-1)
        positions = (self.prompt_len + self.fed - 1).unsqueeze(-1)
        if self.prefix is None:
            out = self.model(input_ids=tokens, attention_mask=self.mask, position_ids=positions,
                             past_key_values=self.cache, use_cache=True, return_dict=True, logits_to_keep=1)
        else:
            with attention_implementation(self.model, ATTENTION_NAME):
                out = self.model(input_ids=tokens, position_ids=positions, past_key_values=self.cache,
                                 use_cache=True, return_dict=True, logits_to_keep=1, shared_prefix=self.prefix)
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1].float()


class CandidateGenerator:
    """N candidates for each of a few prompts, sampled step by step from one shared prefill per prompt."""

    def __init__(self, policy: DecodingPolicy, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
                 prompt_indices: Sequence[int] | None = None, shared_prefix: bool | None = None,
                 progress: Callable[[int], object] | None = None, hook: LogitsHook | None = None) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        self.policy = policy
        self.params = params
        self.n = n
        self.prompt_ids = [list(p) for p in prompt_ids]
        self.prompt_indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompt_ids)))
        if len(self.prompt_indices) != len(self.prompt_ids):
            raise ValueError("one prompt index per prompt")
        self._eos = policy.eos_token_ids
        supported = supports_shared_prefix(policy.model)
        if shared_prefix and not supported:
            raise ValueError(f"shared-prefix attention is not available for model type "
                             f"{getattr(policy.model.config, 'model_type', '?')!r}")
        self.shared_prefix = supported if shared_prefix is None else bool(shared_prefix)
        self.hook = hook
        self._stop_tail = stop_tail(params)
        self._progress = progress
        self.steps = 0
        self.candidates: list[list[Candidate]] = []
        for p in self.prompt_indices:
            row = []
            for j in range(n):
                g = torch.Generator(device="cpu")
                g.manual_seed(candidate_seed(params.seed, p, j))
                row.append(Candidate(prompt_index=p, index=j, generator=g))
            self.candidates.append(row)
        self._rows: list[Candidate] = [c for group in self.candidates for c in group]
        self._prefill()

    # ------------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        """Whether no candidate is still being generated."""
        return not self._rows

    @property
    def active(self) -> list[Candidate]:
        """Candidates still being generated, in batch order."""
        return list(self._rows)

    @property
    def tokens_generated(self) -> int:
        """Tokens sampled so far over all candidates."""
        return sum(c.num_tokens for group in self.candidates for c in group)

    @property
    def next_logits(self) -> torch.Tensor:
        """Unmodified policy logits (active rows, vocab) for each active candidate's next token, in `active` order."""
        return self._batch.logits

    @property
    def _prefix(self) -> SharedPrefix | None:
        return self._batch.prefix

    def partial_text(self, candidate: Candidate) -> str:
        """The response text so far (the final text once it has stopped)."""
        if not candidate.active:
            return candidate.text
        return self.policy.decode(candidate.token_ids)

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def _prefill(self) -> None:
        self._batch = KVBatch(self.policy.model, self.prompt_ids, self.n, pad_token_id(self.policy.tokenizer),
                              self.shared_prefix)
        if self.hook is not None:
            self.hook.prefill(self.prompt_ids, self.n)

    def _select(self, keep: list[int]) -> None:
        """Keep only batch rows `keep` (positions in the current batch), in that order."""
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if self.hook is not None:
            self.hook.select(keep)
        if not keep:
            return
        self._batch.select(keep)

    def _sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(tokens, sampling log-probs, policy log-probs, hook log-probs or None) of the active rows' next tokens."""
        logits = self._batch.logits
        generators = [c.generator for c in self._rows]
        if self.hook is None:
            return (*next_tokens(logits, self.params, generators), None)
        adjusted = self.hook.adjust(logits, list(self._rows))
        if adjusted.shape != logits.shape:
            raise ValueError(f"the logits hook returned shape {tuple(adjusted.shape)}, expected {tuple(logits.shape)}")
        tokens, lp_sample, lp_adjusted = next_tokens(adjusted, self.params, generators)
        lp_policy = logits.float().log_softmax(dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return tokens, lp_sample, lp_policy, lp_adjusted

    @torch.inference_mode()
    def step(self, max_tokens: int | None = None) -> int:
        """Generate until every candidate stopped, or `max_tokens` more tokens; returns the steps taken."""
        target = self.params.max_new_tokens if max_tokens is None else min(self.params.max_new_tokens,
                                                                            self.steps + max_tokens)
        taken = 0
        while self._rows and self.steps < target:
            tokens, lp_sample, lp_policy, lp_adjusted = self._sample()
            self.steps += 1
            taken += 1
            used = len(self._rows)
            keep = []
            for i, c in enumerate(self._rows):
                t = int(tokens[i])
                c.token_ids.append(t)
                c.logprobs.append(float(lp_sample[i]))
                c.policy_logprobs.append(float(lp_policy[i]))
                if lp_adjusted is not None:
                    c.adjusted_logprobs.append(float(lp_adjusted[i]))
                # every active candidate has exactly `steps` tokens, so the length rule is the step budget
                reason = finish_reason(self.policy, c, self._eos, self.params, self._stop_tail)
                if reason is None:
                    keep.append(i)
                else:
                    finish(self.policy, c, reason, self.params.stop)
            if self._progress is not None:
                self._progress(used + (used - len(keep)) * (self.params.max_new_tokens - self.steps))
            self._select(keep)
            if not self._rows:
                break
            fed = tokens[torch.tensor(keep, dtype=torch.long)].unsqueeze(-1)
            self._batch.feed(fed)
            if self.hook is not None:
                self.hook.step(fed[:, 0])
        return taken

    def prune(self, keep: Iterable[Candidate]) -> list[Candidate]:
        """Stop generating every active candidate not in `keep`; returns the ones pruned."""
        wanted = {id(c) for c in keep}
        pruned = [c for c in self._rows if id(c) not in wanted]
        for c in pruned:
            c.rejected_at = c.num_tokens
            c.text = self.policy.decode(c.token_ids)
            c.generator = None
        if pruned and self._progress is not None:
            self._progress(sum(self.params.max_new_tokens - c.num_tokens for c in pruned))
        self._select([i for i, c in enumerate(self._rows) if id(c) in wanted])
        return pruned

    def run(self) -> list[list[Candidate]]:
        """Generate to the end; the candidates of each prompt."""
        self.step()
        return self.candidates


def generate_candidates(policy: DecodingPolicy, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
                        prompt_indices: Sequence[int] | None = None, progress: Callable[[int], object] | None = None,
                        hook: LogitsHook | None = None) -> list[list[Candidate]]:
    """N complete candidates per prompt (shared prefill, one generator per candidate, optional logits hook)."""
    return CandidateGenerator(policy, prompt_ids, n, params, prompt_indices=prompt_indices, progress=progress,
                              hook=hook).run()


def reference_logprobs(reference: DecodingPolicy, prompt_ids: Sequence[int], candidates: Sequence[Candidate]
                       ) -> list[np.ndarray]:
    """Per-token log-probs of the candidates of ONE prompt under a reference policy (same tokenizer)."""
    return response_logprobs(reference.model, prompt_ids, [c.token_ids for c in candidates])
