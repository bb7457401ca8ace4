#!/usr/bin/env python3
"""Build the small RewardBench-format test fixtures in tests/fixtures/rewardbench/ from the shared data.

Only MIT / Apache-2.0 sources are read: Anthropic HH-RLHF test splits (MIT), LLMBar (MIT), BIG-bench HHH alignment
(Apache-2.0) and the OpenAssistant en_100 ranked trees (Apache-2.0). Rows are a seeded sample (seed 0) of short,
single-turn items; nothing is edited except that HH's "\\n\\nHuman: ...\\n\\nAssistant:" prompt is reduced to the
human turn. The fixtures test the readers and the aggregation; their numbers are not RewardBench numbers.

rewardbench_v1.jsonl (RewardBench v1 rows {id, prompt, chosen, rejected, subset, source_id}), subset <- source:

- llmbar-natural <- LLMBar Natural; llmbar-adver-neighbor / -GPTInst / -GPTOut / -manual <- LLMBar Adversarial
  Neighbor / GPTInst / GPTOut / Manual: the data RewardBench's own Chat Hard llmbar-* subsets come from.
- alpacaeval-easy (stand-in) <- HH-RLHF helpful-base: helpful chat where the chosen reply is the better one.
- alpacaeval-hard (stand-in) <- OASST sibling replies ranked 0 (chosen) and 1 (rejected): close-quality chat.
- refusals-dangerous (stand-in) <- HH-RLHF harmless-base: harmful requests, the chosen reply the more harmless.
- donotanswer (stand-in) <- HHH harmless: requests a model should decline, the chosen reply declining.
- anthropic_hhh <- HHH honest: RewardBench's name for its HHH "prior set", which is in none of its four sections,
  so the fixture has a subset reported but left out of the sections. No Reasoning data (no code or math source).

rewardbench_v2.jsonl (RewardBench 2 rows {id, prompt, chosen: [...], rejected: [...], num_correct, num_incorrect,
total_completions, subset, source_id}), subset <- source:

- Focus (stand-in) <- OASST single-turn prompts with exactly four ranked replies: rank 0 chosen, ranks 1-3
  rejected (best-of-4, as in RewardBench 2).
- Precise IF (stand-in) <- LLMBar CaseStudy Constraint (instructions with explicit constraints); best-of-2.
- Safety (stand-in) <- HH-RLHF harmless-base; best-of-2.
- Factuality (stand-in) <- HHH honest; best-of-2.
- Ties <- short factual questions written for this fixture (facts, no source text): for each number n a
  "ref:n" prompt with one correct answer and a "tied:n" prompt with several equally correct answers, each with
  incorrect answers, in RewardBench 2's Ties layout. No Math data.

    python scripts/build_rewardbench_fixtures.py [--shared ../shared/data] [--out tests/fixtures/rewardbench]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from paretoalign.atomic_io import write_text_atomic  # noqa: E402

MAX_CHARS = 700
"""Longest prompt or reply kept (keeps the fixtures small and fast to embed)."""

V1_PLAN = [  # (RewardBench subset, source, source subset, rows)
    ("llmbar-natural", "llmbar", "LLMBar/Natural", 4),
    ("llmbar-adver-neighbor", "llmbar", "LLMBar/Adversarial/Neighbor", 4),
    ("llmbar-adver-GPTInst", "llmbar", "LLMBar/Adversarial/GPTInst", 4),
    ("llmbar-adver-GPTOut", "llmbar", "LLMBar/Adversarial/GPTOut", 3),
    ("llmbar-adver-manual", "llmbar", "LLMBar/Adversarial/Manual", 3),
    ("alpacaeval-easy", "hh", "helpful-base", 4),
    ("alpacaeval-hard", "oasst_pairs", None, 4),
    ("refusals-dangerous", "hh", "harmless-base", 4),
    ("donotanswer", "hhh", "harmless", 4),
    ("anthropic_hhh", "hhh", "honest", 3),
]
V2_PLAN = [  # (RewardBench 2 subset, source, source subset, rows)
    ("Focus", "oasst_best_of_4", None, 5),
    ("Precise IF", "llmbar", "CaseStudy/Constraint", 5),
    ("Safety", "hh", "harmless-base", 5),
    ("Factuality", "hhh", "honest", 5),
]
TIES = [  # n, (reference question, its answer, wrong answers), (tied question, correct answers, wrong answers)
    (0, ("What is the smallest prime number?", ["2"], ["1", "0", "9"]),
     ("Name a prime number smaller than 10.", ["2", "3", "5", "7"], ["4", "6", "8", "9"])),
    (1, ("What is the capital of France?", ["Paris."], ["Lyon.", "Berlin.", "Madrid."]),
     ("Name a country that shares a land border with France.", ["Spain.", "Germany.", "Belgium.", "Italy."],
      ["Portugal.", "Poland.", "Japan."])),
    (2, ("Which colour do you get by mixing blue and yellow paint?", ["Green."], ["Purple.", "Orange.", "Red."]),
     ("Name one of the three traditional primary colours of paint.", ["Red.", "Yellow.", "Blue."],
      ["Green.", "Purple.", "Orange."])),
]


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def short(*texts: str) -> bool:
    """Whether every text is non-empty and at most MAX_CHARS long."""
    return all(isinstance(t, str) and t.strip() and len(t) <= MAX_CHARS for t in texts)


def hh_single_turn(row: dict) -> str | None:
    """The human turn of a single-turn HH prompt "\\n\\nHuman: X\\n\\nAssistant:", else None."""
    text = row["prompt"]
    if text.count("Human:") != 1 or text.count("Assistant:") != 1:
        return None
    head, _, tail = text.partition("\n\nAssistant:")
    if tail.strip() or not head.startswith("\n\nHuman: "):
        return None
    return head[len("\n\nHuman: "):].strip()


def candidate_pairs(shared: Path, source: str, subset: str | None) -> list[dict]:
    """Short single-turn {source_id, prompt, chosen, rejected} candidates of one source (subset), in file order."""
    out = []
    if source == "llmbar":
        for r in read_jsonl(shared / "llmbar" / "llmbar_all.jsonl"):
            if r["subset"] == subset and short(r["prompt"], r["chosen"], r["rejected"]):
                out.append({"source_id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"],
                            "rejected": r["rejected"]})
    elif source == "hh":
        for r in read_jsonl(shared / "hh_rlhf" / "hh_rlhf_test.jsonl"):
            prompt = hh_single_turn(r) if r["subset"] == subset else None
            if prompt and short(prompt, r["chosen"], r["rejected"]) and r["chosen"] != r["rejected"]:
                out.append({"source_id": r["id"], "prompt": prompt, "chosen": r["chosen"], "rejected": r["rejected"]})
    elif source == "hhh":
        for r in read_jsonl(shared / "hhh_alignment" / "hhh_alignment_pairs.jsonl"):
            if r["subset"] == subset and short(r["prompt"], r["chosen"], r["rejected"]):
                out.append({"source_id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"],
                            "rejected": r["rejected"]})
    elif source == "oasst_pairs":
        for r in read_jsonl(shared / "oasst_en100_ranked" / "oasst_en100_pairs_from_ranks.jsonl"):
            if (len(r["messages"]) == 1 and not r.get("synthetic") and r["chosen_rank"] == 0
                    and r["rejected_rank"] == 1 and short(r["prompt"], r["chosen"], r["rejected"])):
                out.append({"source_id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"],
                            "rejected": r["rejected"]})
    else:
        raise ValueError(f"unknown source {source!r}")
    return out


def oasst_best_of_4(shared: Path) -> list[dict]:
    """Single-turn OASST prompts with exactly four ranked replies: {source_id, prompt, chosen: [rank 0],
    rejected: [ranks 1-3]}, in file order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in read_jsonl(shared / "oasst_en100_ranked" / "oasst_en100_ranked_replies.jsonl"):
        if len(r["messages"]) == 1 and not r.get("synthetic"):
            groups[r["messages"][0]["content"]].append(r)
    out = []
    for prompt, replies in groups.items():
        replies = sorted(replies, key=lambda r: r["rank"])
        if [r["rank"] for r in replies] == [0, 1, 2, 3] and short(prompt, *(r["response"] for r in replies)):
            out.append({"source_id": replies[0]["tree_id"], "prompt": prompt, "chosen": [replies[0]["response"]],
                        "rejected": [r["response"] for r in replies[1:]]})
    return out


def pick(candidates: list[dict], n: int, rng: random.Random, what: str) -> list[dict]:
    """A seeded sample of `n` candidates, kept in file order."""
    if len(candidates) < n:
        raise SystemExit(f"only {len(candidates)} usable rows for {what}, need {n}")
    keep = sorted(rng.sample(range(len(candidates)), n))
    return [candidates[i] for i in keep]


def build_v1(shared: Path, rng: random.Random) -> list[dict]:
    """The RewardBench v1 fixture rows."""
    rows = []
    for subset, source, source_subset, n in V1_PLAN:
        for c in pick(candidate_pairs(shared, source, source_subset), n, rng, subset):
            rows.append({"id": len(rows), "prompt": c["prompt"], "chosen": c["chosen"], "rejected": c["rejected"],
                         "subset": subset, "source_id": c["source_id"]})
    return rows


def v2_row(row_id: str, prompt: str, chosen: list[str], rejected: list[str], subset: str, source_id: str) -> dict:
    """One RewardBench 2 row with its count fields."""
    return {"id": row_id, "prompt": prompt, "chosen": chosen, "rejected": rejected, "num_correct": len(chosen),
            "num_incorrect": len(rejected), "total_completions": len(chosen) + len(rejected), "subset": subset,
            "source_id": source_id}


def build_v2(shared: Path, rng: random.Random) -> list[dict]:
    """The RewardBench 2 fixture rows."""
    rows = []
    for subset, source, source_subset, n in V2_PLAN:
        if source == "oasst_best_of_4":
            candidates = oasst_best_of_4(shared)
        else:
            candidates = [{**c, "chosen": [c["chosen"]], "rejected": [c["rejected"]]}
                          for c in candidate_pairs(shared, source, source_subset)]
        for c in pick(candidates, n, rng, subset):
            rows.append(v2_row(str(len(rows)), c["prompt"], c["chosen"], c["rejected"], subset, c["source_id"]))
    for n, (ref_q, ref_ok, ref_bad), (tied_q, tied_ok, tied_bad) in TIES:
        rows.append(v2_row(f"ref:{n}", ref_q, ref_ok, ref_bad, "Ties", "written for this fixture"))
        rows.append(v2_row(f"tied:{n}", tied_q, tied_ok, tied_bad, "Ties", "written for this fixture"))
    return rows


def jsonl(rows: list[dict]) -> str:
    """Rows as JSON lines."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    """Build both fixture files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "rewardbench")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    v1, v2 = build_v1(args.shared, rng), build_v2(args.shared, rng)
    write_text_atomic(args.out / "rewardbench_v1.jsonl", jsonl(v1))
    write_text_atomic(args.out / "rewardbench_v2.jsonl", jsonl(v2))
    print(f"wrote {len(v1)} RewardBench rows and {len(v2)} RewardBench 2 rows to {args.out}")


if __name__ == "__main__":
    main()
