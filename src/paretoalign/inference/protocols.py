"""`Sampler`: what Best-of-N, the calibration and the evaluation need of a policy backend.

Satisfied by the transformers `policy.Policy` and by the optional `vllm_backend.VLLMPolicy`. Only the two calls
those callers make are part of it: checking and encoding the prompts, and sampling N complete candidates per prompt.
What needs the transformers engine itself (chunked generation, logits hooks, teacher-forced log-probs) takes a
`Policy`. `best_of_n` also accepts a backend whose ``sample`` takes no ``progress`` (it asks the signature first).
Annotations only: this module imports neither the engine nor the policy at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from paretoalign.data.schema import Message
    from paretoalign.inference.engine import Candidate
    from paretoalign.inference.sampling_params import SamplingParams


class Sampler(Protocol):
    """A policy backend: encodes prompts (checked against its context) and samples N candidates per prompt."""

    def encode_prompts(self, prompts: Sequence[str | Sequence[Message]], max_new_tokens: int) -> list[list[int]]:
        """Token ids of every prompt (a string or chat messages); InputError for one that leaves no room to
        generate `max_new_tokens`."""
        ...

    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
               prompt_indices: Sequence[int] | None = None,
               progress: Callable[[int], object] | None = None) -> list[list[Candidate]]:
        """N complete candidates per prompt, in prompt order; `progress` is called with the token budget used up."""
        ...
