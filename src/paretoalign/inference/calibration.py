"""InfAlign calibrate-and-transform (CTRL) rewards: per-prompt calibration against reference samples, then a transform.

Balashankar et al., "InfAlign: Inference-aware language model alignment" (2024); ALGORITHMS.md §5.

- Calibrated reward: C(x, y) = P_z[R(x, z) < R(x, y)] + ½ P_z[R(x, z) = R(x, y)], z ~ π_ref(·|x), estimated from the
  M reference rewards stored for prompt x. Under π_ref, C is uniform on [0, 1] for continuous rewards.
- Exponential transform Φ_t(u) = sign(t)·e^{t·u}. The sign factor keeps Φ increasing in u for negative t as well:
  t > 0 rewards the upper quantiles (for Best-of-N sampling), t < 0 penalises the lower ones (for Worst-of-N, i.e.
  Best-of-N jailbreaking). That the paper found positive exponents best for BoN and negative ones for WoN is stated
  by its authors; we could not confirm the paper's own t values, so `bon_transform` / `won_transform` use defaults
  from our own computation (see their docstrings).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.atomic_io import write_text_atomic
from paretoalign.data.conversation import normalize_messages
from paretoalign.data.schema import Message
from paretoalign.errors import InputError
from paretoalign.inference.statistics import check_n

if TYPE_CHECKING:
    from paretoalign.inference.protocols import Sampler
    from paretoalign.rewards.protocols import Scorer

FORMAT = "paretoalign.calibration"
VERSION = 1


def _reference_vector(values, field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"expected a non-empty 1-D list of reference rewards, got shape {arr.shape}", field=field)
    if not np.all(np.isfinite(arr)):
        raise InputError("reference rewards must be finite (no NaN or inf)", field=field)
    return arr


def _reward_array(values, field: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError("rewards must be finite (no NaN or inf)", field=field)
    return arr


def _calibrate_sorted(sorted_refs: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    below = np.searchsorted(sorted_refs, rewards, side="left")
    equal = np.searchsorted(sorted_refs, rewards, side="right") - below
    return (below + 0.5 * equal) / sorted_refs.size


def calibrated_reward(reference_rewards, rewards) -> np.ndarray:
    """The calibrated reward of each of `rewards` against one prompt's reference rewards (ties count half)."""
    refs = np.sort(_reference_vector(reference_rewards, "reference_rewards"))
    return _calibrate_sorted(refs, _reward_array(rewards, "rewards"))


def _check_t(t: float) -> float:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t == 0:
        raise InputError(f"t must be a finite non-zero number, got {t!r}", field="t")
    return float(t)


def exponential_transform(u, t: float, *, scaled: bool = False) -> np.ndarray:
    """Φ_t(u) = sign(t)·exp(t·u), increasing in u for either sign of t.

    With `scaled`, the result is divided by exp(max(t, 0)) so that u in [0, 1] maps into [−1, 1]; a positive factor
    only rescales the KL coefficient β of the RL step, so the optimal policy family is the same.
    """
    t = _check_t(t)
    u = _reward_array(u, "u")
    shift = max(t, 0.0) if scaled else 0.0
    return math.copysign(1.0, t) * np.exp(t * u - shift)


@dataclass(frozen=True)
class ExponentialTransform:
    """The transform Φ_t of calibrated rewards; call it on an array of calibrated rewards."""

    t: float
    scaled: bool = False

    def __post_init__(self) -> None:
        _check_t(self.t)

    def __call__(self, u) -> np.ndarray:
        """Φ_t applied elementwise."""
        return exponential_transform(u, self.t, scaled=self.scaled)


def bon_transform(n: int, *, scaled: bool = False) -> ExponentialTransform:
    """The default transform for Best-of-N inference: t = 3N − 2 (positive).

    Not the paper's values (we could not confirm them). In the idealised continuous model (C uniform under π_ref,
    policy π ∝ π_ref·exp(Φ_t(C)/β)), a grid search over t of the Best-of-N-vs-Best-of-N win rate at KL budgets of
    0.05–0.1 nats gave best t ≈ 4, 8–10, 20, 40–50, ≥ 100 (the grid's top) for N = 2, 4, 8, 16, 32, which 3N − 2
    follows to within 0.1 percentage points of win rate; at larger KL the best t grows. C estimated from M
    reference samples resolves quantiles only to 1/M, so a large t needs M well above t. Tune t where it matters.
    """
    return ExponentialTransform(t=float(3 * check_n(n) - 2), scaled=scaled)


def won_transform(n: int, *, scaled: bool = False) -> ExponentialTransform:
    """The default transform for Worst-of-N inference (Best-of-N jailbreaking): t = −(2N − 1) (negative).

    Not the paper's values. Same idealised computation as `bon_transform`, scoring the win rate of the policy's
    worst of N against the reference's worst of N: best t ≈ −3, −8, −15, −25…−30, −50…−60 for N = 2, 4, 8, 16, 32
    at KL 0.05–0.1 nats.
    """
    return ExponentialTransform(t=-float(2 * check_n(n) - 1), scaled=scaled)


def bon_optimal_policy(ref_probs, calibrated, n: int) -> np.ndarray:
    """π ∝ π_ref·C^{N−1}: the KL-regularised optimum for Φ = log and β = 1/(N−1), the Best-of-N distribution in the
    continuous limit (over a finite set it matches exact Best-of-N only for N ≤ 2)."""
    n = check_n(n)
    p = np.asarray(ref_probs, dtype=np.float64)
    c = np.asarray(calibrated, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise InputError(f"expected a non-empty 1-D probability vector, got shape {p.shape}", field="ref_probs")
    if c.shape != p.shape:
        raise InputError(f"expected {p.size} calibrated rewards, got shape {c.shape}", field="calibrated")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError("probabilities must be finite and non-negative", field="ref_probs")
    if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c > 1):
        raise InputError("calibrated rewards must lie in [0, 1]", field="calibrated")
    weights = p * c ** (n - 1)
    total = float(weights.sum())
    if total <= 0:
        raise InputError("π_ref·C^(N−1) has no mass: every outcome has zero probability or zero calibrated reward",
                         field="calibrated")
    return weights / total


def _check_weights(weights: Any, *, path: str | None = None, line: int | None = None) -> dict[str, float] | None:
    if weights is None:
        return None
    if not isinstance(weights, Mapping):
        raise InputError(f"weights must be an object of name -> number or null, got {type(weights).__name__}",
                         path=path, line=line, field="weights")
    clean = {}
    for name, value in weights.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value):
            raise InputError(f"weight {name!r} must map a name to a finite number, got {value!r}", path=path,
                             line=line, field="weights")
        clean[name] = float(value)
    return clean


class CalibrationTable:
    """Per-prompt sorted reference rewards (M per prompt) for calibrating rewards, with the objective weights and
    reward model they were scored with; saved as JSONL (a header line, then one line per prompt)."""

    def __init__(self, *, weights: Mapping[str, float] | None = None, rm: str | None = None,
                 m: int | None = None) -> None:
        if rm is not None and not isinstance(rm, str):
            raise InputError(f"rm must be a string or None, got {type(rm).__name__}", field="rm")
        if m is not None and (isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1):
            raise InputError(f"m must be an integer >= 1, got {m!r}", field="m")
        self.weights = _check_weights(weights)
        self.rm = rm
        self._m = None if m is None else int(m)
        self._refs: dict[str, np.ndarray] = {}
        self._prompts: dict[str, list[Message] | None] = {}

    @property
    def m(self) -> int | None:
        """Reference rewards per prompt (None until set or until the first prompt is added)."""
        return self._m

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._refs

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def add(self, prompt_id: str, reference_rewards, prompt: list[Message] | None = None) -> None:
        """Store prompt `prompt_id`'s reference rewards (exactly M of them) and, optionally, its messages."""
        if not isinstance(prompt_id, str) or not prompt_id:
            raise InputError(f"prompt ids must be non-empty strings, got {prompt_id!r}", field="id")
        if prompt_id in self._refs:
            raise InputError(f"duplicate prompt id {prompt_id!r}", field="id")
        refs = _reference_vector(reference_rewards, "reference_rewards")
        if self._m is not None and refs.size != self._m:
            raise InputError(f"prompt {prompt_id!r} has {refs.size} reference rewards; the table holds M = {self._m} "
                             "per prompt", field="reference_rewards")
        messages = None if prompt is None else normalize_messages(prompt, field="prompt")
        self._m = refs.size
        self._refs[prompt_id] = np.sort(refs)
        self._prompts[prompt_id] = messages

    def reference_rewards(self, prompt_id: str) -> np.ndarray:
        """A sorted copy of prompt `prompt_id`'s reference rewards."""
        return self._sorted(prompt_id).copy()

    def prompt(self, prompt_id: str) -> list[Message] | None:
        """Prompt `prompt_id`'s messages, or None when none were stored."""
        self._sorted(prompt_id)
        messages = self._prompts[prompt_id]
        return None if messages is None else [dict(m) for m in messages]

    def _sorted(self, prompt_id: str) -> np.ndarray:
        try:
            return self._refs[prompt_id]
        except (KeyError, TypeError):
            raise InputError(f"no reference rewards for prompt id {prompt_id!r}", field="prompt_id") from None

    def calibrate(self, prompt_id: str, rewards) -> np.ndarray:
        """Calibrated rewards of `rewards` (responses to prompt `prompt_id`) against its reference rewards."""
        return _calibrate_sorted(self._sorted(prompt_id), _reward_array(rewards, "rewards"))

    def transformed(self, prompt_id: str, rewards, t: float, *, scaled: bool = False) -> np.ndarray:
        """Φ_t of the calibrated rewards: the training reward of InfAlign-CTRL."""
        return exponential_transform(self.calibrate(prompt_id, rewards), t, scaled=scaled)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSONL atomically: a header object, then one {"id", "prompt", "reference_rewards"} line
        per prompt."""
        from paretoalign.output_paths import check_output_file

        check_output_file(path, field="path")  # a folder there: InputError, not IsADirectoryError
        header = {"format": FORMAT, "version": VERSION, "weights": self.weights, "m": self._m, "rm": self.rm}
        lines = [json.dumps(header, ensure_ascii=False, allow_nan=False)]
        for prompt_id, refs in self._refs.items():
            row = {"id": prompt_id, "prompt": self._prompts[prompt_id], "reference_rewards": refs.tolist()}
            lines.append(json.dumps(row, ensure_ascii=False, allow_nan=False))
        write_text_atomic(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationTable:
        """Read a table written by `save`; InputError naming the file, line and field on bad content."""
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=where) from None
        table: CalibrationTable | None = None
        for line_no, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON: {e.msg} at column {e.colno}", path=where, line=line_no) from None
            if not isinstance(row, dict):
                raise InputError(f"expected a JSON object, got {type(row).__name__}", path=where, line=line_no)
            if table is None:
                table = cls._from_header(row, where, line_no)
            else:
                table._add_row(row, where, line_no)
        if table is None:
            raise InputError(f"empty file: expected a header line with format {FORMAT!r}", path=where, line=1)
        return table

    @classmethod
    def _from_header(cls, row: dict, path: str, line: int) -> CalibrationTable:
        if row.get("format") != FORMAT:
            raise InputError(f"not a calibration table: format is {row.get('format')!r}, expected {FORMAT!r}",
                             path=path, line=line, field="format")
        if row.get("version") != VERSION:
            raise InputError(f"unsupported version {row.get('version')!r}; this version reads {VERSION}", path=path,
                             line=line, field="version")
        for key in ("weights", "m", "rm"):
            if key not in row:
                raise InputError(f"header is missing {key!r}", path=path, line=line, field=key)
        m, rm = row["m"], row["rm"]
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise InputError(f"m must be an integer >= 1 or null, got {m!r}", path=path, line=line, field="m")
        if rm is not None and not isinstance(rm, str):
            raise InputError(f"rm must be a string or null, got {rm!r}", path=path, line=line, field="rm")
        return cls(weights=_check_weights(row["weights"], path=path, line=line), rm=rm, m=m)

    def _add_row(self, row: dict, path: str, line: int) -> None:
        for key in ("id", "prompt", "reference_rewards"):
            if key not in row:
                raise InputError(f"missing {key!r}", path=path, line=line, field=key)
        prompt_id, prompt, refs = row["id"], row["prompt"], row["reference_rewards"]
        if not isinstance(prompt_id, str) or not prompt_id:
            raise InputError(f"id must be a non-empty string, got {prompt_id!r}", path=path, line=line, field="id")
        if prompt_id in self._refs:
            raise InputError(f"duplicate prompt id {prompt_id!r}", path=path, line=line, field="id")
        if self._m is None:
            raise InputError("the header has m = null but the table has prompts", path=path, line=line, field="m")
        if not isinstance(refs, list) or not refs:
            raise InputError("reference_rewards must be a non-empty list of numbers", path=path, line=line,
                             field="reference_rewards")
        for value in refs:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"reference reward {value!r} is not a finite number", path=path, line=line,
                                 field="reference_rewards")
        if len(refs) != self._m:
            raise InputError(f"{len(refs)} reference rewards, but the header says m = {self._m}", path=path,
                             line=line, field="reference_rewards")
        messages = None if prompt is None else normalize_messages(prompt, field="prompt", location=f"{path}:{line}")
        self._refs[prompt_id] = np.sort(np.asarray(refs, dtype=np.float64))
        self._prompts[prompt_id] = messages


def calibrate_prompts(policy: Sampler | str, reward_model: Scorer | str | os.PathLike, prompts: Sequence[Any], *,
                      m: int, weights: Any = None, params: Any = None, prompt_ids: Sequence[str] | None = None,
                      rm_name: str | None = None, batch_rows: int = 32, progress: bool = False) -> CalibrationTable:
    """Sample M reference responses per prompt, score them, and store their rewards per prompt.

    Every sample counts, finished or cut at the token limit: C(x, y) is a quantile under the reference policy as
    it samples, and Best-of-N's theory ranks all N samples.
    """
    from paretoalign.data.prompts import prompt_hash
    from paretoalign.embed.chat_format import as_messages
    from paretoalign.inference.best_of_n import best_of_n

    m = check_n(m)
    messages = [as_messages(p, i) for i, p in enumerate(prompts)]
    ids = [prompt_hash(msg) for msg in messages] if prompt_ids is None else [str(i) for i in prompt_ids]
    if len(ids) != len(messages):
        raise InputError(f"{len(ids)} prompt ids for {len(messages)} prompts", field="prompt_ids")
    duplicates = sorted(i for i, k in Counter(ids).items() if k > 1)
    if duplicates:
        raise InputError(f"duplicate prompt ids {duplicates[:5]}: each prompt needs its own id (give rows an 'id' "
                         "field, or remove repeated prompts)", field="id")
    results = best_of_n(policy, reward_model, messages, n=m, weights=weights, params=params, batch_rows=batch_rows,
                        progress=progress)
    table = CalibrationTable(weights=weights, rm=rm_name, m=m)
    for pid, msg, res in zip(ids, messages, results, strict=True):
        table.add(pid, [c.score for c in res.candidates], prompt=msg)
    return table
