"""GenARM reward-guided decoding (Xu et al. 2024): sample from pi_base(y_t | .) * prod_i pi_r,i(y_t | .)^(w_i / beta).

Supports:

- any number of autoregressive reward models (causal LMs trained by `paretoalign.rewards.genarm_trainer`), each
  weighted by w_i >= 0; the combination is applied to log-softmaxed logits,
  ``log pi_base + sum_i (w_i / beta) log pi_r,i``, and the result goes through the shared sampling step
  (`paretoalign.inference.sampling_params`: temperature, top-k, top-p, stop strings, per-candidate seeds);
- n candidates per prompt: every model prefills the prompt once, and its KV cache is repeated for the n rows;
  finished rows are dropped from the batch, so each candidate draws one random number per token it generates,
  from its own generator, exactly as a plain one-candidate sampling loop would;
- prompts as chat message lists (rendered with the tokenizer's chat template and its generation prompt, or the
  plain ``role: content`` fallback without one) or strings (taken as one user message).

Assumes:

- every reward model uses the base model's tokenizer (same token ids); only the vocabulary size can be checked,
  and a mismatch raises ``InputError``;
- a reward model with weight 0 is not run at all, so weight 0 (or no reward models) is plain sampling from the
  base model;
- EOS tokens (the tokenizer's and the base model's ``generation_config.eos_token_id``) and stop strings end a
  candidate; the EOS token is kept in ``token_ids`` but not in ``text``; a stop string and what follows it are
  cut from ``text`` (the token ids keep the token that completed it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from paretoalign.data.schema import Message
from paretoalign.errors import InputError
from paretoalign.inference.policy import eos_token_ids, prompt_token_ids
from paretoalign.inference.sampling_params import SamplingParams, candidate_generators, next_tokens

Prompt = Sequence[Message] | str
"""A chat conversation up to the reply, or a string taken as one user message."""


@dataclass
class GuidedCandidate:
    """One sampled response and how it was produced."""

    text: str
    token_ids: list[int]
    finished: bool
    """True when an EOS token or a stop string ended it; False when max_new_tokens cut it."""
    stop_reason: str
    """'eos', 'stop' or 'length'."""
    logprobs: list[float] = field(default_factory=list)
    """Log-probability of each token in `token_ids` under the base model alone."""
    guided_logprobs: list[float] = field(default_factory=list)
    """Log-probability of each token under the guided distribution at temperature 1 (before top-k/top-p)."""


def vocab_size(model) -> int:
    """Size of the model's next-token distribution (rows of its output embedding)."""
    return int(model.get_output_embeddings().weight.shape[0])


def combine_logits(base_logits: torch.Tensor, reward_logits: Sequence[torch.Tensor], weights: Sequence[float],
                   beta: float) -> torch.Tensor:
    """Log-probabilities (rows, vocab) float32 of pi_base * prod_i pi_r,i^(w_i / beta), normalised."""
    combined = base_logits.float().log_softmax(dim=-1)
    for logits, weight in zip(reward_logits, weights, strict=True):
        combined = combined + (weight / beta) * logits.float().to(combined.device).log_softmax(dim=-1)
    return combined.log_softmax(dim=-1)


def _check_inputs(base, tokenizer, reward_models, n: int, beta: float) -> list[tuple[object, float]]:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise InputError(f"beta must be a finite number > 0, got {beta!r}", field="beta")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be an integer >= 1, got {n!r}", field="n")
    base_vocab = vocab_size(base)
    if len(tokenizer) > base_vocab:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the base model's vocabulary only "
                         f"{base_vocab}", field="tokenizer")
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
        if size != base_vocab:
            raise InputError(f"reward_models[{i}] has a vocabulary of {size} tokens but the base model has "
                             f"{base_vocab}: a GenARM reward model must share the base model's tokenizer",
                             field="reward_models")
        if weight > 0:
            active.append((model, float(weight)))
    return active


def _device(model) -> torch.device:
    return next(model.parameters()).device


class _Stream:
    """One model decoding alongside the others: its KV cache and its latest next-token logits per active row."""

    def __init__(self, model, prompt_ids: list[int], n: int) -> None:
        self.model = model
        self.device = _device(model)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        out = model(input_ids=ids, use_cache=True)
        self.cache = out.past_key_values
        self.cache.batch_repeat_interleave(n)
        self.logits = out.logits[:, -1, :].float().expand(n, -1)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows.to(self.device))
        self.logits = self.logits[rows.to(self.logits.device)]

    def step(self, tokens: torch.Tensor) -> None:
        out = self.model(input_ids=tokens.to(self.device).unsqueeze(-1), past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.logits = out.logits[:, -1, :].float()


def _find_stop(text: str, stops: Sequence[str], search_from: int) -> int:
    """Index of the earliest stop string starting at or after `search_from` in `text`, or -1."""
    hits = [i for i in (text.find(s, search_from) for s in stops) if i >= 0]
    return min(hits) if hits else -1


@torch.inference_mode()
def _generate_one(base, tokenizer, active, prompt_ids: list[int], prompt_index: int, n: int, beta: float,
                  params: SamplingParams, eos: set[int]) -> list[GuidedCandidate]:
    generators = candidate_generators(params.seed, prompt_index, n)
    streams = [_Stream(base, prompt_ids, n)] + [_Stream(model, prompt_ids, n) for model, _ in active]
    weights = [w for _, w in active]
    token_ids: list[list[int]] = [[] for _ in range(n)]
    base_lp: list[list[float]] = [[] for _ in range(n)]
    guided_lp: list[list[float]] = [[] for _ in range(n)]
    texts = [""] * n
    reasons = ["length"] * n
    rows = list(range(n))  # candidate index of each row still in the batch
    max_stop = max((len(s) for s in params.stop), default=0)
    for step in range(params.max_new_tokens):
        base_logits = streams[0].logits.cpu()
        if active:
            combined = combine_logits(base_logits, [s.logits.cpu() for s in streams[1:]], weights, beta)
        else:
            combined = base_logits  # plain sampling: the base logits exactly as an unguided loop passes them
        tokens, _, guided = next_tokens(combined, params, [generators[j] for j in rows])
        base_all = base_logits.float().log_softmax(dim=-1)
        base_tok = base_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        done: list[int] = []
        for r, j in enumerate(rows):
            tok = int(tokens[r])
            token_ids[j].append(tok)
            base_lp[j].append(float(base_tok[r]))
            guided_lp[j].append(float(guided[r]))
            if tok in eos:
                reasons[j] = "eos"
                texts[j] = tokenizer.decode(token_ids[j][:-1], skip_special_tokens=False)
                done.append(r)
                continue
            if params.stop:
                previous = len(texts[j])
                texts[j] = tokenizer.decode(token_ids[j], skip_special_tokens=False)
                at = _find_stop(texts[j], params.stop, max(0, previous - max_stop))
                if at >= 0:
                    texts[j] = texts[j][:at]
                    reasons[j] = "stop"
                    done.append(r)
        if done:
            keep = torch.tensor([r for r in range(len(rows)) if r not in done], dtype=torch.long)
            rows = [rows[r] for r in keep.tolist()]
            tokens = tokens[keep]
            if not rows:
                break
            for s in streams:
                s.keep(keep)
        if step + 1 < params.max_new_tokens:
            for s in streams:
                s.step(tokens)
    out = []
    for j in range(n):
        if reasons[j] == "length":
            texts[j] = tokenizer.decode(token_ids[j], skip_special_tokens=False)
        out.append(GuidedCandidate(text=texts[j], token_ids=token_ids[j], finished=reasons[j] != "length",
                                   stop_reason=reasons[j], logprobs=base_lp[j], guided_logprobs=guided_lp[j]))
    return out


def reward_guided_generate(base, tokenizer, reward_models: Sequence[tuple[object, float]], prompts: Sequence[Prompt],
                           n: int = 1, beta: float = 1.0,
                           params: SamplingParams | None = None) -> list[list[GuidedCandidate]]:
    """n GenARM-guided candidates per prompt from `base` steered by weighted autoregressive reward models."""
    params = params if params is not None else SamplingParams()
    active = _check_inputs(base, tokenizer, reward_models, n, beta)
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of prompts, got a single string", field="prompts")
    eos = eos_token_ids(tokenizer, base)
    models = [base] + [m for m, _ in active]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        results = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, (str, list, tuple)) or (
                    not isinstance(prompt, str) and not all(isinstance(m, dict) for m in prompt)):
                raise InputError(f"prompt {i} must be a string or a list of {{'role', 'content'}} messages, got "
                                 f"{type(prompt).__name__} (pass a list of prompts)", field="prompts")
            ids = prompt_token_ids(tokenizer, prompt)
            if not ids:
                raise InputError(f"prompt {i} renders to no tokens", field="prompts")
            results.append(_generate_one(base, tokenizer, active, ids, i, n, float(beta), params, eos))
        return results
    finally:
        for m, training in zip(models, was_training, strict=True):
            m.train(training)
