"""Summary of benchmarks/train_online.sh: every point of the front with paired gains over the reference, and what
each training run cost.

Reads every OUT/report*/front.json (written by `paretoalign front`: ``report`` is the main front on the held-out
constrained prompts; ``report-maxmin`` the MaxMin comparison; other ``report-<x>`` folders are extra fronts on the
same prompts and seed, e.g. runs trained later), each run's training.json (steps, train_s) and its /usr/bin/time log
(peak RSS, wall clock). Per point: each objective's mean and its paired gain over the reference ± the standard error
over prompts (`eval.policy_eval.paired_gain`), KL, finished fraction, response tokens and, for Best-of-N and DeAL,
the tokens evaluated per prompt. Writes benchmarks/results/train_online.json (paths relative to the repo): the main
report at the top level, the others under ``reports``; a report not present in OUT keeps its section from the
previous file (runs/ is not kept between machines), and an extra report whose reference differs from the main one
(not the same prompts, seed or sampler, or fewer draws: a front without Best-of-N averages its reference over
`--samples-per-prompt` draws, with Best-of-N over max N) is flagged (``reference_matches_main``). Paired comparisons
beside the gains: MaxMin vs the pooled run, each DeAL point vs the Best-of-N of nearest tokens evaluated, and the
dynamic-weight runs (report-dyn) vs the fixed-weight seed-1 run (report-seed; same reference draws). Prints a table
per report.
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


def load_points(report: Path) -> list[FrontPoint]:
    """The FrontPoints of a front.json (JSON null -> NaN)."""
    front = json.loads((report / "front.json").read_text())
    fields = set(FrontPoint.__dataclass_fields__)
    points = [FrontPoint(**{k: (float("nan") if v is None and k in ("reward",) else v) for k, v in p.items()
                            if k in fields}) for p in front["points"]]
    for p in points:
        p.per_prompt_reward = [float("nan") if v is None else v for v in p.per_prompt_reward]
        p.per_prompt_objectives = {k: [float("nan") if v is None else v for v in vs]
                                   for k, vs in p.per_prompt_objectives.items()}
    return points


def summarize(out: Path, report: Path) -> dict:
    """One report's section: every point with paired gains over its reference and each run's cost."""
    points = load_points(report)
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
        elif p.kind == "deal":
            row["deal"] = p.meta.get("deal")
            row["tokens_evaluated_per_prompt"] = p.meta.get("tokens_evaluated_per_prompt")
            row["reward_calls_per_prompt"] = p.meta.get("reward_calls_per_prompt")
            row["wall_s"] = p.meta.get("wall_s")
        elif p.kind == "best_of_n":  # N draws of the reference's mean length (what sampling them cost)
            row["tokens_evaluated_per_prompt"] = (p.n or 0) * ref.mean_response_tokens
        rows.append(row)
    rel = report.resolve()
    return {"report": str(rel.relative_to(REPO)) if rel.is_relative_to(REPO) else f"OUT/{report.name}",
            "num_prompts": ref.num_prompts, "objectives": names, "points": rows}


def versus(report: Path, name: str, baseline: str) -> dict:
    """Paired gain of one point over another on every objective (± s.e. over prompts), e.g. MaxMin vs pooled."""
    points = {p.name: p for p in load_points(report)}
    if name not in points or baseline not in points:
        return {}
    return compare(points[name], points[baseline])


def compare(first: FrontPoint, second: FrontPoint) -> dict:
    """Paired gain of `first` over `second` on each objective, with its s.e. over prompts."""
    result: dict = {"point": first.name, "baseline": second.name}
    for k in first.objectives:
        gain, se = paired_gain(first, second, k)
        result[k] = {"gain": gain, "se": se}
    return result


def dynamic_vs_fixed(out: Path) -> list[dict]:
    """Each report-dyn policy against report-seed's fixed-weight run, when both fronts drew the same reference."""
    dyn, seed = out / "report-dyn", out / "report-seed"
    if not ((dyn / "front.json").is_file() and (seed / "front.json").is_file()):
        return []
    a = {p.name: p for p in load_points(dyn)}
    b = {p.name: p for p in load_points(seed)}
    if a["reference"].per_prompt_objectives != b["reference"].per_prompt_objectives:
        return []  # different draws: not paired
    fixed = next(p for p in b.values() if p.kind == "policy")
    return [compare(p, fixed) for p in a.values() if p.kind == "policy"]


def deal_vs_best_of_n(report: Path, section: dict) -> list[dict]:
    """Each DeAL point against the Best-of-N point whose tokens evaluated per prompt are closest (equal compute)."""
    rows = section["points"]
    bons = [r for r in rows if r["kind"] == "best_of_n"]
    result = []
    for deal in (r for r in rows if r["kind"] == "deal"):
        if not bons or deal.get("tokens_evaluated_per_prompt") is None:
            continue
        bon = min(bons, key=lambda b: abs(b["tokens_evaluated_per_prompt"] - deal["tokens_evaluated_per_prompt"]))
        compared = versus(report, deal["name"], bon["name"])
        compared["tokens_evaluated_per_prompt"] = {"deal": deal["tokens_evaluated_per_prompt"],
                                                   "best_of_n": bon["tokens_evaluated_per_prompt"]}
        result.append(compared)
    return result


def maxmin_groups(out: Path) -> dict:
    """Which head is the minority group's (fewer users) in OUT/maxmin/h2/assignments.json."""
    path = out / "maxmin" / "h2" / "assignments.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    sizes = record["group_sizes"]
    members = {g: sorted(u for u, gg in record["assignments"].items() if gg == g) for g in record["groups"]}
    return {"group_sizes": sizes, "members": members, "minority_group": min(sizes, key=lambda g: (sizes[g], g))}


def print_section(name: str, section: dict) -> None:
    names = section["objectives"]
    print(f"== {name} ({section['num_prompts']} prompts)")
    head = f"{'point':<22}" + "".join(f"{k + ' (gain ± s.e.)':>34}" for k in names) + f"{'KL':>8}{'fin':>6}{'tok':>6}"
    print(head)
    for r in section["points"]:
        cells = "".join(f"{r[k]:>10.3f} ({r[k + '_gain']:+.3f} ± {r[k + '_gain_se'] or 0:.3f})".rjust(34)
                        for k in names)
        kl = f"{r['kl']:.3f}" + ("*" if r["kl_is_bound"] else "")
        print(f"{r['name']:<22}{cells}{kl:>8}{r['finished_fraction']:>6.2f}{r['mean_response_tokens']:>6.0f}")
    for r in section["points"]:
        if "cost" in r:
            print(f"  {r['name']}: {r['cost']}")
        if r["kind"] == "deal":
            print(f"  {r['name']}: {r['tokens_evaluated_per_prompt']:.0f} tokens evaluated / prompt, "
                  f"{r['reward_calls_per_prompt']:.0f} reward rows / prompt, {r['wall_s']:.0f} s")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "online"
    target = REPO / "benchmarks" / "results" / "train_online.json"
    previous = json.loads(target.read_text()) if target.is_file() else {}
    result = {k: v for k, v in previous.items() if k != "reports"}
    reports = dict(previous.get("reports", {}))
    if (out / "report" / "front.json").is_file():
        result.update(summarize(out, out / "report"))
    for report in sorted(out.glob("report-*")):
        if (report / "front.json").is_file():
            reports[report.name] = summarize(out, report)
    for name, section in [("report", result), *reports.items()]:
        if (out / name / "front.json").is_file():
            section["deal_vs_best_of_n"] = deal_vs_best_of_n(out / name, section) or section.get("deal_vs_best_of_n")
    if "report-dyn" in reports:
        reports["report-dyn"]["versus_fixed"] = dynamic_vs_fixed(out) or reports["report-dyn"].get("versus_fixed", [])
    main_ref = next((p for p in result.get("points", []) if p["kind"] == "reference"), None)
    for name, section in reports.items():
        if name == "report-maxmin" or main_ref is None:
            continue
        ref = next(p for p in section["points"] if p["kind"] == "reference")
        section["reference_matches_main"] = all(abs(ref[k] - main_ref[k]) < 1e-9 for k in result["objectives"])
    if "report-maxmin" in reports:
        reports["report-maxmin"]["groups"] = maxmin_groups(out) or reports["report-maxmin"].get("groups", {})
        if (out / "report-maxmin" / "front.json").is_file():
            reports["report-maxmin"]["maxmin_vs_pooled"] = versus(out / "report-maxmin", "mm-maxmin", "mm-pooled")
    result["reports"] = reports
    write_json_atomic(target, result)
    if "points" in result:
        print_section("report", result)
    for name, section in reports.items():
        print_section(name, section)
        for vs in section.get("versus_fixed") or []:
            print(f"  {vs['point']} - {vs['baseline']} (same draws): " + ", ".join(
                f"{k} {v['gain']:+.3f} ± {v['se'] or 0:.3f}" for k, v in vs.items() if isinstance(v, dict)))
        for vs in section.get("deal_vs_best_of_n") or []:
            tokens = vs["tokens_evaluated_per_prompt"]
            print(f"  {vs['point']} ({tokens['deal']:.0f} tokens) - {vs['baseline']} ({tokens['best_of_n']:.0f}): "
                  + ", ".join(f"{k} {v['gain']:+.3f} ± {v['se'] or 0:.3f}" for k, v in vs.items()
                              if isinstance(v, dict) and "gain" in v))
        if section.get("maxmin_vs_pooled"):
            vs = section["maxmin_vs_pooled"]
            print(f"  {vs['point']} - {vs['baseline']}: " + ", ".join(
                f"{k} {v['gain']:+.3f} ± {v['se'] or 0:.3f}" for k, v in vs.items() if isinstance(v, dict))
                + f" (minority: {section.get('groups', {}).get('minority_group')})")
        if "reference_matches_main" in section:
            print(f"  reference identical to the main report's: {section['reference_matches_main']}")
    print("* Best-of-N: the analytic KL bound; DeAL: KL of its deterministic answer, -log pi_ref(y*|x).")


if __name__ == "__main__":
    main()
