"""The one rollout-and-scoring loop of the online trainers (BOND, J-BOND, WARP, GRPO).

Supports: sampling n responses per prompt from any causal LM (trained policy, anchor or reference) with the
inference engine (one prefill per prompt, per-candidate seeded generators), seeds derived from (seed, step, role)
so a resumed run draws the same samples, scoring every response with the multi-objective RM (gating or user
weights) or a `RewardSet` of several rewards (each sample keeps its per-objective vector), optionally through an
InfAlign reward transform, and turning samples into token rows for the training forward pass.

Assumes responses cut at max_new_tokens are still trained on and scored as they are (their `finished` flag is
kept in the metrics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from paretoalign.embed.chat_format import as_messages
from paretoalign.errors import InputError
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.train.sequences import Row, fit_row

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.rewards.protocols import Scorer


@dataclass
class Sample:
    """One sampled response to one prompt."""

    prompt_index: int
    response_ids: list[int]
    text: str
    finished: bool
    reward: float = float("nan")
    objectives: np.ndarray | None = None
    """The scorer's per-objective vector (a RewardSet: its components' raw values), set by `score_samples`."""


def step_seed(seed: int, step: int, role: str) -> int:
    """A 63-bit sampling seed for one (run seed, step, role) — the same on every machine and after a resume."""
    digest = hashlib.sha256(f"{seed}:{step}:{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_responses(model: CausalLM, tokenizer: Tokenizer, prompt_ids: Sequence[list[int]],
                     prompt_indices: Sequence[int], n: int, params: SamplingParams, *, seed: int, step: int,
                     role: str) -> list[list[Sample]]:
    """n samples per prompt from `model` (no gradients), seeded by (seed, step, role)."""
    policy = Policy(model, tokenizer)
    params = dataclasses.replace(params, seed=step_seed(seed, step, role))
    with torch.no_grad():
        groups = policy.sample(prompt_ids, n, params, prompt_indices=list(prompt_indices))
    return [[Sample(prompt_index=c.prompt_index, response_ids=list(c.token_ids), text=c.text, finished=c.finished)
             for c in group] for group in groups]


def score_samples(reward_model: Scorer, prompts: Sequence[Any], samples: Sequence[Sample], weights: Any = None) -> None:
    """Set each sample's reward (the RM's score of (its prompt, its text) with `weights`, None: gating) and its
    per-objective vector."""
    if not samples:
        return
    out = reward_model.score([as_messages(prompts[s.prompt_index]) for s in samples], [s.text for s in samples],
                             weights=weights)
    objectives = np.asarray(out.objectives, dtype=np.float64)
    for i, (s, r) in enumerate(zip(samples, out.score, strict=True)):
        s.reward = float(r)
        s.objectives = objectives[i].copy()


def sample_rows(samples: Sequence[Sample], prompt_ids: dict[int, list[int]], max_length: int) -> list[Row]:
    """Token rows (prompt + response) of samples, cut to max_length."""
    rows = []
    for s in samples:
        if not s.response_ids:
            raise InputError("a sampled response has no tokens (max_new_tokens must be >= 1)",
                             field="max_new_tokens")
        ids, n_prompt, _ = fit_row(prompt_ids[s.prompt_index], s.response_ids, max_length)
        rows.append((ids, n_prompt))
    return rows


def fit_prompts(prompt_ids: Sequence[list[int]], max_length: int, max_new_tokens: int
                ) -> tuple[list[list[int]], int]:
    """Prompts cut from the left to leave max_new_tokens within max_length (sampling and training then see the same
    prompt); returns (prompt ids, how many were cut)."""
    room = max_length - max_new_tokens
    if room < 1:
        raise InputError(f"max_length ({max_length}) must exceed max_new_tokens ({max_new_tokens})",
                         field="max_length")
    return [list(p[-room:]) for p in prompt_ids], sum(len(p) > room for p in prompt_ids)


def load_prompts(path: str | None, max_prompts: int | None) -> list[list[dict[str, str]]]:
    """Prompts (message lists) from a prompt file, or the distinct prompts of the bundled default pairs."""
    return [row.messages if hasattr(row, "messages") else row for row in load_prompt_rows(path, max_prompts)]


def load_prompt_rows(path: str | None, max_prompts: int | None) -> list[Any]:
    """The prompt file's rows (`data.prompts.PromptRow`, with any per-prompt constraints), or the distinct prompts
    (message lists) of the bundled default pairs."""
    if path is not None:
        from paretoalign.data.prompts import read_prompts

        prompts: list[Any] = list(read_prompts(path))
    else:
        from paretoalign.train.dpo_trainer import load_pairs

        seen, prompts = set(), []
        for pair in load_pairs(None, None, None):
            key = repr(pair.prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(as_messages(pair.prompt))
    if max_prompts is not None:
        prompts = prompts[:max_prompts]
    if not prompts:
        raise InputError("no prompts", path=path, field="prompts")
    return prompts


def online_inputs(config: Any, prompts: Sequence[Any] | None, reward_model: Scorer | str | os.PathLike | None
                  ) -> tuple[list[Any], Scorer]:
    """(prompts, scorer) of an online trainer: the given prompts or the config's; the scorer is the RM, or with
    ``config.rewards`` a `RewardSet` over it (the prompt file's constraints attached), wrapped by
    ``config.reward_transform`` when set and probed once; weights checked against it. Call before claiming the run
    directory: every error here comes before anything is written."""
    from paretoalign.inference.best_of_n import load_reward_model

    rows = None if prompts is not None else load_prompt_rows(config.prompts, config.max_prompts)
    prompts = list(prompts) if prompts is not None else [getattr(r, "messages", r) for r in rows]
    source = reward_model if reward_model is not None else config.reward_model
    rewards = getattr(config, "rewards", None)
    if rewards is not None:
        from paretoalign.rewards.reward_set import RewardSet

        rm = str(source) if isinstance(source, (str, os.PathLike)) else source  # a reference loads only if read
        reward_model = RewardSet.from_spec({"rewards": rewards, "aggregation": config.aggregation}, reward_model=rm,
                                           trust_remote_code=config.trust_remote_code)
    else:
        reward_model = load_reward_model(source, trust_remote_code=config.trust_remote_code)
    if rows is not None and hasattr(reward_model, "attach_prompts"):
        prompt_rows = [r for r in rows if hasattr(r, "messages")]
        if prompt_rows:
            reward_model.attach_prompts(prompt_rows)
    if hasattr(reward_model, "check_prompts"):
        reward_model.check_prompts(prompts)
    transform = getattr(config, "reward_transform", None)
    if transform is not None:
        from paretoalign.train.reward_transform import wrap_reward_transform

        reward_model = wrap_reward_transform(reward_model, transform)
        reward_model.check_prompts(prompts)  # every training prompt must be in the calibration table
    if hasattr(reward_model, "probe"):
        reward_model.probe()
    if config.weights is not None:
        unknown = [k for k in config.weights if k not in reward_model.objective_names]
        if unknown:
            raise InputError(f"unknown objective(s) {unknown}; the RM has {list(reward_model.objective_names)}",
                             field="weights")
    return prompts, reward_model


SCORE_NAME = "score"
"""The single objective's name when the reward is one scorer's score."""


@dataclass
class RewardSource:
    """What an online trainer optimises: the objectives' names, their configured weights and how GRPO aggregates
    them."""

    names: list[str]
    weights: np.ndarray
    aggregation: str
    multi: bool
    """True: the matrix is the scorer's per-component vectors; False: one column, the scorer's score."""

    def matrix(self, samples: Sequence[Sample]) -> np.ndarray:
        """(n, K) rewards of scored samples."""
        if self.multi:
            return np.stack([np.asarray(s.objectives, dtype=np.float64) for s in samples])
        return np.asarray([[s.reward] for s in samples], dtype=np.float64)


def reward_source(config: Any, scorer: Scorer) -> RewardSource:
    """The objectives an online trainer optimises with `scorer`: a RewardSet's components (when no reward transform
    replaces them by one score), with the config's weights resolved by name, else one objective, its score."""
    multi = config.reward_transform is None and hasattr(scorer, "components_matrix") and hasattr(scorer, "weights")
    if not multi:
        return RewardSource([SCORE_NAME], np.ones(1), config.aggregation, False)
    resolved = scorer.resolve_weights(config.weights) if config.weights is not None else None
    weights = np.asarray(scorer.weights if resolved is None else resolved, dtype=np.float64)
    return RewardSource(list(scorer.objective_names), weights, getattr(scorer, "aggregation", config.aggregation),
                        True)


def mean_finite(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    arr = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")
