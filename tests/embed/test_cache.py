"""EmbeddingCache: a SQLite file of float32 features keyed by backbone fingerprint and row."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from paretoalign.embed.cache import EmbeddingCache, cache_key
from paretoalign.errors import InputError

PROMPT = [{"role": "user", "content": "hi"}]


def test_cache_key_is_canonical_and_depends_on_everything():
    key = cache_key("fp", PROMPT, "hello")
    assert key == cache_key("fp", [{"content": "hi", "role": "user"}], "hello")  # key order does not matter
    assert len({key, cache_key("fp2", PROMPT, "hello"), cache_key("fp", PROMPT, "hello!"),
                cache_key("fp", [{"role": "system", "content": "hi"}], "hello")}) == 4


def test_put_get_len_and_persistence(tmp_path):
    path = tmp_path / "sub" / "emb.sqlite"
    r, p = np.arange(6, dtype=np.float32), np.arange(3, dtype=np.float32) * 0.5
    with EmbeddingCache(path, fingerprint="fp", feature_dim=6, prompt_feature_dim=3) as cache:
        assert len(cache) == 0 and cache.get_many(["a"]) == {}
        cache.put_many([("a", r, p), ("b", r + 1, p + 1)])
        assert len(cache) == 2
    with EmbeddingCache(path) as cache:
        assert cache.meta()["fingerprint"] == "fp"
        got = cache.get_many(["b", "a", "missing"])
        assert set(got) == {"a", "b"}
        np.testing.assert_array_equal(got["a"][0], r)
        np.testing.assert_array_equal(got["b"][1], p + 1)
        assert got["a"][0].dtype == np.float32
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_keys_in_one_query(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        cache.put_many((str(i), np.full(2, i, np.float32), np.full(1, i, np.float32)) for i in range(1234))
        got = cache.get_many(str(i) for i in range(1300))
        assert len(got) == 1234 and got["1000"][1][0] == 1000


def test_other_dims_or_backbone_is_an_error(tmp_path):
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:  # dims learnt from the first write
        cache.put_many([("a", np.zeros(4, np.float32), np.zeros(2, np.float32))])
        with pytest.raises(InputError, match="feature_dim"):
            cache.put_many([("b", np.zeros(5, np.float32), np.zeros(2, np.float32))])
    with pytest.raises(InputError, match="prompt_feature_dim"):
        EmbeddingCache(path, prompt_feature_dim=3)
    EmbeddingCache(path, fingerprint="fp1", feature_dim=4).close()
    with pytest.raises(InputError, match="fingerprint"):
        EmbeddingCache(path, fingerprint="fp2")
