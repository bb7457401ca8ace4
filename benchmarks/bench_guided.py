"""GenARM guided decoding before and after it became an engine logits hook, on SmolLM2-135M-Instruct.

Before: the loop as of commit f57532d (`reward_guided_generate` in ``src/paretoalign/inference/guided_decoding.py``
of that commit, read with ``git show`` and imported by path, not reimplemented): one prompt at a time, every model
prefilled per prompt with its KV cache repeated per candidate. After: `guided_decoding.reward_guided_generate` today,
which runs `engine.CandidateGenerator` with a `GenARMHook` (prompts batched, shared-prefix attention).

The reward LM is a second copy of SmolLM2 itself (the shipped alias, loaded twice), weight `--weight`: the guided
distribution is then pi_base^(1 + w/beta), renormalised, which exercises every part of the path without a trained
GenARM model. Same prompts, seeds and sampling settings for both; prints the share of candidates whose tokens are
identical and the wall-time ratio before/after (median of `--repeats` runs each, interleaved), and writes
``benchmarks/results/bench_guided.json``. Run: ``.venv/bin/python benchmarks/bench_guided.py`` (one torch thread by
default; about 4.5 minutes of CPU time, 8 minutes of wall time on a loaded shared 2-core machine; 64 tokens
would take about twice as long).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep on a shared box

import torch  # noqa: E402

from paretoalign.embed.models import load_causal_lm  # noqa: E402
from paretoalign.inference.guided_decoding import reward_guided_generate  # noqa: E402
from paretoalign.inference.sampling_params import SamplingParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "f57532d"
MODULE_PATH = "src/paretoalign/inference/guided_decoding.py"
PROMPTS = [
    [{"role": "user", "content": "Give me three tips for staying healthy in winter."}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "How do I bake bread at home? Explain the steps."}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--weight", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (fixed, so that load from "
                                                          "other processes moves both alike)")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "bench_guided.json")
    return p.parse_args(argv)


def load_before(folder: Path) -> Any:
    """The guided-decoding module as of `BEFORE_COMMIT`, imported from a file of that commit's text."""
    source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:{MODULE_PATH}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "guided_decoding_f57532d.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("guided_decoding_f57532d", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base, tokenizer = load_causal_lm(args.policy)
    reward, _ = load_causal_lm(args.policy)  # a second copy as the reward LM
    rewards = [(reward, args.weight)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=args.seed)
    common = dict(n=args.n, beta=args.beta)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(Path(tmp))
        warm = SamplingParams(max_new_tokens=4, seed=args.seed)
        before.reward_guided_generate(base, tokenizer, rewards, PROMPTS[:1], params=warm, **common)
        reward_guided_generate(base, tokenizer, rewards, PROMPTS[:1], params=warm, **common)
        t_before, t_after = [], []
        for _ in range(args.repeats):
            t, old = timed(before.reward_guided_generate, base, tokenizer, rewards, PROMPTS, params=params, **common)
            t_before.append(t)
            t, new = timed(reward_guided_generate, base, tokenizer, rewards, PROMPTS, params=params, **common)
            t_after.append(t)
    pairs = [(a, b) for row_a, row_b in zip(old, new, strict=True) for a, b in zip(row_a, row_b, strict=True)]
    same_tokens = sum(a.token_ids == b.token_ids for a, b in pairs)
    same_text = sum(a.text == b.text for a, b in pairs)
    diverged = [next((t for t, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)) if x != y),
                     min(len(a.token_ids), len(b.token_ids))) for a, b in pairs if a.token_ids != b.token_ids]
    med_before, med_after = statistics.median(t_before), statistics.median(t_after)
    tokens = sum(len(b.token_ids) for _, b in pairs)
    result = {
        "before": f"reward_guided_generate as of commit {BEFORE_COMMIT} (git show, imported by path)",
        "after": "reward_guided_generate: engine.CandidateGenerator with guided_decoding.GenARMHook",
        "policy": args.policy, "reward_lm": f"a second copy of {args.policy}", "weight": args.weight,
        "beta": args.beta, "prompts": len(PROMPTS), "n": args.n, "max_new_tokens": args.max_new_tokens,
        "seed": args.seed, "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
        "before_s": t_before, "after_s": t_after, "before_median_s": med_before, "after_median_s": med_after,
        "wall_time_ratio_before_over_after": med_before / med_after,
        "candidates": len(pairs), "identical_tokens": same_tokens, "identical_tokens_share": same_tokens / len(pairs),
        "identical_text": same_text, "first_divergence_token": diverged, "tokens_generated_after": tokens,
        "finished_before": sum(a.finished for a, _ in pairs), "finished_after": sum(b.finished for _, b in pairs),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{len(PROMPTS)} prompts x N={args.n} x {args.max_new_tokens} tokens, reward LM = second copy of "
          f"{args.policy} (w={args.weight}, beta={args.beta}), {torch.get_num_threads()} threads")
    print(f"identical tokens: {same_tokens}/{len(pairs)} candidates ({same_tokens / len(pairs):.0%}); identical "
          f"text: {same_text}/{len(pairs)}; first differing token of the others: {diverged}")
    print(f"wall time before (commit {BEFORE_COMMIT}) {med_before:.2f} s, after {med_after:.2f} s (medians of "
          f"{args.repeats}): ratio before/after = {med_before / med_after:.2f}x -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
