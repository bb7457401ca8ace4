"""Embedding on Ray actors, and the Ray session helpers the other Ray engines share (the `[ray]` extra).

Supports: `embed_with_ray` (one call: start actors, embed, stop them) and `RayEmbedder` (a pool of actors kept for
many calls, e.g. every chunk of `embed_with_cache(..., embedder=...)`); each actor builds the backbone once from
its spec (`paretoalign.embed.registry.load_backbone`) and embeds a slice of the rows; results come back in input
order. `ray_session` connects to a cluster (`address`, e.g. ``auto`` after `ray start`) or starts a local Ray, and
disconnects / stops only what it started.

Assumes: every node can load the spec (the model folder at the same path, or an alias / the shipped files); the
backbones run on CPU, one torch thread per CPU Ray gives the actor (1); an actor asks for one GPU only where the
cluster has one per worker (then it is one actor per GPU). Ray is imported lazily: without it every entry point
raises InputError with the install hint.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.embed.backbone import Features, TruncationStats, TruncationWarning
from paretoalign.errors import InputError, ParetoAlignError

RAY_HINT = "install the ray extra: pip install 'paretoalign[ray]'"
MAX_ROWS_PER_TASK = 256
"""Largest slice of rows one actor call embeds (bigger slices: fewer round trips, coarser load balance)."""

logger = logging.getLogger(__name__)


def require_ray(field: str = "engine") -> ModuleType:
    """The `ray` module; InputError naming `field` with the install hint when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise InputError(f"the Ray engine needs Ray: {RAY_HINT}", field=field) from None
    return ray


def check_workers(num_workers: Any, field: str = "num_workers") -> int:
    """`num_workers` as an int >= 1 (InputError naming `field` otherwise)."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise InputError(f"must be an integer >= 1, got {num_workers!r}", field=field)
    return num_workers


def connect_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; True when this call connected or started it (so the caller owns
    the connection and shuts it down), False when it was already connected.

    `address` (e.g. ``auto`` or ``HEAD:6379``): join that cluster; None: start a local Ray with `num_cpus` CPUs.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address!r} ({type(exc).__name__}: {exc}); "
                             "start one with `ray start --head`, or leave the address out to run a local Ray",
                             field="ray_address") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Ray, connected for the duration (see `connect_ray`); shut down at the end only if this session started it."""
    ray = require_ray()
    started = connect_ray(address, num_cpus=num_cpus)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def local_cpus(num_workers: int) -> int:
    """CPUs of a Ray started here: the machine's (its affinity mask), at least one per worker."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(available, num_workers)


def gpus_per_worker(ray: ModuleType, num_workers: int, requested: float | None = None) -> float:
    """The GPUs each actor asks for: `requested` when given, else 1 where the cluster has a GPU per worker, else 0."""
    if requested is not None:
        if not (isinstance(requested, (int, float)) and not isinstance(requested, bool) and requested >= 0):
            raise InputError(f"must be a number >= 0, got {requested!r}", field="num_gpus")
        return float(requested)
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= num_workers else 0.0


def use_assigned_cpus() -> None:
    """Inside an actor: torch threads = the CPUs Ray assigned it (at least one), so actors do not oversubscribe."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """The paretoalign error a Ray error carries (an actor's or task's own exception), else `exc` itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)  # a Ray error (RayTaskError, ActorDiedError) holds the original
        if isinstance(inner, BaseException) and inner is not current:
            current = inner
            continue
        if isinstance(current, InputError):
            return InputError(current.reason, path=current.path, line=current.line, field=current.field)
        if isinstance(current, ParetoAlignError):
            return current
        current = current.__cause__
    return exc


def rows_per_task(n: int, num_workers: int, requested: int | None = None) -> int:
    """Rows per actor call: `requested`, else about two slices per worker, at most MAX_ROWS_PER_TASK."""
    if requested is not None:
        return check_workers(requested, "rows_per_task")
    return max(1, min(MAX_ROWS_PER_TASK, math.ceil(n / (2 * num_workers))))


class _EmbedWorker:
    """A Ray actor body: one backbone, built from its spec once."""

    def __init__(self, spec: dict[str, Any], trust_remote_code: bool) -> None:
        from paretoalign.embed.registry import load_backbone

        use_assigned_cpus()
        self.load_error: Exception | None = None
        try:
            self.backbone = load_backbone(spec, trust_remote_code=trust_remote_code is True)
        except Exception as exc:  # raised by the first call instead: Ray keeps only the text of a constructor's error
            self.load_error = exc

    def describe(self) -> dict[str, Any]:
        """The backbone's fingerprint, feature sizes, max_length and how it cuts a long response."""
        if self.load_error is not None:
            raise self.load_error
        b = self.backbone
        return {"fingerprint": b.fingerprint, "feature_dim": int(b.feature_dim),
                "prompt_feature_dim": int(b.prompt_feature_dim), "max_length": int(getattr(b, "max_length", 0)),
                "response_cut": str(getattr(b, "response_cut", ""))}

    def embed(self, prompts: list[list[Message]], responses: list[str],
              batch_size: int | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
        """(response features, prompt features, truncation counts) of the rows."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # the driver merges the counts into one warning
            feats = self.backbone.embed(prompts, responses, batch_size=batch_size, progress=False)
        stats = getattr(self.backbone, "truncation_stats", None) or TruncationStats(len(prompts))
        return (np.asarray(feats.response, dtype=np.float32), np.asarray(feats.prompt, dtype=np.float32),
                (stats.rows, stats.prompt_truncated, stats.response_truncated))


class RayEmbedder:
    """Embeds rows on a pool of Ray actors that each hold the backbone of one spec (started on first use).

    Use as a context manager (or call `close`): the actors stop, and a Ray this object started shuts down. It has
    the `Backbone.embed` signature and a `truncation_stats` of its last call, so `embed_with_cache` takes it as its
    `embedder`.
    """

    def __init__(self, backbone_spec: dict[str, Any], *, num_workers: int = 2, trust_remote_code: bool = False,
                 ray_address: str | None = None, rows_per_task: int | None = None, num_gpus: float | None = None,
                 expected_fingerprint: str | None = None) -> None:
        if not isinstance(backbone_spec, dict) or "kind" not in backbone_spec:
            raise InputError(f"a backbone spec is a dict with a 'kind', got {backbone_spec!r}", field="backbone")
        self.spec = dict(backbone_spec)
        self.num_workers = check_workers(num_workers)
        self.trust_remote_code = trust_remote_code is True
        self.ray_address = ray_address
        self.rows_per_task = None if rows_per_task is None else check_workers(rows_per_task, "rows_per_task")
        self.num_gpus = num_gpus
        self.expected_fingerprint = expected_fingerprint
        self.truncation_stats = TruncationStats()
        self.info: dict[str, Any] | None = None
        self._actors: list[Any] = []
        self._started_ray = False

    def start(self) -> None:
        """Connect to (or start) Ray and build the actors; errors from a backbone that cannot load come back here."""
        if self._actors:
            return
        ray = require_ray()
        self._started_ray = connect_ray(self.ray_address, num_cpus=local_cpus(self.num_workers))
        try:
            gpus = gpus_per_worker(ray, self.num_workers, self.num_gpus)
            actor_cls = ray.remote(num_cpus=1, num_gpus=gpus)(_EmbedWorker)
            self._actors = [actor_cls.remote(self.spec, self.trust_remote_code) for _ in range(self.num_workers)]
            infos = ray.get([a.describe.remote() for a in self._actors])
        except Exception as exc:
            self.close()
            raise unwrap_ray_error(exc) from None
        self.info = infos[0]
        fingerprints = {i["fingerprint"] for i in infos}
        if self.expected_fingerprint is not None and fingerprints != {self.expected_fingerprint}:
            # e.g. a copy of the model with other file times on another node: the cache stays keyed by the driver's
            warnings.warn(f"the Ray actors built backbones with fingerprints {sorted(fingerprints)}, not the "
                          f"driver's {self.expected_fingerprint}: check that every node has the same model files",
                          stacklevel=2)

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *, batch_size: int | None = None,
              progress: bool = False) -> Features:
        """Features of each (prompt, response) row, in input order (see `Backbone.embed`)."""
        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
        self.start()
        assert self.info is not None
        n = len(prompts)
        d, dp = self.info["feature_dim"], self.info["prompt_feature_dim"]
        response = np.zeros((n, d), dtype=np.float32)
        prompt = np.zeros((n, dp), dtype=np.float32)
        step = rows_per_task(n, self.num_workers, self.rows_per_task)
        pieces = [(lo, min(n, lo + step)) for lo in range(0, n, step)]
        from ray.util import ActorPool
        from tqdm.auto import tqdm

        pool = ActorPool(self._actors)
        stats = TruncationStats()

        def submit(actor, piece):
            lo, hi = piece
            return actor.embed.remote([list(p) for p in prompts[lo:hi]], [str(r) for r in responses[lo:hi]],
                                      batch_size)

        try:
            with tqdm(total=n, disable=not progress, desc="embedding (ray)", unit="row") as bar:
                for (lo, hi), (r, p, counts) in zip(pieces, pool.map(submit, pieces), strict=True):
                    response[lo:hi], prompt[lo:hi] = r, p
                    stats = stats + TruncationStats(*counts)
                    bar.update(hi - lo)
        except Exception as exc:
            raise unwrap_ray_error(exc) from None
        self.truncation_stats = stats
        return Features(response, prompt)

    def close(self) -> None:
        """Stop the actors, and Ray if this object started it."""
        if not self._actors and not self._started_ray:
            return
        import ray

        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone with its node: nothing left to stop
                logger.debug("could not kill a Ray embedding actor", exc_info=True)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_with_ray(backbone_spec: dict[str, Any], prompts: Sequence[list[Message]], responses: Sequence[str], *,
                   num_workers: int = 2, batch_size: int | None = None, trust_remote_code: bool = False,
                   ray_address: str | None = None, progress: bool = False) -> Features:
    """Features of each (prompt, response) row from `num_workers` Ray actors, in input order; equal to
    `load_backbone(backbone_spec).embed(...)` (bit for bit where the backbone's rows do not depend on their batch)."""
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
    with RayEmbedder(backbone_spec, num_workers=num_workers, trust_remote_code=trust_remote_code,
                     ray_address=ray_address) as embedder:
        feats = embedder.embed(prompts, responses, batch_size=batch_size, progress=progress)
        info = embedder.info or {}
        message = embedder.truncation_stats.message(info.get("max_length", 0), info.get("response_cut", ""))
    if message:
        warnings.warn(message, TruncationWarning, stacklevel=2)
    return feats
