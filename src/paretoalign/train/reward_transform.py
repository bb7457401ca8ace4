"""InfAlign's calibrate-and-transform reward for online training (ALGORITHMS.md §5; `inference.calibration`).

`wrap_reward_transform(scorer, spec)` returns a `CalibratedScorer`: it scores with the wrapped scorer, replaces
each row's score R(x, y) by its calibrated reward C(x, y) against prompt x's reference rewards in a calibration
table (`paretoalign calibrate`; ties count half), then applies the transform Φ:

- ``identity``: Φ(C) = C;
- ``bon`` (needs ``n``): Best-of-N, `calibration.bon_transform` — Φ_t with t = 3N − 2 > 0;
- ``won`` (needs ``n``): Worst-of-N, `calibration.won_transform` — Φ_t with t = −(2N − 1) < 0;
- ``exp`` (needs ``t``): Φ_t with the given non-zero t.

Φ_t(u) = sign(t)·e^{t·u}, increasing in u for either sign (t > 0 rewards the upper quantiles, t < 0 penalises the
lower ones); ``scaled`` divides by e^{max(t, 0)} so the values lie in [−1, 1]. Spec:
``{calibration: path, transform: identity|bon|won|exp, n: int, t: float, scaled: bool}``.

Prompts are matched to the table by their canonical content (`data.splits.prompt_key` of the stored messages),
else by id (the table's ids are `prompt_hash` of the prompt unless the prompt file gave ids). A prompt the table
lacks is an InputError naming the calibration file. The per-objective columns, gating and baseline of the output
are the wrapped scorer's; only the score changes. Assumes the wrapped scorer computes the reward the table was
built with: the table's weights are used when the caller gives none, and other weights are refused.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.data.prompts import prompt_hash
from paretoalign.data.splits import prompt_key
from paretoalign.embed.chat_format import as_messages
from paretoalign.errors import InputError
from paretoalign.inference.calibration import CalibrationTable, ExponentialTransform, bon_transform, won_transform

if TYPE_CHECKING:
    from paretoalign.data.schema import Message
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.rewards.reward_model import RewardOutput, Weights

TRANSFORMS = ("identity", "bon", "won", "exp")
_KEYS = ("calibration", "transform", "n", "t", "scaled")
_USES = {"identity": (), "bon": ("n", "scaled"), "won": ("n", "scaled"), "exp": ("t", "scaled")}


class CalibratedScorer:
    """A `Scorer` whose score is Φ(C(x, y)): the wrapped scorer's reward calibrated per prompt, then transformed."""

    def __init__(self, scorer: Scorer, table: CalibrationTable, transform: Callable[[np.ndarray], np.ndarray], *,
                 calibration_path: str | None = None, name: str = "identity") -> None:
        self.scorer = scorer
        self.table = table
        self.transform = transform
        self.transform_name = name
        self.calibration_path = calibration_path
        self.objective_names = list(scorer.objective_names)
        self._by_key: dict[str, str] = {}
        for pid in table:
            messages = table.prompt(pid)
            if messages is not None:
                self._by_key.setdefault(prompt_key(messages), pid)

    def prompt_id(self, prompt: str | list[Message], index: int | None = None) -> str:
        """The table's id of `prompt`; InputError naming the calibration file when it has none."""
        messages = as_messages(prompt, index)
        pid = self._by_key.get(prompt_key(messages))
        if pid is None:
            hashed = prompt_hash(messages)
            pid = hashed if hashed in self.table else None
        if pid is None:
            text = messages[-1]["content"]
            short = text if len(text) <= 60 else text[:57] + "..."
            where = "" if index is None else f"prompt {index} "
            raise InputError(f"{where}({short!r}) has no reference rewards in the calibration table: calibrate "
                             "every training prompt (`paretoalign calibrate` on the same prompt file)",
                             path=self.calibration_path, field="reward_transform.calibration")
        return pid

    def check_prompts(self, prompts: Sequence[str | list[Message]]) -> None:
        """InputError for the first prompt the table lacks (call before training starts)."""
        for i, p in enumerate(prompts):
            self.prompt_id(p, i)

    def _weights(self, weights: Weights) -> Weights:
        own = self.table.weights
        if weights is None:
            return own
        if own is None:
            raise InputError("the calibration table was scored with the RM's own gating (no weights): train without "
                             "weights or calibrate with these weights", path=self.calibration_path, field="weights")
        given = self.scorer.resolve_weights(weights)
        expected = self.scorer.resolve_weights(own)
        if given is None or expected is None or given.shape != expected.shape or not np.allclose(given, expected):
            raise InputError(f"the calibration table was scored with weights {own}; these weights differ: calibrate "
                             "with the training weights", path=self.calibration_path, field="weights")
        return weights

    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """The wrapped scorer's resolution of `weights` (checked against the table's)."""
        return self.scorer.resolve_weights(self._weights(weights))

    def calibrated(self, prompts: Sequence[str | list[Message]], rewards: np.ndarray) -> np.ndarray:
        """C(x, y) of each row's reward against its prompt's reference rewards."""
        rewards = np.asarray(rewards, dtype=np.float64)
        ids = [self.prompt_id(p, i) for i, p in enumerate(prompts)]
        out = np.empty(len(ids), dtype=np.float64)
        rows: dict[str, list[int]] = {}
        for i, pid in enumerate(ids):
            rows.setdefault(pid, []).append(i)
        for pid, idx in rows.items():
            out[idx] = self.table.calibrate(pid, rewards[idx])
        return out

    def score(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """The wrapped scorer's output with score = Φ(C(x, y))."""
        out = self.scorer.score(prompts, responses, weights=self._weights(weights), batch_size=batch_size,
                                progress=progress)
        score = np.asarray(self.transform(self.calibrated(prompts, out.score)), dtype=np.float64)
        return dataclasses.replace(out, score=score, verbosity_contribution=None)

    def probe(self) -> None:
        """The wrapped scorer's probe, when it has one."""
        probe = getattr(self.scorer, "probe", None)
        if probe is not None:
            probe()


def _identity(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, dtype=np.float64)


def _check_n(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"n must be an integer >= 1, got {value!r}", field=field)
    return int(value)


def _check_t(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value == 0:
        raise InputError(f"t must be a finite non-zero number, got {value!r}", field=field)
    return float(value)


def build_transform(spec: Mapping[str, Any], *, field: str = "reward_transform"
                    ) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(name, Φ) of a transform spec; InputError naming ``<field>.<key>`` on a bad or unused key."""
    for key in spec:
        if key not in _KEYS:
            raise InputError(f"unknown key {key!r}; a reward transform takes {', '.join(_KEYS)}",
                             field=f"{field}.{key}")
    name = spec.get("transform")
    if name not in TRANSFORMS:
        raise InputError(f"transform must be one of {', '.join(TRANSFORMS)}, got {name!r}",
                         field=f"{field}.transform")
    for key in ("n", "t", "scaled"):
        if key in spec and key not in _USES[name]:
            raise InputError(f"{key!r} is not used by transform {name!r}", field=f"{field}.{key}")
    scaled = spec.get("scaled", False)
    if not isinstance(scaled, bool):
        raise InputError(f"scaled must be true or false, got {scaled!r}", field=f"{field}.scaled")
    if name == "identity":
        return name, _identity
    if name == "exp":
        if "t" not in spec:
            raise InputError("transform exp needs t (non-zero; > 0 for Best-of-N, < 0 for Worst-of-N)",
                             field=f"{field}.t")
        return name, ExponentialTransform(_check_t(spec["t"], f"{field}.t"), scaled=scaled)
    if "n" not in spec:
        raise InputError(f"transform {name} needs n, the N of the inference-time procedure", field=f"{field}.n")
    n = _check_n(spec["n"], f"{field}.n")
    return name, (bon_transform if name == "bon" else won_transform)(n, scaled=scaled)


def wrap_reward_transform(scorer: Scorer, spec: Mapping[str, Any] | None, *,
                          field: str = "reward_transform") -> Scorer:
    """`scorer` itself for None, else a `CalibratedScorer` over it as `spec` describes."""
    if spec is None:
        return scorer
    if not isinstance(spec, Mapping):
        raise InputError(f"a reward transform is a mapping {{calibration, transform, ...}}, got "
                         f"{type(spec).__name__}", field=field)
    name, transform = build_transform(spec, field=field)
    path = spec.get("calibration")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError("calibration must be the path of a calibration table (`paretoalign calibrate`)",
                         field=f"{field}.calibration")
    if not Path(path).is_file():
        raise InputError("calibration table not found (write it with `paretoalign calibrate`)", path=str(path),
                         field=f"{field}.calibration")
    table = CalibrationTable.load(path)
    if len(table) == 0:
        raise InputError("the calibration table holds no prompts", path=str(path), field=f"{field}.calibration")
    return CalibratedScorer(scorer, table, transform, calibration_path=str(path), name=name)
