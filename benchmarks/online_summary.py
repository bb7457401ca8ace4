"""Summary of benchmarks/train_online.sh: every point of the front with paired gains over the reference, and what
each training run cost.

Reads OUT/report/front.json (written by `paretoalign front` on the held-out prompts), each run's training.json
(steps, train_s) and its /usr/bin/time log (peak RSS, wall clock). Per point: each objective's mean and its paired
gain over the reference ± the standard error over prompts (`eval.policy_eval.paired_gain`), KL, finished fraction
and response tokens. Writes benchmarks/results/train_online.json (paths relative to the repo) and prints a table.
Run: ``.venv/bin/python benchmarks/online_summary.py [OUT]`` (default runs/online).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paretoalign.atomic_io import write_json_atomic  # noqa: E402
from paretoalign.eval.policy_eval import FrontPoint, paired_gain  # noqa: E402


def run_cost(out: Path, name: str) -> dict:
    """Steps, training seconds, wall clock and peak RSS of one run (what its record and time log hold)."""
    cost: dict = {}
    record = out / name / "training.json"
    if record.is_file():
        stats = json.loads(record.read_text())["stats"]
        cost.update({k: stats.get(k) for k in ("steps", "optimizer_updates", "train_s") if k in stats})
    log = out / "logs" / f"{name}.log"
    if log.is_file():
        text = log.read_text(errors="replace")
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
        if rss:
            cost["peak_rss_gb"] = round(int(rss.group(1)) / 1024 ** 2, 2)
        if wall:
            parts = [float(x) for x in wall.group(1).split(":")]
            cost["wall_s"] = round(sum(v * 60 ** i for i, v in enumerate(reversed(parts))), 1)
    metrics = out / name / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        cost["train_finished_fraction_last5"] = round(sum(r.get("finished", 0) for r in rows[-5:]) / 5, 3)
    return cost


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "online"
    front = json.loads((out / "report" / "front.json").read_text())
    fields = set(FrontPoint.__dataclass_fields__)
    points = [FrontPoint(**{k: (float("nan") if v is None and k in ("reward",) else v) for k, v in p.items()
                            if k in fields}) for p in front["points"]]
    for p in points:  # JSON null -> NaN in the per-prompt lists
        p.per_prompt_reward = [float("nan") if v is None else v for v in p.per_prompt_reward]
        p.per_prompt_objectives = {k: [float("nan") if v is None else v for v in vs]
                                   for k, vs in p.per_prompt_objectives.items()}
    ref = next(p for p in points if p.kind == "reference")
    names = list(ref.objectives)
    rows = []
    for p in points:
        row = {"name": p.name, "kind": p.kind, "kl": p.kl, "kl_is_bound": p.kl_is_bound,
               "finished_fraction": p.finished_fraction, "mean_response_tokens": p.mean_response_tokens,
               "answered_fraction": p.answered_fraction, "reward": p.reward}
        for k in names:
            gain, se = paired_gain(p, ref, k) if p is not ref else (0.0, 0.0)
            row[k] = p.objectives[k]
            row[f"{k}_gain"], row[f"{k}_gain_se"] = gain, se
        if p.kind == "policy":
            row["cost"] = run_cost(out, p.name)
        rows.append(row)
    result = {"report": str((out / "report").resolve().relative_to(REPO)) if out.resolve().is_relative_to(REPO)
              else "OUT/report", "num_prompts": ref.num_prompts, "objectives": names, "points": rows}
    write_json_atomic(REPO / "benchmarks" / "results" / "train_online.json", result)
    head = f"{'point':<14}" + "".join(f"{k + ' (gain ± s.e.)':>34}" for k in names) + f"{'KL':>8}{'fin':>6}{'tok':>6}"
    print(head)
    for r in rows:
        cells = "".join(f"{r[k]:>10.3f} ({r[k + '_gain']:+.3f} ± {r[k + '_gain_se'] or 0:.3f})".rjust(34)
                        for k in names)
        kl = f"{r['kl']:.3f}" + ("*" if r["kl_is_bound"] else "")
        print(f"{r['name']:<14}{cells}{kl:>8}{r['finished_fraction']:>6.2f}{r['mean_response_tokens']:>6.0f}")
    print("* Best-of-N: the analytic KL bound. Costs:")
    for r in rows:
        if "cost" in r:
            print(f"  {r['name']}: {r['cost']}")


if __name__ == "__main__":
    main()
