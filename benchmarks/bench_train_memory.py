"""Peak RSS of one training step per method (DPO, MODPO, J-BOND, WARP) with the default model, LoRA vs full fine-tune.

Each measurement is its own process (`paretoalign <method> … max_steps=1`), its peak RSS read from the kernel's
rusage for that child (os.wait4). The baseline, measured in the same run, is a process that only loads the policy
and the RM (what every method needs before its first step). Settings mirror benchmarks/train_real.sh.

Usage: .venv/bin/python benchmarks/bench_train_memory.py [--out runs/bench_memory] [--methods dpo,modpo,bond,warp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from paretoalign.atomic_io import write_json_atomic

LOAD_ONLY = ("from paretoalign.embed.models import load_causal_lm; "
             "from paretoalign.inference.best_of_n import load_reward_model; "
             "m, t = load_causal_lm('smollm2'); r = load_reward_model('runs/default-rm')")


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit code) of one child process."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1e6, time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def method_args(method: str, data_dir: Path) -> list[str]:
    """The method's settings (as in train_real.sh) for one step."""
    common = ["max_length=256", "progress=false", "max_steps=1"]
    pairwise = [f"data={data_dir / 'pairs_helpful.jsonl'}", "max_pairs=128", "batch_size=8", "beta=0.1"]
    online = [f"prompts={data_dir / 'prompts_train.jsonl'}", "max_new_tokens=48", "batch_size=4"]
    return {"dpo": pairwise, "modpo": pairwise + ["margin_objectives=[harmlessness,honesty]", "weights=[0.4,0.4,0.2]"],
            "bond": online + ["variant=jbond"], "warp": online + ["num_runs=2", "samples_per_prompt=4",
                                                                   "eta_grid=[]"]}[method] + common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_memory"))
    parser.add_argument("--data", type=Path, default=Path("runs/real"), help="benchmarks/train_real_data.py output")
    parser.add_argument("--methods", default="dpo,modpo,bond,warp")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "paretoalign")
    args.out.mkdir(parents=True, exist_ok=True)
    base_gb, base_s, rc = peak_rss([sys.executable, "-c", LOAD_ONLY], args.out / "load_only.log")
    if rc != 0:
        raise SystemExit(f"the load-only baseline failed (see {args.out / 'load_only.log'})")
    print(f"baseline (load policy + RM only): peak RSS {base_gb:.2f} GB, {base_s:.1f} s")
    rows = [{"method": "load-only", "mode": "-", "peak_rss_gb": base_gb, "ratio_to_baseline": 1.0, "wall_s": base_s}]
    print(f"{'method':8s} {'mode':5s} {'peak RSS GB':>11s} {'x baseline':>10s} {'wall s':>7s}")
    for method in args.methods.split(","):
        for mode in ("lora", "full"):
            run_dir = args.out / f"{method}-{mode}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [exe, method, "--output-dir", str(run_dir), f"lora={'true' if mode == 'lora' else 'false'}",
                   *method_args(method, args.data)]
            gb, wall, rc = peak_rss(cmd, args.out / f"{method}-{mode}.log")
            if rc != 0:
                print(f"{method:8s} {mode:5s} FAILED (exit {rc}; see {args.out / f'{method}-{mode}.log'})")
                continue
            rows.append({"method": method, "mode": mode, "peak_rss_gb": gb, "ratio_to_baseline": gb / base_gb,
                         "wall_s": wall})
            print(f"{method:8s} {mode:5s} {gb:11.2f} {gb / base_gb:10.2f} {wall:7.1f}", flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)  # full fine-tune checkpoints are large
    write_json_atomic(args.out / "memory.json", {"rows": rows})


if __name__ == "__main__":
    main()
