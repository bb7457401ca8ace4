"""Best-of-N and worst-of-N sampling with a multi-objective reward model and user weights.

Supports: any `Policy` (or a backend with the same ``sample`` method, e.g. the optional vLLM one), any object with
``RewardModel.score``'s signature, weights as None (the RM's gating), a {objective: weight} dict or a vector;
``select="worst"`` for red-teaming. Candidates of a prompt come from one shared prompt prefill; the N candidates
are scored in one batched RM call (the sentence-encoder backbone embeds the prompt once for all of them).
Assumes the candidates are i.i.d. samples of the policy (ALGORITHMS.md §3): then KL(pi_BoN || pi) <= log N - (N-1)/N
and the pick beats a fresh sample with probability N/(N+1) (ties aside). With a logits ``hook`` (an
`engine.LogitsHook`, e.g. `guided_decoding.GenARMHook`: Best-of-N over GenARM-guided samples) pi is the hooked
sampling distribution, and the bound is relative to it, not to the base policy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from paretoalign.data.schema import Message
from paretoalign.embed.chat_format import PromptLike, as_messages
from paretoalign.errors import InputError
from paretoalign.inference.engine import Candidate, LogitsHook
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.selection import (
    ScoredCandidate,
    SelectionResult,
    check_select,
    pick_index,
    score_candidates,
)
from paretoalign.inference.statistics import bon_kl_bound, check_n

if TYPE_CHECKING:
    from paretoalign.inference.protocols import Sampler
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.rewards.reward_model import Weights

DEFAULT_BATCH_ROWS = 32
"""Candidates generated together: prompts are grouped so that a batch holds about this many rows."""


@dataclass
class PreparedPrompts:
    """Validated prompts: messages and token ids, checked against the policy's context."""

    messages: list[list[Message]]
    token_ids: list[list[int]]


def load_policy(policy: Sampler | str) -> Sampler:
    """A policy object from a Policy/backend or a model reference."""
    return Policy.from_pretrained(policy) if isinstance(policy, str) else policy


def load_reward_model(reward_model: Scorer | str | os.PathLike, *, trust_remote_code: bool = False) -> Scorer:
    """A reward model object from an object or a reference: our folder, ``default`` or a Hugging Face sequence
    classifier (`paretoalign.rewards.loading.load_reward_model`; `trust_remote_code`: the caller's choice)."""
    if isinstance(reward_model, str) or hasattr(reward_model, "__fspath__"):
        from paretoalign.rewards.loading import load_reward_model as load_reference

        return load_reference(reward_model, trust_remote_code=trust_remote_code)
    return reward_model


def prepare_prompts(policy: Sampler, reward_model: Scorer, prompts: Sequence[PromptLike], weights: Weights,
                    params: SamplingParams) -> PreparedPrompts:
    """Check everything that can fail on input BEFORE any generation: weights, prompts, context length."""
    if hasattr(reward_model, "resolve_weights"):
        reward_model.resolve_weights(weights)
    messages = [as_messages(p, i) for i, p in enumerate(prompts)]
    token_ids = policy.encode_prompts(messages, params.max_new_tokens)
    return PreparedPrompts(messages, token_ids)


def generation_bar(num_prompts: int, n: int, params: SamplingParams, desc: str, progress: bool) -> tqdm:
    """A tqdm bar over the token budget (prompts x N x max_new_tokens): generated tokens, plus the unused budget of
    candidates that stop or are pruned early, so it ends at 100 % and its ETA is an upper bound."""
    return tqdm(total=num_prompts * n * params.max_new_tokens, desc=desc, unit="tok",
                disable=not progress, dynamic_ncols=True)


def sample_kwargs(policy: Sampler, bar: tqdm) -> dict[str, Any]:
    """`progress=bar.update` when the bar is shown and the policy's ``sample`` takes it (custom backends may not)."""
    import inspect

    if bar.disable:
        return {}
    try:
        accepts = "progress" in inspect.signature(policy.sample).parameters
    except (TypeError, ValueError):
        accepts = False
    return {"progress": bar.update} if accepts else {}


def hook_kwargs(policy: Sampler, hook: LogitsHook | None) -> dict[str, Any]:
    """`hook=hook` for the policy's ``sample``; InputError for a hook given to a backend whose ``sample`` takes none."""
    import inspect

    if hook is None:
        return {}
    try:
        params = inspect.signature(policy.sample).parameters
    except (TypeError, ValueError):
        params = {}
    if "hook" not in params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise InputError(f"{type(policy).__name__}.sample takes no logits hook: guided sampling needs the "
                         f"transformers engine (a Policy)", field="hook")
    return {"hook": hook}


def prompt_groups(num_prompts: int, n: int, batch_rows: int) -> Iterator[list[int]]:
    """Consecutive prompt indices, as many per group as fit in `batch_rows` candidates (at least one)."""
    per_group = max(1, batch_rows // n)
    for start in range(0, num_prompts, per_group):
        yield list(range(start, min(num_prompts, start + per_group)))


def build_result(prompt: list[Message], candidates: list[Candidate], scores: Sequence[float | None],
                 breakdowns: Sequence[dict[str, float] | None], select: str, stats: dict[str, Any]) -> SelectionResult:
    """The pick over finished candidates and the output record of one prompt."""
    scored = [ScoredCandidate(c, None if s is None else float(s), b)
              for c, s, b in zip(candidates, scores, breakdowns, strict=True)]
    selected = pick_index(scores, [c.finished for c in candidates], select)
    return SelectionResult(prompt=prompt, candidates=scored, selected=selected, stats=stats)


def add_reference_logprobs(reference: Policy, prompt_ids: list[int], candidates: list[Candidate],
                           stats: dict[str, Any]) -> None:
    """Sampler-vs-reference Monte-Carlo KL over a prompt's candidates (mean of summed log-ratio) into stats."""
    ref = reference.response_logprobs(prompt_ids, [c.token_ids for c in candidates])
    ratios = [float(np.sum(c.logprobs) - r.sum()) for c, r in zip(candidates, ref, strict=True)]
    stats["sampler_kl_mc"] = float(np.mean(ratios))


def best_of_n(policy: Sampler | str, reward_model: Scorer | str | os.PathLike, prompts: Sequence[PromptLike], *,
              n: int, weights: Weights = None, select: str = "best", params: SamplingParams | None = None,
              reference: Policy | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
              rm_batch_size: int | None = None, progress: bool = False,
              hook: LogitsHook | None = None) -> list[SelectionResult]:
    """Sample N candidates per prompt (through `hook`, if given), score them, pick the best (or worst) finished one."""
    n = check_n(n)
    select = check_select(select)
    params = params or SamplingParams()
    policy = load_policy(policy)
    reward_model = load_reward_model(reward_model)
    prepared = prepare_prompts(policy, reward_model, prompts, weights, params)
    guided = hook_kwargs(policy, hook)
    results: list[SelectionResult] = []
    bar = generation_bar(len(prepared.messages), n, params, f"{select}-of-{n}", progress)
    extra = sample_kwargs(policy, bar)
    for group in prompt_groups(len(prepared.messages), n, batch_rows):
        t0 = time.perf_counter()
        sampled = policy.sample([prepared.token_ids[i] for i in group], n, params, prompt_indices=group, **extra,
                                **guided)
        if not extra:
            bar.update(len(group) * n * params.max_new_tokens)
        t_gen = time.perf_counter() - t0
        for i, candidates in zip(group, sampled, strict=True):
            t1 = time.perf_counter()
            scores, breakdowns = score_candidates(reward_model, prepared.messages[i], [c.text for c in candidates],
                                                  weights, rm_batch_size)
            stats = {"n": n, "method": f"{select}-of-n", "tokens_generated": sum(c.num_tokens for c in candidates),
                     "rm_calls": len(candidates), "kl_bound": bon_kl_bound(n)}
            if hook is not None:
                stats["hook"] = type(hook).__name__
            if reference is not None:
                add_reference_logprobs(reference, prepared.token_ids[i], candidates, stats)
            stats["wall_s"] = t_gen / len(group) + (time.perf_counter() - t1)
            results.append(build_result(prepared.messages[i], candidates, list(scores), breakdowns, select, stats))
        bar.set_postfix_str(f"{len(results)}/{len(prepared.messages)} prompts", refresh=True)
    bar.close()
    return results
