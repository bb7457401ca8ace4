"""A policy: a causal LM plus its tokenizer and chat template, loaded from any model reference.

Supports hub ids, local directories, ``.gguf`` files and the shipped aliases (``smollm2`` is the default policy,
SmolLM2-135M-Instruct, converted once from its GGUF to a cached safetensors directory). Prompts are a string
(one user turn) or a list of ``{"role", "content"}`` messages, rendered with the tokenizer's chat template and
``add_generation_prompt=True`` (or the plain ``role: content`` format when the tokenizer has no template).
``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from paretoalign.embed.chat_format import PromptLike, encode_prompts, eos_token_ids, prompt_token_ids, render_prompt
from paretoalign.embed.models import load_causal_lm
from paretoalign.errors import InputError
from paretoalign.inference.engine import generate_candidates
from paretoalign.inference.logprobs import response_logprobs

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer
    from paretoalign.inference.engine import Candidate, LogitsHook
    from paretoalign.inference.sampling_params import SamplingParams

DEFAULT_POLICY = "smollm2"

class Policy:
    """A causal LM that candidates are sampled from (and whose log-probs KL estimates use)."""

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, *, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        if getattr(model.config, "vocab_size", None) is not None and len(tokenizer) > model.config.vocab_size:
            raise InputError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                             f"{model.config.vocab_size}: they do not belong together", field="tokenizer")

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_POLICY, *, gguf_file: str | None = None,
                        dtype: str | torch.dtype = torch.float32, trust_remote_code: bool = False) -> Policy:
        """Load a policy from an alias, ``.gguf`` file, local directory or hub id."""
        lm, tokenizer = load_causal_lm(str(model), gguf_file=gguf_file, dtype=dtype,
                                       trust_remote_code=trust_remote_code)
        return cls(lm, tokenizer, name=str(model))

    # ------------------------------------------------------------------ tokens

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Token ids that end a response: the tokenizer's EOS and the generation config's."""
        ids = eos_token_ids(self.tokenizer, self.model)
        if not ids:
            raise InputError(f"model '{self.name}' has no EOS token: responses could never finish", field="model")
        return ids

    @property
    def context_length(self) -> int | None:
        """The model's maximum number of positions, when its config states one."""
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def render_prompt(self, prompt: PromptLike) -> str:
        """The text the policy continues: the chat template with the generation prompt."""
        return render_prompt(self.tokenizer, prompt)

    def prompt_ids(self, prompt: PromptLike) -> list[int]:
        """Token ids of the rendered prompt (the template already holds any special tokens)."""
        return prompt_token_ids(self.tokenizer, prompt)

    def encode_prompts(self, prompts: Sequence[PromptLike], max_new_tokens: int) -> list[list[int]]:
        """Token ids of every prompt, checked against the context before anything is generated."""
        return encode_prompts(self.tokenizer, self.context_length, prompts, max_new_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        """Response text of token ids (special tokens such as EOS dropped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
               prompt_indices: Sequence[int] | None = None, progress: Callable[[int], object] | None = None,
               hook: LogitsHook | None = None) -> list[list[Candidate]]:
        """N complete candidates per prompt from the transformers engine (shared prefill).

        `progress`, if given, is called with the token budget used up (see `engine.CandidateGenerator`); `hook`, an
        `engine.LogitsHook` (e.g. `guided_decoding.GenARMHook`), changes the distribution the tokens are drawn from.
        """
        return generate_candidates(self, prompt_ids, n, params, prompt_indices=prompt_indices, progress=progress,
                                   hook=hook)

    # ------------------------------------------------------------------ log-probs

    @torch.inference_mode()
    def response_logprobs(self, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token log π(y_t | x, y_<t) of each response to one prompt; the prompt is run once for all of them."""
        return response_logprobs(self.model, prompt_ids, responses)
