"""MicroBatcher: coalescing, limits, cancellation, failures, draining, metrics, and exactness of the results."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.rewards.reward_model import RewardModel, RewardOutput
from paretoalign.server.batcher import (
    MicroBatcher,
    ScorerStopped,
    default_token_counter,
    text_length_tokens,
    tokenizer_counter,
)
from paretoalign.server.metrics import ServerMetrics
from tests.rewards.fake_backbone import HashingBackbone
from tests.rewards.model_factory import KINDS, NAMES, random_model
from tests.tiny import make_tokenizer

WORDS = ("bread flour water salt yeast knead rise bake fox dog lazy quick brown paris france berlin capital "
         "helpful safe answer question because please thanks").split()
FIELDS = ("score", "objectives", "objectives_raw", "gating", "baseline", "verbosity_contribution")
TIMEOUT_S = 60.0


def run(coro):
    """Run a test coroutine with a bound on its total time."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


def assert_same(a: RewardOutput, b: RewardOutput) -> None:
    assert a.objective_names == b.objective_names
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.shape == y.shape and np.array_equal(x, y), name


def make_rows(rng: np.random.Generator, n: int) -> tuple[list[list[dict]], list[str]]:
    prompts, responses = [], []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8))))
        prompts.append([{"role": "user", "content": prompt}])
        responses.append(" ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))) + f" #{rng.integers(1e9)}")
    return prompts, responses


def hashed_model() -> RewardModel:
    return random_model(d=HashingBackbone.feature_dim, dp=HashingBackbone.prompt_feature_dim,
                        backbone=HashingBackbone())


class Recorder:
    """Wraps model.score: records each call's responses and keyword arguments; can hold the FIRST call until the
    test opens the gate (so that the test queues the next requests while the worker is busy), and can fail."""

    def __init__(self, model, *, hold_first: bool = False, fail_on: str | None = None,
                 error: Exception | None = None) -> None:
        self.calls: list[tuple[list[str], dict]] = []
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        original = model.score

        def score(prompts, responses, **kwargs):
            self.calls.append((list(responses), dict(kwargs)))
            if len(self.calls) == 1:
                self.gate.wait(TIMEOUT_S)
            if fail_on is not None and fail_on in responses:
                raise error
            return original(prompts, responses, **kwargs)

        model.score = score  # an instance attribute: the batcher still sees a RewardModel

    def sizes(self) -> list[int]:
        return [len(r) for r, _ in self.calls]


async def wait_until(condition, what: str) -> None:
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting until {what}")


async def hold_with_first(batcher: MicroBatcher, recorder: Recorder, prompts, responses, weights=None):
    """Submit a first request and wait until the worker holds it (the recorder's gate is closed)."""
    task = asyncio.create_task(batcher.score(prompts, responses, weights))
    await wait_until(lambda: len(recorder.calls) == 1, "the first batch reached the model")
    return task


def test_concurrent_requests_are_coalesced_and_each_gets_exactly_its_scores():
    model = hashed_model()
    expected_model = hashed_model()
    rec = Recorder(model, hold_first=True)
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(40):
        prompts, responses = make_rows(rng, int(rng.integers(1, 6)))
        weights = None if rng.random() < 0.4 else rng.normal(size=len(NAMES))
        requests.append((prompts, responses, weights))
    metrics = ServerMetrics()
    max_rows = 16

    async def main():
        b = MicroBatcher(model, max_rows=max_rows, max_wait_ms=2.0, batch_size=3, metrics=metrics)
        await b.start()
        try:
            first = await hold_with_first(b, rec, *requests[0])
            tasks = [first] + [asyncio.create_task(b.score(*r)) for r in requests[1:]]
            total = sum(len(r[1]) for r in requests)
            await wait_until(lambda: b.queued_rows == total - len(requests[0][1]), "every request was queued")
            rec.gate.set()
            return await asyncio.gather(*tasks)
        finally:
            rec.gate.set()
            await b.stop()

    results = run(main())
    assert len(rec.calls) < len(requests)
    assert all(size <= max_rows for size in rec.sizes())
    assert all(kwargs == {"weights": None, "batch_size": 3} for _, kwargs in rec.calls)
    # first come, first served, and every batch after the held one is packed as full as the next request allows
    flat = [y for _, responses, _ in requests for y in responses]
    assert [y for responses, _ in rec.calls for y in responses] == flat
    sizes = [len(r[1]) for r in requests]
    starts = np.cumsum([0] + rec.sizes())
    request_starts = list(np.cumsum([0] + sizes))
    for lo, hi in zip(starts[1:-1], starts[2:], strict=True):
        assert lo in request_starts and hi in request_starts  # no request is split
        nxt = request_starts.index(hi)
        if nxt < len(sizes):
            assert hi - lo + sizes[nxt] > max_rows  # the next request would not have fitted
    for (prompts, responses, weights), out in zip(requests, results, strict=True):
        assert_same(out, expected_model.score(prompts, responses, weights=weights, batch_size=3))
    batch_count = [s for f in metrics.registry.collect() if f.name == "paretoalign_batch_rows"
                   for s in f.samples if s.name.endswith("_count")][0].value
    assert batch_count == len(rec.calls)
    assert metrics.rows_scored._value.get() == len(flat)
    assert metrics.queue_rows._value.get() == 0


def test_a_lone_request_is_answered_after_the_wait():
    model = hashed_model()
    rec = Recorder(model)
    prompts, responses = make_rows(np.random.default_rng(1), 3)

    async def main():
        out = []
        for wait_ms in (0.0, 20.0):
            b = MicroBatcher(model, max_wait_ms=wait_ms)
            await b.start()
            out.append(await asyncio.wait_for(b.score(prompts, responses, None), 10))
            await b.stop()
        return out

    results = run(main())
    assert rec.sizes() == [3, 3]
    for out in results:
        assert_same(out, hashed_model().score(prompts, responses))


def test_a_request_larger_than_max_rows_runs_alone():
    model = hashed_model()
    rec = Recorder(model, hold_first=True)
    rng = np.random.default_rng(2)
    a, b_, c, d = (make_rows(rng, n) for n in (1, 2, 7, 1))

    async def main():
        b = MicroBatcher(model, max_rows=4, max_wait_ms=1.0)
        await b.start()
        try:
            first = await hold_with_first(b, rec, *a)
            tasks = [first] + [asyncio.create_task(b.score(*r, None)) for r in (b_, c, d)]
            await wait_until(lambda: b.queued_rows == 10, "the requests were queued")
            rec.gate.set()
            return await asyncio.gather(*tasks)
        finally:
            rec.gate.set()
            await b.stop()

    results = run(main())
    assert rec.sizes() == [1, 2, 7, 1]
    assert_same(results[2], hashed_model().score(*c))


def test_a_cancelled_request_never_reaches_the_model():
    model = hashed_model()
    rec = Recorder(model, hold_first=True)
    rng = np.random.default_rng(3)
    a, b_, c, d = (make_rows(rng, n) for n in (2, 2, 3, 1))

    async def main():
        b = MicroBatcher(model, max_rows=64, max_wait_ms=1.0)
        await b.start()
        try:
            first = await hold_with_first(b, rec, *a)
            tb, tc, td = (asyncio.create_task(b.score(*r, None)) for r in (b_, c, d))
            await wait_until(lambda: b.queued_rows == 6, "the requests were queued")
            tc.cancel()
            await asyncio.sleep(0)
            rec.gate.set()
            done = await asyncio.gather(first, tb, td)
            with pytest.raises(asyncio.CancelledError):
                await tc
            return done
        finally:
            rec.gate.set()
            await b.stop()

    out_a, out_b, out_d = run(main())
    seen = [y for responses, _ in rec.calls for y in responses]
    assert not set(c[1]) & set(seen)
    assert rec.sizes() == [2, 3]
    assert_same(out_b, hashed_model().score(*b_))
    assert_same(out_d, hashed_model().score(*d))


@pytest.mark.parametrize("error", [InputError("row 1 has no tokens to score", field="responses"),
                                   RuntimeError("out of memory")])
def test_a_failing_batch_fails_its_requests_only_and_the_batcher_keeps_serving(error):
    model = hashed_model()
    rec = Recorder(model, hold_first=True, fail_on="BOOM", error=error)
    rng = np.random.default_rng(4)
    a, b_, d, e = (make_rows(rng, n) for n in (1, 2, 3, 2))
    c = ([[{"role": "user", "content": "hi"}], [{"role": "user", "content": "hey"}]], ["fine", "BOOM"])

    async def main():
        b = MicroBatcher(model, max_rows=4, max_wait_ms=1.0)
        await b.start()
        try:
            first = await hold_with_first(b, rec, *a)
            tasks = [asyncio.create_task(b.score(*r, None)) for r in (b_, c, d)]
            await wait_until(lambda: b.queued_rows == 7, "the requests were queued")
            rec.gate.set()
            results = await asyncio.gather(first, *tasks, return_exceptions=True)
            later = await b.score(*e, None)
            return results, later
        finally:
            rec.gate.set()
            await b.stop()

    (out_a, out_b, out_c, out_d), later = run(main())
    assert rec.sizes() == [1, 4, 3, 2]  # b and c shared the failing batch
    assert out_b is error and out_c is error
    assert isinstance(out_a, RewardOutput) and isinstance(out_d, RewardOutput)
    assert_same(out_d, hashed_model().score(*d))
    assert_same(later, hashed_model().score(*e))


def test_stop_scores_every_accepted_request_and_refuses_new_ones():
    model = hashed_model()
    rec = Recorder(model, hold_first=True)
    rng = np.random.default_rng(5)
    a, b_, c = (make_rows(rng, n) for n in (1, 2, 3))

    async def main():
        b = MicroBatcher(model, max_rows=2, max_wait_ms=1000.0)  # stopping must not wait for the 1 s window
        await b.start()
        try:
            first = await hold_with_first(b, rec, *a)
            tasks = [first] + [asyncio.create_task(b.score(*r, None)) for r in (b_, c)]
            await wait_until(lambda: b.queued_rows == 5, "the requests were queued")
            stopping = asyncio.create_task(b.stop())
            await asyncio.sleep(0)
            with pytest.raises(ScorerStopped):
                await b.score(*a, None)
            rec.gate.set()
            await stopping
            assert all(t.done() for t in tasks)
            return [t.result() for t in tasks]
        finally:
            rec.gate.set()
            await b.stop()

    results = run(main())
    assert rec.sizes() == [1, 2, 3]
    for rows, out in zip((a, b_, c), results, strict=True):
        assert_same(out, hashed_model().score(*rows))


def test_max_tokens_splits_batches_and_metrics_count_them():
    model = hashed_model()
    rec = Recorder(model, hold_first=True)
    metrics = ServerMetrics()
    word_counts = [4, 5, 3, 6, 2]
    requests = [([[{"role": "user", "content": "q"}]], [" ".join(["bake"] * n)]) for n in [1, *word_counts]]

    def count_tokens(prompt, response):
        return len(response.split())

    async def main():
        b = MicroBatcher(model, max_rows=100, max_tokens=10, max_wait_ms=1.0, metrics=metrics,
                         count_tokens=count_tokens)
        await b.start()
        try:
            first = await hold_with_first(b, rec, *requests[0])
            tasks = [first] + [asyncio.create_task(b.score(*r, None)) for r in requests[1:]]
            await wait_until(lambda: b.queued_rows == len(word_counts), "the requests were queued")
            rec.gate.set()
            return await asyncio.gather(*tasks)
        finally:
            rec.gate.set()
            await b.stop()

    run(main())
    assert [sum(len(y.split()) for y in responses) for responses, _ in rec.calls] == [1, 9, 9, 2]
    families = {f.name: {s.name: s.value for s in f.samples} for f in metrics.registry.collect()}
    assert families["paretoalign_batch_tokens"]["paretoalign_batch_tokens_sum"] == 21
    assert families["paretoalign_batch_tokens"]["paretoalign_batch_tokens_count"] == 4
    assert families["paretoalign_batch_requests"]["paretoalign_batch_requests_sum"] == 6
    assert families["paretoalign_rows_scored"]["paretoalign_rows_scored_total"] == 6
    assert families["paretoalign_queue_rows"]["paretoalign_queue_rows"] == 0


def test_bad_requests_fail_alone_before_queueing():
    model = hashed_model()
    rec = Recorder(model)

    async def main():
        b = MicroBatcher(model)
        with pytest.raises(ScorerStopped):
            await b.score([[{"role": "user", "content": "x"}]], ["y"], None)
        await b.start()
        try:
            with pytest.raises(InputError, match="2 prompts but 1 responses"):
                await b.score([[{"role": "user", "content": "x"}]] * 2, ["y"], None)
            with pytest.raises(InputError, match="nothing to score"):
                await b.score([], [], None)
            with pytest.raises(InputError, match="unknown objective") as info:
                await b.score([[{"role": "user", "content": "x"}]], ["y"], {"nope": 1.0})
            assert info.value.field == "weights"
        finally:
            await b.stop()

    run(main())
    assert rec.calls == []


def test_check_weights_and_info_describe_the_model():
    model = hashed_model()
    b = MicroBatcher(model)
    assert np.array_equal(b.check_weights({"honesty": 2.0}), [0.0, 0.0, 2.0, 0.0])
    assert b.check_weights(None) is None
    with pytest.raises(InputError) as info:
        b.check_weights([1.0])
    assert info.value.field == "weights"
    got = b.info()
    assert got == {"objectives": NAMES, "objective_kinds": KINDS, "format": "paretoalign", "format_version": 1,
                   "backbone": model.backbone_spec, "scale": pytest.approx(1.7), "verbosity_objective": "verbosity"}
    assert b.objective_names == NAMES and b.verbosity_objective == "verbosity"


class PlainScorer:
    """A minimal Scorer that is not a RewardModel (as a sequence classifier looks to the batcher)."""

    objective_names = ["a", "b"]
    verbosity_objective = None

    def __init__(self, tokenizer=None) -> None:
        if tokenizer is not None:
            self.tokenizer = tokenizer

    def resolve_weights(self, weights):
        return None if weights is None else np.asarray(weights, dtype=np.float64)

    def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
        raise NotImplementedError


def test_info_of_another_scorer_and_the_token_counters():
    b = MicroBatcher(PlainScorer())
    assert b.info() == {"objectives": ["a", "b"], "objective_kinds": None, "format": "sequence_classifier",
                        "format_version": None, "backbone": None, "scale": None, "verbosity_objective": None}
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how do I bake bread?"}]
    assert default_token_counter(hashed_model()) is text_length_tokens
    assert text_length_tokens(prompt, "knead it") == (8 + 20 + 8) // 4 + 1
    tok = make_tokenizer()
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"])
                   for t in ("be brief", "how do I bake bread?", "knead it"))
    assert tokenizer_counter(tok)(prompt, "knead it") == expected
    assert default_token_counter(PlainScorer(tok))(prompt, "knead it") == expected


def test_bad_settings_name_their_field():
    for kwargs, field in [({"max_rows": 0}, "max_batch_rows"), ({"max_tokens": -1}, "max_batch_tokens"),
                          ({"max_wait_ms": -1.0}, "max_wait_ms"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(InputError) as info:
            MicroBatcher(PlainScorer(), **kwargs)
        assert info.value.field == field


@pytest.mark.integration
def test_default_rm_batched_results_match_scoring_alone():
    from paretoalign.rewards.loading import load_reward_model

    model = load_reward_model("default")
    rng = np.random.default_rng(6)
    requests = []
    for i in range(10):
        prompts, responses = make_rows(rng, int(rng.integers(1, 5)))
        if i % 3 == 0:  # some long rows, so that padding differs between batches
            responses[0] = responses[0] + " " + " ".join(rng.choice(WORDS, size=120))
        weights = None if i % 2 else model.resolve_weights(rng.normal(size=model.n_objectives))
        requests.append((prompts, responses, weights))

    async def score_all(batch_size):
        rec = Recorder(model)
        b = MicroBatcher(model, max_rows=12, max_wait_ms=50.0, batch_size=batch_size)
        await b.start()
        try:
            return await asyncio.gather(*(b.score(*r) for r in requests)), rec
        finally:
            await b.stop()
            del model.score

    exact, rec = run(score_all(1))
    assert len(rec.calls) < len(requests)  # the rows did share batches
    for (prompts, responses, weights), out in zip(requests, exact, strict=True):
        assert_same(out, model.score(prompts, responses, weights=weights, batch_size=1))
    batched, rec = run(score_all(None))
    assert len(rec.calls) < len(requests)
    # Other companions pad the float32 embeddings differently: the results differ by float32 rounding (seen: up
    # to ~1e-6 of the size of what is summed -- the terms s g_i r'_i or w_i r'_i of the score, each r'_i; r'_i
    # itself sums ~770 products, so its error does not shrink with it), bounded here at 1e-5 of that size.
    for (prompts, responses, weights), out in zip(requests, batched, strict=True):
        alone = model.score(prompts, responses, weights=weights)
        scale = model.scale if weights is None else 1.0
        terms = np.maximum(1.0, scale * np.abs(alone.gating * alone.objectives).sum(axis=1))
        assert np.all(np.abs(out.score - alone.score) <= 1e-5 * terms)
        assert np.all(np.abs(out.objectives - alone.objectives) <= 1e-5 * np.maximum(1.0, np.abs(alone.objectives)))
        assert np.array_equal(out.gating, alone.gating) or weights is None
