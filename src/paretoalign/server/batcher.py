"""Micro-batching of concurrent scoring requests onto one reward model.

`RowScorer` is what the HTTP app needs of a scoring backend; `MicroBatcher` implements it over a local `Scorer`
(`RewardModel` or `SequenceClassifierRM`).

How requests become batches:

- every request waits on one asyncio queue (first come, first served); one loop task takes the first live request,
  then keeps adding the next ones while they fit in ``max_rows`` rows and ``max_tokens`` tokens, waiting for more
  until ``max_wait_ms`` have passed since the first one arrived (requests already queued are taken without waiting);
- a request is never split: one larger than the limits runs alone;
- the batch runs in ONE worker thread as ``scorer.score(prompts, responses, weights=None, batch_size=batch_size)``;
  each request gets its rows with `RewardOutput.take` and, when it gave weights, `RewardOutput.reweighted`, which is
  what ``scorer.score(its rows, weights=w)`` returns bit for bit. Scores depend on the batch only through the
  backbone's padding (float rounding); with ``batch_size=1`` every row is embedded alone and the results are
  bit-identical to ``scorer.score(rows, batch_size=1)`` whatever the other requests;
- a request whose caller was cancelled (client gone) before its batch runs is skipped;
- an exception in the reward model fails the requests of that batch only (an InputError stays an InputError);
- `stop` refuses new requests, scores every accepted one, then returns.

Token counts (only used to cut batches) come from the scorer's backbone tokenizer (``scorer.backbone.tokenizer``,
else ``scorer.tokenizer``; a private copy, so it never races the reward model's own tokenizer calls), else
``len(text) // 4 + 1``; they are computed in a separate counting thread so that long texts never block the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.errors import InputError
from paretoalign.rewards.reward_model import FORMAT_VERSION, RewardModel, RewardOutput, Weights, check_score_inputs

if TYPE_CHECKING:
    from paretoalign.embed.protocols import Tokenizer
    from paretoalign.rewards.protocols import Scorer
    from paretoalign.server.metrics import ServerMetrics

TokenCounter = Callable[[list[Message], str], int]


class ScorerStopped(RuntimeError):
    """The scorer does not accept requests: it was never started, or it is stopping."""


class RowScorer(Protocol):
    """What the app needs of a scoring backend (the local `MicroBatcher`, or a Ray deployment)."""

    objective_names: list[str]
    verbosity_objective: str | None

    def check_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as a (k,) vector (None: the model's own combination); InputError(field="weights") if bad."""
        ...

    def info(self) -> dict[str, Any]:
        """The model's description for /v1/models (objectives, kinds, format, backbone, scale, verbosity)."""
        ...

    async def start(self) -> None:
        """Start serving."""
        ...

    async def stop(self) -> None:
        """Finish every accepted request, then stop."""
        ...

    async def score(self, prompts: list[list[Message]], responses: list[str],
                    weights: np.ndarray | None) -> RewardOutput:
        """Scores of the rows, as ``scorer.score(prompts, responses, weights=weights)`` gives them."""
        ...


def text_length_tokens(prompt: list[Message], response: str) -> int:
    """A rough token count without a tokenizer: a quarter of the characters, plus one."""
    return (sum(len(m["content"]) for m in prompt) + len(response)) // 4 + 1


def tokenizer_counter(tokenizer: Tokenizer) -> TokenCounter:
    """Counts the tokens of a row's prompt contents and response with (a private copy of) `tokenizer`."""
    own = copy.deepcopy(tokenizer)  # fast tokenizers change their truncation state per call: never share one

    def count(prompt: list[Message], response: str) -> int:
        texts = [m["content"] for m in prompt] + [response]
        return sum(len(ids) for ids in own(texts, add_special_tokens=False, verbose=False)["input_ids"])

    return count


def default_token_counter(scorer: Scorer) -> TokenCounter:
    """The scorer's backbone tokenizer (or its own ``tokenizer``) as a counter, else `text_length_tokens`."""
    backbone = scorer.backbone if isinstance(scorer, RewardModel) else getattr(scorer, "backbone", None)
    tokenizer = getattr(backbone, "tokenizer", None) if backbone is not None else None
    if tokenizer is None:
        tokenizer = getattr(scorer, "tokenizer", None)
    return text_length_tokens if tokenizer is None else tokenizer_counter(tokenizer)


def model_info(model: Scorer) -> dict[str, Any]:
    """{"objectives", "objective_kinds", "format", "format_version", "backbone", "scale", "verbosity_objective"} of a
    loaded reward model: the /v1/models description (`RowScorer.info`)."""
    ours = isinstance(model, RewardModel)
    return {"objectives": list(model.objective_names),
            "objective_kinds": dict(model.objective_kinds) if ours else None,
            "format": "paretoalign" if ours else "sequence_classifier",
            "format_version": FORMAT_VERSION if ours else None,
            "backbone": dict(model.backbone_spec) if ours else None,
            "scale": model.scale if ours else None,
            "verbosity_objective": getattr(model, "verbosity_objective", None)}


@dataclass
class _Request:
    prompts: list[list[Message]]
    responses: list[str]
    weights: np.ndarray | None
    tokens: int
    arrival: float
    future: asyncio.Future[RewardOutput]

    @property
    def rows(self) -> int:
        return len(self.responses)


class MicroBatcher:
    """Coalesces concurrent `score` calls into reward-model batches run in one worker thread (see the module)."""

    def __init__(self, scorer: Scorer, *, max_rows: int = 64, max_tokens: int = 32768, max_wait_ms: float = 5.0,
                 batch_size: int | None = None, metrics: ServerMetrics | None = None,
                 count_tokens: TokenCounter | None = None) -> None:
        for name, value in (("max_batch_rows", max_rows), ("max_batch_tokens", max_tokens)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"must be a whole number >= 1, got {value!r}", field=name)
        if not max_wait_ms >= 0:
            raise InputError(f"must be >= 0 milliseconds, got {max_wait_ms!r}", field="max_wait_ms")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise InputError(f"must be a whole number >= 1, got {batch_size!r}", field="batch_size")
        self.scorer = scorer
        self.objective_names = list(scorer.objective_names)
        self.verbosity_objective: str | None = getattr(scorer, "verbosity_objective", None)
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.batch_size = batch_size
        self.metrics = metrics
        self._count = count_tokens if count_tokens is not None else default_token_counter(scorer)
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._counter: ThreadPoolExecutor | None = None
        self._accepting = False
        self._stopping = False

    # ------------------------------------------------------------------ RowScorer

    def check_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as the scorer's (k,) vector; InputError(field="weights") for weights it does not accept."""
        return self.scorer.resolve_weights(weights)

    def info(self) -> dict[str, Any]:
        """The /v1/models description of the scorer (`model_info`)."""
        return model_info(self.scorer)

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._queued_rows

    async def start(self) -> None:
        """Start the batching loop (a no-op when it runs already)."""
        if self._task is not None and not self._task.done():
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretoalign-rm")
        self._counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretoalign-count")
        self._stopping = False
        self._accepting = True
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="paretoalign-batcher")

    async def stop(self) -> None:
        """Refuse new requests, score every accepted one, then stop the loop and the worker threads."""
        self._accepting = False
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        for executor in (self._executor, self._counter):
            if executor is not None:
                executor.shutdown(wait=False)  # idle by now: the loop awaited its last batch
        self._executor = self._counter = None

    async def score(self, prompts: Sequence[list[Message]], responses: Sequence[str],
                    weights: np.ndarray | None) -> RewardOutput:
        """Queue the rows for the next batch and wait for their scores (weights: a (k,) vector or None)."""
        if not self._accepting or self._counter is None:
            raise ScorerStopped("the reward model is not accepting requests (the server is stopping)")
        conversations = check_score_inputs(prompts, responses)
        rows = list(responses)
        if not rows:
            raise InputError("nothing to score: give at least one row", field="responses")
        w = self.check_weights(weights)
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(self._counter, self._count_rows, conversations, rows)
        if not self._accepting or self._wakeup is None:  # stop() began while the rows were being counted
            raise ScorerStopped("the reward model is not accepting requests (the server is stopping)")
        request = _Request(conversations, rows, w, tokens, loop.time(), loop.create_future())
        self._queue.append(request)
        self._set_queued(self._queued_rows + request.rows)
        self._wakeup.set()
        return await request.future

    # ------------------------------------------------------------------ the loop

    def _count_rows(self, prompts: list[list[Message]], responses: list[str]) -> int:
        return int(sum(self._count(p, r) for p, r in zip(prompts, responses, strict=True)))

    def _set_queued(self, rows: int) -> None:
        self._queued_rows = rows
        if self.metrics is not None:
            self.metrics.set_queue(rows)

    def _peek(self) -> _Request | None:
        """The first queued request whose caller still waits (cancelled ones are dropped)."""
        while self._queue and self._queue[0].future.cancelled():
            self._set_queued(self._queued_rows - self._queue.popleft().rows)
        return self._queue[0] if self._queue else None

    def _pop(self) -> _Request:
        request = self._queue.popleft()
        self._set_queued(self._queued_rows - request.rows)
        return request

    async def _next_batch(self) -> list[_Request] | None:
        """The next batch (see the module); None once stopping with nothing left."""
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while self._peek() is None:
            if self._stopping:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._pop()
        batch, rows, tokens = [first], first.rows, first.tokens
        deadline = first.arrival + self.max_wait_s
        while rows < self.max_rows and tokens < self.max_tokens:
            nxt = self._peek()
            if nxt is None:
                timeout = deadline - loop.time()
                if timeout <= 0 or self._stopping:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except asyncio.TimeoutError:
                    break
                continue
            if rows + nxt.rows > self.max_rows or tokens + nxt.tokens > self.max_tokens:
                break
            batch.append(self._pop())
            rows += nxt.rows
            tokens += nxt.tokens
        return batch

    async def _loop(self) -> None:
        batch: list[_Request] = []
        try:
            while (next_batch := await self._next_batch()) is not None:
                batch = next_batch
                await self._run(batch)
                batch = []
        finally:  # after a normal stop nothing is left; after a cancelled loop, nobody may wait forever
            gone = ScorerStopped("the reward model stopped before scoring this request")
            for request in [*batch, *self._queue]:
                if not request.future.done():
                    request.future.set_exception(gone)
            self._queue.clear()
            self._set_queued(0)

    async def _run(self, batch: list[_Request]) -> None:
        """Score one batch in the worker thread and hand each live request its rows."""
        batch = [r for r in batch if not r.future.cancelled()]
        if not batch:
            return
        prompts = [p for r in batch for p in r.prompts]
        responses = [y for r in batch for y in r.responses]
        call = functools.partial(self.scorer.score, prompts, responses, weights=None, batch_size=self.batch_size)
        started = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, call)
            if len(out) != len(responses):
                raise RuntimeError(f"the reward model returned {len(out)} scores for {len(responses)} rows")
        except Exception as exc:  # the model's failure is this batch's requests' failure, not the server's
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        if self.metrics is not None:
            self.metrics.observe_batch(len(responses), len(batch), sum(r.tokens for r in batch),
                                       time.perf_counter() - started)
        offset = 0
        for r in batch:
            index = np.arange(offset, offset + r.rows)
            offset += r.rows
            if r.future.done():
                continue
            try:
                part = out.take(index)
                if r.weights is not None:
                    part = part.reweighted(r.weights, self.verbosity_objective)
            except Exception as exc:
                r.future.set_exception(exc)
                continue
            r.future.set_result(part)
