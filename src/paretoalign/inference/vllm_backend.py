"""Optional vLLM backend for Best-of-N on GPUs: the same ``sample`` interface as the transformers `Policy`.

Supports: any model vLLM loads (aliases and .gguf files are resolved/converted like everywhere else), temperature,
top-p, top-k, max new tokens, stop strings and per-candidate seeds (candidate j of prompt i uses the same
`candidate_seed` as the transformers engine; the samples differ across backends since the kernels differ). The
prompt's KV cache is shared through vLLM's prefix caching (on by default here). Not supported: chunked
generation, so Speculative Rejection and guided decoding need the transformers engine.
Assumes ``pip install paretoalign[vllm]`` on a CUDA machine; nothing in the test suite imports vLLM.
Log-probs: vLLM reports the sampled token's log-prob (by default under the unmodified model), stored as both
``logprobs`` and ``policy_logprobs``; use a transformers reference model for exact KL estimates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from paretoalign.embed.chat_format import PromptLike, encode_prompts, render_prompt
from paretoalign.embed.models import check_remote_code, resolve_model
from paretoalign.errors import InputError
from paretoalign.inference.engine import Candidate
from paretoalign.inference.sampling_params import SamplingParams, candidate_seed


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise InputError("the vLLM backend needs the optional dependency: pip install 'paretoalign[vllm]' "
                         "(a CUDA machine); the default transformers backend needs nothing extra",
                         field="backend") from exc
    return vllm


class VLLMPolicy:
    """A policy served by vLLM; used by `best_of_n` like `Policy`."""

    def __init__(self, model: str | os.PathLike = "smollm2", *, trust_remote_code: bool = False,
                 enable_prefix_caching: bool = True, **llm_kwargs: Any) -> None:
        vllm = _import_vllm()
        self.name = str(model)
        path = resolve_model(str(model))
        trust_remote_code = trust_remote_code is True
        check_remote_code(path, trust_remote_code=trust_remote_code)
        self.llm = vllm.LLM(model=path, trust_remote_code=trust_remote_code,
                            enable_prefix_caching=enable_prefix_caching, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)

    def render_prompt(self, prompt: PromptLike) -> str:
        """The text the policy continues."""
        return render_prompt(self.tokenizer, prompt)

    def encode_prompts(self, prompts: Sequence[PromptLike], max_new_tokens: int) -> list[list[int]]:
        """Token ids of every prompt, checked against the context before anything is generated."""
        return encode_prompts(self.tokenizer, self.context_length, prompts, max_new_tokens)

    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
               prompt_indices: Sequence[int] | None = None, progress: Any = None) -> list[list[Candidate]]:
        """N complete candidates per prompt (one vLLM request per candidate, each with its own seed).

        `progress` (as in `Policy.sample`) is called once, with the whole token budget, when vLLM returns.
        """
        vllm = _import_vllm()
        indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompt_ids)))
        requests, settings = [], []
        for p, ids in zip(indices, prompt_ids, strict=True):
            for j in range(n):
                requests.append({"prompt_token_ids": list(ids)})
                settings.append(vllm.SamplingParams(
                    n=1, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
                    max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                    seed=candidate_seed(params.seed, p, j) & 0x7FFFFFFF, logprobs=0))
        outputs = self.llm.generate(requests, settings, use_tqdm=False)
        groups: list[list[Candidate]] = []
        for k, out in enumerate(outputs):
            p, j = indices[k // n], k % n
            completion = out.outputs[0]
            if j == 0:
                groups.append([])
            token_ids = list(completion.token_ids)
            logprobs = [float(step[t].logprob) for step, t in zip(completion.logprobs or [], token_ids, strict=False)]
            if completion.finish_reason == "length":
                reason = "length"
            else:
                reason = "stop" if isinstance(completion.stop_reason, str) else "eos"
            groups[-1].append(Candidate(prompt_index=p, index=j, token_ids=token_ids, logprobs=logprobs,
                                        policy_logprobs=list(logprobs), finish_reason=reason, text=completion.text))
        if progress is not None:
            progress(len(requests) * params.max_new_tokens)
        return groups
