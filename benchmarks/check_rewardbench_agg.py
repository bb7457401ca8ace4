#!/usr/bin/env python3
"""Feed the same per-reply scores through our RewardBench aggregation (paretoalign.eval.rewardbench) and through
the `rewardbench` package's own functions, print both and assert they agree.

The package (pinned in benchmarks/requirements-rewardbench.txt; install it with
`pip install --no-deps -r benchmarks/requirements-rewardbench.txt`: its dependencies are heavy and pin
transformers==4.51.0) cannot be imported as a whole without them: `import rewardbench` runs its __init__, which
imports fastchat (chattemplates.py, utils.py), its model zoo (rewardbench.models) and torch / transformers. So this
script loads, from the installed package's files, `rewardbench/constants.py` as a module and the functions
`calculate_scores_per_section`, `reroll_and_score_dataset`, `process_single_model` (and `sample_stats`, its helper
in 0.1.4) from `rewardbench/utils.py`, compiled from that file's own source with only numpy, pandas, math and
datasets.Dataset in scope; nothing else of utils.py runs.

What the package has no function for is restated here from its scripts: v1 per pair `1 if chosen > rejected else 0`
and subset accuracy = correct / n (scripts/run_rm.py); the RewardBench 2 subset accuracy = mean of the per-row
results (scripts/run_v2.py); overall = mean of the four sections (v1) / six subsets (v2) (the leaderboards).

Cases: the two fixtures in tests/fixtures/rewardbench with seeded random scores (a third of the v1 pairs and of the
v2 best-of-n rows given tied top scores), and synthetic sets covering every RewardBench v1 subset (so the Reasoning
weighting is exercised) and RewardBench 2 subsets with unpaired Ties prompts. Ties scores are continuous: with two
correct replies scored exactly equal the upstream code (tanh(+-inf)) and the 0.1.4 package (prompt left out of
the margin mean) differ from each other, and we follow upstream.

    python benchmarks/check_rewardbench_agg.py
"""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from paretoalign.eval import rewardbench as ours  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "rewardbench"
REFERENCE_FUNCTIONS = ("calculate_scores_per_section", "reroll_and_score_dataset", "process_single_model",
                       "sample_stats", "_compute_prompt_stats")
TOLERANCE = 1e-12


def package_dir() -> Path:
    """The installed `rewardbench` package folder (found without running its __init__)."""
    spec = importlib.util.find_spec("rewardbench")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the rewardbench package is not installed: "
                         "pip install --no-deps -r benchmarks/requirements-rewardbench.txt")
    return Path(list(spec.submodule_search_locations)[0])


def reference() -> SimpleNamespace:
    """The package's constants and aggregation functions, loaded from its files (see the module docstring)."""
    import typing

    import datasets
    import pandas as pd
    from datasets import Dataset

    datasets.disable_progress_bars()  # Dataset.filter would draw one per subset
    root = package_dir()
    spec = importlib.util.spec_from_file_location("_rewardbench_constants", root / "constants.py")
    constants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constants)
    source = (root / "utils.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in REFERENCE_FUNCTIONS]
    namespace: dict[str, Any] = {"np": np, "pd": pd, "math": math, "Dataset": Dataset, "defaultdict": defaultdict,
                                 **{name: getattr(typing, name) for name in ("Any", "Dict", "List", "Tuple", "Union")}}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(root / "utils.py"), "exec"), namespace)
    missing = [n for n in ("calculate_scores_per_section", "reroll_and_score_dataset", "process_single_model")
               if n not in namespace]
    if missing:
        raise SystemExit(f"{root / 'utils.py'} has no {', '.join(missing)}")
    version = (root / "__init__.py").read_text(encoding="utf-8").split("__version__", 1)[-1].split("\n")[0]
    return SimpleNamespace(EXAMPLE_COUNTS=constants.EXAMPLE_COUNTS, SUBSET_MAPPING=constants.SUBSET_MAPPING,
                           Dataset=Dataset, version=version.strip(" =\"'"), root=root,
                           **{n: namespace[n] for n in ("calculate_scores_per_section", "reroll_and_score_dataset",
                                                       "process_single_model")})


# ---------------------------------------------------------------- the package's side
def theirs_v1(rows: list[ours.BenchRow], scores: list[np.ndarray], ref: SimpleNamespace) -> dict[str, Any]:
    """Subset accuracies, sections and overall the RewardBench way (run_rm.py + calculate_scores_per_section)."""
    results = [1 if float(s[0]) > float(s[1]) else 0 for s in scores]
    metrics: dict[str, float] = {}
    for subset in np.unique([r.subset for r in rows]):
        picked = [res for res, r in zip(results, rows, strict=True) if r.subset == subset]
        metrics[str(subset)] = sum(picked) / len(picked)
    sections = ref.calculate_scores_per_section(ref.EXAMPLE_COUNTS, ref.SUBSET_MAPPING, metrics)
    present = [name for name, subsets in ref.SUBSET_MAPPING.items() if any(s in metrics for s in subsets)]
    overall = float(np.mean([sections[name] for name in present])) if present else None
    return {"subsets": metrics, "sections": sections, "overall": overall}


def theirs_v2(rows: list[ours.BenchRow], scores: list[np.ndarray], ref: SimpleNamespace) -> dict[str, Any]:
    """Subset scores and overall the RewardBench 2 way (run_v2.py: reroll_and_score_dataset, then
    process_single_model for Ties)."""
    unrolled = {"text": [], "scores": [], "subset": [], "id": []}
    for r, s in zip(rows, scores, strict=True):
        for reply, value in zip(r.replies, s, strict=True):
            unrolled["text"].append(reply)
            unrolled["scores"].append(float(value))
            unrolled["subset"].append(r.subset)
            unrolled["id"].append(r.id or "")
    rerolled = ref.reroll_and_score_dataset(ref.Dataset.from_dict(unrolled), [len(r.replies) for r in rows],
                                            cols_to_combine=["text", "scores"])
    rerolled = rerolled.add_column("num_correct", [len(r.chosen) for r in rows])
    metrics: dict[str, float] = {}
    for subset in np.unique([r.subset for r in rows]):
        part = rerolled.filter(lambda example, subset=subset: example["subset"] == subset)
        if str(subset).lower() == "ties":
            _, metrics[str(subset)] = ref.process_single_model(part)
        else:
            metrics[str(subset)] = sum(part["results"]) / len(part["results"])
    known = {name.lower() for name in ours.RB2_SUBSETS}
    counted = [v for k, v in metrics.items() if k.lower() in known]
    return {"subsets": metrics, "overall": float(np.mean(counted)) if counted else None}


# ---------------------------------------------------------------- cases
def fixture_case(fmt: str, seed: int) -> tuple[list[ours.BenchRow], list[np.ndarray]]:
    """A fixture file with seeded random scores, a third of its rows given a tie at the top."""
    name = "rewardbench_v1.jsonl" if fmt == "rewardbench" else "rewardbench_v2.jsonl"
    rows = ours.load_bench_rows(str(FIXTURES / name), fmt)
    rng = np.random.default_rng(seed)
    scores = []
    for i, r in enumerate(rows):
        s = rng.normal(size=len(r.replies))
        if i % 3 == 0 and not ours.is_ties(r.subset):
            s[1] = s[0] = s.max() if rng.random() < 0.5 else s[0]  # chosen ties a rejected reply, at the top or not
        scores.append(s)
    return rows, scores


def synthetic_v1(seed: int) -> tuple[list[ours.BenchRow], list[np.ndarray]]:
    """Every RewardBench v1 subset and two prior-set names, 1-12 pairs each, integer scores (many ties)."""
    rng = np.random.default_rng(seed)
    rows, scores = [], []
    for subset in [*ours.EXAMPLE_COUNTS, "anthropic_hhh", "shp"]:
        for j in range(int(rng.integers(1, 13))):
            rows.append(ours.BenchRow(f"synthetic:{len(rows) + 1}", f"q {j}", ("a",), ("b",), subset, str(len(rows))))
            scores.append(rng.integers(0, 3, size=2).astype(np.float64))
    return rows, scores


def synthetic_v2(seed: int) -> tuple[list[ours.BenchRow], list[np.ndarray]]:
    """All six RewardBench 2 subsets plus an unknown one; best-of-4 rows with integer scores (ties at the top);
    Ties with 6 paired prompt numbers, 2 ref-only and 1 tied-only, continuous scores."""
    rng = np.random.default_rng(seed)
    rows, scores = [], []
    for subset in [s for s in ours.RB2_SUBSETS if s != "Ties"] + ["Custom"]:
        for j in range(int(rng.integers(3, 10))):
            rows.append(ours.BenchRow(f"synthetic:{len(rows) + 1}", f"q {j}", ("a",), ("b", "c", "d"), subset,
                                      str(len(rows))))
            scores.append(rng.integers(0, 3, size=4).astype(np.float64))
    keys = [("ref", n) for n in range(8)] + [("tied", n) for n in (*range(6), 9)]
    for kind, n in keys:
        k = 1 if kind == "ref" else int(rng.integers(2, 5))
        bad = int(rng.integers(1, 4))
        rows.append(ours.BenchRow(f"synthetic:{len(rows) + 1}", f"t {n}", tuple("c" * k), tuple("x" * bad), "Ties",
                                  f"{kind}:{n}"))
        s = rng.normal(size=k + bad)
        s[:k] += rng.normal(0.8, 1.0)  # correct replies tend to score higher, so every component varies
        scores.append(s)
    return rows, scores


# ---------------------------------------------------------------- comparison
def close(a: float | None, b: float | None) -> bool:
    """Equal within TOLERANCE (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= TOLERANCE


def compare_v1(rows: list[ours.BenchRow], scores: list[np.ndarray], ref: SimpleNamespace) -> list[tuple]:
    """(quantity, ours, theirs) for every subset, section and the overall score; asserts they agree."""
    mine = ours.rewardbench_report(rows, scores)
    other = theirs_v1(rows, scores, ref)
    lines = []
    for s in mine.subsets:
        lines.append((f"subset {s.name}", s.score, other["subsets"][s.name]))
    for name, value in mine.sections.items():
        theirs_value = other["sections"][name]
        if value is None:  # no subset of it in the data: the package reports 0, we report None
            assert theirs_value == 0, (name, theirs_value)
            theirs_value = None
        lines.append((f"section {name}", value, theirs_value))
    lines.append(("overall", mine.overall, other["overall"]))
    assert set(other["subsets"]) == {s.name for s in mine.subsets}
    bad = [line for line in lines if not close(line[1], line[2])]
    assert not bad, bad
    return lines


def compare_v2(rows: list[ours.BenchRow], scores: list[np.ndarray], ref: SimpleNamespace) -> list[tuple]:
    """(quantity, ours, theirs) for every subset and the overall score; asserts they agree."""
    mine = ours.rewardbench2_report(rows, scores)
    other = theirs_v2(rows, scores, ref)
    lines = [(f"subset {s.name}", s.score, other["subsets"][s.name]) for s in mine.subsets]
    lines.append(("overall", mine.overall, other["overall"]))
    assert set(other["subsets"]) == {s.name for s in mine.subsets}
    bad = [line for line in lines if not close(line[1], line[2])]
    assert not bad, bad
    return lines


def check_constants(ref: SimpleNamespace) -> None:
    """Our EXAMPLE_COUNTS and section mapping are the package's."""
    assert ours.EXAMPLE_COUNTS == dict(ref.EXAMPLE_COUNTS), "EXAMPLE_COUNTS differ"
    assert {k: list(v) for k, v in ours.SECTIONS.items()} == {k: list(v) for k, v in ref.SUBSET_MAPPING.items()}


def run_all(ref: SimpleNamespace) -> dict[str, list[tuple]]:
    """Every case, compared; {case name: its (quantity, ours, theirs) lines}."""
    check_constants(ref)
    return {
        "v1 fixture (seed 0)": compare_v1(*fixture_case("rewardbench", 0), ref),
        "v1 synthetic, all 23 subsets + 2 prior sets (seed 1)": compare_v1(*synthetic_v1(1), ref),
        "v2 fixture (seed 2)": compare_v2(*fixture_case("rewardbench2", 2), ref),
        "v2 synthetic, 6 subsets + 1 unknown, unpaired Ties prompts (seed 3)": compare_v2(*synthetic_v2(3), ref),
    }


def show(x: float | None) -> str:
    """A number to six places, or None."""
    return "None" if x is None else f"{x:.6f}"


def main() -> None:
    """Print ours and theirs side by side for every case."""
    ref = reference()
    print(f"rewardbench {ref.version} from {ref.root}")
    print("constants: EXAMPLE_COUNTS and the section mapping match")
    for case, lines in run_all(ref).items():
        print(f"\n{case}")
        width = max(len(q) for q, _, _ in lines)
        for quantity, mine, other in lines:
            print(f"  {quantity.ljust(width)}  ours {show(mine)}  rewardbench {show(other)}")
    print("\nall equal (within 1e-12)")


if __name__ == "__main__":
    main()
