"""Peak RSS of one training step per method (DPO, MODPO, J-BOND, WARP) with the default model, LoRA vs full fine-tune.

Each measurement is its own process (`paretoalign <method> … max_steps=1`), its peak RSS read from the kernel's
rusage for that child (os.wait4). The baseline, measured in the same run, is a process that only loads the policy
(its weights read once, since transformers maps them from the file lazily) and the RM the trainers use (what every
method needs before its first step); it also reports one policy's weight bytes. Settings mirror
benchmarks/train_real.sh.

WARP also gets its merge step measured on its own: after the WARP run, a child loads the policy (θ_init), then runs
the trainer's merge (`merge_iteration_`: SLERP of the saved runs' task vectors, LITI toward θ_init, θ_slerp written)
on that run's outputs; its peak during the merge alone (VmHWM reset through /proc/self/clear_refs) is reported above
the RSS it had just before. WARP's numbers are also given above the baseline and as multiples of the policy's weights.

Usage: .venv/bin/python benchmarks/bench_train_memory.py [--out runs/bench_memory] [--data runs/real]
       [--methods dpo,modpo,bond,warp] [--modes lora,full] [--results benchmarks/results/….json] [--keep]
       [--merge-only]  (with --methods warp: re-measure the merge step on kept run folders, training nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from paretoalign.atomic_io import write_json_atomic

POLICY = "smollm2"
RM = "default"  # what the trainers score with unless reward_model= is given
LOAD_ONLY = f"""
import json, sys
from paretoalign.embed.models import load_causal_lm
from paretoalign.inference.best_of_n import load_reward_model
m, t = load_causal_lm({POLICY!r}); r = load_reward_model({RM!r})
unique = {{p.data_ptr(): p.numel() * p.element_size() for p in m.parameters()}}
touched = sum(float(p.detach().sum()) for p in m.parameters())  # the weights load file-mapped: make them resident
json.dump({{"policy_weight_bytes": sum(unique.values())}}, open(sys.argv[1], "w"))
"""
MERGE_STEP = f"""
import json, sys
from pathlib import Path
import torch
from paretoalign.embed.models import load_causal_lm
from paretoalign.train.policy_setup import freeze
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.warp_trainer import merge_iteration_
from paretoalign.train.weight_ops import SafetensorsReader

def status():
    return {{line.split(":")[0]: int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith(("VmRSS", "VmHWM"))}}

run_dir, out = Path(sys.argv[1]), sys.argv[2]
live, tokenizer = load_causal_lm({POLICY!r})
live = freeze(live)
with torch.no_grad():  # the weights load lazily (file-mapped); a trained process has them all resident
    for p in live.parameters():
        p.mul_(1.0)
config = WARPConfig(model={POLICY!r}, output_dir=str(run_dir), num_runs=2, eta_grid=[], max_steps=1)
runs = [SafetensorsReader.policy(run_dir / "iter0" / f"run{{m}}" / "policy") for m in range(2)]
before = status()["VmRSS"]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
summary = merge_iteration_(config, live, tokenizer, runs, 0)
json.dump({{"rss_before": before, "peak": status()["VmHWM"], "tensors": summary["tensors"]}}, open(out, "w"))
"""


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in GB (1e9 bytes; ru_maxrss counts KiB), wall seconds, exit code) of one child process."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss * 1024 / 1e9, time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def method_args(method: str, data_dir: Path) -> list[str]:
    """The method's settings (as in train_real.sh) for one step."""
    common = ["max_length=256", "progress=false", "max_steps=1"]
    pairwise = [f"data={data_dir / 'pairs_helpful.jsonl'}", "max_pairs=128", "batch_size=8", "beta=0.1"]
    online = [f"prompts={data_dir / 'prompts_train.jsonl'}", "max_new_tokens=48", "batch_size=4"]
    return {"dpo": pairwise, "modpo": pairwise + ["margin_objectives=[harmlessness,honesty]", "weights=[0.4,0.4,0.2]"],
            "bond": online + ["variant=jbond"], "warp": online + ["num_runs=2", "samples_per_prompt=4",
                                                                   "eta_grid=[]"]}[method] + common


def warp_merge_step(run_dir: Path, log: Path, policy_bytes: int) -> dict[str, Any] | None:
    """The merge step of a finished WARP run, re-run on its outputs in a child: peak above its pre-merge RSS."""
    result = log.with_suffix(".json")
    gb, wall, rc = peak_rss([sys.executable, "-c", MERGE_STEP, str(run_dir), str(result)], log)
    if rc != 0:
        return None
    measured = json.loads(result.read_text())
    above = (measured["peak"] - measured["rss_before"]) / 1e9
    return {"merge_rss_before_gb": measured["rss_before"] / 1e9, "merge_peak_gb": measured["peak"] / 1e9,
            "merge_above_before_gb": above, "merge_x_policy_weights": above * 1e9 / policy_bytes,
            "merge_child_peak_gb": gb, "merge_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_memory"))
    parser.add_argument("--data", type=Path, default=Path("runs/real"), help="benchmarks/train_real_data.py output")
    parser.add_argument("--methods", default="dpo,modpo,bond,warp")
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--results", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (full fine-tunes are large)")
    parser.add_argument("--merge-only", action="store_true",
                        help="train nothing: measure WARP's merge step on the run folders a --keep run left in --out")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "paretoalign")
    args.out.mkdir(parents=True, exist_ok=True)
    info = args.out / "load_only.json"
    base_gb, base_s, rc = peak_rss([sys.executable, "-c", LOAD_ONLY, str(info)], args.out / "load_only.log")
    if rc != 0:
        raise SystemExit(f"the load-only baseline failed (see {args.out / 'load_only.log'})")
    policy_bytes = json.loads(info.read_text())["policy_weight_bytes"]
    print(f"baseline (load policy + RM only): peak RSS {base_gb:.2f} GB, {base_s:.1f} s; one policy's weights "
          f"{policy_bytes / 1e9:.3f} GB")
    rows: list[dict[str, Any]] = [{"method": "load-only", "mode": "-", "peak_rss_gb": base_gb,
                                   "ratio_to_baseline": 1.0, "wall_s": base_s, "policy_weight_bytes": policy_bytes}]
    if not args.merge_only:
        print(f"{'method':8s} {'mode':5s} {'peak RSS GB':>11s} {'x baseline':>10s} {'wall s':>7s}")
    warp_lines = []
    for method in args.methods.split(","):
        for mode in args.modes.split(","):
            run_dir = args.out / f"{method}-{mode}"
            if args.merge_only:
                merge = warp_merge_step(run_dir, args.out / f"warp-{mode}-merge.log", policy_bytes)
                if merge is not None:
                    rows.append({"method": method, "mode": mode, "merge_only": True, **merge})
                    warp_lines.append(f"warp {mode}: merge step peak {merge['merge_above_before_gb']:.2f} GB above "
                                      f"its pre-merge RSS ({merge['merge_x_policy_weights']:.2f}x one policy's "
                                      "weights)")
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [exe, method, "--output-dir", str(run_dir), f"lora={'true' if mode == 'lora' else 'false'}",
                   *method_args(method, args.data)]
            gb, wall, rc = peak_rss(cmd, args.out / f"{method}-{mode}.log")
            if rc != 0:
                print(f"{method:8s} {mode:5s} FAILED (exit {rc}; see {args.out / f'{method}-{mode}.log'})")
                continue
            row = {"method": method, "mode": mode, "peak_rss_gb": gb, "ratio_to_baseline": gb / base_gb,
                   "wall_s": wall}
            print(f"{method:8s} {mode:5s} {gb:11.2f} {gb / base_gb:10.2f} {wall:7.1f}", flush=True)
            if method == "warp":
                above = gb - base_gb
                row.update({"above_baseline_gb": above, "above_baseline_x_policy_weights": above * 1e9 / policy_bytes})
                merge = warp_merge_step(run_dir, args.out / f"warp-{mode}-merge.log", policy_bytes)
                line = (f"warp {mode}: whole run {above:.2f} GB above the baseline "
                        f"({above * 1e9 / policy_bytes:.1f}x one policy's weights)")
                if merge is None:
                    line += f"; merge step FAILED (see {args.out / f'warp-{mode}-merge.log'})"
                else:
                    row.update(merge)
                    line += (f"; merge step peak {merge['merge_above_before_gb']:.2f} GB above its pre-merge RSS "
                             f"({merge['merge_x_policy_weights']:.2f}x one policy's weights, "
                             f"{merge['merge_wall_s']:.0f} s incl. loading)")
                warp_lines.append(line)
            rows.append(row)
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)  # full fine-tune checkpoints are large
    for line in warp_lines:
        print(line)
    record = {"rows": rows, "command": " ".join(sys.argv)}
    write_json_atomic(args.out / "memory.json", record)
    if args.results is not None:
        write_json_atomic(args.results, record)


if __name__ == "__main__":
    main()
