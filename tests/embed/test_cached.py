"""embed_with_cache: duplicates once, cached rows never recomputed, chunks committed so a killed run resumes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from paretoalign.embed.backbone import Features, TruncationStats, TruncationWarning
from paretoalign.embed.cache import EmbeddingCache
from paretoalign.embed.cached import embed_with_cache
from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.errors import InputError
from tests.embed.conftest import make_rows


class CountingBackbone:
    """Deterministic features from the text; counts the rows it embeds; can fail after some calls."""

    fingerprint = "counting-v1"
    feature_dim = 4
    prompt_feature_dim = 2
    max_length = 100
    response_cut = "their end dropped"

    def __init__(self, fail_after_calls: int | None = None, too_long: int = 1000) -> None:
        self.too_long = too_long
        self.rows_embedded = 0
        self.calls = 0
        self.fail_after_calls = fail_after_calls
        self.truncation_stats = TruncationStats()

    def embed(self, prompts, responses, *, batch_size=None, progress=False) -> Features:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise RuntimeError("killed")
        self.calls += 1
        self.rows_embedded += len(prompts)
        resp = np.array([[len(r), sum(map(ord, r)) % 97, len(p), 1.0] for p, r in zip(prompts, responses, strict=True)],
                        dtype=np.float32)
        prm = np.array([[len(p), sum(len(m["content"]) for m in p)] for p in prompts], dtype=np.float32)
        long = sum(len(r) > self.too_long for r in responses)
        self.truncation_stats = TruncationStats(len(prompts), 0, long)
        if long:
            warnings.warn(f"{long} long", TruncationWarning, stacklevel=2)
        return Features(resp, prm)

    def spec(self):
        return {"kind": "counting"}


def direct(backbone, prompts, responses) -> Features:
    return CountingBackbone().embed(prompts, responses)


def test_duplicates_embedded_once_and_order_kept(tmp_path):
    prompts, responses = make_rows(20, seed=2)
    prompts, responses = prompts + prompts[:5], responses + responses[:5]  # 5 exact duplicate rows
    backbone = CountingBackbone()
    feats = embed_with_cache(backbone, prompts, responses, cache=None, chunk_size=6, progress=False)
    assert backbone.rows_embedded == 20 and backbone.calls == 4
    expected = direct(backbone, prompts, responses)
    np.testing.assert_array_equal(feats.response, expected.response)
    np.testing.assert_array_equal(feats.prompt, expected.prompt)


def test_cached_rows_are_not_recomputed(tmp_path):
    prompts, responses = make_rows(30, seed=4)
    path = tmp_path / "emb.sqlite"
    first = CountingBackbone()
    embed_with_cache(first, prompts[:20], responses[:20], cache=path, progress=False)
    assert first.rows_embedded == 20
    second = CountingBackbone()
    feats = embed_with_cache(second, prompts, responses, cache=path, chunk_size=4, progress=False)
    assert second.rows_embedded == 10  # only the 10 new rows
    np.testing.assert_array_equal(feats.response, direct(second, prompts, responses).response)
    with EmbeddingCache(path) as cache:
        assert len(cache) == 30
    third = CountingBackbone()
    embed_with_cache(third, prompts, responses, cache=path, progress=False)
    assert third.rows_embedded == 0


def test_killed_run_resumes_where_it_stopped(tmp_path):
    prompts, responses = make_rows(25, seed=5)
    path = tmp_path / "emb.sqlite"
    crashing = CountingBackbone(fail_after_calls=1)
    with pytest.raises(RuntimeError, match="killed"):
        embed_with_cache(crashing, prompts, responses, cache=path, chunk_size=10, progress=False)
    assert crashing.rows_embedded == 10
    with EmbeddingCache(path) as cache:
        assert len(cache) == 10  # the first chunk was committed before the second started
    resumed = CountingBackbone()
    feats = embed_with_cache(resumed, prompts, responses, cache=path, chunk_size=10, progress=False)
    assert resumed.rows_embedded == 15 and resumed.calls == 2
    np.testing.assert_array_equal(feats.prompt, direct(resumed, prompts, responses).prompt)


def test_open_cache_object_is_used_and_left_open(tmp_path):
    prompts, responses = make_rows(5, seed=6)
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        embed_with_cache(CountingBackbone(), prompts, responses, cache=cache, progress=False)
        assert len(cache) == 5


def test_other_backbone_on_same_cache_file_is_refused(tmp_path):
    prompts, responses = make_rows(3, seed=7)
    path = tmp_path / "c.sqlite"
    embed_with_cache(CountingBackbone(), prompts, responses, cache=path, progress=False)
    other = CountingBackbone()
    other.fingerprint = "counting-v2"
    with pytest.raises(InputError, match="fingerprint"):
        embed_with_cache(other, prompts, responses, cache=path, progress=False)


def test_truncation_warnings_merged_into_one(tmp_path):
    prompts = [[{"role": "user", "content": "q"}]] * 6
    responses = ["short", "x" * 40, "y" * 50, "also short", "z" * 31, "ok"]
    with pytest.warns(TruncationWarning) as record:
        embed_with_cache(CountingBackbone(too_long=30), prompts, responses, chunk_size=2, progress=False)
    assert len(record) == 1
    assert str(record[0].message) == ("truncated the response of 3/6 rows (their end dropped) "
                                      "to fit max_length=100 tokens")


def test_real_backbone_through_cache_equals_direct(tiny_llama_dir, tmp_path, rows):
    backbone = CausalLMBackbone(str(tiny_llama_dir))
    prompts, responses = rows
    direct_feats = backbone.embed(prompts, responses)
    path = tmp_path / "c.sqlite"
    embed_with_cache(backbone, prompts[:17], responses[:17], cache=path, chunk_size=5, progress=False)
    cached = embed_with_cache(backbone, prompts, responses, cache=path, chunk_size=8, batch_size=3, progress=False)
    assert np.abs(cached.response - direct_feats.response).max() < 1e-5
    assert np.abs(cached.prompt - direct_feats.prompt).max() < 1e-5


def test_bad_arguments():
    with pytest.raises(InputError):
        embed_with_cache(CountingBackbone(), [[]], [], progress=False)
    with pytest.raises(InputError):
        embed_with_cache(CountingBackbone(), [[]], ["x"], chunk_size=0, progress=False)
