"""Our reward-model pipeline vs TRL's RewardTrainer: same backbone, same pairs, same wall-clock budget.

(a) Our pipeline, `train_reward_model` (frozen backbone embeddings -> heads, de-correlation, gating), on N training
    pairs with a fresh embedding cache. Its whole wall time (backbone load + embed + fit) is the budget B.
(b) TRL's `RewardTrainer` fine-tuning the SAME backbone as a sequence classifier (num_labels=1; MiniLM ->
    BertForSequenceClassification, SmolLM2 -> LlamaForSequenceClassification) on the SAME pairs, fed the SAME
    text our backbone embeds (causal LM: `conversation_text`, the prompt cut from the left to max_length;
    MiniLM: the "role: content" prompt lines and the reply as a BERT text pair). Clock started before loading the
    model, so loading and tokenizing count as they do for us. ONE run with a constant learning rate is
    snapshotted when its time passes each multiplier x B (a later budget continues the same run, so a snapshot
    equals a separate run stopped there); epochs: as many as fit.
(c) Held-out accuracy of every model on the same pairs: up to --eval-pairs-per-dataset from the "test" side of the
    project's held-out split of ../shared/data (HH-RLHF, HHH, LLMBar, OASST, XSTest, AlpacaEval), with percentile
    bootstrap intervals, via `paretoalign.eval.evaluate_score_pairs`. Evaluation time is not part of any budget.

(d) With --with-bt-finetune (causal-LM backbones): our own fine-tuned classifier RM, `train_reward_finetune`
    method=bt_finetune (what `paretoalign train-rm method=bt_finetune` runs), on the SAME pairs, text, learning rate,
    batch size and max_length as TRL, full fine-tuning like TRL (--bt-lora: LoRA), at the SAME budgets: one run whose
    clock starts before loading the model, stopped at the first step end past each multiplier x B (then the run is
    resumed from its checkpoint for the next budget: a resumed run equals an uninterrupted one; the reloading and
    saving count in its wall time), and its saved `reward_model/` scored like TRL's snapshots.

TRL is a benchmark peer only: `pip install -e ".[bench]"` (trl==1.16.0, peft==0.21.2); paretoalign never imports it.
Everything runs on CPU. Usage:

    .venv/bin/python benchmarks/bench_rm_vs_trl.py                      # minilm, 300 pairs, budgets 1x and 10x
    .venv/bin/python benchmarks/bench_rm_vs_trl.py --backbone smollm2 --budget-multipliers 1,3
    .venv/bin/python benchmarks/bench_rm_vs_trl.py --backbone smollm2 --budget-multipliers 1,3 --with-bt-finetune

Prints a method table (wall time, time ratio vs ours, TRL steps/epochs, mean held-out accuracy), a per-dataset
accuracy table, and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"
MIN_PAIRS_PER_OBJECTIVE = 20
"""Stratified draw: every objective keeps at least this many training pairs (or all it has), so each head fits."""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="minilm", help="'minilm' (default), 'smollm2', or a local model directory")
    ap.add_argument("--train-pairs", type=int, default=300, help="training pairs for both methods (default 300)")
    ap.add_argument("--train-source", choices=("bundled", "shared"), default="bundled",
                    help="draw training pairs from the bundled default data (default) or the 'train' side of the "
                         "shared data")
    ap.add_argument("--eval-pairs-per-dataset", type=int, default=100,
                    help="held-out pairs per dataset (default 100)")
    ap.add_argument("--budget-multipliers", default="1,10",
                    help="TRL wall-clock budgets as multiples of our pipeline's time (default '1,10')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=256,
                    help="token budget per row, both methods (default 256: MiniLM's own max_seq_length, and it "
                         "keeps the default run near 15 minutes on 2 cores; ArmoRMConfig's default is 512)")
    ap.add_argument("--trl-lr", type=float, default=3e-5,
                    help="TRL learning rate, constant schedule, AdamW (default 3e-5)")
    ap.add_argument("--trl-batch-size", type=int, default=8, help="TRL pairs per step (default 8)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--shared-dir", default=str(DEFAULT_SHARED), help="the shared data folder (default ../shared/data)")
    ap.add_argument("--with-bt-finetune", action="store_true",
                    help="also train our bt_finetune classifier RM at the same budgets as TRL (causal LMs only)")
    ap.add_argument("--bt-lora", action="store_true", help="--with-bt-finetune: LoRA instead of full fine-tuning")
    ap.add_argument("--output", help="also write the result JSON here")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args(argv)
    args.multipliers = sorted({float(m) for m in args.budget_multipliers.split(",") if m.strip()})
    if not args.multipliers or min(args.multipliers) <= 0:
        ap.error("--budget-multipliers must be positive numbers")
    return args


# ---------------------------------------------------------------- data
def draw_train_pairs(pairs: list, n: int, seed: int) -> list:
    """A deterministic draw of n pairs, stratified by objective: shares proportional to the source, each objective
    at least MIN_PAIRS_PER_OBJECTIVE (or all it has)."""
    if n >= len(pairs):
        return list(pairs)
    rng = random.Random(seed)
    by_objective: dict[str, list] = defaultdict(list)
    for p in pairs:
        by_objective[p.objective or ""].append(p)
    names = sorted(by_objective)
    for name in names:
        rng.shuffle(by_objective[name])
    quota = {k: min(len(by_objective[k]), max(MIN_PAIRS_PER_OBJECTIVE, round(n * len(by_objective[k]) / len(pairs))))
             for k in names}
    while sum(quota.values()) > n:  # trim the largest share one at a time
        largest = max(names, key=lambda k: (quota[k], k))
        quota[largest] -= 1
    while sum(quota.values()) < n:
        spare = [k for k in names if quota[k] < len(by_objective[k])]
        quota[max(spare, key=lambda k: (len(by_objective[k]) - quota[k], k))] += 1
    drawn = [p for k in names for p in by_objective[k][:quota[k]]]
    rng.shuffle(drawn)
    return drawn


def load_train_pairs(args: argparse.Namespace) -> list:
    from paretoalign.data.bundled import shared_data_config
    from paretoalign.data.sources import load_training_data

    if args.train_source == "bundled":
        from paretoalign.data.bundled import default_sources_config

        config = default_sources_config()
    else:
        config = shared_data_config(args.shared_dir, split="train")
    return draw_train_pairs(load_training_data(config).pairs, args.train_pairs, args.seed)


def load_eval_pairs(args: argparse.Namespace) -> list:
    from paretoalign.data.heldout import shared_heldout_pairs

    return shared_heldout_pairs(Path(args.shared_dir), args.eval_pairs_per_dataset, args.seed)


# ---------------------------------------------------------------- our pipeline
def run_ours(args: argparse.Namespace, train_pairs: list, cache: Path):
    from paretoalign.data.sources import TrainingData
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model

    config = ArmoRMConfig(backbone=args.backbone, max_length=args.max_length, embedding_cache=str(cache),
                          seed=args.seed, output_dir=None, progress=args.progress)
    t0 = time.perf_counter()
    model, stats = train_reward_model(config, TrainingData(pairs=list(train_pairs)))
    wall = time.perf_counter() - t0
    return config, model, stats, wall


# ---------------------------------------------------------------- TRL peer
class RowEncoder:
    """Token ids of a (prompt, response) row as the TRL classifier sees it: the same text as our backbone."""

    def __init__(self, kind: str, tokenizer, max_length: int) -> None:
        self.kind, self.tokenizer, self.max_length = kind, tokenizer, max_length

    def __call__(self, prompt, response: str) -> list[int]:
        tok = self.tokenizer
        if self.kind == "causal_lm":
            from paretoalign.embed.chat_format import conversation_text

            text, _ = conversation_text(tok, prompt, response)
            return tok(text, add_special_tokens=False)["input_ids"][-self.max_length:]  # prompt cut from the left
        from paretoalign.embed.sentence_encoder import prompt_lines

        a = tok(prompt_lines(prompt), add_special_tokens=False)["input_ids"]
        b = tok(response, add_special_tokens=False)["input_ids"]
        budget = self.max_length - 3
        keep_b = min(len(b), max(budget - len(a), budget // 2))  # the reply keeps its start, >= half the budget
        keep_a = min(len(a), budget - keep_b)  # the prompt keeps its end
        return [tok.cls_token_id] + a[len(a) - keep_a:] + [tok.sep_token_id] + b[:keep_b] + [tok.sep_token_id]


def score_rows(model, rows: list[list[int]], pad_id: int, batch_size: int = 16) -> np.ndarray:
    """The classifier's scalar output for each token-id row (length-sorted batches, right padding, no grad)."""
    import torch

    out = np.zeros(len(rows), dtype=np.float64)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            index = order[lo:lo + batch_size]
            width = max(len(rows[i]) for i in index)
            ids = torch.full((len(index), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(index), width), dtype=torch.long)
            for j, i in enumerate(index):
                ids[j, :len(rows[i])] = torch.tensor(rows[i])
                mask[j, :len(rows[i])] = 1
            out[index] = model(input_ids=ids, attention_mask=mask).logits[:, 0].double().numpy()
    return out


def run_trl(args: argparse.Namespace, kind: str, budget_s: float, train_pairs: list, eval_pairs: list,
            workdir: Path) -> list[dict]:
    """Fine-tune with TRL until each multiplier x budget_s has passed; score the eval pairs at each snapshot."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from paretoalign.embed.models import check_remote_code, resolve_model

    t0 = time.perf_counter()
    path = resolve_model(args.backbone)
    check_remote_code(path)  # a benchmark never runs a model folder's own code
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                               trust_remote_code=False)
    encode = RowEncoder(kind, tokenizer, args.max_length)
    dataset = Dataset.from_dict({"chosen_ids": [encode(p.prompt, p.chosen) for p in train_pairs],
                                 "rejected_ids": [encode(p.prompt, p.rejected) for p in train_pairs]})
    steps_per_epoch = -(-len(train_pairs) // args.trl_batch_size)
    config = RewardConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=args.trl_batch_size,
        learning_rate=args.trl_lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        num_train_epochs=10_000, max_length=None,  # rows are already cut to max_length exactly as ours
        report_to="none", eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, seed=args.seed, data_seed=args.seed,
        dataloader_num_workers=0)
    budgets = [m * budget_s for m in args.multipliers]
    snapshots: list[dict] = []

    class BudgetCallback(TrainerCallback):
        """At the first step end past each budget: copy the weights (time excluded), stop after the last."""

        paused = 0.0

        def on_step_end(self, _args, state, control, model=None, **kwargs):
            elapsed = time.perf_counter() - t0 - self.paused
            while len(snapshots) < len(budgets) and elapsed >= budgets[len(snapshots)]:
                t_copy = time.perf_counter()
                weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                snapshots.append({"multiplier": args.multipliers[len(snapshots)], "wall_s": elapsed,
                                  "steps": state.global_step, "epochs": state.global_step / steps_per_epoch,
                                  "weights": weights})
                self.paused += time.perf_counter() - t_copy
            if len(snapshots) == len(budgets):
                control.should_training_stop = True
            return control

    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            callbacks=[BudgetCallback()])
    trainer.remove_callback(PrinterCallback)  # no per-log dict printed; the tables below say what happened
    trainer.train()
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    chosen_rows = [encode(p.prompt, p.chosen) for p in eval_pairs]
    rejected_rows = [encode(p.prompt, p.rejected) for p in eval_pairs]
    for snap in snapshots:
        model.load_state_dict(snap.pop("weights"))
        t_eval = time.perf_counter()
        snap["chosen"] = score_rows(model, chosen_rows, pad_id)
        snap["rejected"] = score_rows(model, rejected_rows, pad_id)
        snap["eval_s"] = time.perf_counter() - t_eval
    return snapshots


# ---------------------------------------------------------------- our bt_finetune at TRL's budgets
def run_bt_finetune(args: argparse.Namespace, kind: str, budget_s: float, train_pairs: list, eval_pairs: list,
                    workdir: Path) -> list[dict]:
    """Our bt_finetune until each multiplier x budget_s has passed (stop, save, resume); score each saved model."""
    if kind != "causal_lm":
        print(f"--with-bt-finetune: skipped, {args.backbone} is not a causal LM", file=sys.stderr)
        return []
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from paretoalign.train.rm_finetune_config import RMFinetuneConfig
    from paretoalign.train.rm_finetune_trainer import CLASSIFIER_DIR, train_reward_finetune

    run_dir = workdir / "bt_finetune"
    config = RMFinetuneConfig(method="bt_finetune", model=args.backbone, output_dir=str(run_dir),
                              max_length=args.max_length, batch_size=args.trl_batch_size, learning_rate=args.trl_lr,
                              lora=args.bt_lora, epochs=10_000, val_fraction=0.0, seed=args.seed, device="cpu",
                              progress=args.progress)
    steps_per_epoch = -(-len(train_pairs) // args.trl_batch_size)
    snapshots: list[dict] = []
    used = 0.0
    for multiplier in args.multipliers:
        t0 = time.perf_counter()
        _, stats = train_reward_finetune(config, train_pairs, deadline=t0 + max(0.0, multiplier * budget_s - used))
        used += time.perf_counter() - t0
        t_eval = time.perf_counter()
        folder = run_dir / CLASSIFIER_DIR
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
        encode = RowEncoder(kind, AutoTokenizer.from_pretrained(folder), args.max_length)
        pad_id = int(model.config.pad_token_id)
        snapshots.append({"multiplier": multiplier, "wall_s": used, "steps": stats["steps"],
                          "epochs": stats["steps"] / steps_per_epoch,
                          "chosen": score_rows(model, [encode(p.prompt, p.chosen) for p in eval_pairs], pad_id),
                          "rejected": score_rows(model, [encode(p.prompt, p.rejected) for p in eval_pairs], pad_id)})
        snapshots[-1]["eval_s"] = time.perf_counter() - t_eval
    return snapshots


# ---------------------------------------------------------------- report
def trl_key(multiplier: float) -> str:
    return f"TRL@{multiplier:g}x"


def bt_key(multiplier: float) -> str:
    return f"bt_finetune@{multiplier:g}x"


def method_table(rows: list[dict]) -> str:
    header = ["method", "wall s", "x ours", "steps", "epochs", "mean held-out accuracy [95% CI]"]
    cells = [[r["method"], f"{r['wall_s']:.1f}", f"{r['time_ratio']:.2f}",
              "-" if r["steps"] is None else str(r["steps"]),
              "-" if r["epochs"] is None else f"{r['epochs']:.2f}", r["accuracy_text"]] for r in rows]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("paretoalign").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # e.g. "sequence longer than the maximum": rows are cut right after
    hf_logging.disable_progress_bar()
    try:
        import trl  # noqa: F401
    except ImportError:
        print('TRL is not installed: run `.venv/bin/pip install -e ".[bench]"` (trl==1.16.0, peft==0.21.2)',
              file=sys.stderr)
        return 2
    from paretoalign.eval.rm_eval import evaluate_score_pairs, pair_groups, reward_model_scores
    from paretoalign.rewards.armo_trainer import resolve_backbone_spec

    if not Path(args.shared_dir).is_dir():
        print(f"the shared data folder {args.shared_dir} is missing (--shared-dir)", file=sys.stderr)
        return 2
    train_pairs = load_train_pairs(args)
    eval_pairs = load_eval_pairs(args)
    print(f"backbone {args.backbone}: {len(train_pairs)} training pairs ({args.train_source}), "
          f"{len(eval_pairs)} held-out pairs; max_length {args.max_length}; TRL lr {args.trl_lr:g} constant, "
          f"batch {args.trl_batch_size} pairs, AdamW, CPU; torch threads {__import__('torch').get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes skew every timing)", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_rm_vs_trl.") as tmp:
        workdir = Path(tmp)
        config, model, stats, ours_wall = run_ours(args, train_pairs, workdir / "embeddings.sqlite")
        print(f"ours: {ours_wall:.1f} s (embed {stats['embed_s']:.1f} s, fit {stats['fit_s']:.1f} s) = budget B",
              flush=True)
        t_eval = time.perf_counter()
        chosen, rejected, _ = reward_model_scores(model, eval_pairs, embedding_cache=workdir / "embeddings.sqlite",
                                                  progress=args.progress)
        ours_eval_s = time.perf_counter() - t_eval
        kind = resolve_backbone_spec(config)["kind"]
        snapshots = run_trl(args, kind, ours_wall, train_pairs, eval_pairs, workdir)
        finetuned = (run_bt_finetune(args, kind, ours_wall, train_pairs, eval_pairs, workdir)
                     if args.with_bt_finetune else [])

    scores_c = {"final": chosen["final"], "bt_baseline": chosen["bt_baseline"]}
    scores_r = {"final": rejected["final"], "bt_baseline": rejected["bt_baseline"]}
    for snap in snapshots:
        scores_c[trl_key(snap["multiplier"])] = snap["chosen"]
        scores_r[trl_key(snap["multiplier"])] = snap["rejected"]
    for snap in finetuned:
        scores_c[bt_key(snap["multiplier"])] = snap["chosen"]
        scores_r[bt_key(snap["multiplier"])] = snap["rejected"]
    scores_c["length"], scores_r["length"] = chosen["length"], rejected["length"]
    groups, _ = pair_groups(eval_pairs)
    report = evaluate_score_pairs(scores_c, scores_r, groups, n_boot=args.n_boot, seed=args.seed,
                                  meta={"benchmark": "rm_vs_trl", "backbone": args.backbone})
    mean = report.mean.metrics

    methods = [{"method": "ours (ArmoRM-style, gated)", "key": "final", "wall_s": ours_wall, "steps": None,
                "epochs": None, "eval_s": ours_eval_s},
               {"method": "ours: pooled BT baseline", "key": "bt_baseline", "wall_s": ours_wall, "steps": None,
                "epochs": None, "eval_s": ours_eval_s}]
    for snap in snapshots:
        methods.append({"method": f"TRL RewardTrainer, {snap['multiplier']:g}x budget",
                        "key": trl_key(snap["multiplier"]), "wall_s": snap["wall_s"], "steps": snap["steps"],
                        "epochs": snap["epochs"], "eval_s": snap["eval_s"]})
    for snap in finetuned:
        methods.append({"method": f"ours: bt_finetune ({'LoRA' if args.bt_lora else 'full'}), "
                                  f"{snap['multiplier']:g}x budget",
                        "key": bt_key(snap["multiplier"]), "wall_s": snap["wall_s"], "steps": snap["steps"],
                        "epochs": snap["epochs"], "eval_s": snap["eval_s"]})
    for m in methods:
        m["time_ratio"] = m["wall_s"] / ours_wall
        m["accuracy_text"] = mean[m["key"]].format()
    print()
    print(method_table(methods))
    if len(snapshots) < len(args.multipliers):
        print(f"(TRL stopped before reaching every budget: {len(snapshots)} of {len(args.multipliers)})")
    if args.with_bt_finetune and finetuned:
        print("(bt_finetune: the same pairs, lr, batch and max_length as TRL; its wall time includes reloading "
              "and saving at each budget)")
    print()
    print(report.format_table())

    result = {
        "benchmark": "rm_vs_trl", "backbone": args.backbone, "train_pairs": len(train_pairs),
        "train_source": args.train_source, "eval_pairs": len(eval_pairs), "max_length": args.max_length,
        "trl": {"lr": args.trl_lr, "schedule": "constant", "batch_pairs": args.trl_batch_size,
                "version": __import__("trl").__version__},
        "ours": {"wall_s": round(ours_wall, 2), "embed_s": round(stats["embed_s"], 2),
                 "fit_s": round(stats["fit_s"], 2)},
        "bt_finetune": ({"lr": args.trl_lr, "batch_pairs": args.trl_batch_size, "lora": args.bt_lora,
                         "snapshots": len(finetuned)} if args.with_bt_finetune else None),
        "methods": [{"method": m["method"], "metric": m["key"], "wall_s": round(m["wall_s"], 2),
                     "time_ratio": round(m["time_ratio"], 3), "steps": m["steps"],
                     "epochs": None if m["epochs"] is None else round(m["epochs"], 3),
                     "mean_accuracy": round(mean[m["key"]].accuracy, 4),
                     "ci": [round(x, 4) for x in mean[m["key"]].ci]} for m in methods],
        "mean_accuracy_length_heuristic": round(mean["length"].accuracy, 4),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "report": report.to_dict(),
    }
    if args.output:
        from paretoalign.atomic_io import write_json_atomic

        write_json_atomic(args.output, result)
    summary = {k: v for k, v in result.items() if k != "report"}
    summary["per_dataset"] = {g.name: {k: round(v.accuracy, 4) for k, v in g.metrics.items()}
                              for g in report.groups}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
