"""Scoring throughput on Ray vs one process: `paretoalign score` with --engine local and --engine ray.

Rows: --rows (default 512) held-out (prompt, chosen reply) rows of the shared data (`shared_heldout_pairs` of
../shared/data, seeded sample), or of the bundled data when that folder is absent. Reward model: --model (default
the shipped one, MiniLM backbone). Every configuration scores the same rows with the default batch size:

- local: `load_reward_model(model).score(...)` in this process (loaded and warmed up once, outside the timing);
- ray-N: `score_with_ray(model, ..., num_workers=N)` on a local Ray started once before the timing (its start-up
  time is reported apart); each call is what one `paretoalign score --engine ray` pays besides Ray's start: N
  actors start, load the model, score their batches, and the driver reassembles the rows.

Reports rows/s (median of --repeats), ray-N / local, and Ray's overhead: the extra seconds of ray-1 over local
(actor start and model load, serialisation, the driver's reassembly). The Ray scores are checked against the local
ones (max |diff|). Writes benchmarks/results/bench_ray.json.

Usage: .venv/bin/python benchmarks/bench_ray.py [--rows 512] [--repeats 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"
OUTPUT = REPO_ROOT / "benchmarks" / "results" / "bench_ray.json"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="reward model reference (default: the shipped one)")
    ap.add_argument("--rows", type=int, default=512, help="rows to score (default 512)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to time (default 1,2)")
    ap.add_argument("--shared", type=Path, default=SHARED, help="shared data folder (default ../shared/data)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=OUTPUT, help="JSON results (default benchmarks/results/...)")
    return ap.parse_args(argv)


def load_rows(shared: Path, n: int, seed: int) -> tuple[list, list[str], str]:
    """n seeded (prompt, chosen) rows: the shared held-out pairs, else the bundled training pairs."""
    import warnings

    if shared.is_dir():
        from paretoalign.data.heldout import shared_heldout_pairs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rows skipped for empty text
            pairs = shared_heldout_pairs(shared, None, seed)
        source = f"{os.path.relpath(shared, REPO_ROOT)} (held-out side)"
    else:
        from paretoalign.data.bundled import default_sources_config
        from paretoalign.data.sources import load_training_data

        pairs = list(load_training_data(default_sources_config()).pairs)
        source = "bundled data"
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:n]
    if len(pairs) < n:
        print(f"only {len(pairs)} rows available in {source}", file=sys.stderr)
    return [p.prompt for p in pairs], [p.chosen for p in pairs], source


def timed(fn, repeats: int) -> tuple[float, object]:
    """(median seconds, the last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from paretoalign.rewards.loading import load_reward_model
    from paretoalign.rewards.ray_scoring import score_with_ray

    prompts, responses, source = load_rows(args.shared, args.rows, args.seed)
    n = len(responses)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    model = load_reward_model(args.model)
    model.score(prompts[:8], responses[:8])  # warm-up: backbone loaded, kernels initialised
    local_s, local = timed(lambda: model.score(prompts, responses), args.repeats)
    results: dict = {"local": {"seconds": local_s, "rows_per_s": n / local_s, "torch_threads": torch.get_num_threads()}}
    print(f"local: {n / local_s:8.1f} rows/s ({local_s:.2f} s, {torch.get_num_threads()} torch threads)")

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=max(os.cpu_count() or 1, max(workers)), include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    try:
        for w in workers:
            secs, out = timed(lambda w=w: score_with_ray(args.model, prompts, responses, num_workers=w),
                              args.repeats)
            diff = float(np.max(np.abs(out.score - local.score)))
            results[f"ray_{w}"] = {"seconds": secs, "rows_per_s": n / secs, "ratio_vs_local": local_s / secs,
                                   "max_abs_score_diff_vs_local": diff, "torch_threads_per_actor": 1}
            print(f"ray {w} worker(s): {n / secs:8.1f} rows/s ({secs:.2f} s; x{local_s / secs:.2f} of local; "
                  f"max |score diff| {diff:.2e})")
    finally:
        ray.shutdown()
    if "ray_1" in results:
        results["ray_overhead_s"] = results["ray_1"]["seconds"] - local_s
        print(f"Ray overhead (1 worker vs local): {results['ray_overhead_s']:+.2f} s per call; Ray start-up "
              f"{ray_init_s:.2f} s once")
    if "ray_1" in results and "ray_2" in results:
        results["ray_2_vs_ray_1"] = results["ray_1"]["seconds"] / results["ray_2"]["seconds"]
    payload = {"rows": n, "source": source, "model": args.model, "repeats": args.repeats,
               "ray_init_s": ray_init_s, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
               "python": platform.python_version(), "ray": ray.__version__, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
