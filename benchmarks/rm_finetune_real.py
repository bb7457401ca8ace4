"""Fine-tuned reward models on real data: bt_finetune vs GRM on SmolLM2-135M, with paired held-out intervals.

(a) Training data: --pairs pairs drawn (seeded, uniformly) from the "train" side of the project's held-out split of
    the shared data's MIT / Apache-2.0 pairwise datasets: hh_rlhf, hhh, llmbar, oasst
    (`shared_data_config(shared_dir, split="train")`, restricted to those sources). Both methods see the same pairs,
    the same order (seed) and the same validation slice.
(b) Training: `train_reward_finetune` (what `paretoalign train-rm method=bt_finetune|grm` runs) from the same
    backbone ('smollm2': the shipped GGUF converted by the loader), LoRA by default.
(c) Evaluation: the "test" side of the same four datasets (up to --eval-pairs-per-dataset each, seeded), scored by
    each saved `reward_model/` folder reloaded with plain `AutoModelForSequenceClassification`; accuracy per dataset
    and the mean over datasets with percentile-bootstrap intervals (`evaluate_score_pairs`), and a PAIRED bootstrap
    interval of GRM − BT accuracy over the same test pairs (per dataset, pooled, and mean over datasets).

Writes the result JSON to --output (default benchmarks/results/rm_finetune_real.json) and prints the tables and the
seconds per optimizer step. Usage:

    .venv/bin/python benchmarks/rm_finetune_real.py                                  # 2000 pairs, 1 epoch, LoRA
    .venv/bin/python benchmarks/rm_finetune_real.py --pairs 4000 --epochs 2 --no-lora --lr 1e-5
    .venv/bin/python benchmarks/rm_finetune_real.py --pairs 16 --max-steps 2 --eval-pairs-per-dataset 4 \\
        --output /tmp/rm_smoke.json                                                   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "rm_finetune_real.json"
DATASETS = ("hh_rlhf", "hhh", "llmbar", "oasst")
"""The shared pairwise datasets under MIT or Apache-2.0 licences."""
METHODS = ("bt_finetune", "grm")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="backbone: alias, local directory, .gguf or hub id")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated: bt_finetune,grm (default both)")
    ap.add_argument("--pairs", type=int, default=2000, help="training pairs (default 2000)")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default 1)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    ap.add_argument("--max-length", type=int, default=512, help="token budget per row (default 512)")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step (default 8)")
    ap.add_argument("--micro-batch-size", type=int, default=None, help="pairs per forward pass (default: batch)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: 5e-5 LoRA, 1e-5 full)")
    ap.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True, help="LoRA (default) or full")
    ap.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2 r; default 16)")
    ap.add_argument("--grm-alpha", type=float, default=0.01, help="GRM regulariser weight (default 0.01, the paper's)")
    ap.add_argument("--grm-regularizer", default="sft", choices=("sft", "sft_nll", "dpo", "dpo_noref"),
                    help="GRM regulariser (default sft, the paper's)")
    ap.add_argument("--grm-beta", type=float, default=0.1, help="GRM beta (default 0.1)")
    ap.add_argument("--val-fraction", type=float, default=0.05, help="validation slice of the training prompts")
    ap.add_argument("--eval-pairs-per-dataset", type=int, default=None,
                    help="held-out pairs per dataset (default: all of the test side)")
    ap.add_argument("--eval-batch-size", type=int, default=32, help="rows per scoring batch (default 32)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws, the data order and the head")
    ap.add_argument("--device", default=None, help="torch device (default: CUDA if available, else CPU)")
    ap.add_argument("--shared-dir", default=str(DEFAULT_SHARED), help="the shared data folder (../shared/data)")
    ap.add_argument("--workdir", default=None, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT), help="result JSON (written atomically)")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.method_list or any(m not in METHODS for m in args.method_list):
        ap.error(f"--methods must name some of {', '.join(METHODS)}")
    if args.pairs < 2:
        ap.error("--pairs must be >= 2")
    return args


# ---------------------------------------------------------------- data
def shared_pairs(shared_dir: str, split: str) -> list:
    """The pairs of DATASETS on one side of the held-out split."""
    from paretoalign.data.bundled import shared_data_config
    from paretoalign.data.sources import load_training_data

    config = shared_data_config(shared_dir, split=split)
    config.sources = [s for s in config.sources if s.name in DATASETS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the few rows with an empty reply, dropped by the shared config
        return load_training_data(config).pairs


def draw(pairs: list, n: int | None, seed: int) -> list:
    """A seeded uniform draw of n pairs (all when n is None or larger)."""
    if n is None or n >= len(pairs):
        return list(pairs)
    return random.Random(seed).sample(pairs, n)


def eval_pairs_by_dataset(shared_dir: str, per_dataset: int | None, seed: int) -> list:
    """The test side of each dataset, subsampled to per_dataset pairs (seeded)."""
    from paretoalign.eval.rm_eval import dataset_of

    test = shared_pairs(shared_dir, "test")
    out = []
    for name in DATASETS:
        out.extend(draw([p for p in test if dataset_of(p) == name], per_dataset, seed))
    return out


# ---------------------------------------------------------------- train and score
def train_method(args: argparse.Namespace, method: str, train_pairs: list, run_dir: Path) -> dict:
    from paretoalign.train.rm_finetune_config import RMFinetuneConfig
    from paretoalign.train.rm_finetune_trainer import train_reward_finetune

    config = RMFinetuneConfig(method=method, model=args.model, output_dir=str(run_dir), max_length=args.max_length,
                              batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                              epochs=args.epochs, max_steps=args.max_steps, lora=args.lora, lora_r=args.lora_r,
                              lora_alpha=2.0 * args.lora_r, learning_rate=args.lr, seed=args.seed,
                              val_fraction=args.val_fraction, grm_alpha=args.grm_alpha,
                              grm_regularizer=args.grm_regularizer, grm_beta=args.grm_beta, device=args.device,
                              progress=args.progress, resume=False)
    t0 = time.perf_counter()
    _, stats = train_reward_finetune(config, train_pairs, overwrite=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    elapsed = [r["elapsed_s"] for r in rows]
    per_step = None
    if elapsed:
        per_step = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1) if len(elapsed) > 1 else elapsed[0]
    return {"method": method, "wall_s": wall, "stats": stats, "s_per_step": per_step,
            "first_step_s": elapsed[0] if elapsed else None, "steps": len(rows),
            "first_loss": rows[0]["loss"] if rows else None, "last_loss": rows[-1]["loss"] if rows else None,
            "config": {k: v for k, v in vars(config).items() if k not in ("output_dir",)}}


def score(args: argparse.Namespace, run_dir: Path, pairs: list) -> tuple[np.ndarray, np.ndarray, float]:
    """(chosen, rejected) scores of the saved classifier, reloaded with plain transformers, and the seconds taken."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from paretoalign.train.rm_finetune_trainer import CLASSIFIER_DIR, classifier_rewards

    t0 = time.perf_counter()
    folder = run_dir / CLASSIFIER_DIR
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rewards = classifier_rewards(model, tokenizer, [p.prompt for p in pairs] * 2,
                                 [p.chosen for p in pairs] + [p.rejected for p in pairs],
                                 max_length=args.max_length, batch_size=args.eval_batch_size)[:, 0]
    n = len(pairs)
    return rewards[:n], rewards[n:], time.perf_counter() - t0


# ---------------------------------------------------------------- paired difference
def paired_difference(a_chosen, a_rejected, b_chosen, b_rejected, groups: list[str], *, n_boot: int, seed: int,
                      level: float = 0.95) -> dict:
    """Accuracy of A minus accuracy of B on the same pairs, with paired percentile-bootstrap intervals: per dataset,
    pooled over all pairs, and for the mean over datasets (each dataset resampled on its own)."""
    from paretoalign.eval.pairwise import bootstrap_means, pairwise_outcomes, percentile_interval

    diff = pairwise_outcomes(a_chosen, a_rejected) - pairwise_outcomes(b_chosen, b_rejected)
    g = np.asarray(groups, dtype=object)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    out: dict = {"per_dataset": {}}
    dataset_reps = []
    for name in sorted(set(groups)):
        d = diff[g == name]
        reps = bootstrap_means(d, n_boot=n_boot, rng=rng)
        dataset_reps.append(reps)
        out["per_dataset"][name] = {"n": int(d.size), "difference": float(d.mean()),
                                    "ci": list(percentile_interval(reps, level))}
    pooled = bootstrap_means(diff, n_boot=n_boot, rng=rng)
    out["pooled"] = {"n": int(diff.size), "difference": float(diff.mean()),
                     "ci": list(percentile_interval(pooled, level))}
    mean_reps = np.mean(np.stack(dataset_reps), axis=0)
    out["mean_over_datasets"] = {"difference": float(np.mean([v["difference"] for v in out["per_dataset"].values()])),
                                 "ci": list(percentile_interval(mean_reps, level))}
    out["level"], out["n_boot"] = level, n_boot
    return out


def _portable(value):
    """A path argument relative to the repository when it lies inside it or beside it (no machine paths in results)."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    for base, prefix in ((REPO_ROOT, ""), (REPO_ROOT.parent, "../")):
        try:
            return prefix + str(Path(value).resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return "<outside the repository>"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from paretoalign.atomic_io import write_json_atomic
    from paretoalign.eval.pairwise import length_scores
    from paretoalign.eval.rm_eval import evaluate_score_pairs, pair_groups

    if not Path(args.shared_dir).is_dir():
        print(f"the shared data folder {args.shared_dir} is missing (--shared-dir)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    train_pairs = draw(shared_pairs(args.shared_dir, "train"), args.pairs, args.seed)
    eval_pairs = eval_pairs_by_dataset(args.shared_dir, args.eval_pairs_per_dataset, args.seed)
    groups, subgroups = pair_groups(eval_pairs)
    print(f"{args.model}: {len(train_pairs)} training pairs ({', '.join(DATASETS)}, train side), "
          f"{len(eval_pairs)} held-out pairs; max_length {args.max_length}, batch {args.batch_size}, "
          f"{'LoRA r=' + str(args.lora_r) if args.lora else 'full fine-tune'}, epochs {args.epochs}, "
          f"max_steps {args.max_steps}", flush=True)

    with tempfile.TemporaryDirectory(prefix="rm_finetune_real.") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        runs, chosen, rejected = {}, {}, {}
        for method in args.method_list:
            run_dir = workdir / method
            runs[method] = train_method(args, method, train_pairs, run_dir)
            r = runs[method]
            print(f"{method}: {r['steps']} steps in {r['wall_s']:.1f} s ({r['s_per_step']:.3f} s/step after the "
                  f"first, first step {r['first_step_s']:.2f} s); loss {r['first_loss']:.4f} -> "
                  f"{r['last_loss']:.4f}; validation {r['stats']['validation']}", flush=True)
            chosen[method], rejected[method], r["eval_s"] = score(args, run_dir, eval_pairs)
    chosen["length"] = length_scores([p.chosen for p in eval_pairs])
    rejected["length"] = length_scores([p.rejected for p in eval_pairs])
    report = evaluate_score_pairs(chosen, rejected, groups, subgroups=subgroups, n_boot=args.n_boot, seed=args.seed,
                                  meta={"benchmark": "rm_finetune_real", "model": args.model})
    print()
    print(report.format_table())
    paired = None
    if set(METHODS) <= set(args.method_list):
        paired = paired_difference(chosen["grm"], rejected["grm"], chosen["bt_finetune"], rejected["bt_finetune"],
                                   groups, n_boot=args.n_boot, seed=args.seed)
        print("\nGRM - BT accuracy, paired bootstrap 95% intervals over the same test pairs:")
        for name, v in paired["per_dataset"].items():
            print(f"  {name:<10} n={v['n']:<5} {v['difference']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]")
        for key in ("pooled", "mean_over_datasets"):
            v = paired[key]
            print(f"  {key:<19} {v['difference']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]")

    import torch

    result = {
        "benchmark": "rm_finetune_real", "model": args.model, "datasets": list(DATASETS),
        "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
        "eval_pairs_per_dataset": {name: groups.count(name) for name in DATASETS},
        "args": {k: _portable(v) for k, v in vars(args).items() if k != "method_list"},
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "runs": {m: {k: v for k, v in r.items()} for m, r in runs.items()},
        "mean_accuracy": {k: {"accuracy": report.mean.metrics[k].accuracy, "ci": list(report.mean.metrics[k].ci)}
                          for k in report.metric_names},
        "grm_minus_bt": paired, "report": report.to_dict(), "total_s": round(time.perf_counter() - t_start, 1),
    }
    write_json_atomic(args.output, result)
    print(f"\nwrote {args.output}", file=sys.stderr)
    summary = {k: v for k, v in result.items() if k not in ("report", "runs", "args")}
    summary["s_per_step"] = {m: r["s_per_step"] for m, r in runs.items()}
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
