"""Points of a reward–KL trade-off: saved policies, the reference and Best-of-N from the reference, on the same prompts.

Supports:
- `evaluate_policy`: samples `samples_per_prompt` responses per prompt from a policy, scores EVERY sample with the
  multi-objective RM (finished or cut at ``max_new_tokens``; the finished fraction is recorded) and estimates
  KL(π‖π_ref) by Monte Carlo as the mean over samples of Σ_t log π(y_t|·) − log π_ref(y_t|·) (ALGORITHMS.md §10).
  Both log-probs are computed by teacher forcing with the same code (`Policy.response_logprobs`), so numerical
  differences between the sampling and the scoring kernels do not bias small KLs and a model evaluated against
  itself gives exactly 0. With temperature ≠ 1, top-k or top-p the samples come from the sampler, not from π, so
  the estimate is KL(sampler‖π_ref) from the sampler's own log-probs (a warning says so);
- `best_of_n_points`: max(ns) reference samples per prompt drawn once; Best-of-n uses the first n of them and picks
  with THE Best-of-N rule of `paretoalign bon` (`inference.selection.pick_index`: the best weighted score among the
  FINISHED draws, ties to the lowest index), so a point's pick is what `best_of_n` returns with the same seed. A
  prompt where none of the n draws finished gets no pick there, and none here: the point's reward, objectives and
  tokens are means over the answered prompts, ``answered_fraction`` says how many those are (shown beside the point
  in the report), and ``per_prompt_reward`` is NaN (JSON null) for the others. Its KL is the analytic bound
  log n − (n−1)/n (ALGORITHMS.md §3, marked ``kl_is_bound``); plus the reference itself at KL 0 (mean over all draws,
  finished or not, like a policy point);
- `deal_point`: DeAL search (`inference.deal`) from the reference, guided by the same scorer and weights, one
  response per prompt (every prompt answered, finished or cut at the budget). The search is deterministic, so its
  policy is a point mass on the response y*(x) and KL(δ‖π_ref) = −log π_ref(y*|x) exactly (teacher-forced, like the
  policies' log-probs); ``meta`` carries the search's cost (mean ``tokens_evaluated`` and reward rows per prompt);
- weights: None = the RM's gated (prompt-conditioned) score, or a {objective: weight} dict (see `RewardModel`).

Means are over all samples; standard errors are over prompts (the samples of one prompt are not independent).
Assumes the policy and the reference share a tokenizer (checked) and prompts are rendered with the policy's template.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.embed.chat_format import PromptLike, as_messages
from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import DEFAULT_BATCH_ROWS, prompt_groups
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.selection import pick_indices
from paretoalign.inference.statistics import bon_kl_bound, check_n

if TYPE_CHECKING:
    from paretoalign.inference.deal import DeALParams
    from paretoalign.rewards.protocols import Scorer

KINDS = ("policy", "reference", "best_of_n", "deal")
DEFAULT_BON_NS = (2, 4, 8, 16)
DEFAULT_PROMPT_MAX_CHARS = 400


@dataclass
class FrontPoint:
    """One evaluated point: mean weighted reward, per-objective means and KL to the reference."""

    name: str
    kind: str
    """"policy", "reference", "best_of_n" or "deal"."""
    n: int | None
    """N of a Best-of-N point, else None."""
    reward: float
    reward_stderr: float | None
    objectives: dict[str, float]
    kl: float
    kl_stderr: float | None
    kl_is_bound: bool
    """True when `kl` is the analytic Best-of-N upper bound, not an estimate."""
    num_prompts: int
    num_samples: int
    finished_fraction: float
    mean_response_tokens: float
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    per_prompt_reward: list[float] = field(default_factory=list)
    """Mean reward of each prompt, in prompt order (for paired comparisons on the same prompts); NaN where a
    Best-of-N point has no pick."""
    per_prompt_objectives: dict[str, list[float]] = field(default_factory=dict)
    """Mean of each objective on each prompt, in prompt order (paired comparisons per objective, `paired_gain`);
    NaN where a Best-of-N point has no pick."""
    answered_fraction: float = 1.0
    """Share of the prompts the point has a response for: 1 for policies and the reference (every sample counts);
    for Best-of-N the prompts where at least one of the n draws finished (elsewhere Best-of-N returns nothing)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}", field="kind")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN and inf become None)."""
        return json_safe(asdict(self))


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars as Python ones and NaN / inf as None, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass
class _Draws:
    """Per-sample results of (prompts × samples): scores (P, m), objectives (P, m, k), log-ratios (P, m) or None."""

    scores: np.ndarray
    objectives: np.ndarray
    objective_names: list[str]
    finished: np.ndarray
    tokens: np.ndarray
    log_ratio: np.ndarray | None


def sampler_is_policy(params: SamplingParams) -> bool:
    """Whether tokens are drawn from the unmodified policy (temperature 1, no top-k / top-p)."""
    return params.temperature == 1.0 and params.top_k == 0 and params.top_p == 1.0


def check_same_tokenizer(policy: Policy, reference: Policy) -> None:
    """InputError unless the two policies tokenize alike (the log-ratio compares the same token sequences)."""
    if policy is reference or policy.tokenizer is reference.tokenizer:
        return
    if policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise InputError(f"policy '{policy.name}' and reference '{reference.name}' have different tokenizers: the "
                         "KL estimate needs both to score the same token ids", field="reference")


def _stderr_over_prompts(per_prompt: np.ndarray) -> float | None:
    """Standard error of the mean of per-prompt values (None for fewer than two prompts)."""
    if per_prompt.size < 2:
        return None
    return float(per_prompt.std(ddof=1) / math.sqrt(per_prompt.size))


def _prepare(policy: Policy, reward_model: Scorer, prompts: Sequence[PromptLike], weights: Any,
             params: SamplingParams) -> tuple[list[list[Message]], list[list[int]]]:
    """Weights, prompts and context checked before anything is generated."""
    if hasattr(reward_model, "resolve_weights"):
        reward_model.resolve_weights(weights)
    messages = [as_messages(p, i) for i, p in enumerate(prompts)]
    return messages, policy.encode_prompts(messages, params.max_new_tokens)


def _draw(policy: Policy, reference: Policy | None, reward_model: Scorer, messages: list[list[Message]],
          prompt_ids: list[list[int]], m: int, params: SamplingParams, weights: Any, batch_rows: int) -> _Draws:
    """Sample m responses per prompt, score all of them and (with a reference) their summed log-ratios."""
    exact = sampler_is_policy(params)
    scores, objectives, finished, tokens, ratios = [], [], [], [], []
    names: list[str] = []
    for group in prompt_groups(len(messages), m, batch_rows):
        sampled = policy.sample([prompt_ids[i] for i in group], m, params, prompt_indices=group)
        flat = [c for candidates in sampled for c in candidates]
        out = reward_model.score([messages[i] for i in group for _ in range(m)], [c.text for c in flat],
                                 weights=weights)
        names = list(out.objective_names)
        scores.append(np.asarray(out.score, dtype=np.float64).reshape(len(group), m))
        objectives.append(np.asarray(out.objectives, dtype=np.float64).reshape(len(group), m, len(names)))
        finished.append(np.array([[c.finished for c in cs] for cs in sampled], dtype=bool))
        tokens.append(np.array([[c.num_tokens for c in cs] for cs in sampled], dtype=np.int64))
        if reference is None:
            continue
        for i, candidates in zip(group, sampled, strict=True):
            ids = [c.token_ids for c in candidates]
            ref = reference.response_logprobs(prompt_ids[i], ids)
            own = policy.response_logprobs(prompt_ids[i], ids) if exact else [np.asarray(c.logprobs) for c in
                                                                               candidates]
            ratios.append([float(np.sum(a) - np.sum(b)) for a, b in zip(own, ref, strict=True)])
    return _Draws(scores=np.concatenate(scores), objectives=np.concatenate(objectives), objective_names=names,
                  finished=np.concatenate(finished), tokens=np.concatenate(tokens),
                  log_ratio=np.asarray(ratios, dtype=np.float64) if reference is not None else None)


def _point(name: str, kind: str, n: int | None, scores: np.ndarray, objectives: np.ndarray, names: list[str],
           finished: np.ndarray, tokens: np.ndarray, kl: float, kl_stderr: float | None, kl_is_bound: bool,
           source: str, meta: dict[str, Any]) -> FrontPoint:
    """A FrontPoint (every prompt answered) from per-prompt rows of scores (P, m), objectives (P, m, k), finished and
    token counts."""
    return FrontPoint(name=name, kind=kind, n=n, reward=float(scores.mean()),
                      reward_stderr=_stderr_over_prompts(scores.mean(axis=1)),
                      objectives={k: float(objectives[..., j].mean()) for j, k in enumerate(names)},
                      kl=float(kl), kl_stderr=kl_stderr, kl_is_bound=kl_is_bound, num_prompts=int(scores.shape[0]),
                      num_samples=int(scores.size),
                      finished_fraction=float(finished.mean()), mean_response_tokens=float(tokens.mean()),
                      source=source, meta=meta, per_prompt_reward=[float(v) for v in scores.mean(axis=1)],
                      per_prompt_objectives={k: [float(v) for v in objectives[..., j].mean(axis=1)]
                                             for j, k in enumerate(names)})


def paired_gain(point: FrontPoint, baseline: FrontPoint, objective: str | None = None
                ) -> tuple[float, float | None]:
    """(mean reward gain over `baseline`, its standard error over prompts) from per-prompt differences; with
    `objective`, the gain in that objective instead of the weighted reward.

    Both points must be evaluated on the same prompts; pairing removes the prompt-to-prompt spread of rewards, which
    dominates the unpaired standard errors. Only prompts both points answered count (NaN gain when there are none).
    """
    if objective is None:
        a = np.asarray(point.per_prompt_reward, dtype=np.float64)
        b = np.asarray(baseline.per_prompt_reward, dtype=np.float64)
    else:
        missing = [p.name for p in (point, baseline) if objective not in p.per_prompt_objectives]
        if missing:
            raise InputError(f"no per-prompt values of objective {objective!r} for {missing[0]!r}",
                             field="objective")
        a = np.asarray(point.per_prompt_objectives[objective], dtype=np.float64)
        b = np.asarray(baseline.per_prompt_objectives[objective], dtype=np.float64)
    if a.size == 0 or a.size != b.size:
        raise InputError(f"'{point.name}' and '{baseline.name}' were not evaluated on the same prompts "
                         f"({a.size} vs {b.size} per-prompt rewards)", field="per_prompt_reward")
    diff = (a - b)[np.isfinite(a) & np.isfinite(b)]  # prompts both answered (Best-of-N may have no pick)
    if diff.size == 0:
        return float("nan"), None
    return float(diff.mean()), _stderr_over_prompts(diff)


def _kl_note(params: SamplingParams) -> str:
    return (f"samples come from the sampler (temperature={params.temperature}, top_k={params.top_k}, "
            f"top_p={params.top_p}), not from the policy itself")


def evaluate_policy(policy: Policy, reference: Policy, reward_model: Scorer, prompts: Sequence[PromptLike], *,
                    samples_per_prompt: int = 4, params: SamplingParams | None = None, weights: Any = None,
                    name: str | None = None, source: str | None = None,
                    batch_rows: int = DEFAULT_BATCH_ROWS) -> FrontPoint:
    """Mean reward, per-objective rewards and Monte-Carlo KL(policy‖reference) over sampled responses."""
    m = check_n(samples_per_prompt, "samples_per_prompt")
    params = params or SamplingParams()
    check_same_tokenizer(policy, reference)
    messages, prompt_ids = _prepare(policy, reward_model, prompts, weights, params)
    exact = sampler_is_policy(params)
    if not exact:
        warnings.warn(f"KL of '{policy.name}' is the sampler's: {_kl_note(params)}", stacklevel=2)
    t0 = time.perf_counter()
    draws = _draw(policy, reference, reward_model, messages, prompt_ids, m, params, weights, batch_rows)
    ratio = draws.log_ratio
    meta = {"kl_of": "policy" if exact else "sampler", "policy": policy.name, "reference": reference.name,
            "samples_per_prompt": m, "wall_s": round(time.perf_counter() - t0, 3)}
    return _point(name or policy.name, "policy", None, draws.scores, draws.objectives, draws.objective_names,
                  draws.finished, draws.tokens, float(ratio.mean()), _stderr_over_prompts(ratio.mean(axis=1)),
                  False, source if source is not None else policy.name, meta)


def best_of_n_points(reference: Policy, reward_model: Scorer, prompts: Sequence[PromptLike],
                     ns: Sequence[int] = DEFAULT_BON_NS, *, params: SamplingParams | None = None, weights: Any = None,
                     seed: int | None = None, samples_per_prompt: int = 1, name: str = "reference",
                     batch_rows: int = DEFAULT_BATCH_ROWS) -> list[FrontPoint]:
    """The reference (KL 0) and Best-of-n from it for each n in `ns` (KL = the bound), from ONE set of draws.

    max(max(ns), samples_per_prompt) samples are drawn per prompt; Best-of-n looks at the first n of them, so
    its mean reward never decreases with n on the same draws.
    """
    ns = sorted({check_n(n, "ns") for n in ns})
    draws_per_prompt = max([*ns, check_n(samples_per_prompt, "samples_per_prompt")])
    params = params or SamplingParams()
    if seed is not None:
        params = replace(params, seed=seed)
    exact = sampler_is_policy(params)
    if not exact:
        warnings.warn(f"reference KL is the sampler's and the Best-of-N bounds are relative to the sampler: "
                      f"{_kl_note(params)}", stacklevel=2)
    messages, prompt_ids = _prepare(reference, reward_model, prompts, weights, params)
    t0 = time.perf_counter()
    # At temperature 1 the reference's KL to itself is exactly 0: no log-probs needed.
    draws = _draw(reference, None if exact else reference, reward_model, messages, prompt_ids, draws_per_prompt,
                  params, weights, batch_rows)
    wall = round(time.perf_counter() - t0, 3)
    if exact:
        kl, kl_se = 0.0, 0.0
    else:
        kl, kl_se = float(draws.log_ratio.mean()), _stderr_over_prompts(draws.log_ratio.mean(axis=1))
    kl_of = "policy" if exact else "sampler"
    points = [_point(name, "reference", None, draws.scores, draws.objectives, draws.objective_names, draws.finished,
                     draws.tokens, kl, kl_se, False, reference.name,
                     {"kl_of": kl_of, "samples_per_prompt": draws_per_prompt, "wall_s": wall})]
    for n in ns:
        points.append(_best_of_n_point(draws, n, reference.name, {"kl_bound": "log N - (N-1)/N",
                                                                  "bound_relative_to": kl_of,
                                                                  "draws_per_prompt": draws_per_prompt}))
    return points


def _best_of_n_point(draws: _Draws, n: int, source: str, meta: dict[str, Any]) -> FrontPoint:
    """Best-of-n over the first n draws of each prompt, by `paretoalign bon`'s rule; means over answered prompts."""
    picks = pick_indices(draws.scores[:, :n], draws.finished[:, :n])
    answered = np.array([i for i, j in enumerate(picks) if j is not None], dtype=np.int64)
    chosen = np.array([j for j in picks if j is not None], dtype=np.int64)
    scores = draws.scores[answered, chosen]
    per_prompt = np.full(len(picks), np.nan)
    per_prompt[answered] = scores
    nan = float("nan")
    objectives = {k: float(draws.objectives[answered, chosen, j].mean()) if answered.size else nan
                  for j, k in enumerate(draws.objective_names)}
    per_objective = {}
    for j, k in enumerate(draws.objective_names):
        values = np.full(len(picks), np.nan)
        values[answered] = draws.objectives[answered, chosen, j]
        per_objective[k] = [float(v) for v in values]
    return FrontPoint(name=f"best-of-{n}", kind="best_of_n", n=n,
                      reward=float(scores.mean()) if answered.size else nan,
                      reward_stderr=_stderr_over_prompts(scores), objectives=objectives, kl=bon_kl_bound(n),
                      kl_stderr=None, kl_is_bound=True, num_prompts=len(picks), num_samples=n * len(picks),
                      # every pick finished; a prompt without one has no (finished) response
                      finished_fraction=answered.size / len(picks),
                      mean_response_tokens=float(draws.tokens[answered, chosen].mean()) if answered.size else nan,
                      source=source, meta={**meta, "prompts_answered": int(answered.size)},
                      per_prompt_reward=[float(v) for v in per_prompt], per_prompt_objectives=per_objective,
                      answered_fraction=answered.size / len(picks))


def default_eval_prompts(num_prompts: int, seed: int = 0, max_chars: int = DEFAULT_PROMPT_MAX_CHARS
                         ) -> list[list[Message]]:
    """A deterministic sample of distinct short prompts (≤ `max_chars` characters) from the bundled default pairs."""
    from paretoalign.data.bundled import DEFAULT_PAIRS_FILE, bundled_data_dir
    from paretoalign.data.preference import load_preference_pairs
    from paretoalign.data.splits import prompt_key

    check_n(num_prompts, "num_prompts")
    unique: dict[str, list[Message]] = {}
    for pair in load_preference_pairs(str(bundled_data_dir() / DEFAULT_PAIRS_FILE)):
        if sum(len(msg["content"]) for msg in pair.prompt) <= max_chars:
            unique.setdefault(prompt_key(pair.prompt), pair.prompt)
    keys = sorted(unique)
    picked = random.Random(seed).sample(keys, min(num_prompts, len(keys)))
    return [unique[k] for k in picked]


def deal_name(params: DeALParams) -> str:
    """The point name of a DeAL setting, e.g. 'deal b2 k2 l4 λ5 m4'."""
    return (f"deal b{params.beams} k{params.top_k} l{params.lookahead} λ{params.lam:g} m{params.reward_every}")


def deal_point(reference: Policy, reward_model: Scorer, prompts: Sequence[PromptLike], params: DeALParams, *,
               weights: Any = None, name: str | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> FrontPoint:
    """DeAL from the reference on every prompt: reward of its one response each and KL = mean −log π_ref(y*|x)."""
    from paretoalign.inference.deal import deal_generate

    messages, prompt_ids = _prepare(reference, reward_model, prompts, weights, params.sampling)
    t0 = time.perf_counter()
    results = deal_generate(reference, reward_model, messages, beams=params.beams, top_k=params.top_k,
                            lookahead=params.lookahead, lam=params.lam, reward_every=params.reward_every,
                            max_new_tokens=params.max_new_tokens, weights=weights, stop=params.stop,
                            select_by=params.select_by, batch_rows=batch_rows)
    wall = round(time.perf_counter() - t0, 3)
    # the final texts scored again in one call, exactly as every other point's responses are
    out = reward_model.score(messages, [r.text for r in results], weights=weights)
    names = list(out.objective_names)
    neg_logp = np.array([-float(np.sum(reference.response_logprobs(ids, [r.token_ids])[0]))
                         for ids, r in zip(prompt_ids, results, strict=True)])
    meta = {"kl_of": "point mass on the search's response: -log pi_ref(y*|x)", "reference": reference.name,
            "deal": {k: v for k, v in asdict(params).items() if k != "stop"},
            "tokens_evaluated_per_prompt": float(np.mean([r.tokens_evaluated for r in results])),
            "reward_calls_per_prompt": float(np.mean([r.reward_calls for r in results])), "wall_s": wall}
    return _point(name or deal_name(params), "deal", None,
                  np.asarray(out.score, dtype=np.float64).reshape(-1, 1),
                  np.asarray(out.objectives, dtype=np.float64).reshape(len(results), 1, len(names)), names,
                  np.array([[r.finished] for r in results]), np.array([[len(r.token_ids)] for r in results]),
                  float(neg_logp.mean()), _stderr_over_prompts(neg_logp), False, reference.name, meta)
