"""Slowdown next to a competing process: Best-of-8 generation and SmolLM2 embedding, alone and contended.

Each measurement runs in a fresh worker process (the OpenMP wait policy is read when torch loads), in two modes:

- ``today``: what paretoalign did before its thread control: torch's defaults (all cores, spinning OpenMP
  threads), i.e. ``PARETOALIGN_THREADS=torch`` with no ``OMP_WAIT_POLICY``;
- ``new``: the default now (``--threads auto``): threads from the CPUs available, a passive OpenMP wait policy
  when the machine is already busy at start-up, and the load governor of ``paretoalign.threads``.

Three conditions, in the same run: alone; next to a plain torch matmul loop (512×512 fp32, torch's defaults, a
stand-in for any other CPU-heavy program); next to a second paretoalign job (the same workload in a loop, in
the same mode). The competitor starts first and is warm before the timed worker begins. Each worker loads the
model, warms up, then times the workload ``--repeats`` times and reports the median.

Prints per workload and mode the median seconds per condition and the slowdown (contended / alone; a fair
share of 2 cores between two busy processes is 2×; the target is ≤ 2.5×), and ``new`` alone vs ``today``
alone (target ≤ 1.0, i.e. no slower). Writes every number to ``benchmarks/results/contention.json``.

Usage: .venv/bin/python benchmarks/bench_contention.py [--repeats 3] [--workloads bon,embed]
(about 15–25 minutes on 2 cores; today's contended runs are the slow part).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import paretoalign

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "contention.json"
PROMPT = [{"role": "user", "content": "How do I boil an egg? Answer in two or three sentences."}]
MODES = ("today", "new")
CONDITIONS = ("alone", "matmul", "paretoalign")


def mode_env(mode: str) -> dict[str, str]:
    """The environment of a worker in `mode` (today: torch's defaults; new: paretoalign's defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PARETOALIGN_THREADS",
                                                             "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if mode == "today":
        env["PARETOALIGN_THREADS"] = "torch"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


# ---------------------------------------------------------------- workers (run in their own processes)
def _workload(name: str, args: argparse.Namespace):
    """Load the model; return a zero-argument function that runs the workload once and returns a digest."""
    if name == "bon":
        from paretoalign.inference.engine import CandidateGenerator
        from paretoalign.inference.policy import Policy
        from paretoalign.inference.sampling_params import SamplingParams

        policy = Policy.from_pretrained("smollm2")
        ids = policy.prompt_ids(PROMPT)
        params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
        CandidateGenerator(policy, [ids], 2, SamplingParams(max_new_tokens=4)).run()  # warm-up

        def run() -> str:
            cands = CandidateGenerator(policy, [ids], args.n, params).run()[0]
            return hashlib.sha1(json.dumps([c.token_ids for c in cands]).encode()).hexdigest()[:12]
        return run
    if name == "embed":
        from bench_embed import DEFAULT_DATA, load_rows

        from paretoalign.embed.causal_lm import CausalLMBackbone

        data = args.data if args.data.is_absolute() else HERE.parent / args.data
        prompts, responses = load_rows(data if data.is_file() else DEFAULT_DATA, args.rows, 0)
        prompts, responses = prompts[:args.rows], responses[:args.rows]
        backbone = CausalLMBackbone("smollm2")
        backbone.embed(prompts[:2], responses[:2], batch_size=2)  # warm-up

        def run() -> str:
            feats = backbone.embed(prompts, responses, batch_size=8)
            return hashlib.sha1(feats.response.round(3).tobytes()).hexdigest()[:12]
        return run
    raise SystemExit(f"unknown workload {name!r}")


def worker(args: argparse.Namespace) -> int:
    """Time the workload --repeats times (or, with --loop, run it until killed, as a competitor)."""
    paretoalign.configure_threads()  # as the CLI does, before torch loads: PARETOALIGN_THREADS or auto
    import torch

    run = _workload(args.worker, args)
    if args.loop:
        print("ready", flush=True)
        while True:
            run()
    times, digests = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        digests.append(run())
        times.append(time.perf_counter() - t0)
    from paretoalign.threads import governor

    gov = governor()
    print(json.dumps({"times": times, "median_s": statistics.median(times), "digests": digests,
                      "torch_threads_end": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "governor_changes": gov.changes if gov else None}), flush=True)
    return 0


def burn() -> int:
    """The matmul competitor: torch's defaults, forever."""
    import torch

    a = torch.randn(512, 512)
    print("ready", flush=True)
    while True:
        a @ a


# ---------------------------------------------------------------- driver
def start_competitor(kind: str, workload: str, mode: str, args: argparse.Namespace) -> subprocess.Popen | None:
    """Start the competitor of a condition and wait until it is warm."""
    if kind == "alone":
        return None
    cmd = [sys.executable, __file__, "--burn"] if kind == "matmul" else \
        [sys.executable, __file__, "--worker", workload, "--loop", *_workload_flags(args)]
    env = mode_env("today") if kind == "matmul" else mode_env(mode)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise SystemExit(f"competitor {kind} did not start")
    time.sleep(2.0)
    return proc


def _workload_flags(args: argparse.Namespace) -> list[str]:
    return ["--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--rows", str(args.rows),
            "--data", str(args.data), "--repeats", str(args.repeats)]


def measure(workload: str, mode: str, condition: str, args: argparse.Namespace) -> dict:
    """One timed worker in `mode` under `condition`."""
    competitor = start_competitor(condition, workload, mode, args)
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", workload, *_workload_flags(args)],
                             env=mode_env(mode), capture_output=True, text=True, check=False)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if out.returncode != 0:
        raise SystemExit(f"worker {workload}/{mode}/{condition} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="bon,embed")
    ap.add_argument("--modes", default="today,new")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=8, help="Best-of-N candidates (default 8)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--rows", type=int, default=48, help="rows to embed (default 48)")
    ap.add_argument("--data", type=Path, default=Path("..") / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--burn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.burn:
        return burn()
    if args.worker:
        return worker(args)

    from paretoalign.threads import available_cpus

    workloads = args.workloads.split(",")
    modes = args.modes.split(",")
    conditions = args.conditions.split(",")
    print(f"{available_cpus()} CPUs available; Best-of-{args.n} x {args.max_new_tokens} tokens (SmolLM2), "
          f"embedding {args.rows} HH rows (SmolLM2); median of {args.repeats}", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "loop", "burn")}
    for key in ("output", "data"):  # no machine-specific paths in the results
        path = Path(settings[key])
        if path.is_absolute() and path.resolve().is_relative_to(HERE.parent):
            settings[key] = path.resolve().relative_to(HERE.parent)
    results: dict = {"settings": {k: str(v) for k, v in settings.items()},
                     "cpus": available_cpus(), "runs": {}}
    t_start = time.perf_counter()
    for workload in workloads:
        for mode in modes:
            for condition in conditions:
                r = measure(workload, mode, condition, args)
                results["runs"][f"{workload}/{mode}/{condition}"] = r
                print(f"{workload:>6} {mode:>6} {condition:>12}: {r['median_s']:7.2f} s  (runs "
                      f"{', '.join(f'{t:.2f}' for t in r['times'])}; threads at end {r['torch_threads_end']}, "
                      f"governor changes {r['governor_changes']}, wait policy {r['wait_policy']}, "
                      f"output {sorted(set(r['digests']))})", flush=True)
    summary = {}
    print("\nslowdown = contended / alone (fair share on 2 cores: 2x; target <= 2.5x)")
    for workload in workloads:
        for mode in modes:
            alone = results["runs"].get(f"{workload}/{mode}/alone")
            if alone is None:
                continue
            for condition in conditions[1:] if conditions[0] == "alone" else conditions:
                if condition == "alone":
                    continue
                r = results["runs"][f"{workload}/{mode}/{condition}"]
                ratio = r["median_s"] / alone["median_s"]
                summary[f"{workload}/{mode}/{condition}_slowdown"] = round(ratio, 3)
                print(f"  {workload:>6} {mode:>6} next to {condition:<12} {ratio:6.2f}x")
        if f"{workload}/today/alone" in results["runs"] and f"{workload}/new/alone" in results["runs"]:
            ratio = results["runs"][f"{workload}/new/alone"]["median_s"] / \
                results["runs"][f"{workload}/today/alone"]["median_s"]
            summary[f"{workload}/new_vs_today_alone"] = round(ratio, 3)
            print(f"  {workload:>6} new alone / today alone {ratio:6.2f}x (target <= 1.0)")
    results["summary"] = summary
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.output)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
