"""Held-out accuracy vs embedding time of the default RM recipe on each backbone (how the default backbone was picked).

For each --backbones entry: draw --train-pairs stratified pairs (the same draw for every backbone) from the bundled data
or the train side of ../shared/data, train with the default ArmoRMConfig and a FRESH embedding cache (so the embedding
time is real), then evaluate on up to --eval-pairs-per-dataset held-out pairs per dataset (mean over datasets with
bootstrap intervals). Usage:

    .venv/bin/python benchmarks/compare_backbones.py --train-source shared --train-pairs 500 --backbones minilm,smollm2

Prints one line per backbone and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bench_rm_vs_trl import DEFAULT_SHARED, draw_train_pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="minilm,smollm2", help="comma-separated (default minilm,smollm2)")
    ap.add_argument("--train-pairs", type=int, default=500)
    ap.add_argument("--train-source", choices=("bundled", "shared"), default="shared")
    ap.add_argument("--eval-pairs-per-dataset", type=int, default=60)
    ap.add_argument("--shared-dir", default=str(DEFAULT_SHARED))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from paretoalign.data.heldout import shared_heldout_pairs
    from paretoalign.eval.rm_eval import evaluate_pairs
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import load_config_data, train_reward_model

    shared = Path(args.shared_dir).resolve()
    if not shared.is_dir():
        print(f"the shared data folder {shared} is missing (--shared-dir)", file=sys.stderr)
        return 2
    eval_pairs = shared_heldout_pairs(shared, args.eval_pairs_per_dataset, args.seed)
    results = {}
    for name in filter(None, args.backbones.split(",")):
        with tempfile.TemporaryDirectory(prefix="compare_backbones.") as tmp:
            cache = str(Path(tmp) / "embeddings.sqlite")
            source = {"sources": "shared", "shared_dir": str(shared), "split": "train"} \
                if args.train_source == "shared" else {}
            config = ArmoRMConfig(backbone=name, embedding_cache=cache, progress=False, seed=args.seed, **source)
            data = load_config_data(config)
            data.pairs = draw_train_pairs(data.pairs, args.train_pairs, args.seed)
            t0 = time.perf_counter()
            model, stats = train_reward_model(config, data)
            train_s = time.perf_counter() - t0
            report = evaluate_pairs(model, eval_pairs, embedding_cache=cache, n_boot=1000, seed=args.seed,
                                    progress=False)
        mean = report.mean.metrics
        results[name] = {"train_s": round(train_s, 1), "embed_s": round(stats["embed_s"], 1),
                         "n_pairs": stats["n_pairs"], "n_ratings": stats["n_ratings"],
                         **{k: {"accuracy": round(mean[k].accuracy, 4), "ci": [round(c, 4) for c in mean[k].ci]}
                            for k in ("final", "bt_baseline", "length")}}
        print(f"{name}: train {train_s:.0f} s (embed {stats['embed_s']:.0f} s) on {stats['n_pairs']} pairs; mean "
              f"held-out final {mean['final'].format()}, BT baseline {mean['bt_baseline'].format()}, length "
              f"{mean['length'].format()}", flush=True)
    print(json.dumps({"benchmark": "compare_backbones", "train_source": args.train_source,
                      "eval_pairs": len(eval_pairs), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
