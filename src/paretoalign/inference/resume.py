"""Resuming pruned candidates: continue a candidate from where a caller cut it, with its own random stream.

Speculative Rejection prunes candidates and drops their rows (and KV cache) from the batch. `resume_candidates`
takes such candidates back: one prefill of prompt + the tokens they already have, then token-by-token sampling
with the candidate's own `torch.Generator` (the one it was drawing from when it was cut), so the continuation is
the rest of the sample Best-of-N draws with the same seed — up to the rare floating-point flips of a different
batch / attention path (see `sampling_params`). The stop-string check looks at the tail of the WHOLE token list
(a stop string spanning the resume boundary ends the response) and the final text is decoded from the whole list,
exactly as `CandidateGenerator` does for a candidate it generates in one go.

The prefill and the decoding steps are the engine's `KVBatch` (without shared-prefix attention: one row per
candidate). Assumes what the engine assumes of the model; no logits hook (Speculative Rejection uses none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from paretoalign.embed.chat_format import pad_token_id
from paretoalign.inference.engine import Candidate, KVBatch, finish, finish_reason, stop_tail
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams, next_tokens


@torch.inference_mode()
def resume_candidates(policy: Policy, prompt_ids: Sequence[Sequence[int]], candidates: Sequence[Candidate],
                      generators: Sequence[torch.Generator | None], params: SamplingParams, *,
                      until_one_finishes: bool = False, progress: Callable[[int], None] | None = None) -> int:
    """Continue pruned `candidates` (prompt_ids[i] is candidate i's prompt) together, in place, to EOS, a stop
    string or max_new_tokens; they are no longer rejected afterwards. Returns the tokens generated.

    generators[i] is the generator candidate i drew its tokens from (None only for greedy decoding).
    `until_one_finishes`: once a candidate of a prompt finishes (EOS or stop string), the other resumed candidates
    of that prompt are cut again where they are (``rejected_at`` = their new length, like a prune).
    """
    if not (len(prompt_ids) == len(candidates) == len(generators)):
        raise ValueError("one prompt and one generator per candidate")
    if any(c.finish_reason is not None or not c.token_ids for c in candidates):
        raise ValueError("only cut (pruned) candidates with at least one token can be resumed")
    if not params.greedy and any(g is None for g in generators):
        raise ValueError("sampling needs each candidate's generator")
    rows = list(candidates)
    if not rows:
        return 0
    gens = list(generators)
    for c, g in zip(rows, gens, strict=True):
        c.rejected_at, c.generator = None, g
    eos = policy.eos_token_ids
    tail = stop_tail(params)
    # one prefill of prompt + the tokens so far, one row per candidate; then one token per row and step
    batch = KVBatch(policy.model, [list(p) + list(c.token_ids) for p, c in zip(prompt_ids, rows, strict=True)], 1,
                    pad_token_id(policy.tokenizer), shared_prefix=False)
    generated = 0
    while rows:
        tokens, lp_sample, lp_policy = next_tokens(batch.logits, params, gens)
        keep = []
        for i, c in enumerate(rows):
            t = int(tokens[i])
            c.token_ids.append(t)
            c.logprobs.append(float(lp_sample[i]))
            c.policy_logprobs.append(float(lp_policy[i]))
            reason = finish_reason(policy, c, eos, params, tail)
            if reason is None:
                keep.append(i)
            else:
                finish(policy, c, reason, params.stop)  # decoded from the whole list: no seam at the resume point
        generated += len(rows)
        if until_one_finishes:
            answered = {c.prompt_index for c in rows if c.finished}
            for i in [i for i in keep if rows[i].prompt_index in answered]:
                c = rows[i]
                c.rejected_at, c.text, c.generator = c.num_tokens, policy.decode(c.token_ids), None
            keep = [i for i in keep if rows[i].prompt_index not in answered]
        if progress is not None:
            progress(len(rows))
        if not keep:
            break
        rows, gens = [rows[i] for i in keep], [gens[i] for i in keep]
        batch.select(keep)
        batch.feed(tokens[torch.tensor(keep, dtype=torch.long, device=tokens.device)].unsqueeze(-1))
    return generated
