"""A plain Hugging Face ``*ForSequenceClassification`` reward model behind `RewardModel`'s scoring surface.

The k = ``num_labels`` logits are the objectives, named by ``config.id2label`` (``LABEL_0``... when the config
names none). The final score is

    R(x, y) = sum_i w_i logit_i(x, y)

with the user's weights w, else the config's ``paretoalign_weights`` ({label: weight}) when it has them, else the
plain mean of the k logits (k = 1: the logit itself). There is no gating, no scale, no baseline and no verbosity
objective: `RewardOutput.baseline` and `.verbosity_contribution` are None.

How a row becomes tokens:

- a tokenizer with a chat template renders ``prompt + [{"role": "assistant", "content": response}]`` (no generation
  prompt) and is tokenized with ``add_special_tokens=False`` (the template holds the special tokens);
- without one, the text is the prompt messages' contents and the response joined by a blank line
  (``"prompt\\n\\nresponse"``), tokenized with the tokenizer's own special tokens.

A row longer than the model's limit (``max_length``, else the smaller of the tokenizer's ``model_max_length`` and
the config's position limit) is cut from the left: the start of the prompt goes first (the tokenizer's own special
tokens are kept); a `TruncationWarning` gives the count. Rows are padded on the RIGHT, and the score is the head's
output at the last real token, found from the attention mask (never from ``pad_token_id``, which may equal the eos
token). Models without a ``score`` head (encoders such as BERT, which read their first token) use the model's own
pooled logits, which right padding leaves unchanged. Scoring runs in float32 on the CPU, in eval mode, without
gradients; up to float rounding a row scores the same in any batch and with any padding.

One instance may be shared by threads: `score` holds a per-instance lock over tokenizing and the forward passes
(the tokenizer's truncation side and a fast tokenizer's truncation/padding state are rewritten per call).
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from paretoalign.data.schema import Message
from paretoalign.embed.backbone import TruncationWarning
from paretoalign.errors import InputError
from paretoalign.rewards.gating import row_sum
from paretoalign.rewards.reward_model import RewardOutput, Weights, check_score_inputs
from paretoalign.threads import CallLock

if TYPE_CHECKING:
    from paretoalign.embed.protocols import Tokenizer

DEFAULT_BATCH_SIZE = 8
DEFAULT_WEIGHTS_KEY = "paretoalign_weights"
"""A config.json key {label: weight} giving a k-label classifier's default combination (else: the plain mean)."""
PLAIN_SEPARATOR = "\n\n"
_NO_LIMIT = 10 ** 9
"""Above this, a tokenizer's model_max_length is transformers' 'unknown' placeholder."""


class _Classifier(Protocol):
    """The part of a transformers sequence-classification model this module uses."""

    config: Any

    def __call__(self, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...


def is_sequence_classifier_config(config: Mapping[str, Any]) -> bool:
    """Whether a parsed config.json names a ``*ForSequenceClassification`` architecture."""
    arch = config.get("architectures")
    return isinstance(arch, list) and any(isinstance(a, str) and a.endswith("ForSequenceClassification")
                                          for a in arch)


def _label_names(config: Any, k: int) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    names = []
    for i in range(k):
        name = id2label.get(i, id2label.get(str(i))) if isinstance(id2label, Mapping) else None
        names.append(str(name) if name is not None else f"LABEL_{i}")
    if len(set(names)) != len(names):
        raise InputError(f"the labels in config.id2label are not unique: {names}", field="id2label")
    return names


def _text_limit(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class SequenceClassifierRM(CallLock):
    """A transformers sequence classifier used as a (multi-objective) reward model: one objective per label."""

    def __init__(self, model: _Classifier, tokenizer: Tokenizer, *, source: str | None = None,
                 max_length: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
        if max_length is not None and max_length < 1:
            raise InputError(f"max_length must be >= 1, got {max_length}", field="max_length")
        self._init_lock()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        """The folder or hub id the model was loaded from (None: built from objects)."""
        self.batch_size = int(batch_size)
        config = model.config
        k = int(getattr(config, "num_labels", 0) or 0)
        if k < 1:
            raise InputError(f"{self._where()}: the classifier has num_labels={k}; a reward model needs at least one",
                             field="num_labels")
        self.objective_names = _label_names(config, k)
        self.generic_labels = self.objective_names == [f"LABEL_{i}" for i in range(k)]
        """Whether the labels are transformers' placeholders (config.json names none)."""
        limits = [v for v in (getattr(tokenizer, "model_max_length", None), _text_limit(config))
                  if isinstance(v, int) and 0 < v < _NO_LIMIT]
        self.max_length = int(max_length) if max_length is not None else (min(limits) if limits else None)
        self.default_weights = self._config_weights(getattr(config, DEFAULT_WEIGHTS_KEY, None))
        """(k,) the combination used without user weights."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        for cfg in {id(c): c for c in (config, config.get_text_config() if hasattr(config, "get_text_config")
                                       else config)}.values():
            if getattr(cfg, "pad_token_id", None) is None:
                cfg.pad_token_id = self._pad_id  # only so that transformers accepts batches: pooling is ours
        head = getattr(model, "score", None)
        self._head = head if isinstance(head, torch.nn.Module) else None
        params = inspect.signature(model.forward).parameters if hasattr(model, "forward") else {}
        self._takes_use_cache = "use_cache" in params
        self.trust_remote_code = False
        """Whether the folder's own code was allowed to run when it was loaded (the caller's choice)."""

    def __repr__(self) -> str:
        return f"SequenceClassifierRM(source={self.source!r}, labels={self.objective_names})"

    def _where(self) -> str:
        return f"the sequence classifier {self.source}" if self.source else "the sequence classifier"

    @property
    def n_objectives(self) -> int:
        return len(self.objective_names)

    @property
    def verbosity_objective(self) -> None:
        """None: a classifier's labels carry no length-derived objective."""
        return None

    # ------------------------------------------------------------------ weights

    def _config_weights(self, value: Any) -> np.ndarray:
        k = self.n_objectives
        if value is None:
            return np.full(k, 1.0 / k, dtype=np.float64)
        where = str(Path(self.source) / "config.json") if self.source and Path(self.source).is_dir() else self.source
        if not isinstance(value, Mapping):
            raise InputError(f"must map labels to numbers, got {value!r}", path=where, field=DEFAULT_WEIGHTS_KEY)
        return self._weight_vector(value, field=DEFAULT_WEIGHTS_KEY, path=where)

    def _weight_vector(self, weights: Mapping[str, Any] | Sequence[Any] | np.ndarray, *, field: str,
                       path: str | None) -> np.ndarray:
        names = self.objective_names
        labels = ", ".join(names)
        if self.generic_labels:
            labels += " (transformers' placeholder names: the model's config.json gives no id2label)"
        if isinstance(weights, Mapping):
            unknown = [str(key) for key in weights if key not in names]
            if unknown:
                raise InputError(f"{', '.join(map(repr, unknown))}: no such label in this sequence classifier; its "
                                 f"num_labels={len(names)} labels are {labels}", path=path, field=field)
            try:
                vec = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"weights must be numbers: {exc}", path=path, field=field) from exc
        elif isinstance(weights, (str, bytes)):
            raise InputError("weights must be a {label: weight} dict or a sequence of numbers, not a string",
                             path=path, field=field)
        else:
            try:
                vec = np.asarray(weights, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"weights must be numbers: {exc}", path=path, field=field) from exc
            if vec.shape != (len(names),):
                raise InputError(f"this sequence classifier has num_labels={len(names)} ({labels}), but the "
                                 f"weights have shape {vec.shape}: give one weight per label", path=path, field=field)
        if not np.all(np.isfinite(vec)):
            raise InputError("weights must be finite numbers", path=path, field=field)
        if not np.any(vec):
            raise InputError("all weights are zero: give at least one label a non-zero weight", path=path,
                             field=field)
        return vec

    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights as a (k,) float64 vector in label order; None means "the default combination".

        A dict names labels (the others get 0); a sequence gives one weight per label. A label the model does not
        have, a wrong length, non-finite values and all-zero weights raise InputError(field="weights") naming the
        model folder.
        """
        if weights is None:
            return None
        return self._weight_vector(weights, field="weights", path=self.source)

    # ------------------------------------------------------------------ scoring

    def _text(self, prompt: list[Message], response: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}],
                                                      tokenize=False)
        return PLAIN_SEPARATOR.join([*(m["content"] for m in prompt), response])

    def _encode(self, prompts: list[list[Message]], responses: Sequence[str]) -> list[list[int]]:
        """Token ids of each row, cut from the left to max_length (a TruncationWarning counts the cut rows)."""
        texts = [self._text(p, r) for p, r in zip(prompts, responses, strict=True)]
        special = not getattr(self.tokenizer, "chat_template", None)
        ids = [list(row) for row in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]
        limit = self.max_length
        long_rows = [i for i, row in enumerate(ids) if limit is not None and len(row) > limit]
        if long_rows:
            side = self.tokenizer.truncation_side
            self.tokenizer.truncation_side = "left"
            try:
                cut = self.tokenizer([texts[i] for i in long_rows], add_special_tokens=special, truncation=True,
                                     max_length=limit)["input_ids"]
            finally:
                self.tokenizer.truncation_side = side
            for i, row in zip(long_rows, cut, strict=True):
                ids[i] = list(row)
            warnings.warn(f"truncated {len(long_rows)}/{len(ids)} rows from the left (the prompt's start first) to "
                          f"fit max_length={limit} tokens", TruncationWarning, stacklevel=3)
        for i, row in enumerate(ids):
            if not row:
                raise InputError(f"row {i} has no tokens to score", field="responses")
        return ids

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        """(len(rows), k) float64 logits at each row's last real token (right padding)."""
        n, width = len(rows), max(len(r) for r in rows)
        input_ids = torch.full((n, width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, :len(row)] = 1
        last = attention_mask.sum(dim=1) - 1
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._takes_use_cache:
            kwargs["use_cache"] = False
        captured: list[torch.Tensor] = []
        handle = None
        if self._head is not None:
            handle = self._head.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = self.model(**kwargs)
        finally:
            if handle is not None:
                handle.remove()
        per_token = captured[-1] if captured else None
        if isinstance(per_token, torch.Tensor) and per_token.dim() == 3 and per_token.shape[:2] == (n, width):
            logits = per_token[torch.arange(n), last]
        else:
            logits = out.logits
        return logits.detach().float().cpu().numpy().astype(np.float64)

    def score(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """Score (prompt, response) rows: objectives are the k logits, score = sum_i w_i logit_i (see the module)."""
        from tqdm.auto import tqdm

        conversations = check_score_inputs(prompts, responses)
        user = self.resolve_weights(weights)
        w = self.default_weights if user is None else user
        size = batch_size or self.batch_size
        if size < 1:
            raise InputError(f"batch_size must be >= 1, got {size}", field="batch_size")
        k, n = self.n_objectives, len(conversations)
        logits = np.zeros((n, k), dtype=np.float64)
        if n:
            with self._lock:  # thread-safe: concurrent calls tokenize and run one after another
                rows = self._encode(conversations, responses)
                order = sorted(range(n), key=lambda i: -len(rows[i]))
                with torch.inference_mode(), tqdm(total=n, disable=not progress, desc="scoring", unit="row") as bar:
                    for lo in range(0, n, size):
                        index = order[lo:lo + size]
                        logits[index] = self._forward([rows[i] for i in index])
                        bar.update(len(index))
        gating = np.broadcast_to(w, logits.shape).copy()
        return RewardOutput(score=row_sum(logits * w), objectives=logits, objectives_raw=logits.copy(),
                            gating=gating, baseline=None, objective_names=list(self.objective_names),
                            verbosity_contribution=None)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, reference: str | os.PathLike, *, trust_remote_code: bool = False,
                        max_length: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> SequenceClassifierRM:
        """Load a local folder or hub id (safetensors only); a folder asking to run its own code is refused unless
        `trust_remote_code` (the caller's choice) is True."""
        from safetensors import SafetensorError
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from paretoalign.embed.models import check_model_files, check_remote_code, quiet_transformers
        from paretoalign.threads import watch

        trust_remote_code = trust_remote_code is True
        text = str(reference)
        path = Path(text).expanduser()
        if path.is_dir():
            check_remote_code(path, trust_remote_code=trust_remote_code, context="a sequence-classifier reward model")
            check_model_files(path)
            text = str(path)
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(text, trust_remote_code=trust_remote_code)
                model = AutoModelForSequenceClassification.from_pretrained(
                    text, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise InputError(f"cannot load the sequence-classifier reward model: {type(exc).__name__}: {exc}",
                             path=text, field="reward_model") from exc
        watch(model)
        rm = cls(model.float(), tokenizer, source=text, max_length=max_length, batch_size=batch_size)
        rm.trust_remote_code = trust_remote_code
        return rm


def read_config_json(path: Path) -> dict[str, Any]:
    """A model folder's config.json as a dict (InputError naming the file when it is not a JSON object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not readable JSON ({exc})", path=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("config.json must hold a JSON object", path=str(path))
    return data

