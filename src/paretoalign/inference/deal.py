"""DeAL (Huang et al. 2024, ALGORITHMS.md §13): decoding as a search, beams ranked by log-prob plus a reward look-ahead.

Supports:

- b beams per prompt; each step every unfinished beam is expanded by its top-k next tokens under π (ties to the
  lower token id); each candidate gets s = log π(prefix) + λ·R(x, prefix + look-ahead), where the look-ahead is a
  greedy continuation of up to l tokens (cut at EOS, a stop string or the token budget) and R is any `Scorer` (a
  multi-objective RM with `weights`, a reward set of verifiable checkers, ...); the b best of the finished beams
  carried over and the new candidates are kept;
- `reward_every` = m: the reward look-ahead runs on steps 0, m, 2m, ...; on the steps between, a candidate inherits
  its beam's latest reward (plain beam steps that keep the reward's preference). A candidate that ends (EOS or a stop
  string) is scored on its final text whenever λ > 0, with no look-ahead;
- λ = 0 is beam search on log π (no reward call and no look-ahead forward during the search), and beams = 1,
  top_k = 1, λ = 0 is greedy decoding;
- the result of a prompt: the best finished beam that was ever among the kept b, by s (``select_by="score"``) or by
  its final reward (``select_by="reward"``, ties to the higher s); with none finished, the best final beam, cut at
  the token budget (``finished`` False). Its reward is always R(x, its final text);
- the engine's machinery: each prompt is prefilled once (`engine.KVBatch`, with shared-prefix attention where the
  architecture supports it), beams are expanded by selecting cache rows with repeated indices, the candidate token's
  forward pass serves both the look-ahead and the kept beam, and the look-ahead rollouts run on a copy of the cache;
- cost accounting per prompt: ``tokens_evaluated``, every (row, token) the model ran a decoding forward pass on
  (kept-beam steps, candidate tokens and look-ahead tokens; the one prompt prefill is not counted), and
  ``reward_calls``, the (prompt, response) rows scored — so DeAL can be compared with Best-of-N at equal compute
  (Best-of-N evaluates about N x response length tokens). Prompts are searched in batches; a prompt's result and
  counts do not depend on the other prompts of its batch (up to float rounding of the batched forward pass).

Assumes the transformers engine (`policy.Policy`), prompts that leave room for `max_new_tokens`, and a reward on a
scale where λ turns reward units into nats of log-probability (log π(prefix) falls with length, so the search keeps
beam search's preference for short finished responses unless the reward outweighs it).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from paretoalign.embed.chat_format import PromptLike, pad_token_id
from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import (
    DEFAULT_BATCH_ROWS,
    load_policy,
    load_reward_model,
    prepare_prompts,
    prompt_groups,
)
from paretoalign.inference.engine import Candidate, KVBatch, finish, finish_reason, stop_tail
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.shared_prefix import supports_shared_prefix

if TYPE_CHECKING:
    from paretoalign.data.schema import Message
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.rewards.reward_model import Weights

SELECT_BY = ("score", "reward")


def _int_at_least(value: Any, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}", field=name)
    return int(value)


@dataclass
class DeALParams:
    """The search settings of DeAL (checked on construction: InputError naming the field)."""

    beams: int = field(default=2, metadata={"help": "Beams b kept per prompt after each step (>= 1)."})
    top_k: int = field(default=2, metadata={"help": "Next tokens under the policy each unfinished beam is expanded "
                                                    "by (>= 1; may be below beams: the beams then fill up over "
                                                    "the first steps)."})
    lookahead: int = field(default=4, metadata={"help": "Greedy look-ahead tokens l after each candidate token "
                                                        "that the reward reads (0: the candidate prefix itself)."})
    lam: float = field(default=1.0, metadata={"help": "λ >= 0: weight of the reward against log π(prefix) in the "
                                                      "beam score; 0 is plain beam search."})
    reward_every: int = field(default=4, metadata={"help": "Run the reward look-ahead every m steps (m >= 1); "
                                                           "between them candidates inherit their beam's reward."})
    max_new_tokens: int = field(default=128, metadata={"help": "Token budget per response; beams that reach it "
                                                               "are unfinished."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings that end a response (cut from its text); "
                                                                "EOS tokens always end it."})
    select_by: str = field(default="score", metadata={"help": "The pick among finished beams: 'score' (highest "
                                                              "s) or 'reward' (highest final reward)."})

    def __post_init__(self) -> None:
        self.beams = _int_at_least(self.beams, 1, "beams")
        self.top_k = _int_at_least(self.top_k, 1, "top_k")
        self.lookahead = _int_at_least(self.lookahead, 0, "lookahead")
        self.reward_every = _int_at_least(self.reward_every, 1, "reward_every")
        self.max_new_tokens = _int_at_least(self.max_new_tokens, 1, "max_new_tokens")
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not (
                math.isfinite(lam) and lam >= 0):
            raise InputError(f"lam must be a finite number >= 0, got {lam!r}", field="lam")
        self.lam = float(lam)
        if self.select_by not in SELECT_BY:
            raise InputError(f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}",
                             field="select_by")
        self.stop = tuple(SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens, stop=self.stop).stop)

    @property
    def sampling(self) -> SamplingParams:
        """The engine's settings for the stop rules (greedy; DeAL draws nothing at random)."""
        return SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens, stop=self.stop)


@dataclass(eq=False)
class Beam(Candidate):
    """A search hypothesis: its tokens (with their log π in `policy_logprobs`) and its running scores."""

    logprob: float = 0.0
    """log π(tokens | prompt), summed in float64."""
    reward: float = 0.0
    """The latest reward R of this beam: of its look-ahead text, or of its final text once `reward_exact`."""
    reward_exact: bool = False
    """Whether `reward` was computed on exactly this beam's text (no look-ahead)."""
    objectives: dict[str, float] | None = None
    """The reward's per-objective breakdown where `reward_exact`."""

    def score(self, lam: float) -> float:
        """s = log π(prefix) + λ·R."""
        return self.logprob + lam * self.reward if lam else self.logprob


@dataclass
class DeALResult:
    """The answer DeAL returns for one prompt and what the search cost."""

    prompt: list[Message]
    text: str
    token_ids: list[int]
    reward: float
    """R(x, text): the scorer's (weighted) reward of the final text."""
    finished: bool
    """Whether the response ended on its own (EOS or a stop string) rather than at the token budget."""
    tokens_evaluated: int
    reward_calls: int
    score: float
    """The search score s = log π + λ·R of the returned beam."""
    logprob: float
    objectives: dict[str, float] | None = None
    finish_reason: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """Output fields like the bon command's (the caller adds the input fields), plus ``tokens_evaluated``."""
        candidate = {"response": self.text, "score": self.reward, "objectives": self.objectives,
                     "finished": self.finished, "tokens": len(self.token_ids), "rejected_at": None,
                     "search_score": self.score, "logprob": self.logprob}
        return {"response": self.text if self.finished else None, "selected": 0 if self.finished else None,
                "candidates": [candidate], "tokens_evaluated": self.tokens_evaluated, "stats": dict(self.stats)}


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(cuts)] if cuts else text


def _fork(batch: KVBatch, rows: Sequence[int]) -> KVBatch:
    """A copy of `batch` holding its rows `rows`; `batch` itself is left as it is (the prompt KV is not copied)."""
    fork = copy.copy(batch)
    fork.cache = copy.deepcopy(batch.cache)
    if batch.prefix is not None:
        fork.prefix = copy.copy(batch.prefix)
    fork.select(rows)
    return fork


class _Search:
    """DeAL over one batch of prompts: the rows of `batch` are the unfinished beams, prompt-major."""

    def __init__(self, policy: Policy, scorer: Scorer, messages: Sequence[list[Message]],
                 prompt_ids: Sequence[Sequence[int]], params: DeALParams, weights: Weights,
                 rm_batch_size: int | None) -> None:
        self.policy, self.scorer, self.messages, self.p = policy, scorer, list(messages), params
        self.weights, self.rm_batch_size = weights, rm_batch_size
        self.sampling = params.sampling
        self.eos = policy.eos_token_ids
        self.tail = stop_tail(self.sampling)
        n = len(prompt_ids)
        self.tokens_evaluated = [0] * n
        self.reward_calls = [0] * n
        self.beams: list[list[Beam]] = [[Beam(prompt_index=i, index=0)] for i in range(n)]
        self.archive: list[list[Beam]] = [[] for _ in range(n)]
        self.batch = KVBatch(policy.model, prompt_ids, 1, pad_token_id(policy.tokenizer),
                             supports_shared_prefix(policy.model))
        vocab = self.batch.logits.shape[-1]
        if params.top_k > vocab:
            raise InputError(f"top_k must be at most the vocabulary size {vocab}, got {params.top_k}", field="top_k")

    # ------------------------------------------------------------------ helpers

    def _live(self) -> list[Beam]:
        return [b for group in self.beams for b in group if b.finish_reason is None]

    def _feed(self, batch: KVBatch, rows: Sequence[Beam], tokens: Sequence[int]) -> None:
        batch.feed(torch.tensor(list(tokens), dtype=torch.long).unsqueeze(-1))
        for b in rows:
            self.tokens_evaluated[b.prompt_index] += 1

    def _score(self, beams: Sequence[Beam], texts: Sequence[str], exact: Sequence[bool]) -> None:
        """Set each beam's reward to R(x, text) in one scorer call."""
        if not beams:
            return
        out = self.scorer.score([self.messages[b.prompt_index] for b in beams], list(texts), weights=self.weights,
                                batch_size=self.rm_batch_size)
        scores = np.asarray(out.score, dtype=np.float64)
        objectives = np.asarray(out.objectives, dtype=np.float64)
        if scores.shape != (len(beams),):
            raise InputError(f"the reward model returned {scores.shape} scores for {len(beams)} responses",
                             field="reward_model")
        for i, (b, done) in enumerate(zip(beams, exact, strict=True)):
            if not math.isfinite(scores[i]):
                raise InputError(f"the reward model returned a non-finite score {scores[i]} for {texts[i]!r}",
                                 field="reward_model")
            b.reward = float(scores[i])
            b.reward_exact = bool(done)
            b.objectives = ({name: float(v) for name, v in zip(out.objective_names, objectives[i], strict=True)}
                            if done else None)
            self.reward_calls[b.prompt_index] += 1

    def _score_exact(self, beams: Sequence[Beam]) -> None:
        todo = [b for b in beams if not b.reward_exact]
        self._score(todo, [b.text or self.policy.decode(b.token_ids) for b in todo], [True] * len(todo))

    # ------------------------------------------------------------------ one step

    def _expand(self) -> tuple[list[list[Beam]], list[Beam], list[int]]:
        """Per prompt, the pool (finished beams carried over, then each unfinished beam's top-k children, in beam
        order); the new unfinished children, and the batch row of each one's parent."""
        logp = self.batch.logits.float().log_softmax(dim=-1)
        values, tokens = torch.sort(logp, dim=-1, descending=True, stable=True)
        values = values[:, :self.p.top_k].double().cpu().numpy()
        tokens = tokens[:, :self.p.top_k].cpu().numpy()
        pools: list[list[Beam]] = []
        children: list[Beam] = []
        parents: list[int] = []
        row = 0
        for group in self.beams:
            pool: list[Beam] = []
            for beam in group:
                if beam.finish_reason is not None:
                    pool.append(beam)
                    continue
                for j in range(self.p.top_k):
                    t, lp = int(tokens[row, j]), float(values[row, j])
                    child = Beam(prompt_index=beam.prompt_index, index=0, token_ids=[*beam.token_ids, t],
                                 policy_logprobs=[*beam.policy_logprobs, lp], logprob=beam.logprob + lp,
                                 reward=beam.reward)
                    reason = finish_reason(self.policy, child, self.eos, self.sampling, self.tail)
                    if reason in ("eos", "stop"):
                        finish(self.policy, child, reason, self.sampling.stop)
                    else:
                        children.append(child)
                        parents.append(row)
                    pool.append(child)
                row += 1
            pools.append(pool)
        return pools, children, parents

    def _lookahead(self, children: Sequence[Beam], steps: int) -> list[str]:
        """Texts of each child followed by its greedy continuation of up to `steps` tokens (`self.batch` already
        holds the children, fed their last token; the rollouts run on a copy of it)."""
        rollouts: list[list[int]] = [[] for _ in children]
        batch, rows = self.batch, list(range(len(children)))  # rows: the child of each row of `batch`
        active: set[int] = set(rows)
        for step in range(steps):
            if step:
                positions = [pos for pos, i in enumerate(rows) if i in active]
                if batch is self.batch:
                    batch = _fork(self.batch, positions)
                else:
                    batch.select(positions)
                rows = [rows[pos] for pos in positions]
                self._feed(batch, [children[i] for i in rows], [rollouts[i][-1] for i in rows])
            greedy = batch.logits.argmax(dim=-1).cpu().tolist()
            active = set()
            for i, t in zip(rows, greedy, strict=True):
                rollouts[i].append(int(t))
                ids = children[i].token_ids + rollouts[i]
                ended = t in self.eos or (bool(self.sampling.stop) and any(
                    s in self.policy.decode(ids[-self.tail:]) for s in self.sampling.stop))
                if not ended:
                    active.add(i)
            if not active:
                break
        return [_cut_at_stop(self.policy.decode(c.token_ids + r), self.sampling.stop)
                for c, r in zip(children, rollouts, strict=True)]

    def step(self, t: int) -> None:
        """Expand, score and prune once (step t: every unfinished beam holds t tokens)."""
        p = self.p
        pools, children, parents = self._expand()
        newly_finished = [b for pool, group in zip(pools, self.beams, strict=True) for b in pool
                          if b.finish_reason is not None and not any(b is g for g in group)]
        if p.lam > 0:
            self._score_exact(newly_finished)
        room = p.max_new_tokens - (t + 1)
        expanded = False
        if p.lam > 0 and t % p.reward_every == 0 and children:
            steps = min(p.lookahead, room)
            if steps >= 1:
                self.batch.select(parents)
                self._feed(self.batch, children, [c.token_ids[-1] for c in children])
                expanded = True
                texts = self._lookahead(children, steps)
                self._score(children, texts, [False] * len(children))
            else:
                self._score(children, [self.policy.decode(c.token_ids) for c in children], [True] * len(children))
        kept: list[list[Beam]] = []
        for i, pool in enumerate(pools):
            order = sorted(range(len(pool)), key=lambda j, pool=pool: -pool[j].score(p.lam))
            group = [pool[j] for j in order[:p.beams]]
            for b in group:
                if b.finish_reason is not None and not any(b is a for a in self.archive[i]):
                    self.archive[i].append(b)
            kept.append(group)
        self.beams = kept
        live = self._live()
        if not live:
            return
        position = {id(c): k for k, c in enumerate(children)}
        if expanded:
            self.batch.select([position[id(b)] for b in live])
        else:
            self.batch.select([parents[position[id(b)]] for b in live])
            if room > 0:
                self._feed(self.batch, live, [b.token_ids[-1] for b in live])

    # ------------------------------------------------------------------ the whole search

    @torch.inference_mode()
    def run(self) -> list[DeALResult]:
        """Search to the end; one result per prompt, in order."""
        for t in range(self.p.max_new_tokens):
            if not self._live():
                break
            self.step(t)
        for b in self._live():
            finish(self.policy, b, "length", self.sampling.stop)
        return [self._result(i) for i in range(len(self.beams))]

    def _result(self, i: int) -> DeALResult:
        p = self.p
        pool = self.archive[i] or self.beams[i]
        if p.select_by == "reward":
            self._score_exact(pool)
            pick = max(pool, key=lambda b: (b.reward, b.score(p.lam)))
        else:
            pick = max(pool, key=lambda b: b.score(p.lam))
        score = pick.score(p.lam)  # the score the search ranked it by
        self._score_exact([pick])
        stats = {"method": "deal", "beams": p.beams, "top_k": p.top_k, "lookahead": p.lookahead, "lam": p.lam,
                 "reward_every": p.reward_every, "select_by": p.select_by, "tokens_generated": pick.num_tokens,
                 "tokens_evaluated": self.tokens_evaluated[i], "rm_calls": self.reward_calls[i],
                 "finished_beams": len(self.archive[i])}
        return DeALResult(prompt=self.messages[i], text=pick.text, token_ids=list(pick.token_ids),
                          reward=pick.reward, finished=pick.finished, tokens_evaluated=self.tokens_evaluated[i],
                          reward_calls=self.reward_calls[i], score=score, logprob=pick.logprob,
                          objectives=pick.objectives, finish_reason=pick.finish_reason, stats=stats)


def deal_generate(policy: Policy | str, reward_model: Scorer | str | os.PathLike, prompts: Sequence[PromptLike], *,
                  beams: int = 2, top_k: int = 2, lookahead: int = 4, lam: float = 1.0, reward_every: int = 4,
                  max_new_tokens: int = 128, weights: Weights = None, stop: Sequence[str] = (),
                  select_by: str = "score", batch_rows: int = DEFAULT_BATCH_ROWS, rm_batch_size: int | None = None,
                  progress: bool = False) -> list[DeALResult]:
    """DeAL search for each prompt (see the module docstring); results in input order."""
    params = DeALParams(beams=beams, top_k=top_k, lookahead=lookahead, lam=lam, reward_every=reward_every,
                        max_new_tokens=max_new_tokens, stop=tuple(stop), select_by=select_by)
    batch_rows = _int_at_least(batch_rows, 1, "batch_rows")
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of prompts, got a single string", field="prompts")
    policy = load_policy(policy)
    if not isinstance(policy, Policy):
        raise InputError(f"DeAL needs the transformers engine, which the {type(policy).__name__} backend does not "
                         "offer; use the transformers Policy", field="policy")
    reward_model = load_reward_model(reward_model)
    prepared = prepare_prompts(policy, reward_model, prompts, weights, params.sampling)
    results: list[DeALResult] = []
    bar = tqdm(total=len(prepared.messages), desc=f"deal b={params.beams} k={params.top_k}", unit="prompt",
               disable=not progress, dynamic_ncols=True)
    for group in prompt_groups(len(prepared.messages), params.beams * params.top_k, batch_rows):
        t0 = time.perf_counter()
        search = _Search(policy, reward_model, [prepared.messages[i] for i in group],
                         [prepared.token_ids[i] for i in group], params, weights, rm_batch_size)
        found = search.run()
        elapsed = time.perf_counter() - t0
        for r in found:
            r.stats["wall_s"] = elapsed / len(group)
        results += found
        bar.update(len(group))
    bar.close()
    return results
