"""`paretoalign serve --engine ray`: a `RowScorer` whose reward model runs as Ray Serve replicas (the `[ray]` extra).

Supports: `RayRowScorer(config)` with the app's RowScorer protocol (`paretoalign.server.batcher`). `start` connects
to the cluster in ``config.ray_address`` (or starts a local Ray) and `serve.run`s the deployment ``RewardReplica``
(``config.replicas`` replicas, one CPU each, one GPU each where the cluster has one per replica) as its own
application with no HTTP route: the paretoalign app stays the only HTTP front. Each replica loads the model once and
batches calls with ``@serve.batch`` (at most ``max_batch_rows`` rows, waiting ``max_wait_ms`` for more; ``exact``:
the backbone embeds one row at a time, so scores are bit-identical to ``paretoalign score --batch-size 1``); it
scores with weights=None and `score` applies the request's weights here with `RewardOutput.reweighted`.

How a request travels: its rows go as chunks of at most ``max_batch_rows`` rows, one handle call each, with one
(prompts, responses) argument (Ray Serve's batcher counts the rows of the calls it groups and never splits one); the
chunks come back in order and are joined.

Assumes: ``max_batch_tokens`` is not applied on this path (batches are cut by rows only); every node can load
``config.model`` (see `paretoalign.rewards.ray_scoring`). `stop` waits for the accepted requests (at most
``graceful_timeout_s``), deletes the application, and shuts Ray down only if `start` started it (Serve itself only
then too: on a shared cluster other applications keep running).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.embed.ray_embed import connect_ray, gpus_per_worker, require_ray, unwrap_ray_error
from paretoalign.errors import InputError
from paretoalign.rewards.ray_scoring import load_worker_model
from paretoalign.rewards.reward_model import RewardOutput, Weights, check_score_inputs
from paretoalign.rewards.reward_model import resolve_weight_vector as _resolve_weight_vector
from paretoalign.server.batcher import ScorerStopped, model_info

if TYPE_CHECKING:
    from paretoalign.server.config import ServeConfig

logger = logging.getLogger(__name__)
DEPLOYMENT = "RewardReplica"


def concat_outputs(parts: list[RewardOutput]) -> RewardOutput:
    """The rows of `parts`, one after the other."""
    def join(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return RewardOutput(score=join("score"), objectives=join("objectives"), objectives_raw=join("objectives_raw"),
                        gating=join("gating"), baseline=join("baseline"),
                        objective_names=list(parts[0].objective_names),
                        verbosity_contribution=join("verbosity_contribution"))


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextmanager
def _quiet_serve_logs() -> Iterator[None]:
    """Ray Serve's INFO lines on this process (started, app ready, deleting) dropped while we deploy or take down (a
    filter, not a level: serve.start sets its logger's level itself)."""
    serve_logger = logging.getLogger("ray.serve")
    serve_logger.addFilter(_below_warning)
    try:
        yield
    finally:
        serve_logger.removeFilter(_below_warning)


class _ReplicaBody:
    """What each replica runs: one reward model, loaded once, scoring groups of calls with weights=None."""

    def __init__(self, reference: str, trust_remote_code: bool, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self.model, self.load_error = load_worker_model(reference, trust_remote_code)  # error raised by describe()

    def describe(self) -> dict[str, Any]:
        """`model_info` of the replica's model."""
        if self.load_error is not None:
            raise self.load_error
        return model_info(self.model)

    async def score_group(self, items: list[tuple[list[list[Message]], list[str]]]) -> list[RewardOutput]:
        """Score the rows of every call in one model call (in a thread: the replica's loop keeps queueing)."""
        prompts = [p for ps, _ in items for p in ps]
        responses = [r for _, rs in items for r in rs]
        out = await asyncio.to_thread(self.model.score, prompts, responses, weights=None,
                                      batch_size=self.batch_size)
        parts, offset = [], 0
        for _, rs in items:
            parts.append(out.take(np.arange(offset, offset + len(rs))))
            offset += len(rs)
        return parts


def _deployment(config: ServeConfig, gpus: float) -> Any:
    """The ``RewardReplica`` deployment for `config` (built here: ``@serve.batch`` takes its limits when applied)."""
    from ray import serve

    max_rows = int(config.max_batch_rows)

    class RewardReplica(_ReplicaBody):
        @serve.batch(max_batch_size=max_rows, batch_wait_timeout_s=float(config.max_wait_ms) / 1000.0,
                     batch_size_fn=lambda items: sum(len(rs) for _, rs in items))
        async def score_chunk(self, items: list[tuple[list[list[Message]], list[str]]]) -> list[RewardOutput]:
            return await self.score_group(items)

    return serve.deployment(
        RewardReplica, name=DEPLOYMENT, num_replicas=int(config.replicas),
        ray_actor_options={"num_cpus": 1, "num_gpus": gpus},
        # enough calls in flight per replica for a batch to fill while the previous one runs
        max_ongoing_requests=max(2 * max_rows, 16))


class RayRowScorer:
    """A RowScorer backed by a Ray Serve deployment of the reward model (see the module)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config  # checked when it was built (ServeConfig.__post_init__)
        self.objective_names: list[str] = []
        self.verbosity_objective: str | None = None
        self.app_name = f"paretoalign-rm-{uuid.uuid4().hex[:8]}"
        self._info: dict[str, Any] | None = None
        self._handle: Any = None
        self._started_ray = False
        self._accepting = False
        self._inflight = 0
        self._idle: asyncio.Event | None = None

    # ------------------------------------------------------------------ RowScorer

    def check_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as the model's (k,) vector; InputError(field="weights") for weights it does not accept."""
        return _resolve_weight_vector(weights, self.objective_names, field="weights")

    def info(self) -> dict[str, Any]:
        """The replicas' model description (read once at start)."""
        if self._info is None:
            raise ScorerStopped("the Ray reward model has not started")
        return dict(self._info)

    async def start(self) -> None:
        """Connect to Ray, deploy the replicas and read the model's description (blocking work in a thread)."""
        if self._handle is not None:
            return
        require_ray("engine")
        from paretoalign.rewards.ray_scoring import actor_reference

        reference = actor_reference(self.config.model, trust_remote_code=self.config.trust_remote_code)
        await asyncio.to_thread(self._start_sync, reference)
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    def _start_sync(self, reference: str) -> None:
        with _quiet_serve_logs():
            self._deploy(reference)

    def _deploy(self, reference: str) -> None:
        import ray
        from ray import serve

        self._started_ray = connect_ray(self.config.ray_address, num_cpus=None)
        try:
            # no Serve HTTP proxy: the paretoalign app is the only front (a Serve already running keeps its own)
            serve.start(proxy_location="Disabled")
            batch_size = self.config.rm_batch_size
            app = _deployment(self.config, gpus_per_worker(ray, int(self.config.replicas))).bind(
                reference, self.config.trust_remote_code is True, batch_size)
            self._handle = serve.run(app, name=self.app_name, route_prefix=None)
            self._info = self._handle.describe.remote().result()
        except Exception as exc:
            self._stop_sync()
            raise unwrap_ray_error(exc) from None
        self.objective_names = list(self._info["objectives"])
        self.verbosity_objective = self._info.get("verbosity_objective")

    async def score(self, prompts: list[list[Message]], responses: list[str],
                    weights: np.ndarray | None) -> RewardOutput:
        """The rows' scores from the replicas, reweighted here when `weights` are given."""
        if not self._accepting or self._handle is None or self._idle is None:
            raise ScorerStopped("the reward model is not accepting requests (the server is stopping)")
        conversations = check_score_inputs(prompts, responses)
        rows = [str(r) for r in responses]
        if not rows:
            raise InputError("nothing to score: give at least one row", field="responses")
        w = self.check_weights(weights)
        step = int(self.config.max_batch_rows)
        self._inflight += 1
        self._idle.clear()
        try:
            calls = [self._handle.score_chunk.remote((conversations[lo:lo + step], rows[lo:lo + step]))
                     for lo in range(0, len(rows), step)]
            try:
                parts = await asyncio.gather(*calls)
            except Exception as exc:
                raise unwrap_ray_error(exc) from None
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
        out = parts[0] if len(parts) == 1 else concat_outputs(parts)
        if len(out) != len(rows):
            raise RuntimeError(f"the Ray replicas returned {len(out)} scores for {len(rows)} rows")
        return out if w is None else out.reweighted(w, self.verbosity_objective)

    async def stop(self) -> None:
        """Refuse new requests, wait for the accepted ones (at most graceful_timeout_s), then take the replicas
        down (and Ray, when `start` started it)."""
        self._accepting = False
        if self._idle is not None and not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), float(self.config.graceful_timeout_s))
            except asyncio.TimeoutError:
                logger.warning("stopping the Ray replicas with %d requests still running", self._inflight)
        await asyncio.to_thread(self._stop_sync)

    def _stop_sync(self) -> None:
        with _quiet_serve_logs():
            self._take_down()

    def _take_down(self) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():
            self._handle, self._started_ray = None, False
            return
        if self._handle is not None or self._started_ray:
            try:
                serve.delete(self.app_name)
            except Exception:  # Ray already gone (or the app never deployed): nothing left to delete
                logger.debug("could not delete the Serve application %s", self.app_name, exc_info=True)
        self._handle = None
        if self._started_ray:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
            self._started_ray = False
