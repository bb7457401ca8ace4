"""Structural types of the transformers objects the package is handed: a tokenizer and a causal LM.

- `Tokenizer`: the part of a transformers tokenizer (``PreTrainedTokenizerBase``) the package uses.
- `CausalLM`: the part of a causal LM the package uses. A ``*ForCausalLM`` (a ``PreTrainedModel``) satisfies it, and
  so does a ``peft.PeftModel`` around one, which is a ``torch.nn.Module`` but no ``PreTrainedModel`` (it forwards
  ``config`` and ``get_output_embeddings`` to the model it wraps). Plain ``torch.nn.Module`` is not used for these:
  its ``__getattr__`` types every attribute it does not declare as ``Tensor | Module``, so ``model.config.vocab_size``
  or ``model.get_output_embeddings().weight`` would not type-check. Code that only runs forward passes on a module
  that may be wrapped (an accelerate-prepared model) takes ``torch.nn.Module`` instead.

Return types that transformers overloads on the arguments (``apply_chat_template``: text or ids; ``decode``: one
string or a list) and a model's ``config`` (its fields depend on the architecture) are ``Any``.
Annotations only: importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from paretoalign.data.schema import Message


class Tokenizer(Protocol):
    """The part of a transformers tokenizer the package uses: special tokens, templates, encoding and saving."""

    chat_template: Any
    """A Jinja template string, a dict of named ones, or None."""
    pad_token: Any
    eos_token: Any
    pad_token_id: int | None
    eos_token_id: int | None
    model_max_length: int
    padding_side: str
    truncation_side: str

    def __len__(self) -> int: ...

    def __call__(self, text: Any, **kwargs: Any) -> Mapping[str, Any]: ...

    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> Any: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> Any: ...

    def get_vocab(self) -> dict[str, int]: ...

    def convert_ids_to_tokens(self, ids: int, skip_special_tokens: bool = False) -> Any: ...

    def num_special_tokens_to_add(self, pair: bool = False) -> int: ...

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> object: ...


class CausalLM(Protocol):
    """The part of a causal LM (transformers model, or a peft model around one) the package uses."""

    config: Any
    """The model's ``PretrainedConfig`` (architecture-specific fields: read with ``getattr`` where optional)."""
    training: bool

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...

    def named_modules(self) -> Iterator[tuple[str, torch.nn.Module]]: ...

    def modules(self) -> Iterator[torch.nn.Module]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def eval(self) -> CausalLM: ...

    def train(self, mode: bool = True) -> CausalLM: ...

    def to(self, *args: Any, **kwargs: Any) -> CausalLM: ...

    def get_output_embeddings(self) -> Any: ...
