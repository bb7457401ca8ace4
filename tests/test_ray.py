"""The Ray engines (the `[ray]` extra) give the single-process results: `score_with_ray` and `score --engine ray`,
`embed_with_ray` and train-rm's embed_engine=ray cache, and the Ray Serve `RayRowScorer`.

One local Ray (2 CPUs) for the module, the shipped default RM (MiniLM backbone) on a few dozen rows. Without Ray
the module skips, unless PARETOALIGN_REQUIRE_RAY=1 (CI), where a missing Ray fails it; the tests of the install
hint run either way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import sys

import numpy as np
import pytest
import torch

from paretoalign.data.schema import PreferencePair, RatedResponse
from paretoalign.embed.cache import EmbeddingCache, cache_key
from paretoalign.errors import InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RAY_MISSING = importlib.util.find_spec("ray") is None
WEIGHTS = {"helpfulness": 1.0, "harmlessness": 0.5, "verbosity": -0.25}


def _rows(n: int = 30) -> tuple[list, list[str]]:
    """Distinct rows of varied lengths: string and multi-turn prompts, unicode, one long reply."""
    topics = ["bread", "tax forms", "the moon", "a bicycle", "résumés", "tea", "chess", "rust on a knife"]
    prompts: list = []
    responses: list[str] = []
    for i in range(n):
        topic = topics[i % len(topics)]
        if i % 3 == 0:
            prompts.append(f"How do I deal with {topic}? ({i})")
        else:
            prompts.append([{"role": "user", "content": f"Tell me about {topic}."},
                            {"role": "assistant", "content": "Sure, what would you like to know?"},
                            {"role": "user", "content": f"Question {i}: the basics, please."}])
        reply = f"Here is answer {i} about {topic}. " + "More detail follows. " * (i % 6)
        responses.append(reply * (8 if i == 7 else 1))
    return prompts, responses


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (2 CPUs, no dashboard); shut down (Serve with it) at the end."""
    if RAY_MISSING:
        if os.environ.get("PARETOALIGN_REQUIRE_RAY") == "1":
            pytest.fail("PARETOALIGN_REQUIRE_RAY=1 but ray is not importable: pip install 'paretoalign[ray]'")
        pytest.skip("ray is not installed (pip install 'paretoalign[ray]'); PARETOALIGN_REQUIRE_RAY=1 fails instead")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def default_rm():
    from paretoalign.rewards.loading import load_reward_model

    return load_reward_model("default")


def _local_score(model, prompts, responses, **kw):
    """The single-process scores, on one torch thread (as each Ray actor runs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return model.score(prompts, responses, **kw)
    finally:
        torch.set_num_threads(before)


def _assert_same(out, ref, *, exact: bool) -> None:
    """Equal bit for bit, or (other batches: float32 features padded otherwise) within 1e-6 + 1e-5 relative."""
    assert out.objective_names == ref.objective_names
    for name in ("score", "objectives", "objectives_raw", "gating", "baseline", "verbosity_contribution"):
        a, b = getattr(out, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is None:
            continue
        assert a.shape == b.shape, name
        if exact:
            assert np.array_equal(a, b), name
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- without Ray / bad input (no cluster needed)
def test_every_entry_point_names_the_extra_when_ray_is_missing(monkeypatch):
    from paretoalign.embed.ray_embed import embed_with_ray
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.ray_scoring import score_with_ray
    from paretoalign.server.config import ServeConfig
    from paretoalign.server.ray_serve import RayRowScorer

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    hint = re.escape("pip install 'paretoalign[ray]'")
    with pytest.raises(InputError, match=hint) as exc:
        score_with_ray("default", ["q"], ["a"], num_workers=1)
    assert exc.value.field == "engine"
    with pytest.raises(InputError, match=hint):
        embed_with_ray({"kind": "sentence_encoder", "model": "minilm"}, [[{"role": "user", "content": "q"}]], ["a"])
    with pytest.raises(InputError, match=hint):
        asyncio.run(RayRowScorer(ServeConfig(engine="ray")).start())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else object())
    with pytest.raises(InputError, match=hint) as exc:
        ArmoRMConfig(embed_engine="ray")
    assert exc.value.field == "embed_engine"


def test_bad_settings_fail_before_any_ray_work(monkeypatch):
    import paretoalign.embed.ray_embed as ray_embed
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.ray_scoring import score_with_ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for input that is wrong")

    monkeypatch.setattr(ray_embed, "connect_ray", no_ray)
    for workers in (0, -1, 1.5, True):
        with pytest.raises(InputError) as exc:
            score_with_ray("default", ["q"], ["a"], num_workers=workers)
        assert exc.value.field == "num_workers"
    with pytest.raises(InputError, match="'kindness'") as exc:
        score_with_ray("default", ["q"], ["a"], weights={"kindness": 1.0}, num_workers=1)
    assert exc.value.field == "weights"
    with pytest.raises(InputError) as exc:
        score_with_ray("default", ["q", "r"], ["a"], num_workers=1)
    assert exc.value.field == "responses"
    with pytest.raises(InputError) as exc:
        ArmoRMConfig(embed_engine="spark")
    assert exc.value.field == "embed_engine"
    with pytest.raises(InputError) as exc:
        ArmoRMConfig(embed_workers=0)
    assert exc.value.field == "embed_workers"


def test_ray_errors_are_unwrapped_to_the_input_error_they_carry():
    from paretoalign.embed.ray_embed import unwrap_ray_error

    class Wrapper(RuntimeError):  # what Ray raises: the original exception in `cause`
        def __init__(self, cause):
            super().__init__("ray says: traceback ...")
            self.cause = cause

    inner = InputError("bad row", path="x.jsonl", line=3, field="prompt")
    out = unwrap_ray_error(Wrapper(Wrapper(inner)))
    assert isinstance(out, InputError) and str(out) == str(inner)
    other = Wrapper(KeyError("k"))
    assert unwrap_ray_error(other) is other


def test_embed_with_cache_embeds_only_the_missing_rows_with_the_embedder(tmp_path):
    from paretoalign.embed.backbone import TruncationStats, TruncationWarning
    from paretoalign.embed.cached import embed_with_cache
    from tests.rewards.fake_backbone import HashingBackbone

    class CuttingEmbedder(HashingBackbone):
        def embed(self, prompts, responses, **kwargs):
            self.truncation_stats = TruncationStats(len(prompts), 0, 1)
            return super().embed(prompts, responses, **kwargs)

    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
    responses = [f"reply number {i} with words" for i in range(6)]
    backbone, embedder = HashingBackbone(), CuttingEmbedder()
    cache = tmp_path / "emb.sqlite"
    embed_with_cache(backbone, prompts[:2], responses[:2], cache=cache, progress=False)
    with pytest.warns(TruncationWarning, match="response of 1/4 rows"):
        out = embed_with_cache(backbone, prompts, responses, cache=cache, progress=False, embedder=embedder)
    assert backbone.calls == 1 and embedder.calls == 1  # the 4 missing rows, in one chunk, by the embedder
    expected = HashingBackbone().embed(prompts, responses)
    assert np.array_equal(out.response, expected.response) and np.array_equal(out.prompt, expected.prompt)
    with EmbeddingCache(cache) as stored:
        assert len(stored) == 6


# ---------------------------------------------------------------- scoring
@pytest.mark.parametrize("workers", [1, 2])
def test_score_with_ray_batch_size_one_is_bit_identical_in_input_order(ray_cluster, default_rm, workers):
    from paretoalign.rewards.ray_scoring import score_with_ray

    prompts, responses = _rows()
    ref = _local_score(default_rm, prompts, responses, batch_size=1)
    out = score_with_ray("default", prompts, responses, batch_size=1, num_workers=workers, rows_per_task=4)
    _assert_same(out, ref, exact=True)
    assert ray_cluster.is_initialized()  # a session it did not start is left running


def test_score_with_ray_default_batch_applies_the_weights(ray_cluster, default_rm):
    from paretoalign.rewards.ray_scoring import score_with_ray

    prompts, responses = _rows()
    ref = _local_score(default_rm, prompts, responses, weights=WEIGHTS)
    out = score_with_ray("default", prompts, responses, weights=WEIGHTS, num_workers=2, rows_per_task=7)
    _assert_same(out, ref, exact=False)
    w = default_rm.resolve_weights(WEIGHTS)
    assert np.array_equal(out.gating, np.broadcast_to(w, out.gating.shape))
    np.testing.assert_allclose(out.score, out.objectives @ w, rtol=0, atol=1e-12)
    v = out.objective_names.index("verbosity")
    np.testing.assert_allclose(out.verbosity_contribution, -0.25 * out.objectives[:, v], rtol=0, atol=1e-12)


def test_a_model_the_actors_cannot_load_fails_with_its_input_error(ray_cluster, tmp_path):
    from paretoalign.rewards.ray_scoring import score_with_ray
    from tests.rewards.model_factory import random_model

    # the heads load on the driver; the backbone (a folder that is gone) only on the actors
    random_model(spec={"kind": "sentence_encoder", "model": str(tmp_path / "gone")}).save_pretrained(tmp_path / "rm")
    with pytest.raises(InputError, match="cannot load model") as exc:
        score_with_ray(str(tmp_path / "rm"), ["q", "r"], ["a", "b"], num_workers=1)
    assert type(exc.value) is InputError and "Traceback" not in str(exc.value)


def test_score_command_engine_ray_writes_the_local_file(ray_cluster, tmp_path):
    from paretoalign.cli import main

    prompts, responses = _rows(12)
    rows = []
    for i in range(0, 12, 2):
        if i % 4 == 0:
            rows.append({"id": f"p{i}", "prompt": prompts[i], "chosen": responses[i], "rejected": responses[i + 1]})
        else:
            rows.append({"id": f"s{i}", "prompt": prompts[i], "response": responses[i], "extra": [i]})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = ["score", "--model", "default", "--input", str(src), "--weights", "helpfulness=1,verbosity=-0.5",
              "--quiet"]
    assert main([*common, "--output", str(tmp_path / "local.jsonl")]) == 0
    assert main([*common, "--output", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--num-workers", "2"]) == 0
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    ray_rows = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["id"] for r in ray_rows] == [r["id"] for r in rows]

    def close(a, b, where):
        if isinstance(a, float) or isinstance(b, float):
            assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for key in a:
                close(a[key], b[key], f"{where}.{key}")
        else:
            assert a == b, where

    for i, (a, b) in enumerate(zip(ray_rows, local, strict=True)):
        close(a, b, f"row {i}")


# ---------------------------------------------------------------- embedding and train-rm
def test_embed_with_ray_equals_the_backbone(ray_cluster, default_rm):
    """Bit for bit with batch_size=1 (the default batch: see the train-rm cache test below)."""
    from paretoalign.embed.ray_embed import embed_with_ray
    from paretoalign.rewards.reward_model import check_score_inputs

    prompts, responses = _rows()
    conversations = check_score_inputs(prompts, responses)
    backbone = default_rm.backbone
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = backbone.embed(conversations, responses, batch_size=1)
    finally:
        torch.set_num_threads(before)
    out = embed_with_ray(backbone.spec(), conversations, responses, num_workers=2, batch_size=1)
    assert np.array_equal(out.response, one.response) and np.array_equal(out.prompt, one.prompt)


class _CountingBackbone:
    """The real backbone, counting its embed calls."""

    def __init__(self, inner):
        self.inner = inner
        self.rows = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, prompts, responses, **kwargs):
        self.rows += len(prompts)
        return self.inner.embed(prompts, responses, **kwargs)


def _training_data():
    words = ["clear", "steps", "example", "because", "detail", "weapon", "steal", "the", "a", "so", "then"]
    pairs, ratings = [], []
    for i in range(24):
        prompt = [{"role": "user", "content": f"explain item {i % 5}"}]
        good = " ".join(words[(i + j) % 5] for j in range(3 + i % 4))
        bad = " ".join(words[5 + (i + j) % 6] for j in range(2 + i % 3))
        pairs.append(PreferencePair(prompt, good, bad, objective="helpfulness" if i % 2 else "harmlessness",
                                    source=f"synthetic:{i}"))
    for i in range(12):
        ratings.append(RatedResponse([{"role": "user", "content": "rate this"}], " ".join(words[: 1 + i % 8]),
                                     {"clarity": float(i % 4)}, source=f"ratings:{i}"))
    from types import SimpleNamespace

    return SimpleNamespace(pairs=pairs, ratings=ratings)


def test_train_rm_ray_embedding_cache_is_read_by_the_local_path(ray_cluster, default_rm, tmp_path):
    """embed_engine=ray (RayEmbedder, default batch) writes the cache the local path then reads without embedding;
    the cached features equal the local backbone's."""
    from paretoalign.embed.registry import load_backbone
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    cache_file = tmp_path / "emb.sqlite"
    settings = dict(backbone="minilm", embedding_cache=str(cache_file), gating_steps=30, gating_hidden=[8],
                    gating_crossfit_folds=0, progress=False)
    data = _training_data()
    on_ray, _ = train_reward_model(ArmoRMConfig(embed_engine="ray", embed_workers=2, **settings), data)
    backbone = _CountingBackbone(load_backbone(default_rm.backbone_spec))
    local, _ = train_reward_model(ArmoRMConfig(**settings), data, backbone=backbone)
    assert backbone.rows == 0  # every row came from the cache the Ray run wrote
    assert np.array_equal(local.W, on_ray.W) and np.array_equal(local.T, on_ray.T)
    prompts = [p.prompt for p in data.pairs] + [r.prompt for r in data.ratings]
    responses = [p.chosen for p in data.pairs] + [r.response for r in data.ratings]
    expected = backbone.inner.embed(prompts, responses)
    with EmbeddingCache(cache_file) as cache:
        found = cache.get_many([cache_key(backbone.fingerprint, p, r) for p, r in zip(prompts, responses,
                                                                                          strict=True)])
        assert len(found) == len(set(zip(map(str, prompts), responses, strict=True)))
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            resp, prm = found[cache_key(backbone.fingerprint, p, r)]
            np.testing.assert_allclose(resp, expected.response[i], rtol=0, atol=1e-6)
            np.testing.assert_allclose(prm, expected.prompt[i], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- Ray Serve
def test_ray_row_scorer_answers_concurrent_requests_with_the_local_scores(ray_cluster, default_rm):
    from paretoalign.server.config import ServeConfig
    from paretoalign.server.ray_serve import RayRowScorer

    prompts, responses = _rows(24)
    from paretoalign.rewards.reward_model import check_score_inputs

    conversations = check_score_inputs(prompts, responses)
    ref = _local_score(default_rm, conversations, responses, batch_size=1)
    w = default_rm.resolve_weights(WEIGHTS)
    config = ServeConfig(engine="ray", replicas=2, max_batch_rows=8, exact=True)
    spans = [(0, 3), (3, 4), (4, 15), (15, 24)]  # one request is larger than a batch: it goes as two chunks

    async def run():
        scorer = RayRowScorer(config)
        await scorer.start()
        try:
            assert scorer.objective_names == default_rm.objective_names
            assert scorer.verbosity_objective == "verbosity"
            info = scorer.info()
            assert info["format"] == "paretoalign" and info["objectives"] == default_rm.objective_names
            with pytest.raises(InputError) as exc:
                scorer.check_weights({"kindness": 1.0})
            assert exc.value.field == "weights"
            outs = await asyncio.gather(*[scorer.score(conversations[a:b], responses[a:b], w if i % 2 else None)
                                          for i, (a, b) in enumerate(spans)])
        finally:
            await scorer.stop()
        return outs

    outs = asyncio.run(run())
    for i, ((a, b), out) in enumerate(zip(spans, outs, strict=True)):
        expected = ref.take(np.arange(a, b))
        if i % 2:
            expected = expected.reweighted(w, "verbosity")
        _assert_same(out, expected, exact=True)
