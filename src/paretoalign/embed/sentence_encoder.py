"""A sentence encoder as embedding backbone: h(x, y) = [e(y), e(x) * e(y), log(1 + |y|)], h(x) = e(x).

e(.) is the normalized sentence embedding and |y| the response's token count before truncation. Normalized embeddings
carry almost no length information (a ridge fit of log word count on them reaches R^2 < 0 on held-out rows), so the
length is appended explicitly; without it the verbosity objective and its de-correlation would be noise.

The prompt conversation is rendered as ``"role: content"`` lines and
cut from the LEFT to max_length tokens at a word start (its latest turns matter most); the response is cut from the
right, as sentence-transformers does.
"""

from __future__ import annotations

import hashlib
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
from paretoalign.threads import watch

FEATURIZER_VERSION = "sentence_encoder/2"


def prompt_lines(prompt: Sequence[Message]) -> str:
    """The prompt conversation as ``"role: content"`` lines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class SentenceEncoderBackbone:
    """A frozen sentence-transformers model on CPU (default: the shipped all-MiniLM-L6-v2, alias ``"minilm"``)."""

    response_cut = "their end dropped"
    """How a too-long response is cut (for the truncation warning)."""

    def __init__(self, model: str | os.PathLike = "minilm", *, max_length: int | None = None,
                 batch_size: int = 64, trust_remote_code: bool = False) -> None:
        from sentence_transformers import SentenceTransformer

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
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
        self._budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)

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

    def _cut_left(self, texts: list[str]) -> tuple[list[str], list[bool]]:
        """Texts cut from the left to the token budget, at the start of a whole word, and which were cut."""
        with quiet_transformers():  # no "longer than the maximum sequence length" notice: we cut next
            enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        out, cut = [], []
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
        return out, cut

    def _encode(self, texts: list[str], batch_size: int, bar: Any = None) -> np.ndarray:
        """Normalized embeddings; with `bar`, our own tqdm bar advances per chunk (sentence-transformers' own
        "Batches" bar is never shown). Texts go longest first in chunks of whole batches, as
        sentence-transformers would sort them in one call, so the batches do not depend on the bar."""
        out = np.zeros((len(texts), self.prompt_feature_dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunk = batch_size * 8
        for lo in range(0, len(texts), chunk):
            index = order[lo:lo + chunk]
            emb = self.model.encode([texts[i] for i in index], batch_size=batch_size, show_progress_bar=False,
                                    normalize_embeddings=True, convert_to_numpy=True)
            out[index] = np.asarray(emb, dtype=np.float32).reshape(len(index), self.prompt_feature_dim)
            if bar is not None:
                bar.update(len(index))
        return out

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
              batch_size: int | None = None, progress: bool = False) -> Features:
        """Features of each (prompt, response) row, float32, in input order (each distinct prompt encoded once)."""
        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
        n = len(prompts)
        if n == 0:
            self.truncation_stats = TruncationStats()
            return Features(np.zeros((0, self.feature_dim), np.float32),
                            np.zeros((0, self.prompt_feature_dim), np.float32))
        size = batch_size or self.batch_size
        rendered = [prompt_lines(p) for p in prompts]
        unique = list(dict.fromkeys(rendered))
        where = {text: i for i, text in enumerate(unique)}
        cut_unique, was_cut = self._cut_left(unique)
        response_list = [str(r) for r in responses]
        with quiet_transformers():
            response_ids = self.tokenizer(response_list, add_special_tokens=False)["input_ids"]
        stats = TruncationStats(n, sum(was_cut[where[t]] for t in rendered),
                                sum(len(ids) > self._budget for ids in response_ids))
        self.truncation_stats = stats
        message = stats.message(self.max_length, self.response_cut)
        if message:
            warnings.warn(message, TruncationWarning, stacklevel=2)
        from tqdm.auto import tqdm

        with tqdm(total=len(cut_unique) + n, desc="embedding", unit="text", disable=not progress) as bar:
            e_x_unique = self._encode(cut_unique, size, bar)
            e_y = self._encode(response_list, size, bar)
        e_x = e_x_unique[[where[t] for t in rendered]]
        length = np.log1p(np.array([len(ids) for ids in response_ids], dtype=np.float32))[:, None]
        return Features(np.concatenate([e_y, e_x * e_y, length], axis=1), e_x)
