"""Embed rows through a persistent cache: each distinct row computed once, a killed run resumes where it stopped."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from paretoalign.data.schema import Message
from paretoalign.embed.backbone import Backbone, Features, TruncationStats, TruncationWarning
from paretoalign.embed.cache import EmbeddingCache, cache_key
from paretoalign.errors import InputError


class Embedder(Protocol):
    """What computes the rows missing from the cache: a backbone, or e.g. `paretoalign.embed.ray_embed.RayEmbedder`
    (its `truncation_stats`, when it has one, counts the rows its last call cut)."""

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
              batch_size: int | None = None, progress: bool = False) -> Features: ...


def embed_with_cache(backbone: Backbone, prompts: Sequence[list[Message]], responses: Sequence[str], *,
                     cache: EmbeddingCache | str | Path | None = None, batch_size: int | None = None,
                     chunk_size: int = 256, progress: bool = True, embedder: Embedder | None = None) -> Features:
    """Features of each (prompt, response) row, in input order.

    Exact duplicate rows are embedded once; rows already in `cache` are not embedded again; the rest go to the
    backbone in chunks of `chunk_size` rows, and each chunk is committed to the cache before the next starts.
    The backbone's per-call truncation warnings are merged into one warning for the whole call. `embedder`
    (default: the backbone) computes the missing rows; the cache stays keyed by `backbone.fingerprint`, so it must
    give that backbone's features (e.g. Ray actors that load the same spec).
    """
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}", field="chunk_size")
    fingerprint = backbone.fingerprint
    keys = [cache_key(fingerprint, p, r) for p, r in zip(prompts, responses, strict=True)]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    own = cache is not None and not isinstance(cache, EmbeddingCache)
    store = (EmbeddingCache(cache, fingerprint=fingerprint, feature_dim=backbone.feature_dim,
                            prompt_feature_dim=backbone.prompt_feature_dim) if own else cache)
    try:
        vectors = store.get_many(first) if store is not None else {}
        source = backbone if embedder is None else embedder
        missing = [i for key, i in first.items() if key not in vectors]
        stats = TruncationStats()
        with tqdm(total=len(first), initial=len(first) - len(missing), disable=not progress,
                  desc="embedding", unit="row") as bar:
            for lo in range(0, len(missing), chunk_size):
                index = missing[lo:lo + chunk_size]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    feats = source.embed([prompts[i] for i in index], [responses[i] for i in index],
                                         batch_size=batch_size, progress=False)
                stats = stats + getattr(source, "truncation_stats", TruncationStats())
                chunk = [(keys[i], feats.response[j], feats.prompt[j]) for j, i in enumerate(index)]
                if store is not None:
                    store.put_many(chunk)
                vectors.update((key, (r, p)) for key, r, p in chunk)
                bar.update(len(index))
    finally:
        if own:
            store.close()
    message = stats.message(getattr(backbone, "max_length", 0), getattr(backbone, "response_cut", ""))
    if message:
        warnings.warn(message, TruncationWarning, stacklevel=2)
    response = np.zeros((len(keys), backbone.feature_dim), dtype=np.float32)
    prompt = np.zeros((len(keys), backbone.prompt_feature_dim), dtype=np.float32)
    for i, key in enumerate(keys):
        response[i], prompt[i] = vectors[key]
    return Features(response, prompt)
