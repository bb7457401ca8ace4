"""A sentence encoder as embedding backbone: h(x, y) = [e(y), e(x) * e(y), log(1 + |y|)], h(x) = e(x).

e(.) is the normalized sentence embedding and |y| the response's token count before truncation. Normalized embeddings
carry almost no length information (a ridge fit of log word count on them reaches R^2 < 0 on held-out rows), so the
length is appended explicitly; without it the verbosity objective and its de-correlation would be noise.

The prompt conversation is rendered as ``"role: content"`` lines and
cut from the LEFT to max_length tokens at a word start (its latest turns matter most); the response is cut from the
right, as sentence-transformers does.

Texts are encoded longest first in batches of at most ``batch_size`` texts whose padded size (rows x the longest
text's token count) stays within ``max_batch_tokens``; one text longer than that runs alone. On CPU, 64 long texts
padded to 256 tokens in one batch run slower per text than a few at a time, so the token budget, not the row count,
sizes batches of long texts. Batching changes features only by float rounding (the fingerprint ignores it).

One backbone may be shared by threads: `embed` holds a per-instance lock, because a fast tokenizer keeps its
truncation/padding settings in shared state that each call rewrites (sentence-transformers truncates, our own
counting calls do not), so concurrent calls got each other's settings and wrong features.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.embed.backbone import Features, TruncationStats, TruncationWarning
from paretoalign.embed.models import check_remote_code, load_error, quiet_transformers, resolve_model
from paretoalign.errors import InputError
from paretoalign.threads import CallLock, watch

FEATURIZER_VERSION = "sentence_encoder/2"
DEFAULT_MAX_BATCH_TOKENS = 1024
"""Padded tokens per forward batch: the fastest of 1024/2048/4096/8192/unlimited for in-process RewardModel.score
of the default RM on 2 CPU cores, on 256 held-out HH rows (1.4x unlimited) and on 256 short rows (1.2x)."""


def prompt_lines(prompt: Sequence[Message]) -> str:
    """The prompt conversation as ``"role: content"`` lines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class SentenceEncoderBackbone(CallLock):
    """A frozen sentence-transformers model on CPU (default: the shipped all-MiniLM-L6-v2, alias ``"minilm"``)."""

    response_cut = "their end dropped"
    """How a too-long response is cut (for the truncation warning)."""

    def __init__(self, model: str | os.PathLike = "minilm", *, max_length: int | None = None,
                 batch_size: int = 64, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                 trust_remote_code: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
        if isinstance(max_batch_tokens, bool) or not isinstance(max_batch_tokens, numbers.Integral) \
                or max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be an integer >= 1, got {max_batch_tokens!r}",
                             field="max_batch_tokens")
        self._init_lock()
        self.source = str(model)
        self.model_path = resolve_model(self.source)
        self.trust_remote_code = trust_remote_code = trust_remote_code is True  # the caller's choice, never saved
        check_remote_code(self.model_path, trust_remote_code=trust_remote_code)
        try:
            with quiet_transformers():
                self.model = SentenceTransformer(self.model_path, device="cpu",
                                                 trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as exc:
            raise load_error(self.source, exc) from exc
        self.model.eval()
        watch(self.model)
        if max_length is not None:
            if max_length < 3:
                raise InputError(f"max_length must be >= 3, got {max_length}", field="max_length")
            self.model.max_seq_length = int(max_length)
        self.max_length = int(self.model.max_seq_length)
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        """At most this many padded tokens (rows x longest) per forward batch, unless one text alone is longer."""
        self.tokenizer = self.model.tokenizer
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = int(get_dim())
        self.feature_dim = 2 * dim + 1
        self.prompt_feature_dim = dim
        self.feature_layout = {"response": (0, dim), "product": (dim, 2 * dim), "length": (2 * dim, 2 * dim + 1)}
        """Named column ranges of h(x, y): e(y), e(x) * e(y), log(1 + |y|) (ArmoRMConfig.features picks from them)."""
        self.default_head_features = ("response", "product")
        """What ArmoRMConfig(features="auto") gives the data objectives' heads: not the length column, which only the
        verbosity head reads (the heads generalised better without it, benchmarks/rm_quality.py)."""
        self.truncation_stats = TruncationStats()
        self._specials = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        self._budget = self.max_length - self._specials

    def spec(self) -> dict[str, Any]:
        """The reference `load_backbone` rebuilds this backbone from."""
        spec: dict[str, Any] = {"kind": "sentence_encoder", "model": self.source, "max_length": self.max_length}
        # No trust_remote_code here: whoever loads a saved model decides that (load_backbone's argument).
        return spec

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the model files' identity, max_length and FEATURIZER_VERSION."""
        h = hashlib.sha256(f"{FEATURIZER_VERSION}\0{self.max_length}\0".encode())
        path = Path(self.model_path)
        if path.is_dir():
            path = path.resolve()
            h.update(str(path).encode() + b"\0")
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                st = f.stat()
                rel = f.relative_to(path).as_posix()
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\0".encode())
                if f.suffix == ".json":
                    h.update(f.read_bytes())
        else:
            h.update(self.model_path.encode())
        return h.hexdigest()

    def _cut_left(self, texts: list[str]) -> tuple[list[str], list[bool], list[int]]:
        """Texts cut from the left to the token budget, at the start of a whole word, which were cut, and the token
        count (no special tokens) of each returned text."""
        with quiet_transformers():  # no "longer than the maximum sequence length" notice: we cut next
            enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        out, cut, counts = [], [], []
        for i, text in enumerate(texts):
            n = len(enc["input_ids"][i])
            over = n > self._budget
            if over:
                words = enc.word_ids(i)
                first = n - self._budget
                while first < n - 1 and words[first] is not None and words[first] == words[first - 1]:
                    first += 1  # do not start inside a word ("##er")
                text = text[enc["offset_mapping"][i][first][0]:]
            out.append(text)
            cut.append(over)
            counts.append(n)
        cut_index = [i for i, over in enumerate(cut) if over]
        if cut_index:  # a suffix may tokenize differently at its start: count what is encoded
            with quiet_transformers():
                ids = self.tokenizer([out[i] for i in cut_index], add_special_tokens=False)["input_ids"]
            for i, row in zip(cut_index, ids, strict=True):
                counts[i] = len(row)
        return out, cut, counts

    def _batches(self, counts: Sequence[int], batch_size: int) -> list[list[int]]:
        """Text indices per forward batch, longest first: a batch takes the next text while it has fewer than
        `batch_size` rows and (rows + 1) x its first (longest) padded length stays within max_batch_tokens."""
        padded = [min(int(n), self._budget) + self._specials for n in counts]
        order = sorted(range(len(padded)), key=lambda i: -padded[i])
        batches: list[list[int]] = []
        for i in order:
            batch = batches[-1] if batches else None
            if (batch is not None and len(batch) < batch_size
                    and (len(batch) + 1) * padded[batch[0]] <= self.max_batch_tokens):
                batch.append(i)
            else:
                batches.append([i])
        return batches

    def _encode(self, texts: list[str], counts: Sequence[int], batch_size: int, bar: Any = None) -> np.ndarray:
        """Normalized embeddings of `texts` (`counts`: their token counts without special tokens), one
        sentence-transformers call per batch of `_batches`; with `bar`, our own tqdm bar advances per batch
        (sentence-transformers' own "Batches" bar is never shown)."""
        out = np.zeros((len(texts), self.prompt_feature_dim), dtype=np.float32)
        for index in self._batches(counts, batch_size):
            emb = self.model.encode([texts[i] for i in index], batch_size=len(index), show_progress_bar=False,
                                    normalize_embeddings=True, convert_to_numpy=True)
            out[index] = np.asarray(emb, dtype=np.float32).reshape(len(index), self.prompt_feature_dim)
            if bar is not None:
                bar.update(len(index))
        return out

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
              batch_size: int | None = None, progress: bool = False) -> Features:
        """Features of each (prompt, response) row, float32, in input order (each distinct prompt encoded once).

        Thread-safe: concurrent calls on one backbone run one after another."""
        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
        with self._lock:
            return self._embed(prompts, responses, batch_size=batch_size, progress=progress)

    def _embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
               batch_size: int | None, progress: bool) -> Features:
        n = len(prompts)
        if n == 0:
            self.truncation_stats = TruncationStats()
            return Features(np.zeros((0, self.feature_dim), np.float32),
                            np.zeros((0, self.prompt_feature_dim), np.float32))
        size = batch_size or self.batch_size
        rendered = [prompt_lines(p) for p in prompts]
        unique = list(dict.fromkeys(rendered))
        where = {text: i for i, text in enumerate(unique)}
        cut_unique, was_cut, prompt_counts = self._cut_left(unique)
        response_list = [str(r) for r in responses]
        with quiet_transformers():
            response_ids = self.tokenizer(response_list, add_special_tokens=False)["input_ids"]
        stats = TruncationStats(n, sum(was_cut[where[t]] for t in rendered),
                                sum(len(ids) > self._budget for ids in response_ids))
        self.truncation_stats = stats
        message = stats.message(self.max_length, self.response_cut)
        if message:
            warnings.warn(message, TruncationWarning, stacklevel=3)  # the caller of embed
        from tqdm.auto import tqdm

        with tqdm(total=len(cut_unique) + n, desc="embedding", unit="text", disable=not progress) as bar:
            e_x_unique = self._encode(cut_unique, prompt_counts, size, bar)
            e_y = self._encode(response_list, [len(ids) for ids in response_ids], size, bar)
        e_x = e_x_unique[[where[t] for t in rendered]]
        length = np.log1p(np.array([len(ids) for ids in response_ids], dtype=np.float32))[:, None]
        return Features(np.concatenate([e_y, e_x * e_y, length], axis=1), e_x)
