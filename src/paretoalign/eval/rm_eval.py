"""RewardBench-style evaluation of reward models: held-out pairwise accuracy per dataset and subset.

For every group of pairs the report gives n and the accuracy (ties count half) with a percentile-bootstrap
interval of several scorers side by side: the gated multi-objective score ("final"), the pooled Bradley-Terry
baseline ("bt_baseline"), the length heuristic ("length", longer reply wins) and each single objective
("objective:<name>"). The "mean over datasets" row is the unweighted mean of the dataset accuracies (as
RewardBench averages its sections), with an interval from resampling each dataset independently.

`evaluate_score_pairs` is the scorer-agnostic core: any scorer (e.g. a fine-tuned TRL sequence classifier)
that gives a score to each chosen and each rejected reply gets the same report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.data.schema import PreferencePair
from paretoalign.eval.pairwise import (
    accuracy,
    bootstrap_means,
    length_scores,
    pairwise_outcomes,
    percentile_interval,
)

OBJECTIVE_PREFIX = "objective:"
MEAN_GROUP = "mean over datasets"
METRIC_LABELS = {"final": "final", "bt_baseline": "BT baseline", "length": "length"}


def dataset_of(pair: PreferencePair) -> str:
    """The dataset a pair belongs to: the part of `pair.subset` before the first '/' ("hh_rlhf" from
    "hh_rlhf/helpful-base"); "(none)" when the pair has no subset."""
    return (pair.subset or "(none)").split("/", 1)[0]


@dataclass
class MetricResult:
    """The pairwise accuracy of one scorer on one group, with its bootstrap interval."""

    accuracy: float
    ci: tuple[float, float]

    def format(self) -> str:
        """'0.712 [0.68, 0.74]'."""
        if math.isnan(self.accuracy):
            return "-"
        lo, hi = self.ci
        return f"{self.accuracy:.3f} [{lo:.2f}, {hi:.2f}]"

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": _json_float(self.accuracy), "ci": [_json_float(self.ci[0]), _json_float(self.ci[1])]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricResult:
        lo, hi = d["ci"]
        return cls(_from_json_float(d["accuracy"]), (_from_json_float(lo), _from_json_float(hi)))


@dataclass
class GroupResult:
    """One row of the report: a dataset, a subset of one, or the mean over datasets."""

    name: str
    kind: str
    """"dataset", "subset" (a finer row under `parent`) or "mean" (the mean over datasets)."""
    n: int
    metrics: dict[str, MetricResult]
    parent: str | None = None
    best_objective: str | None = None
    """The single objective with the highest accuracy on this group (picked on the evaluated pairs themselves,
    so an optimistic oracle, not a held-out choice); None when the scorer has no objectives."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "parent": self.parent, "n": self.n,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "best_objective": self.best_objective}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupResult:
        return cls(name=d["name"], kind=d["kind"], n=int(d["n"]), parent=d.get("parent"),
                   metrics={k: MetricResult.from_dict(v) for k, v in d["metrics"].items()},
                   best_objective=d.get("best_objective"))


@dataclass
class RMEvalReport:
    """Accuracies of several scorers on groups of held-out pairs (see the module docstring)."""

    groups: list[GroupResult]
    metric_names: list[str]
    n_boot: int
    level: float
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    def group(self, name: str) -> GroupResult:
        """The row called `name` (KeyError if none)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def mean(self) -> GroupResult:
        """The "mean over datasets" row."""
        return self.group(MEAN_GROUP)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN as null)."""
        return {"metric_names": list(self.metric_names), "n_boot": self.n_boot, "level": self.level,
                "seed": self.seed, "meta": self.meta, "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RMEvalReport:
        return cls(groups=[GroupResult.from_dict(g) for g in d["groups"]], metric_names=list(d["metric_names"]),
                   n_boot=int(d["n_boot"]), level=float(d["level"]), seed=int(d["seed"]), meta=dict(d["meta"]))

    def write(self, path: str | Path) -> None:
        """Write `to_dict()` as JSON to `path` atomically."""
        from paretoalign.atomic_io import write_json_atomic
        from paretoalign.output_paths import check_output_file

        check_output_file(path, field="path")  # a folder there: InputError, not IsADirectoryError
        write_json_atomic(path, self.to_dict())

    def format_table(self) -> str:
        """A fixed-width table: one row per group, columns "accuracy [CI]" of the final score, the BT baseline,
        the best single objective (with its name), the length heuristic, and any other scorer given."""
        objectives = [m for m in self.metric_names if m.startswith(OBJECTIVE_PREFIX)]
        plain = [m for m in self.metric_names if not m.startswith(OBJECTIVE_PREFIX)]
        columns: list[tuple[str, Callable[[GroupResult], str]]] = []
        for m in plain:
            if m == "length" and objectives:
                columns.append(("best single objective", _best_cell))
            columns.append((METRIC_LABELS.get(m, m), lambda g, m=m: g.metrics[m].format() if m in g.metrics else "-"))
        if objectives and "length" not in plain:
            columns.append(("best single objective", _best_cell))
        names = [("  " + g.name.split("/", 1)[-1]) if g.kind == "subset" else g.name for g in self.groups]
        cells = [[fn(g) for _, fn in columns] for g in self.groups]
        name_w = max([len("group")] + [len(s) for s in names])
        n_w = max([len("n")] + [len(str(g.n)) for g in self.groups])
        widths = [max([len(title)] + [len(row[j]) for row in cells]) for j, (title, _) in enumerate(columns)]

        def line(name: str, n: str, row: Sequence[str]) -> str:
            parts = [name.ljust(name_w), n.rjust(n_w)] + [c.ljust(w) for c, w in zip(row, widths, strict=True)]
            return "  ".join(parts).rstrip()

        out = [line("group", "n", [t for t, _ in columns])]
        rule = "-" * len(out[0])
        out.append(rule)
        for g, name, row in zip(self.groups, names, cells, strict=True):
            if g.kind == "mean":
                out.append(rule)
            out.append(line(name, str(g.n), row))
        notes = [f"accuracy on held-out pairs (ties count 1/2) [{round(self.level * 100)}% percentile bootstrap, "
                 f"{self.n_boot} resamples]"]
        if objectives:
            notes.append("best single objective: picked on these pairs (optimistic)")
        if "length" in plain:
            notes.append("length: the longer reply wins")
        out.append("; ".join(notes))
        return "\n".join(out)


def _best_cell(g: GroupResult) -> str:
    if g.best_objective is None:
        return "-"
    return f"{g.metrics[g.best_objective].format()} {g.best_objective[len(OBJECTIVE_PREFIX):]}"


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _from_json_float(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _best_objective(metrics: Mapping[str, MetricResult]) -> str | None:
    """The objective metric with the highest accuracy (the first on ties); None if there is none."""
    best, best_acc = None, -math.inf
    for name, result in metrics.items():
        if name.startswith(OBJECTIVE_PREFIX) and not math.isnan(result.accuracy) and result.accuracy > best_acc:
            best, best_acc = name, result.accuracy
    return best


def evaluate_score_pairs(chosen_scores: Mapping[str, np.ndarray], rejected_scores: Mapping[str, np.ndarray],
                         groups: Sequence[str], *, subgroups: Sequence[str | None] | None = None,
                         n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                         meta: dict[str, Any] | None = None) -> RMEvalReport:
    """The report of any scorers on labelled pairs: the pure core of `evaluate_pairs`.

    chosen_scores / rejected_scores: scorer name -> (n,) scores of the chosen / rejected replies (same names;
    their order is the column order). Names "objective:<name>" are single objectives (the best one per group
    gets a column); "final", "bt_baseline" and "length" get their usual labels; any other name is shown as is.
    groups: the dataset of each pair (one row each, and the unit of the mean over datasets).
    subgroups: optional finer label of each pair (e.g. "hh_rlhf/helpful-base"), reported as extra rows under
    their dataset; a label equal to the pair's group, or None, adds no row.
    Intervals: percentile bootstrap with `n_boot` resamples at `level`; deterministic for a given `seed`.
    """
    if list(chosen_scores) != list(rejected_scores):
        raise ValueError(f"chosen scorers {list(chosen_scores)} differ from rejected scorers {list(rejected_scores)}")
    if not chosen_scores:
        raise ValueError("no scorers given")
    n = len(groups)
    if n == 0:
        raise ValueError("no pairs to evaluate")
    if subgroups is not None and len(subgroups) != n:
        raise ValueError(f"{len(subgroups)} subgroup labels for {n} pairs")
    outcomes: dict[str, np.ndarray] = {}
    for name in chosen_scores:
        o = pairwise_outcomes(chosen_scores[name], rejected_scores[name])
        if o.size != n:
            raise ValueError(f"scorer {name!r} gives {o.size} pairs' scores, but there are {n} group labels")
        outcomes[name] = o

    group_arr = np.asarray(list(groups), dtype=object)
    datasets = sorted(set(groups))
    rows: list[GroupResult] = []
    # Bootstrap replicates of each dataset, per scorer, for the mean-over-datasets interval.
    dataset_reps: dict[str, list[np.ndarray]] = {name: [] for name in outcomes}
    mean_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))

    def summarize(name: str, kind: str, mask: np.ndarray, parent: str | None = None) -> GroupResult:
        metrics = {}
        for metric, o in outcomes.items():
            part = o[mask]
            reps = bootstrap_means(part, n_boot=n_boot, seed=seed)
            metrics[metric] = MetricResult(accuracy(part), percentile_interval(reps, level))
            if kind == "dataset":
                dataset_reps[metric].append(bootstrap_means(part, n_boot=n_boot, rng=mean_rng))
        return GroupResult(name, kind, int(mask.sum()), metrics, parent, _best_objective(metrics))

    sub_arr = None if subgroups is None else np.asarray([s if s is not None else "" for s in subgroups], dtype=object)
    for ds in datasets:
        mask = group_arr == ds
        rows.append(summarize(ds, "dataset", mask))
        if sub_arr is not None:
            for label in sorted(set(sub_arr[mask]) - {"", ds}):
                rows.append(summarize(label, "subset", mask & (sub_arr == label), parent=ds))

    dataset_rows = [r for r in rows if r.kind == "dataset"]
    mean_metrics = {}
    for metric in outcomes:
        acc = float(np.mean([r.metrics[metric].accuracy for r in dataset_rows]))
        reps = np.mean(np.stack(dataset_reps[metric]), axis=0)
        mean_metrics[metric] = MetricResult(acc, percentile_interval(reps, level))
    rows.append(GroupResult(MEAN_GROUP, "mean", n, mean_metrics, None, _best_objective(mean_metrics)))
    return RMEvalReport(groups=rows, metric_names=list(outcomes), n_boot=n_boot, level=level, seed=seed,
                        meta=dict(meta or {}))


def reward_model_scores(model, pairs: Sequence[PreferencePair], *, features=None, embedding_cache=None,
                        batch_size: int | None = None, progress: bool = True
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """Scores of a `RewardModel` on the chosen and on the rejected replies, and its objective names.

    Returns (chosen, rejected, objective_names); chosen / rejected map "final", "bt_baseline" (when the model
    has one), "length" and "objective:<name>" to (n,) arrays, ready for `evaluate_score_pairs`.
    Embeds both sides with `model.backbone` through `embed_with_cache` in one call (so batches are length-sorted
    across both; `embedding_cache` is a path, an open `EmbeddingCache` or None), unless
    `features=(chosen_features, rejected_features)` is given. A model without `score_features` (a
    `SequenceClassifierRM`) scores the text itself: see `_text_model_scores`.
    """
    pairs = list(pairs)
    if not hasattr(model, "score_features"):  # scores text directly (a SequenceClassifierRM): no features, no cache
        return _text_model_scores(model, pairs, batch_size=batch_size, progress=progress)
    if features is None:
        from paretoalign.embed.cached import embed_with_cache

        prompts = [p.prompt for p in pairs] * 2
        responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        both = embed_with_cache(model.backbone, prompts, responses, cache=embedding_cache, batch_size=batch_size,
                                progress=progress)
        n = len(pairs)
        features = (both.take(np.arange(n)), both.take(np.arange(n, 2 * n)))
    chosen_feats, rejected_feats = features
    if len(chosen_feats) != len(pairs) or len(rejected_feats) != len(pairs):
        raise ValueError(f"features for {len(chosen_feats)} chosen and {len(rejected_feats)} rejected rows, "
                         f"but {len(pairs)} pairs")
    out_c = model.score_features(chosen_feats)
    out_r = model.score_features(rejected_feats)
    chosen: dict[str, np.ndarray] = {"final": np.asarray(out_c.score)}
    rejected: dict[str, np.ndarray] = {"final": np.asarray(out_r.score)}
    if getattr(out_c, "baseline", None) is not None and getattr(out_r, "baseline", None) is not None:
        chosen["bt_baseline"], rejected["bt_baseline"] = np.asarray(out_c.baseline), np.asarray(out_r.baseline)
    chosen["length"] = length_scores([p.chosen for p in pairs])
    rejected["length"] = length_scores([p.rejected for p in pairs])
    obj_c, obj_r = np.asarray(out_c.objectives), np.asarray(out_r.objectives)
    for j, name in enumerate(out_c.objective_names):
        chosen[OBJECTIVE_PREFIX + name], rejected[OBJECTIVE_PREFIX + name] = obj_c[:, j], obj_r[:, j]
    return chosen, rejected, list(out_c.objective_names)


def _text_model_scores(model, pairs: list[PreferencePair], *, batch_size: int | None, progress: bool
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """`reward_model_scores` of a model that scores text (one `score` call over both sides): "final", "length"
    and, with more than one objective, "objective:<name>" (a single objective would repeat "final")."""
    n = len(pairs)
    out = model.score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                      batch_size=batch_size, progress=progress)
    score, objectives = np.asarray(out.score), np.asarray(out.objectives)
    chosen = {"final": score[:n], "length": length_scores([p.chosen for p in pairs])}
    rejected = {"final": score[n:], "length": length_scores([p.rejected for p in pairs])}
    names = list(out.objective_names)
    if len(names) > 1:
        for j, name in enumerate(names):
            chosen[OBJECTIVE_PREFIX + name], rejected[OBJECTIVE_PREFIX + name] = objectives[:n, j], objectives[n:, j]
    return chosen, rejected, names


def pair_groups(pairs: Sequence[PreferencePair], group_by: Callable[[PreferencePair], str] | None = None
                ) -> tuple[list[str], list[str | None] | None]:
    """(groups, subgroups) for `evaluate_score_pairs`: by default `dataset_of` each pair plus its full subset
    as a finer row; with `group_by`, its label per pair and no finer rows."""
    if group_by is None:
        return [dataset_of(p) for p in pairs], [p.subset for p in pairs]
    return [str(group_by(p)) for p in pairs], None


def evaluate_pairs(model, pairs: Sequence[PreferencePair], *, features=None, embedding_cache=None,
                   batch_size: int | None = None, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                   group_by: Callable[[PreferencePair], str] | None = None, progress: bool = True) -> RMEvalReport:
    """Evaluate a `RewardModel` on preference pairs, RewardBench-style.

    Scores both replies of every pair with `reward_model_scores` (embedding through `embed_with_cache` unless
    `features=(chosen_features, rejected_features)` is given) and reports "final", "bt_baseline" (when the
    model has one), "length" and every "objective:<name>" per group.
    group_by: the row label of a pair; default `dataset_of` plus one row per full `pair.subset`.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pairs to evaluate")
    t0 = time.perf_counter()
    chosen, rejected, names = reward_model_scores(model, pairs, features=features, embedding_cache=embedding_cache,
                                                  batch_size=batch_size, progress=progress)
    groups, subgroups = pair_groups(pairs, group_by)
    meta = {"n_pairs": len(pairs), "objective_names": names, "scoring_s": round(time.perf_counter() - t0, 3)}
    return evaluate_score_pairs(chosen, rejected, groups, subgroups=subgroups, n_boot=n_boot, level=level,
                                seed=seed, meta=meta)
