"""A policy: a causal LM plus its tokenizer and chat template, loaded from any model reference.

Supports hub ids, local directories, ``.gguf`` files and the shipped aliases (``smollm2`` is the default policy,
SmolLM2-135M-Instruct, converted once from its GGUF to a cached safetensors directory). Prompts are a string
(one user turn) or a list of ``{"role", "content"}`` messages, rendered with the tokenizer's chat template and
``add_generation_prompt=True`` (or the plain ``role: content`` format when the tokenizer has no template).
``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from paretoalign.data.schema import Message
from paretoalign.embed.chat_format import has_chat_template, plain_text
from paretoalign.embed.models import load_causal_lm
from paretoalign.errors import InputError

DEFAULT_POLICY = "smollm2"

PromptLike = str | Sequence[Message]


def as_messages(prompt: PromptLike, index: int | None = None) -> list[Message]:
    """A prompt as a message list; a string becomes one user message."""
    where = "" if index is None else f"prompt {index}: "
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError(f"{where}the prompt is empty", field="prompt")
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise InputError(f"{where}the prompt has no messages", field="prompt")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}each message needs 'role' and 'content', got {m!r}", field="prompt")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def eos_token_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """The tokenizer's EOS id plus the model's ``generation_config.eos_token_id`` (an int or a list)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(e) for e in eos)
    return frozenset(ids)


def render_prompt(tokenizer: Any, prompt: PromptLike) -> str:
    """A prompt rendered with the tokenizer's chat template and the generation prompt (plain format without one)."""
    messages = as_messages(prompt)
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return plain_text(messages, "")[0]


def prompt_token_ids(tokenizer: Any, prompt: PromptLike) -> list[int]:
    """Token ids of the rendered prompt (the template already holds any special tokens)."""
    return list(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def encode_prompts(tokenizer: Any, context_length: int | None, prompts: Sequence[PromptLike],
                   max_new_tokens: int) -> list[list[int]]:
    """Token ids of every prompt; InputError for no prompts, an empty one, or one that leaves no room to generate."""
    if len(prompts) == 0:
        raise InputError("no prompts given", field="prompts")
    encoded = []
    for i, p in enumerate(prompts):
        ids = prompt_token_ids(tokenizer, as_messages(p, i))
        if context_length is not None and len(ids) + max_new_tokens > context_length:
            raise InputError(f"prompt {i} is {len(ids)} tokens; with max_new_tokens={max_new_tokens} it needs "
                             f"{len(ids) + max_new_tokens} positions but the model's context is {context_length}",
                             field="prompt")
        encoded.append(ids)
    return encoded


class Policy:
    """A causal LM that candidates are sampled from (and whose log-probs KL estimates use)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
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

    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, params: Any, *,
               prompt_indices: Sequence[int] | None = None, progress: Any = None) -> list:
        """N complete candidates per prompt from the transformers engine (shared prefill).

        `progress`, if given, is called with the token budget used up (see `engine.CandidateGenerator`).
        """
        from paretoalign.inference.engine import generate_candidates  # the engine imports this module

        return generate_candidates(self, prompt_ids, n, params, prompt_indices=prompt_indices, progress=progress)

    # ------------------------------------------------------------------ log-probs

    @torch.inference_mode()
    def response_logprobs(self, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per-token log π(y_t | x, y_<t) of each response to one prompt; the prompt is run once for all of them."""
        return response_logprobs(self.model, prompt_ids, responses)


def _forward(model: Any, **kwargs: Any) -> Any:
    return model(use_cache=True, return_dict=True, **kwargs)


@torch.inference_mode()
def response_logprobs(model: Any, prompt_ids: Sequence[int], responses: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Per-token log-probs of `responses` after `prompt_ids` under `model` (prompt prefilled once, KV cache shared)."""
    if not prompt_ids:
        raise InputError("the prompt has no tokens", field="prompt")
    if not responses:
        return []
    lengths = [len(r) for r in responses]
    n, width = len(responses), max(lengths)
    p = len(prompt_ids)
    prefill = _forward(model, input_ids=torch.tensor([list(prompt_ids)]),
                       position_ids=torch.arange(p).unsqueeze(0), logits_to_keep=1)
    first = prefill.logits[:, -1].float().log_softmax(-1).expand(n, -1)
    out = [np.zeros(k, dtype=np.float64) for k in lengths]
    if width == 0:
        return out
    block = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, p + width), dtype=torch.long)
    mask[:, :p] = 1
    for i, r in enumerate(responses):
        block[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, p:p + len(r)] = 1
    logp_first = first.gather(-1, block[:, :1]).squeeze(-1)
    if width > 1:
        cache = prefill.past_key_values
        cache.batch_repeat_interleave(n)
        # Only the first width-1 tokens are inputs: each predicts the next; padding sits after every real token.
        rest = _forward(model, input_ids=block[:, :-1], attention_mask=mask[:, :-1],
                        position_ids=(p + torch.arange(width - 1)).unsqueeze(0).expand(n, -1),
                        past_key_values=cache)
        logp_rest = rest.logits.float().log_softmax(-1).gather(-1, block[:, 1:].unsqueeze(-1)).squeeze(-1)
    for i, k in enumerate(lengths):
        if k:
            out[i][0] = float(logp_first[i])
            if k > 1:
                out[i][1:] = logp_rest[i, :k - 1].double().numpy()
    return out

