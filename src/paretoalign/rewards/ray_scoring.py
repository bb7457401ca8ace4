"""Score rows with a reward model on Ray Data: `paretoalign score --engine ray` (the `[ray]` extra).

Supports every reward-model reference `load_reward_model` takes (``default``, a train-rm folder, a sequence
classifier). The rows become a Ray Dataset of (row index, prompt as JSON, response); `map_batches` runs a callable
class on `num_workers` actors (one CPU each, and one GPU each where the cluster has a GPU per worker: on a cluster
that is one actor per GPU), each loading the model once and scoring its batches with weights=None. The driver puts
the rows back in input order by their index (never by block order) and applies user weights with
`RewardOutput.reweighted`, so the result equals `model.score(rows, weights=...)`: bit for bit when every row's
features do not depend on its batch (batch_size=1), within float rounding otherwise.

Assumes: every node can load the reference (the shipped model, or the same folder path on every node, or a hub id in
each node's cache); the models run on CPU inside the actors. The actors' warnings (e.g. truncation) stay in the Ray
logs. Ray is imported lazily: without it, InputError with the install hint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.embed.ray_embed import (
    check_workers,
    gpus_per_worker,
    local_cpus,
    ray_session,
    require_ray,
    unwrap_ray_error,
    use_assigned_cpus,
)
from paretoalign.embed.ray_embed import rows_per_task as _rows_per_task
from paretoalign.errors import ParetoAlignError
from paretoalign.rewards.reward_model import RewardOutput, Weights, check_score_inputs

if TYPE_CHECKING:
    from paretoalign.rewards.protocols import Scorer

_OPTIONAL = ("baseline", "verbosity_contribution")


def actor_reference(reference: str | os.PathLike, *, trust_remote_code: bool = False,
                    field: str = "model") -> str:
    """What the actors load: ``default`` as is (each node's own installation), a local folder as an absolute path
    (actors do not share the driver's working folder), a hub id as is. Checked here first (InputError)."""
    from paretoalign.rewards.loading import inspect_reward_model
    from paretoalign.rewards.shipped import DEFAULT_RM_ALIAS

    ref = inspect_reward_model(reference, field=field, trust_remote_code=trust_remote_code)
    if str(reference) == DEFAULT_RM_ALIAS:
        return DEFAULT_RM_ALIAS
    path = Path(ref.location).expanduser()
    return str(path.resolve()) if path.exists() else ref.location


def reference_weights(reference: str | os.PathLike, weights: Weights, *, trust_remote_code: bool = False,
                      field: str = "model") -> tuple[np.ndarray | None, str | None]:
    """(the (k,) weight vector, the verbosity objective) of `weights` for the model `reference` names, checked on
    the driver before any Ray work (InputError(field="weights") for bad weights). A paretoalign model loads its
    heads only (no backbone); a sequence classifier loads only when weights are given."""
    from paretoalign.rewards.loading import PARETOALIGN, inspect_reward_model, load_reward_model
    from paretoalign.rewards.reward_model import RewardModel

    ref = inspect_reward_model(reference, field=field, trust_remote_code=trust_remote_code)
    if ref.kind == PARETOALIGN:
        model = RewardModel.from_pretrained(ref.location, trust_remote_code=trust_remote_code is True)
        return model.resolve_weights(weights), model.verbosity_objective
    if weights is None:
        return None, None
    classifier = load_reward_model(reference, trust_remote_code=trust_remote_code, field=field)
    return classifier.resolve_weights(weights), classifier.verbosity_objective


def load_worker_model(reference: str, trust_remote_code: bool) -> tuple[Scorer | None, Exception | None]:
    """(the reward model, None) for a Ray actor or replica -- on the CPUs Ray assigned it, its backbone loaded now
    rather than in the first call -- or (None, the error): the caller raises it from its first call, because Ray
    keeps only the text of a constructor's error (and Serve would retry a failing constructor)."""
    from paretoalign.rewards.loading import load_reward_model

    use_assigned_cpus()
    try:
        model = load_reward_model(reference, trust_remote_code=trust_remote_code is True)
        getattr(model, "backbone", None)  # a RewardModel loads its backbone lazily
    except Exception as exc:  # any failure: reported by the first call
        return None, exc
    return model, None


class _ScoreBatch:
    """The map_batches callable: one reward model per actor, loaded once; scores a batch with weights=None."""

    def __init__(self, reference: str, trust_remote_code: bool, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self.model, self.load_error = load_worker_model(reference, trust_remote_code)
        if self.model is not None:
            self.names = json.dumps(list(self.model.objective_names))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.load_error is not None:
            raise self.load_error
        prompts = [json.loads(str(p)) for p in batch["prompt"]]
        out = self.model.score(prompts, [str(r) for r in batch["response"]], weights=None,
                               batch_size=self.batch_size, progress=False)
        columns = {"row": np.asarray(batch["row"], dtype=np.int64), "score": out.score,
                   "objectives": out.objectives, "objectives_raw": out.objectives_raw, "gating": out.gating,
                   "names": np.array([self.names] * len(out), dtype=object)}
        for name in _OPTIONAL:
            value = getattr(out, name)
            if value is not None:
                columns[name] = value
        return columns


def _score_batch_class(reference: str, trust_remote_code: bool, batch_size: int | None) -> type:
    """`_ScoreBatch` with its arguments bound in the class (shipped with it; Ray Data builds it with no arguments)."""

    class ScoreBatch(_ScoreBatch):
        def __init__(self) -> None:
            super().__init__(reference, trust_remote_code, batch_size)

    return ScoreBatch


@contextmanager
def _quiet_ray_data(ray: ModuleType, progress: bool) -> Iterator[Any]:
    """Ray Data's context with its progress bars and execution logs off and UDF errors raised as they are (restored
    afterwards)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.raise_original_map_exception)
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True  # an actor's InputError reaches the driver as itself
    if not progress:
        data_logger.setLevel(logging.ERROR)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.raise_original_map_exception = saved
        data_logger.setLevel(level)


def _assemble(parts: list[dict[str, np.ndarray]], n: int) -> RewardOutput:
    """The batches' rows in input order (by their row index), as one RewardOutput."""
    if not parts:
        raise ParetoAlignError(f"Ray returned no rows for {n} inputs")
    cols = {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}
    rows = cols.pop("row").astype(np.int64)
    order = np.argsort(rows, kind="stable")
    if rows.shape != (n,) or not np.array_equal(rows[order], np.arange(n)):
        raise ParetoAlignError(f"Ray returned {rows.size} rows for {n} inputs (each row once was expected)")
    names = {str(v) for v in cols.pop("names")}
    if len(names) != 1:
        raise ParetoAlignError(f"the Ray actors loaded models with different objectives: {sorted(names)}")
    objective_names = json.loads(names.pop())

    def col(key: str) -> np.ndarray | None:
        value = cols.get(key)
        return None if value is None else np.ascontiguousarray(value[order], dtype=np.float64)

    return RewardOutput(score=col("score"), objectives=col("objectives"), objectives_raw=col("objectives_raw"),
                        gating=col("gating"), baseline=col("baseline"), objective_names=objective_names,
                        verbosity_contribution=col("verbosity_contribution"))


def score_with_ray(reference: str | os.PathLike, prompts: Sequence[str | list[Message]], responses: Sequence[str],
                   *, weights: Weights = None, batch_size: int | None = None, num_workers: int = 2,
                   trust_remote_code: bool = False, ray_address: str | None = None,
                   rows_per_task: int | None = None, num_gpus: float | None = None,
                   progress: bool = False) -> RewardOutput:
    """Score (prompt, response) rows with the reward model `reference` names on `num_workers` Ray actors; the same
    output as `load_reward_model(reference).score(prompts, responses, weights=weights, batch_size=batch_size)`.

    `ray_address` joins a running cluster (``auto``, ``HEAD:6379``); None starts a local Ray for this call (an
    already connected session is used as is); Ray is shut down at the end only when this call started it.
    `rows_per_task`: rows per actor call (default about two per worker, at most 256); `num_gpus`: GPUs per actor
    (default 1 where the cluster has one per worker, else 0).
    """
    conversations = check_score_inputs(prompts, responses)
    num_workers = check_workers(num_workers)
    require_ray()
    location = actor_reference(reference, trust_remote_code=trust_remote_code)
    w, verbosity = reference_weights(reference, weights, trust_remote_code=trust_remote_code)
    n = len(conversations)
    if n == 0:  # nothing for the actors: the local model answers (with its own empty-output shapes)
        from paretoalign.rewards.loading import load_reward_model

        return load_reward_model(location, trust_remote_code=trust_remote_code).score([], [], weights=weights)
    step = _rows_per_task(n, num_workers, rows_per_task)
    with ray_session(ray_address, num_cpus=local_cpus(num_workers)) as ray, _quiet_ray_data(ray, progress):
        import ray.data
        from tqdm.auto import tqdm

        items = [{"row": i, "prompt": json.dumps(conv, ensure_ascii=False), "response": str(r)}
                 for i, (conv, r) in enumerate(zip(conversations, responses, strict=True))]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-n // step)))
        ds = ds.map_batches(_score_batch_class(location, trust_remote_code is True, batch_size), batch_size=step,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_workers),
                            num_cpus=1, num_gpus=gpus_per_worker(ray, num_workers, num_gpus))
        parts: list[dict[str, np.ndarray]] = []
        try:
            with tqdm(total=n, disable=not progress, desc="scoring (ray)", unit="row") as bar:
                for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    parts.append(part)
                    bar.update(len(part["row"]))
        except Exception as exc:
            raise unwrap_ray_error(exc) from None
    out = _assemble(parts, n)
    return out if w is None else out.reweighted(w, verbosity)

