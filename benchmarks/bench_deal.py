"""DeAL search decoding against Best-of-N at equal compute: reward and constraint satisfaction vs tokens evaluated.

Prompts: held-out single-turn HH-RLHF prompts of ../shared/data, each given a word limit and, half the time, a
keyword to use (the instructions of `constrained_prompts.py`, attached as the rows' ``constraints``). Reward: a
reward set, (1 - c) x the default RM's score + c x the fraction of the prompt's constraints met (c = --constraint-
weight). Every method answers every prompt with SmolLM2 (the shipped ``smollm2`` alias):

- Best-of-N (N = 2..16, temperature 1): the pick among finished candidates (the highest-scoring candidate when none
  finished); its cost is the tokens it sampled (N x response length, the cost of a forward pass per token);
- DeAL for a few (beams, top-k, look-ahead, λ, reward every m) settings, and λ = 0 (beam search); its cost is
  `tokens_evaluated` (kept-beam steps, candidate tokens and look-ahead tokens).

Per method: mean reward, mean RM score, mean fraction of constraints met, share of prompts with all constraints met,
finished share, mean tokens evaluated per prompt, reward rows scored and wall time. Writes
benchmarks/results/bench_deal.json. Run: ``.venv/bin/python benchmarks/bench_deal.py`` (8 prompts, 128 tokens);
``--smoke`` runs a tiny random model with a checker-only reward set in a few seconds (a check that the script works,
no numbers to read; it writes only where --output says).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from constrained_prompts import constrained  # noqa: E402
from hh_prompts import DEFAULT_HH, heldout_hh_prompts  # noqa: E402

from paretoalign.atomic_io import write_json_atomic  # noqa: E402
from paretoalign.data.prompts import PromptRow  # noqa: E402
from paretoalign.inference.best_of_n import best_of_n  # noqa: E402
from paretoalign.inference.deal import deal_generate  # noqa: E402
from paretoalign.inference.policy import Policy  # noqa: E402
from paretoalign.inference.sampling_params import SamplingParams  # noqa: E402
from paretoalign.rewards.reward_set import RewardSet  # noqa: E402

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "bench_deal.json"
DEFAULT_DEAL = ["2,2,4,1,4", "2,2,4,5,4", "2,4,8,5,8", "4,2,4,5,4", "2,2,0,0,1"]
"""DeAL settings beams,top_k,lookahead,lam,reward_every (the last: λ = 0, beam search)."""
SMOKE_PROMPTS = ["How do I bake bread?", "Capital of France?", "explain why the fox jumps"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--reward-model", default="default", help="The RM whose score the reward set reads.")
    p.add_argument("--data", type=Path, default=DEFAULT_HH, help="HH-RLHF test jsonl (default %(default)s)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=160)
    p.add_argument("--bon", type=int, nargs="+", default=[2, 4, 8, 16], help="Best-of-N sizes.")
    p.add_argument("--deal", nargs="+", default=DEFAULT_DEAL, metavar="B,K,L,LAM,M",
                   help="DeAL settings beams,top_k,lookahead,lam,reward_every (default %(default)s).")
    p.add_argument("--constraint-weight", type=float, default=0.5, help="c: the constraints' weight in the reward.")
    p.add_argument("--word-limits", type=int, nargs="+", default=[20, 30, 40])
    p.add_argument("--keyword-rate", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None, help=f"Result JSON (default {DEFAULT_OUTPUT.relative_to(REPO)}"
                                                             "; with --smoke: none, printed only).")
    p.add_argument("--smoke", action="store_true", help="A tiny random model and a checker-only reward set: checks "
                                                        "that the script runs (seconds), numbers meaningless.")
    return p.parse_args(argv)


def relative(path: Path | str) -> str:
    """A path as recorded in the results: relative to the repository, never a machine path."""
    return os.path.relpath(Path(path).resolve(), REPO) if Path(path).is_absolute() else str(path)


def deal_settings(specs: list[str]) -> list[dict[str, float]]:
    out = []
    for spec in specs:
        b, k, lookahead, lam, m = spec.split(",")
        out.append({"beams": int(b), "top_k": int(k), "lookahead": int(lookahead), "lam": float(lam),
                    "reward_every": int(m)})
    return out


def prompt_rows(args: argparse.Namespace, policy: Policy) -> list[PromptRow]:
    """Single-turn prompts with a word limit and maybe a keyword, as prompt rows carrying their constraints."""
    rng = random.Random(args.seed)
    if args.smoke:
        base = [[{"role": "user", "content": p}] for p in SMOKE_PROMPTS]
    else:
        pool = heldout_hh_prompts(args.data, 4 * args.prompts, args.seed, policy, args.max_prompt_tokens)
        base = [m for m in pool if len(m) == 1][: args.prompts]
    rows = []
    for i, messages in enumerate(base):
        prompt, constraints = constrained(messages, rng, args.word_limits, args.keyword_rate)
        rows.append(PromptRow(location=f"bench_deal:{i + 1}", row={"prompt": prompt, "constraints": constraints},
                              messages=prompt))
    return rows


def reward_set(args: argparse.Namespace) -> RewardSet:
    c = args.constraint_weight
    if args.smoke:
        spec = {"rewards": [{"name": "brief", "checker": "word_count", "max": 6, "weight": 1 - c},
                            {"name": "constraints", "checker": "prompt_constraints", "weight": c}]}
        return RewardSet.from_spec(spec)
    spec = {"rewards": [{"name": "rm", "rm": "score", "weight": 1 - c},
                        {"name": "constraints", "checker": "prompt_constraints", "weight": c}]}
    return RewardSet.from_spec(spec, reward_model=args.reward_model)


def summary(method: dict, texts: list[str], finished: list[bool], tokens: list[int], calls: list[int],
            scorer: RewardSet, rows: list[PromptRow], wall: float) -> dict:
    """The method's averages over prompts (every response scored again by the reward set)."""
    messages = [r.messages for r in rows]
    out = scorer.score(messages, texts)
    names = list(out.objective_names)
    met = np.asarray(out.objectives)[:, names.index("constraints")]
    first = names[0]
    return {**method, "reward": float(np.mean(out.score)), f"{first}_mean": float(np.mean(out.objectives[:, 0])),
            "constraints_met": float(np.mean(met)), "all_constraints_met": float(np.mean(met >= 1.0 - 1e-9)),
            "finished": float(np.mean(finished)), "tokens_evaluated": float(np.mean(tokens)),
            "reward_calls": float(np.mean(calls)), "wall_s": wall}


def run(args: argparse.Namespace) -> dict:
    if args.smoke:
        import torch

        from tests.tiny import make_tiny_llama, make_tokenizer

        tokenizer = make_tokenizer()
        policy = Policy(make_tiny_llama(tokenizer), tokenizer, name="tiny-llama")
        torch.set_num_threads(1)
        args.max_new_tokens, args.bon = min(args.max_new_tokens, 12), [n for n in args.bon if n <= 4] or [2]
        args.deal = args.deal[:2]
    else:
        policy = Policy.from_pretrained(args.policy)
    rows = prompt_rows(args, policy)
    scorer = reward_set(args)
    scorer.attach_prompts(rows)
    scorer.probe()
    messages = [r.messages for r in rows]
    methods = []
    for n in args.bon:
        t0 = time.perf_counter()
        results = best_of_n(policy, scorer, messages, n=n,
                            params=SamplingParams(max_new_tokens=args.max_new_tokens, seed=args.seed))
        wall = time.perf_counter() - t0
        picks = [r.pick or max(r.candidates, key=lambda c: c.score) for r in results]
        methods.append(summary({"method": "bon", "n": n}, [p.candidate.text for p in picks],
                               [p.candidate.finished for p in picks], [r.stats["tokens_generated"] for r in results],
                               [r.stats["rm_calls"] for r in results], scorer, rows, wall))
        print(json.dumps(methods[-1]), flush=True)
    for setting in deal_settings(args.deal):
        t0 = time.perf_counter()
        results = deal_generate(policy, scorer, messages, max_new_tokens=args.max_new_tokens, **setting)
        wall = time.perf_counter() - t0
        methods.append(summary({"method": "deal", **setting}, [r.text for r in results],
                               [r.finished for r in results], [r.tokens_evaluated for r in results],
                               [r.reward_calls for r in results], scorer, rows, wall))
        print(json.dumps(methods[-1]), flush=True)
    config = {"policy": "tiny-llama (random)" if args.smoke else args.policy,
              "reward": repr(scorer), "reward_model": None if args.smoke else args.reward_model,
              "data": None if args.smoke else relative(args.data), "prompts": len(rows),
              "max_new_tokens": args.max_new_tokens, "seed": args.seed, "smoke": args.smoke,
              "tokens_evaluated": "Best-of-N: tokens sampled; DeAL: decoding forward passes (beam steps, candidate "
                                  "and look-ahead tokens); the prompt prefill is not counted for either"}
    return {"config": config, "methods": methods}


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    output = args.output if args.output is not None or args.smoke else DEFAULT_OUTPUT
    if output is not None:
        write_json_atomic(output, result)
        print(f"-> {relative(output)}")


if __name__ == "__main__":
    main()
