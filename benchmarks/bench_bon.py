"""Best-of-N sampling: our engine (one prompt prefill shared by the N candidates, finished rows dropped) against
naive ``model.generate(num_return_sequences=N)`` on SmolLM2-135M-Instruct, same prompts, same sampling settings.

Prints, per N, the median over prompts of the wall-time ratio naive / ours, tokens per second for both, and the
greedy check: with temperature 0 both backends must produce the same tokens (sampled sequences cannot match
token for token: transformers draws from one global RNG for the whole batch, we draw from one generator per
candidate, so for sampling we compare distributions in the unit tests instead: exact logits after a shared
prefill). Run: ``.venv/bin/python benchmarks/bench_bon.py`` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hh_prompts import DEFAULT_HH, heldout_hh_prompts  # noqa: E402

from paretoalign.inference.engine import CandidateGenerator  # noqa: E402
from paretoalign.inference.policy import Policy  # noqa: E402
from paretoalign.inference.sampling_params import SamplingParams  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--data", type=Path, default=DEFAULT_HH, help="HH-RLHF test jsonl (default %(default)s)")
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--n", type=int, nargs="+", default=[8, 32])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--min-prompt-tokens", type=int, default=0, help="Only prompts at least this long (e.g. 300 for "
                                                                    "multi-turn dialogues).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ablation", action="store_true", help="Also time our engine with the prompt KV repeated per "
                                                           "candidate instead of shared-prefix attention.")
    return p.parse_args(argv)


def naive_generate(policy: Policy, prompt_ids: list[int], n: int, params: SamplingParams) -> tuple[float, int]:
    """transformers generate with num_return_sequences=n: (seconds, new tokens it produced, pads included)."""
    ids = torch.tensor([prompt_ids])
    kwargs = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k) \
        if not params.greedy else dict(do_sample=False)
    torch.manual_seed(params.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), num_return_sequences=n,
                                    max_new_tokens=params.max_new_tokens, pad_token_id=policy.tokenizer.pad_token_id,
                                    eos_token_id=sorted(policy.eos_token_ids), **kwargs)
    return time.perf_counter() - t0, out[:, len(prompt_ids):]


def ours(policy: Policy, prompt_ids: list[int], n: int, params: SamplingParams, shared_prefix: bool | None = None):
    t0 = time.perf_counter()
    cands = CandidateGenerator(policy, [prompt_ids], n, params, shared_prefix=shared_prefix).run()[0]
    return time.perf_counter() - t0, cands


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    policy = Policy.from_pretrained(args.policy)
    prompts = heldout_hh_prompts(args.data, args.prompts, args.seed, policy, args.max_prompt_tokens,
                                 args.min_prompt_tokens)
    prompt_ids = [policy.prompt_ids(p) for p in prompts]
    print(f"policy {args.policy}; {len(prompts)} held-out HH prompts, prompt tokens "
          f"{sorted(len(p) for p in prompt_ids)}; max_new_tokens {args.max_new_tokens}; "
          f"{torch.get_num_threads()} threads")
    sample = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens, seed=args.seed)
    ours(policy, prompt_ids[0], 2, SamplingParams(max_new_tokens=4))  # warm-up
    for n in args.n:
        ratios, ours_tps, naive_tps, ablation = [], [], [], []
        for ids in prompt_ids:
            t_naive, naive_out = naive_generate(policy, ids, n, sample)
            t_ours, cands = ours(policy, ids, n, sample)
            useful_naive = int(sum(_content_tokens(row, policy) for row in naive_out))
            useful_ours = sum(c.num_tokens for c in cands)
            ratios.append(t_naive / t_ours)
            naive_tps.append(useful_naive / t_naive)
            ours_tps.append(useful_ours / t_ours)
            line = (f"  N={n:>3} prompt {len(ids):>4} tok: naive {t_naive:6.1f} s ({useful_naive} tokens), "
                    f"ours {t_ours:6.1f} s ({useful_ours} tokens), ratio {t_naive / t_ours:.2f}")
            if args.ablation:
                t_rep, rep = ours(policy, ids, n, sample, shared_prefix=False)
                same = [c.token_ids for c in rep] == [c.token_ids for c in cands]
                ablation.append(t_rep / t_ours)
                line += f"; repeated-KV engine {t_rep:.1f} s ({t_rep / t_ours:.2f}x ours, same tokens: {same})"
            print(line)
        print(f"N={n}: median wall-time ratio naive/ours = {statistics.median(ratios):.2f}x "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}); median response tok/s: ours "
              f"{statistics.median(ours_tps):.0f}, naive {statistics.median(naive_tps):.0f}")
        if ablation:
            print(f"N={n}: shared-prefix attention vs repeated prompt KV: {statistics.median(ablation):.2f}x (median)")
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    same = 0
    for ids in prompt_ids:
        _, naive_out = naive_generate(policy, ids, 1, greedy)
        _, cands = ours(policy, ids, 1, greedy)
        ref = [t for t in naive_out[0].tolist()]
        ref = ref[:cands[0].num_tokens] if cands[0].finished else ref
        same += ref[:len(cands[0].token_ids)] == cands[0].token_ids
    print(f"greedy decoding: identical tokens to transformers generate on {same}/{len(prompt_ids)} prompts")
    return 0


def _content_tokens(row: torch.Tensor, policy: Policy) -> int:
    """New tokens up to and including the first EOS (the rest is padding generate keeps producing)."""
    tokens = row.tolist()
    for i, t in enumerate(tokens):
        if t in policy.eos_token_ids:
            return i + 1
    return len(tokens)


if __name__ == "__main__":
    sys.exit(main())
