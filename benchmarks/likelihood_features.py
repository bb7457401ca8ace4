"""Policy-likelihood features of a reply, for the rm_quality.py lever table (benchmark only, not a package backbone).

h(x, y) = [mean_t log pi(y_t | x, y_<t), mean_t log pi(y_t | y_<t), their difference (per-token PMI),
           sum PMI / 100, log(1 + |y|)],  h(x) = [1]

under a causal LM (default the shipped SmolLM2-135M-Instruct). log pi(y) is the reply after an empty user turn: the
chat template's frame with no prompt content, so the difference measures how much the prompt explains the reply.
The conditional row is cut like `CausalLMBackbone` (prompt from the left, to max_length tokens).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from paretoalign.embed.backbone import Features, TruncationStats
from paretoalign.embed.causal_lm import _prompt_token_count, _truncate
from paretoalign.embed.chat_format import conversation_text

VERSION = "likelihood/1"


class LikelihoodBackbone:
    """Mean token log-probabilities of the reply with and without its prompt, and their difference."""

    feature_dim = 5
    prompt_feature_dim = 1

    def __init__(self, model: str = "smollm2", *, max_length: int = 256, batch_size: int = 8) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from paretoalign.embed.models import check_remote_code, resolve_model
        from paretoalign.threads import watch

        self.source = model
        self.model_path = resolve_model(model)
        check_remote_code(self.model_path, trust_remote_code=False)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32,
                                                          use_safetensors=True).eval()
        watch(self.model)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self._pad = int(pad or 0)
        self.truncation_stats = TruncationStats()

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the model, max_length and this featurizer's version."""
        return hashlib.sha256(f"{VERSION}\0{self.model_path}\0{self.max_length}".encode()).hexdigest()

    def spec(self) -> dict[str, Any]:
        """Benchmark only."""
        raise RuntimeError("LikelihoodBackbone is a benchmark featurizer")

    def _row(self, prompt, response: str):
        text, start = conversation_text(self.tokenizer, prompt, response)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        n_prompt = _prompt_token_count(enc["offset_mapping"], start)
        return _truncate(list(enc["input_ids"]), n_prompt, self.max_length)

    @torch.inference_mode()
    def _mean_logprobs(self, rows) -> np.ndarray:
        """(n, 2): mean and sum of the reply tokens' log-probs for each truncated row."""
        out = np.zeros((len(rows), 2))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
        for lo in range(0, len(rows), self.batch_size):
            index = order[lo:lo + self.batch_size]
            width = max(len(rows[i].ids) for i in index)
            ids = torch.full((len(index), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(index), width), dtype=torch.long)
            for j, i in enumerate(index):
                ids[j, :len(rows[i].ids)] = torch.tensor(rows[i].ids)
                mask[j, :len(rows[i].ids)] = 1
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            for j, i in enumerate(index):
                start, stop = rows[i].prompt_pos, len(rows[i].ids) - 1  # predictions of tokens prompt_pos+1 ..
                lp = logp[j, start:stop]
                out[i] = (float(lp.mean()) if lp.numel() else 0.0, float(lp.sum()))
        return out

    def embed(self, prompts: Sequence, responses: Sequence[str], *, batch_size: int | None = None,
              progress: bool = False) -> Features:
        """Features of each row (see the module docstring)."""
        cond = self._mean_logprobs([self._row(p, r) for p, r in zip(prompts, responses, strict=True)])
        empty = [{"role": "user", "content": ""}]
        uncond_rows = [self._row(empty, r) for r in responses]
        uncond = self._mean_logprobs(uncond_rows)
        n_tokens = np.array([len(r.ids) - 1 - r.prompt_pos for r in uncond_rows], dtype=np.float64)
        resp = np.stack([cond[:, 0], uncond[:, 0], cond[:, 0] - uncond[:, 0], (cond[:, 1] - uncond[:, 1]) / 100.0,
                         np.log1p(n_tokens)], axis=1)
        return Features(resp.astype(np.float32), np.ones((len(resp), 1), dtype=np.float32))
