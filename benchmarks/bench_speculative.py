"""Speculative Rejection against Best-of-N at equal N on real held-out HH-RLHF prompts, plus the Best-of-N theory
check (win rate of the pick against a fresh reference sample vs N/(N+1)).

One Best-of-N run at N (default 32) gives every candidate; because each candidate draws from its own seeded
generator, Best-of-k for k < N is the Best-of-N run restricted to its first k candidates (exactly the samples a
Best-of-k run would draw), which traces Best-of-N's reward-vs-tokens curve. Speculative Rejection runs for each
(rejection rate, decision schedule) setting with the same seeds; its surviving candidates are the same samples.
With ``--resume both`` each setting also runs without resuming pruned candidates (the paper's algorithm, "-noresume"),
which leaves prompts without an answer where Best-of-N has one.

Prints: prompts without a pick and the share answered, mean pick reward, generated tokens, wall time and RM rows
per method (Speculative Rejection: also the pruned candidates it resumed); the ratios against Best-of-N at N (mean
reward, the fraction of Best-of-N's gain over a plain sample that is kept, tokens, wall time); the win rates for
N = 4 and 16 (``--fresh 0`` skips them). Writes results.json, the per-prompt outputs and reward_vs_tokens.png into
--output-dir.
Run: ``.venv/bin/python benchmarks/bench_speculative.py --rm runs/rm-shared`` (about 40 minutes on 2 CPU cores).

Issue 11 (Speculative Rejection without an answer where Best-of-N has one), SmolLM2 + the shipped RM, the first 4
held-out prompts (seed 0), 160 new tokens, alpha 0.5 at 16/32/64/128 tokens, ``--rm default --prompts 4
--max-new-tokens 160 --settings 0.5:16,32,64,128 --resume both --fresh 0`` (answered, tokens per prompt, wall):
- N=4: Best-of-4 3/4, 474, 108 s; without resume (the old behaviour) 2/4, 174, 54 s; with resume 3/4 (the same
  picks as Best-of-4), 334, 110 s — the prompt where none of the 4 samples finishes costs a full run to find out;
- N=8 (``--n 8``): Best-of-8 4/4, 909; without resume 2/4, 303; with resume 4/4, 394 (14 candidates resumed),
  reward 0.957 of Best-of-8 on the same prompts.
Replayed offline on the Best-of-8 samples of the first 12 such prompts (same seeds, so the same candidates): no
resume 6/12 answered; resuming every pruned candidate of a prompt together until one finishes 12/12 at 478 tokens
per prompt (Best-of-8: 1012), mean reward 0.567 (Best-of-8: 0.595); resuming them one at a time in partial-score
order gave the same reward at 469 tokens but 6.5x the sequential decoding steps (1699 vs 259), so they are resumed
together; scoring partial responses without the RM's verbosity term answered 5/12 without resume (no better: at a
decision point every live candidate has the same token count already), so partial scores stay the RM's score.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hh_prompts import DEFAULT_HH, heldout_hh_prompts  # noqa: E402

from paretoalign.atomic_io import write_json_atomic, write_jsonl_atomic  # noqa: E402
from paretoalign.inference.best_of_n import best_of_n, load_reward_model  # noqa: E402
from paretoalign.inference.policy import Policy  # noqa: E402
from paretoalign.inference.sampling_params import SamplingParams  # noqa: E402
from paretoalign.inference.selection import pick_index  # noqa: E402
from paretoalign.inference.speculative import speculative_rejection  # noqa: E402
from paretoalign.inference.statistics import bon_win_rate, empirical_win_rate  # noqa: E402

SETTINGS = [(0.5, [16, 32, 64], None), (0.75, [8, 16, 32, 64], None), (0.9, [4, 8, 16], None)]
"""(rejection rate, decision points, batch rows or None for N): one Speculative Rejection run each."""


def parse_setting(text: str) -> tuple[float, list[int], int | None]:
    """'0.75:8,16,32[:128]' -> (0.75, [8, 16, 32], 128)."""
    parts = text.split(":")
    rows = int(parts[2]) if len(parts) > 2 else None
    return float(parts[0]), [int(p) for p in parts[1].split(",")], rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="smollm2")
    p.add_argument("--rm", required=True, help="Reward model: a directory from train-rm (e.g. runs/rm-shared) or "
                                               "'default' (the shipped one).")
    p.add_argument("--data", type=Path, default=DEFAULT_HH)
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--fresh", type=int, default=8, help="Fresh reference samples per prompt for the win rates.")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, default=Path("runs") / "bench_speculative")
    p.add_argument("--tag", default="", help="Suffix of results<tag>.json and reward_vs_tokens<tag>.png.")
    p.add_argument("--reuse-bon", action="store_true", help="Reuse bon.jsonl of an earlier run in --output-dir.")
    p.add_argument("--settings", nargs="+", help="Speculative Rejection settings ALPHA:POINTS[:BATCH_ROWS], e.g. "
                                                 "0.75:8,16,32:128 (default: the three in SETTINGS).")
    p.add_argument("--resume", choices=("on", "off", "both"), default="on",
                   help="Resume pruned candidates where no complete one finished (on: the library default; off: "
                        "the paper's algorithm, runs named -noresume; both: each setting twice).")
    return p.parse_args(argv)


def pick_rewards(rows: list[dict], k: int | None = None) -> list[float | None]:
    """Per prompt: the reward of the best finished candidate among the first k (None when none finished)."""
    out = []
    for row in rows:
        cands = row["candidates"][:k]
        i = pick_index([c["score"] for c in cands], [c["finished"] for c in cands])
        out.append(None if i is None else cands[i]["score"])
    return out


def summarize(name: str, rewards: list[float | None], tokens: float, wall: float, rm_rows: int,
              resumed: int = 0) -> dict:
    return {"method": name, "rewards": rewards, "tokens_per_prompt": tokens, "wall_s": wall, "rm_rows": rm_rows,
            "no_pick": sum(r is None for r in rewards),
            "answered": sum(r is not None for r in rewards) / max(len(rewards), 1), "resumed": resumed}


def mean_on(rows: list[float | None], mask: list[bool]) -> float:
    return float(np.mean([r for r, m in zip(rows, mask, strict=True) if m]))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    policy = Policy.from_pretrained(args.policy)
    rm = load_reward_model(args.rm)
    prompts = heldout_hh_prompts(args.data, args.prompts, args.seed, policy, args.max_prompt_tokens)
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(f"{len(prompts)} held-out HH prompts, N={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"temperature={args.temperature}, RM {args.rm} (gating weights)", flush=True)

    bon_file = args.output_dir / "bon.jsonl"
    if args.reuse_bon and bon_file.is_file():
        bon = [json.loads(line) for line in bon_file.read_text().splitlines()]
        bon_wall = sum(r["stats"]["wall_s"] for r in bon)
        print(f"reusing {bon_file} (same prompts, N and seed are the caller's responsibility)")
    else:
        t0 = time.perf_counter()
        results = best_of_n(policy, rm, prompts, n=args.n, params=params, batch_rows=args.n, progress=True)
        bon_wall = time.perf_counter() - t0
        bon = [r.row() for r in results]
        write_jsonl_atomic(bon_file, bon)
    all_scores = np.array([c["score"] for r in bon for c in r["candidates"]])
    finished_scores = np.array([c["score"] for r in bon for c in r["candidates"] if c["finished"]])
    bon_tokens = np.mean([r["stats"]["tokens_generated"] for r in bon])
    methods = []
    for k in [2 ** i for i in range(int(np.log2(args.n)) + 1)]:
        tokens = np.mean([sum(c["tokens"] for c in r["candidates"][:k]) for r in bon])
        wall = bon_wall * k / args.n if k < args.n else bon_wall
        methods.append(summarize(f"bon-{k}", pick_rewards(bon, k), float(tokens), wall, len(bon) * k))
    print(f"best-of-{args.n}: {bon_wall:.0f} s, {bon_tokens:.0f} tokens/prompt", flush=True)

    settings = SETTINGS if args.settings is None else [parse_setting(s) for s in args.settings]
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.resume]
    for (alpha, points, rows), resume in ((s, m) for s in settings for m in modes):
        name = (f"spec-a{alpha}-{'-'.join(map(str, points))}" + (f"-rows{rows}" if rows else "")
                + ("" if resume else "-noresume"))
        spec_file = args.output_dir / f"{name}.jsonl"
        if args.reuse_bon and spec_file.is_file():
            spec = [json.loads(line) for line in spec_file.read_text().splitlines()]
            wall = sum(r["stats"]["wall_s"] for r in spec)
        else:
            t0 = time.perf_counter()
            spec = [r.row() for r in speculative_rejection(
                policy, rm, prompts, n=args.n, rejection_rate=alpha, decision_tokens=points, params=params,
                batch_rows=rows or args.n, progress=True, resume=resume)]
            wall = time.perf_counter() - t0
            write_jsonl_atomic(spec_file, spec)
        rewards = [None if r["selected"] is None else r["candidates"][r["selected"]]["score"] for r in spec]
        methods.append(summarize(name, rewards, float(np.mean([r["stats"]["tokens_generated"] for r in spec])), wall,
                                 sum(r["stats"]["rm_calls"] for r in spec),
                                 sum(r["stats"].get("resumed", 0) for r in spec)))
        print(f"{name}: {wall:.0f} s", flush=True)

    ref = next(m for m in methods if m["method"] == f"bon-{args.n}")
    # The reward of a plain sample that finished: what a single draw returns when it returns anything.
    baseline = float(finished_scores.mean())
    print(f"\nmean reward of a plain finished sample ({finished_scores.size} of {all_scores.size} candidates): "
          f"{baseline:.3f}; of all candidates: {all_scores.mean():.3f}")
    print(f"{'method':<35}{'no pick':>8}{'answered':>9}{'reward':>9}{'ratio':>8}{'gain kept':>10}{'tokens':>9}"
          f"{'tok ratio':>10}{'wall s':>8}{'wall ratio':>11}{'RM rows':>9}{'compared':>9}{'resumed':>8}")
    for m in methods:
        both = [a is not None and b is not None for a, b in zip(m["rewards"], ref["rewards"], strict=True)]
        r_m, r_ref = mean_on(m["rewards"], both), mean_on(ref["rewards"], both)
        m.update(mean_reward=r_m, reward_ratio=r_m / r_ref, gain_kept=(r_m - baseline) / (r_ref - baseline),
                 token_ratio=m["tokens_per_prompt"] / ref["tokens_per_prompt"], wall_ratio=m["wall_s"] / ref["wall_s"],
                 prompts_compared=int(sum(both)))
        print(f"{m['method']:<35}{m['no_pick']:>8}{m['answered']:>9.0%}{r_m:>9.3f}{m['reward_ratio']:>8.3f}"
              f"{m['gain_kept']:>10.3f}{m['tokens_per_prompt']:>9.0f}{m['token_ratio']:>10.3f}{m['wall_s']:>8.0f}"
              f"{m['wall_ratio']:>11.3f}{m['rm_rows']:>9}{m['prompts_compared']:>9}{m['resumed']:>8}")

    win = win_rates(args, policy, rm, prompts, bon) if args.fresh > 0 else {}
    write_json_atomic(args.output_dir / f"results{args.tag}.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                         "baseline_reward": baseline, "methods": methods,
                                                         "win_rates": win})
    plot(methods, args.output_dir / f"reward_vs_tokens{args.tag}.png", args.n)
    print(f"\nwrote {args.output_dir}/results{args.tag}.json and reward_vs_tokens{args.tag}.png")
    return 0


def win_rates(args: argparse.Namespace, policy: Policy, rm: object, prompts: list, bon: list[dict]) -> dict:
    """Theory: the pick of N i.i.d. samples beats a fresh sample with probability N/(N+1) (ties count half)."""
    fresh_params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                  seed=args.seed + 1)
    fresh_file = args.output_dir / "fresh.jsonl"
    if args.reuse_bon and fresh_file.is_file():
        fresh = [json.loads(line) for line in fresh_file.read_text().splitlines()]
    else:
        fresh = [r.row() for r in best_of_n(policy, rm, prompts, n=args.fresh, params=fresh_params,
                                            batch_rows=args.n, progress=True)]
        write_jsonl_atomic(fresh_file, fresh)
    fresh_scores = [np.array([c["score"] for c in r["candidates"]]) for r in fresh]
    win = {}
    for n in (4, 16):
        if n > args.n:
            continue
        picks = [np.array([max(c["score"] for c in r["candidates"][g:g + n]) for g in range(0, args.n - n + 1, n)])
                 for r in bon]
        wr = empirical_win_rate(picks, fresh_scores)
        win[n] = {"empirical": wr.mean, "stderr": wr.stderr, "theory": bon_win_rate(n), "comparisons": wr.n_comparisons,
                  "ties": wr.ties}
        print(f"win rate of best-of-{n} (over all candidates) vs a fresh sample: {wr.mean:.3f} +- {wr.stderr:.3f} "
              f"(theory {bon_win_rate(n):.3f}; {wr.n_comparisons} comparisons, {wr.ties} ties)")
    return win


def plot(methods: list[dict], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bon = [m for m in methods if m["method"].startswith("bon-")]
    ax.plot([m["tokens_per_prompt"] for m in bon], [m["mean_reward"] for m in bon], "o-", label="Best-of-k, k=1..N")
    for m in bon:
        label = m["method"][4:] + (f" ({m['no_pick']} no pick)" if m["no_pick"] else "")
        ax.annotate(label, (m["tokens_per_prompt"], m["mean_reward"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=7)
    for m in methods:
        if m["method"].startswith("spec"):
            ax.plot(m["tokens_per_prompt"], m["mean_reward"], "s",
                    label=f"{m['method']} ({m['no_pick']} no pick)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generated tokens per prompt")
    ax.set_ylabel("mean reward of the pick (prompts with one)")
    ax.set_title(f"Speculative Rejection vs Best-of-N (N={n})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
