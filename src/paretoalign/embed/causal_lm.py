"""A frozen causal LM as embedding backbone: h(x, y) and h(x) from ONE forward pass per row.

h(x, y) is the base model's ``last_hidden_state`` (after the final norm) at the last token of
`conversation_text(prompt, response)`; h(x) is the hidden state at the last token of the prompt part (the
generation prompt) in the same pass. Causal attention makes it identical to a separate prompt-only pass.

One backbone may be shared by threads: `embed` holds a per-instance lock (a fast tokenizer's truncation/padding
state is shared and rewritten per call, and `truncation_stats` describes the last call), so calls run one at a time.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from paretoalign.data.schema import Message
from paretoalign.embed.backbone import Features, TruncationStats, TruncationWarning
from paretoalign.embed.chat_format import conversation_text
from paretoalign.embed.models import (
    check_model_files,
    check_remote_code,
    load_error,
    quiet_transformers,
    resolve_model,
)
from paretoalign.errors import InputError, ParetoAlignError
from paretoalign.threads import CallLock, watch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from paretoalign.embed.protocols import Tokenizer

FEATURIZER_VERSION = "causal_lm/1"
"""Bumped whenever the text, the truncation or the feature positions change: old cache entries stop matching."""
DEFAULT_BATCH_SIZE = 8
"""Fastest on CPU for SmolLM2-135M on HH-RLHF rows among 4/8/16 (benchmarks/bench_embed.py)."""


@dataclass
class _Row:
    """One tokenized, truncated row: token ids and the index of the last prompt token among them."""

    ids: list[int]
    prompt_pos: int
    prompt_cut: bool
    response_cut: bool


def _prompt_token_count(offsets: Sequence[tuple[int, int]], reply_start: int) -> int:
    """How many leading tokens end at or before the character where the reply starts."""
    n = 0
    for _, end in offsets:
        if end > reply_start:
            break
        n += 1
    return n


def _truncate(ids: list[int], n_prompt: int, max_length: int) -> _Row:
    """Fit a row into max_length tokens: the prompt loses its first tokens; it keeps >= 1 token for h(x).

    A response longer than max_length - 1 tokens keeps its LAST max_length - 1 tokens, after the last prompt token.
    A row whose rendered prompt has no token at all takes h(x) at its first token.
    """
    n = len(ids)
    if n_prompt == 0:
        return _Row(ids[-max_length:], 0, False, n > max_length)
    if n <= max_length:
        return _Row(ids, n_prompt - 1, False, False)
    n_response = n - n_prompt
    if n_response <= max_length - 1:
        keep_prompt = max_length - n_response
        return _Row(ids[n - max_length:], keep_prompt - 1, True, False)
    return _Row([ids[n_prompt - 1]] + ids[n - (max_length - 1):], 0, n_prompt > 1, True)


class CausalLMBackbone(CallLock):
    """A frozen decoder (its base model, no LM head) that embeds (prompt, response) rows.

    `model` is a reference for `resolve_model` (alias such as ``"smollm2"``, ``.gguf`` file, local directory,
    hub id) or a loaded model object (a ``*ForCausalLM`` object is replaced by its base model; it is used
    as is, in its own dtype). Rows are sorted by length and batched; explicit ``position_ids`` and feature
    indices make the features independent of batch size, padding side and row order.
    """

    response_cut = "their first tokens dropped"
    """How a too-long response is cut (for the truncation warning)."""

    def __init__(self, model: str | os.PathLike | PreTrainedModel, tokenizer: Tokenizer | None = None, *,
                 gguf_file: str | None = None, max_length: int = 512, batch_size: int = DEFAULT_BATCH_SIZE,
                 dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                 padding_side: str = "right", cache_dir: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer, PreTrainedModel

        if max_length < 2:
            raise InputError(f"max_length must be >= 2 (one prompt and one response token), got {max_length}",
                             field="max_length")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
        if padding_side not in ("left", "right"):
            raise InputError(f"padding_side must be 'left' or 'right', got {padding_side!r}", field="padding_side")
        self._init_lock()
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.padding_side = padding_side
        self.gguf_file = gguf_file
        self.trust_remote_code = trust_remote_code = trust_remote_code is True  # the caller's choice, never saved
        self.truncation_stats = TruncationStats()
        if isinstance(model, (str, os.PathLike)):
            self.source: str | None = str(model)
            self.model_path: str | None = resolve_model(self.source, gguf_file=gguf_file, cache_dir=cache_dir)
            check_remote_code(self.model_path, trust_remote_code=trust_remote_code)
            check_model_files(self.model_path)
            from safetensors import SafetensorError

            try:
                with quiet_transformers():
                    if tokenizer is None:
                        tokenizer = AutoTokenizer.from_pretrained(self.model_path,
                                                                  trust_remote_code=trust_remote_code)
                    base = AutoModel.from_pretrained(self.model_path, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError, SafetensorError) as exc:
                raise load_error(self.source, exc) from exc
        elif isinstance(model, PreTrainedModel):
            self.source = None
            self.model_path = None
            base = model.base_model
            if tokenizer is None:
                origin = getattr(model, "name_or_path", "")
                if not (origin and Path(origin).is_dir()):
                    raise InputError("a model object needs its tokenizer: pass tokenizer=...", field="tokenizer")
                check_remote_code(origin, trust_remote_code=trust_remote_code)
                tokenizer = AutoTokenizer.from_pretrained(origin, trust_remote_code=trust_remote_code)
        else:
            raise InputError(f"model must be a name, a path or a transformers PreTrainedModel, "
                             f"got {type(model).__name__}", field="model")
        self.model = base.eval()
        watch(self.model)
        self.tokenizer = tokenizer
        self.dtype = next(self.model.parameters()).dtype
        self.feature_dim = int(self.model.config.get_text_config().hidden_size)
        self.prompt_feature_dim = self.feature_dim
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        params = inspect.signature(self.model.forward).parameters
        self._takes_position_ids = "position_ids" in params
        self._takes_use_cache = "use_cache" in params

    # ------------------------------------------------------------------ identity

    def spec(self) -> dict[str, Any]:
        """The reference `load_backbone` rebuilds this backbone from."""
        if self.source is None:
            raise ParetoAlignError("this CausalLMBackbone was built from a model object, so it has no spec(): "
                                   "build it from a name or path (e.g. CausalLMBackbone('smollm2')) to save it")
        spec: dict[str, Any] = {"kind": "causal_lm", "model": self.source, "gguf_file": self.gguf_file,
                                "max_length": self.max_length, "dtype": str(self.dtype).removeprefix("torch.")}
        # No trust_remote_code here: whoever loads a saved model decides that (load_backbone's argument).
        return spec

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights' identity, the tokenizer, max_length, dtype and FEATURIZER_VERSION."""
        h = hashlib.sha256()
        h.update(f"{FEATURIZER_VERSION}\0{self.max_length}\0{self.dtype}\0".encode())
        path = Path(self.model_path) if self.model_path is not None else None
        if path is not None and path.is_dir():
            path = path.resolve()
            h.update(str(path).encode() + b"\0")
            config = path / "config.json"
            if config.is_file():
                h.update(config.read_bytes())
            for f in sorted(path.glob("*.safetensors")):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
        elif path is not None:  # a hub id
            h.update(str(self.model_path).encode() + b"\0" + self.model.config.to_json_string().encode())
        else:
            h.update(type(self.model).__name__.encode())
            for name, tensor in self.model.state_dict().items():
                h.update(name.encode() + b"\0")
                h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        h.update(_tokenizer_digest(self.tokenizer).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ features

    def _rows(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[_Row]:
        rendered = [conversation_text(self.tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
        texts = [t for t, _ in rendered]
        if getattr(self.tokenizer, "is_fast", False):
            enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            starts = [start for _, start in rendered]
            counts = [_prompt_token_count(off, start)
                      for off, start in zip(enc["offset_mapping"], starts, strict=True)]
            all_ids = enc["input_ids"]
        else:  # slow tokenizers have no offsets: the prompt part is tokenized on its own
            all_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            heads = self.tokenizer([t[:s] for t, s in rendered], add_special_tokens=False)["input_ids"]
            counts = [len(h) for h in heads]
        return [_truncate(list(ids), n, self.max_length) for ids, n in zip(all_ids, counts, strict=True)]

    def _forward(self, batch: list[_Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the last token and at the last prompt token of each row of one batch."""
        width = max(len(r.ids) for r in batch)
        n = len(batch)
        input_ids = torch.full((n, width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        last = torch.empty(n, dtype=torch.long)
        prompt_last = torch.empty(n, dtype=torch.long)
        for i, row in enumerate(batch):
            length = len(row.ids)
            start = width - length if self.padding_side == "left" else 0
            input_ids[i, start:start + length] = torch.tensor(row.ids, dtype=torch.long)
            attention_mask[i, start:start + length] = 1
            position_ids[i, start:start + length] = torch.arange(length)
            last[i] = start + length - 1
            prompt_last[i] = start + row.prompt_pos
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._takes_position_ids:
            kwargs["position_ids"] = position_ids
        if self._takes_use_cache:
            kwargs["use_cache"] = False
        hidden = self.model(**kwargs).last_hidden_state
        rows = torch.arange(n)
        return hidden[rows, last], hidden[rows, prompt_last]

    def embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
              batch_size: int | None = None, progress: bool = False) -> Features:
        """Features of each (prompt, response) row, float32, in input order (thread-safe: calls run one at a time)."""
        if len(prompts) != len(responses):
            raise InputError(f"{len(prompts)} prompts but {len(responses)} responses")
        with self._lock:
            return self._embed(prompts, responses, batch_size=batch_size, progress=progress)

    def _embed(self, prompts: Sequence[list[Message]], responses: Sequence[str], *,
               batch_size: int | None, progress: bool) -> Features:
        n = len(prompts)
        response_out = np.zeros((n, self.feature_dim), dtype=np.float32)
        prompt_out = np.zeros((n, self.prompt_feature_dim), dtype=np.float32)
        if n == 0:
            self.truncation_stats = TruncationStats()
            return Features(response_out, prompt_out)
        rows = self._rows(prompts, responses)
        stats = TruncationStats(n, sum(r.prompt_cut for r in rows), sum(r.response_cut for r in rows))
        self.truncation_stats = stats
        message = stats.message(self.max_length, self.response_cut)
        if message:
            warnings.warn(message, TruncationWarning, stacklevel=3)  # the caller of embed
        size = batch_size or self.batch_size
        order = sorted(range(n), key=lambda i: -len(rows[i].ids))
        with torch.inference_mode(), tqdm(total=n, disable=not progress, desc="embedding", unit="row") as bar:
            for lo in range(0, n, size):
                index = order[lo:lo + size]
                resp, prom = self._forward([rows[i] for i in index])
                response_out[index] = resp.float().numpy()
                prompt_out[index] = prom.float().numpy()
                bar.update(len(index))
        return Features(response_out, prompt_out)


def _tokenizer_digest(tokenizer) -> str:
    """sha256 of what decides the token ids of a text: the tokenizer's full definition and its chat template."""
    h = hashlib.sha256()
    template = getattr(tokenizer, "chat_template", None)
    h.update(json.dumps(template, sort_keys=True).encode() + b"\0")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()
