"""Speculative Rejection (Sun et al., NeurIPS 2024): Best-of-N that stops generating unpromising candidates early.

Supports: a decision schedule by token count (default 16, 32, 64, ... below max_new_tokens), a rejection rate
alpha in [0, 1), any RM and user weights, best- or worst-of-N selection, the transformers engine (chunked
generation; backends without chunked generation are refused). At each decision point the still-generating
candidates of a prompt are scored on their PARTIAL text and only the top ceil((1 - alpha) * m) continue
(at least one); candidates that already finished are complete, cost nothing more and stay eligible. The pick is
the best complete response by final reward (`selection.pick_index`, the rule `best_of_n` uses). With alpha = 0
nothing is pruned and the result equals `best_of_n` with the same seed exactly (each candidate draws from its own
generator); with pruning, survivors are Best-of-N's samples up to rare floating-point flips (see `sampling_params`).

It answers whenever Best-of-N with the same seed does: where no complete candidate of a prompt finished (the
survivors ran into max_new_tokens), all its pruned candidates are resumed together from where they were cut, each
with the generator it was drawing from (`resume.resume_candidates`), until the first of them finishes; the others
are cut again there (``stats["resumed"]`` counts the candidates resumed). The continuations are Best-of-N's own
samples, so a prompt Best-of-N answers gets an answer, at worst at Best-of-N's token count (plus one prefill of
the resumed candidates). Resuming them together rather than one at a time in partial-score order measured the same
reward at 6.5x fewer sequential decoding steps (numbers in benchmarks/bench_speculative.py's docstring).
``resume=False`` gives the paper's algorithm, which has no answer there.
Assumes partial-response rewards rank candidates roughly as their final rewards will (the paper's premise).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from paretoalign.embed.chat_format import PromptLike
from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import (
    DEFAULT_BATCH_ROWS,
    build_result,
    generation_bar,
    load_policy,
    load_reward_model,
    prepare_prompts,
    prompt_groups,
)
from paretoalign.inference.engine import Candidate, CandidateGenerator
from paretoalign.inference.policy import Policy
from paretoalign.inference.resume import resume_candidates
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.selection import check_select, score_candidates
from paretoalign.inference.statistics import bon_kl_bound, check_n

if TYPE_CHECKING:
    from paretoalign.rewards.protocols import Scorer


def default_decision_tokens(max_new_tokens: int, first: int = 16) -> list[int]:
    """first, 2*first, 4*first, ... below max_new_tokens."""
    points = []
    t = first
    while t < max_new_tokens:
        points.append(t)
        t *= 2
    return points


def check_rejection_rate(alpha: float) -> float:
    """alpha as a float in [0, 1)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError) as exc:
        raise InputError(f"rejection rate must be a number in [0, 1), got {alpha!r}", field="rejection_rate") from exc
    if not (0.0 <= value < 1.0):
        raise InputError(f"rejection rate must be in [0, 1), got {alpha!r}", field="rejection_rate")
    return value


def check_decision_tokens(points: Sequence[int], max_new_tokens: int) -> list[int]:
    """Strictly increasing positive token counts below max_new_tokens."""
    points = list(points)
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in points):
        raise InputError(f"decision points must be positive integers, got {points}", field="decision_tokens")
    if any(b <= a for a, b in zip(points, points[1:], strict=False)):
        raise InputError(f"decision points must be strictly increasing, got {points}", field="decision_tokens")
    if points and points[-1] >= max_new_tokens:
        raise InputError(f"decision points must be below max_new_tokens={max_new_tokens}, got {points}",
                         field="decision_tokens")
    return points


def survivors(candidates: Sequence[Candidate], scores: Sequence[float], alpha: float, select: str) -> list[Candidate]:
    """The top ceil((1 - alpha) * m) candidates by partial score (bottom for worst-of-N); ties keep lower indices."""
    keep = max(1, math.ceil((1.0 - alpha) * len(candidates) - 1e-9))
    sign = -1.0 if select == "best" else 1.0
    order = sorted(range(len(candidates)), key=lambda i: (sign * scores[i], candidates[i].index))
    return [candidates[i] for i in sorted(order[:keep])]


def _resume_until_answered(policy: Policy, prompt_ids: dict[int, list[int]], candidates: Sequence[list[Candidate]],
                           generators: dict[int, Any], params: SamplingParams, bar: Any) -> list[Candidate]:
    """Resume, all together, the pruned candidates of every prompt that has no finished complete candidate, until one
    of that prompt's finishes (the rest are cut again) or all stop; returns the candidates resumed."""
    batch = [c for group in candidates if not any(c.finished for c in group if c.rejected_at is None)
             for c in group if c.rejected_at is not None]
    if not batch:
        return []

    def progress(k: int) -> None:
        bar.total += k  # resumed tokens come on top of the budget the bar counted as spent at pruning
        bar.update(k)

    resume_candidates(policy, [prompt_ids[c.prompt_index] for c in batch], batch, [generators[id(c)] for c in batch],
                      params, until_one_finishes=True, progress=None if bar.disable else progress)
    return batch


def speculative_rejection(policy: Policy | str, reward_model: Scorer | str | os.PathLike,
                          prompts: Sequence[PromptLike], *, n: int,
                          rejection_rate: float = 0.5, decision_tokens: Sequence[int] | None = None,
                          weights: Any = None, select: str = "best", params: SamplingParams | None = None,
                          batch_rows: int = DEFAULT_BATCH_ROWS, rm_batch_size: int | None = None,
                          progress: bool = False, resume: bool = True) -> list:
    """Best-of-N with early rejection of low-reward partial responses; results in input order.

    `resume`: where no complete candidate of a prompt finished, resume its pruned candidates until one does (off:
    the paper's algorithm, which then has no answer for that prompt)."""
    n = check_n(n)
    select = check_select(select)
    alpha = check_rejection_rate(rejection_rate)
    params = params or SamplingParams()
    points = check_decision_tokens(default_decision_tokens(params.max_new_tokens) if decision_tokens is None
                                   else decision_tokens, params.max_new_tokens)
    policy = load_policy(policy)
    if not isinstance(policy, Policy):
        raise InputError(f"speculative rejection needs chunked generation, which the {type(policy).__name__} "
                         "backend does not offer; use the transformers Policy", field="policy")
    reward_model = load_reward_model(reward_model)
    prepared = prepare_prompts(policy, reward_model, prompts, weights, params)
    results = []
    bar = generation_bar(len(prepared.messages), n, params, f"speculative-{n}", progress)
    for group in prompt_groups(len(prepared.messages), n, batch_rows):
        t0 = time.perf_counter()
        gen = CandidateGenerator(policy, [prepared.token_ids[i] for i in group], n, params, prompt_indices=group,
                                 progress=None if bar.disable else bar.update)
        partial: dict[int, tuple[float, dict[str, float]]] = {}
        generators: dict[int, Any] = {}  # each candidate's random stream, kept past pruning for a resume
        rm_rows = dict.fromkeys(group, 0)
        for point in points:
            gen.step(point - gen.steps)
            if gen.done:
                break
            for i, candidates in zip(group, gen.candidates, strict=True):
                live = [c for c in candidates if c.active]
                if len(live) <= 1 or alpha == 0.0:
                    continue
                scores, breakdowns = score_candidates(reward_model, prepared.messages[i],
                                                      [gen.partial_text(c) for c in live], weights, rm_batch_size)
                rm_rows[i] += len(live)
                for c, s, b in zip(live, scores, breakdowns, strict=True):
                    partial[id(c)] = (float(s), b)
                keep = {id(c) for c in survivors(live, list(scores), alpha, select)}
                generators.update((id(c), c.generator) for c in live if id(c) not in keep)
                gen.prune([c for c in gen.active if c.prompt_index != i or id(c) in keep])
        gen.step()
        resumed = [] if not resume else _resume_until_answered(
            policy, {i: prepared.token_ids[i] for i in group}, gen.candidates, generators, params, bar)
        elapsed = time.perf_counter() - t0
        again = {id(c) for c in resumed if c.rejected_at is not None}
        for i, candidates in zip(group, gen.candidates, strict=True):
            t1 = time.perf_counter()
            # complete candidates, and resumed ones cut again (scored on the text they now have, not a pick)
            complete = [c for c in candidates if c.rejected_at is None or id(c) in again]
            scores, breakdowns = score_candidates(reward_model, prepared.messages[i], [c.text for c in complete],
                                                  weights, rm_batch_size)
            final = {id(c): (float(s), b) for c, s, b in zip(complete, scores, breakdowns, strict=True)}
            rm_rows[i] += len(complete)
            merged = [final.get(id(c)) or partial[id(c)] for c in candidates]
            stats = {"n": n, "method": "speculative", "select": select, "rejection_rate": alpha,
                     "decision_tokens": points, "tokens_generated": sum(c.num_tokens for c in candidates),
                     "rm_calls": rm_rows[i], "kl_bound": bon_kl_bound(n),
                     "resumed": sum(c.prompt_index == i for c in resumed),
                     "wall_s": elapsed / len(group) + (time.perf_counter() - t1)}
            results.append(build_result(prepared.messages[i], candidates, [m[0] for m in merged],
                                        [m[1] for m in merged], select, stats))
        bar.set_postfix_str(f"{len(results)}/{len(prepared.messages)} prompts", refresh=True)
    bar.close()
    return results
