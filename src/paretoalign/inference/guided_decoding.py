"""GenARM reward-guided decoding (Xu et al. 2024): sample from pi_base(y_t | .) * prod_i pi_r,i(y_t | .)^(w_i / beta).

Supports:

- any number of autoregressive reward models (causal LMs trained by `paretoalign.train.genarm_trainer`), each
  weighted by w_i >= 0; the combination is applied to log-softmaxed logits,
  ``log pi_base + sum_i (w_i / beta) log pi_r,i``, renormalised (`combine_logits`);
- `GenARMHook`: that combination as a logits hook of the sampling engine (`engine.LogitsHook`), so guided decoding
  runs in `engine.CandidateGenerator`: the base model's shared prefill and shared-prefix attention, batches of
  several prompts, the shared sampling step (temperature, top-k, top-p, per-candidate seeds) and the engine's stop
  and text rules. Each reward model prefills the batch's prompts once (left-padded, like the base model; its prompt
  KV shared by the n rows where shared-prefix attention supports the architecture, else repeated), then runs one
  decoding step per token for the rows still generating;
- `reward_guided_generate`: n guided candidates per prompt (engine `Candidate`s); `best_of_n(..., hook=...)` picks
  among guided samples with a reward model;
- prompts as chat message lists (rendered with the tokenizer's chat template and its generation prompt, or the
  plain ``role: content`` fallback without one) or strings (taken as one user message).

Assumes:

- every reward model uses the base model's tokenizer (same token ids); only the vocabulary size can be checked,
  and a mismatch raises ``InputError``;
- a reward model with weight 0 is not run at all, so weight 0 (or no reward models) is plain engine sampling
  (`engine.generate_candidates` with the same seed gives the same tokens);
- EOS tokens (the tokenizer's and the base model's ``generation_config.eos_token_id``) and stop strings end a
  candidate. Text follows the engine (`Policy.decode`): the token ids decoded with ``skip_special_tokens=True``,
  a stop string and what follows it cut off. (Before the engine ran it, this module decoded with
  ``skip_special_tokens=False``, so special tokens inside a response showed in its text.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from paretoalign.data.schema import Message
from paretoalign.embed.chat_format import prompt_token_ids
from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import DEFAULT_BATCH_ROWS, prompt_groups
from paretoalign.inference.engine import Candidate, KVBatch, generate_candidates
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.shared_prefix import supports_shared_prefix

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer

Prompt = Sequence[Message] | str
"""A chat conversation up to the reply, or a string taken as one user message."""


def vocab_size(model: CausalLM) -> int:
    """Size of the model's next-token distribution (rows of its output embedding)."""
    return int(model.get_output_embeddings().weight.shape[0])


def combine_logits(base_logits: torch.Tensor, reward_logits: Sequence[torch.Tensor], weights: Sequence[float],
                   beta: float) -> torch.Tensor:
    """Log-probabilities (rows, vocab) float32 of pi_base * prod_i pi_r,i^(w_i / beta), normalised."""
    combined = base_logits.float().log_softmax(dim=-1)
    for logits, weight in zip(reward_logits, weights, strict=True):
        combined = combined + (weight / beta) * logits.float().to(combined.device).log_softmax(dim=-1)
    return combined.log_softmax(dim=-1)


def _check_beta(beta: Any) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise InputError(f"beta must be a finite number > 0, got {beta!r}", field="beta")
    return float(beta)


def _check_reward_models(reward_models: Sequence[tuple[CausalLM, float]], base_vocab: int | None = None
                         ) -> list[tuple[CausalLM, float]]:
    """The (model, weight) pairs with weight > 0; InputError for a malformed pair, a bad weight or vocabulary."""
    active = []
    for i, entry in enumerate(reward_models):
        try:
            model, weight = entry
        except (TypeError, ValueError):
            raise InputError(f"reward_models[{i}] must be a (model, weight) pair, got {entry!r}",
                             field="reward_models") from None
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                math.isfinite(weight) and weight >= 0):
            raise InputError(f"reward_models[{i}] weight must be a finite number >= 0, got {weight!r}",
                             field="reward_models")
        size = vocab_size(model)
        if base_vocab is not None and size != base_vocab:
            raise InputError(f"reward_models[{i}] has a vocabulary of {size} tokens but the base model has "
                             f"{base_vocab}: a GenARM reward model must share the base model's tokenizer",
                             field="reward_models")
        if weight > 0:
            active.append((model, float(weight)))
    return active


def _check_inputs(base: CausalLM, tokenizer: Tokenizer, reward_models: Sequence[tuple[CausalLM, float]], n: int,
                  beta: float) -> list[tuple[CausalLM, float]]:
    _check_beta(beta)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be an integer >= 1, got {n!r}", field="n")
    base_vocab = vocab_size(base)
    if len(tokenizer) > base_vocab:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the base model's vocabulary only "
                         f"{base_vocab}", field="tokenizer")
    return _check_reward_models(reward_models, base_vocab)


class GenARMHook:
    """GenARM as an engine logits hook: policy log-probs + sum_i (w_i / beta) log pi_r,i, renormalised.

    Reward models with weight 0 are never run; with none left the policy's logits pass through unchanged. The
    models are put in eval mode. One hook serves one generator at a time (`prefill` starts over).
    """

    def __init__(self, reward_models: Sequence[tuple[CausalLM, float]], beta: float = 1.0) -> None:
        self.beta = _check_beta(beta)
        active = _check_reward_models(reward_models)
        self.models = [m.eval() for m, _ in active]
        self.weights = [w for _, w in active]
        self._batches: list[KVBatch] | None = None

    def prefill(self, prompt_ids: Sequence[Sequence[int]], n: int) -> None:
        """Prefill every reward model on the prompts (left-padded, in one batch); n rows per prompt."""
        self._batches = [KVBatch(m, prompt_ids, n, pad_id=0, shared_prefix=supports_shared_prefix(m))
                         for m in self.models]

    def adjust(self, logits: torch.Tensor, rows: Sequence[Candidate]) -> torch.Tensor:
        """The guided log-probabilities (rows, vocab) for the policy's next-token `logits`."""
        if not self.models:
            return logits
        if self._batches is None:
            raise RuntimeError("GenARMHook.adjust before prefill")
        for i, batch in enumerate(self._batches):
            if batch.logits.shape[-1] != logits.shape[-1]:
                raise InputError(f"reward model {i} has a vocabulary of {batch.logits.shape[-1]} tokens but the "
                                 f"policy has {logits.shape[-1]}: a GenARM reward model must share the policy's "
                                 f"tokenizer", field="reward_models")
            if batch.logits.shape[0] != len(rows):
                raise RuntimeError(f"reward model {i} holds {batch.logits.shape[0]} rows, the batch {len(rows)}")
        return combine_logits(logits, [b.logits for b in self._batches], self.weights, self.beta)

    def select(self, keep: Sequence[int]) -> None:
        """Drop the rows that left the batch (all of them when `keep` is empty)."""
        if self._batches is None:
            return
        if not keep:
            self._batches = None
            return
        for batch in self._batches:
            batch.select(keep)

    def step(self, tokens: torch.Tensor) -> None:
        """Run every reward model one step on the tokens just chosen."""
        if self._batches is None:
            raise RuntimeError("GenARMHook.step before prefill")
        for batch in self._batches:
            batch.feed(tokens.unsqueeze(-1))


def _prompt_ids(tokenizer: Tokenizer, prompt: Any, index: int) -> list[int]:
    if not isinstance(prompt, (str, list, tuple)) or (
            not isinstance(prompt, str) and not all(isinstance(m, dict) for m in prompt)):
        raise InputError(f"prompt {index} must be a string or a list of {{'role', 'content'}} messages, got "
                         f"{type(prompt).__name__} (pass a list of prompts)", field="prompts")
    ids = prompt_token_ids(tokenizer, prompt)
    if not ids:
        raise InputError(f"prompt {index} renders to no tokens", field="prompts")
    return ids


def reward_guided_generate(base: CausalLM, tokenizer: Tokenizer, reward_models: Sequence[tuple[CausalLM, float]],
                           prompts: Sequence[Prompt], n: int = 1, beta: float = 1.0,
                           params: SamplingParams | None = None) -> list[list[Candidate]]:
    """n GenARM-guided candidates per prompt from `base` steered by weighted autoregressive reward models."""
    params = params if params is not None else SamplingParams()
    active = _check_inputs(base, tokenizer, reward_models, n, beta)
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of prompts, got a single string", field="prompts")
    prompt_ids = [_prompt_ids(tokenizer, prompt, i) for i, prompt in enumerate(prompts)]
    models = [base] + [m for m, _ in active]
    was_training = [m.training for m in models]
    try:
        policy = Policy(base, tokenizer)
        hook = GenARMHook(active, beta) if active else None
        results: list[list[Candidate]] = []
        for group in prompt_groups(len(prompt_ids), n, DEFAULT_BATCH_ROWS):
            results += generate_candidates(policy, [prompt_ids[i] for i in group], n, params, prompt_indices=group,
                                           hook=hook)
        return results
    finally:
        for m, training in zip(models, was_training, strict=True):
            m.train(training)


def guided_rows(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    """The `guided` command's output record of each candidate of one prompt.

    ``logprob_base``: summed log-prob under the base model; ``logprob_guided``: under the guided distribution at
    temperature 1 (before top-k/top-p), which is the base model's when no reward model ran.
    """
    return [{"response": c.text, "finished": c.finished, "tokens": c.num_tokens,
             "logprob_base": float(sum(c.policy_logprobs)),
             "logprob_guided": float(sum(c.adjusted_logprobs or c.policy_logprobs))} for c in candidates]
