"""MaxMin-RLHF's reward side on real data: do H=2 EM groups recover two annotator populations, and does the minority's
own head serve it where the pooled head does not?

Users: HH-RLHF (MIT, ../shared/data) helpful-base and harmless-base pairs on the TRAIN side of the project's split,
each subset cut into pseudo-annotators (``<subset>/<k>``, k = a hash of the pair id): --majority-users helpful-base
users and --minority-users harmless-base users, --pairs-per-user pairs each. The tags are hidden from the EM except
as user identities; it must put the helpful users in one group and the harmless ones in the other.
Held-out: TEST-side pairs of both subsets, scored by each group's head (one-hot weights) and by the pooled head
(H = 1, the same data): pairwise accuracy per subset. Writes benchmarks/results/maxmin_groups.json.
Run: ``.venv/bin/python benchmarks/maxmin_groups.py`` (MiniLM backbone, about 3 minutes on 2 cores).
``--save-dir DIR`` also keeps the two reward models (``DIR/h2``: heads group0 / group1; ``DIR/h1``: the pooled head)
and writes policy prompts for the MaxMin policy runs of ``train_online.sh``: ``DIR/prompts_train.jsonl`` (single-turn
TRAIN-side prompts of both subsets, --policy-prompts per subset) and ``DIR/prompts_eval.jsonl`` (TEST side,
--eval-prompts per subset).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paretoalign.atomic_io import write_json_atomic, write_jsonl_atomic  # noqa: E402
from paretoalign.data.hh import parse_hh_dialogue  # noqa: E402
from paretoalign.data.splits import split_of  # noqa: E402
from paretoalign.rewards.maxmin import train_maxmin_rm  # noqa: E402
from paretoalign.rewards.maxmin_config import MaxMinRMConfig  # noqa: E402

DEFAULT_HH = REPO.parent / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl"
SUBSETS = {"helpful-base": "majority", "harmless-base": "minority"}


def bucket(pair_id: str, n: int) -> int:
    return int(hashlib.sha256(pair_id.encode()).hexdigest()[:8], 16) % n


def build(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    users = {"helpful-base": args.majority_users, "harmless-base": args.minority_users}
    per_user: dict[str, int] = {}
    for line in args.data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["subset"] not in SUBSETS:
            continue
        messages = parse_hh_dialogue(row["prompt"])
        replies = (row["chosen"].strip(), row["rejected"].strip())
        if len(messages) != 1 or not all(replies) or max(map(len, replies)) > 1200 or replies[0] == replies[1]:
            continue
        pair = {"id": row["id"], "prompt": messages, "chosen": row["chosen"], "rejected": row["rejected"],
                "subset": row["subset"]}
        if split_of(messages) == "train":
            user = f"{row['subset']}/{bucket(row['id'], users[row['subset']])}"
            if per_user.get(user, 0) < args.pairs_per_user:
                per_user[user] = per_user.get(user, 0) + 1
                train.append({**pair, "user": user})
        elif sum(p["subset"] == row["subset"] for p in test) < args.test_pairs:
            test.append(pair)
    return train, test


def policy_prompts(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Single-turn prompts of both subsets on each side of the split, --policy-prompts / --eval-prompts per subset."""
    want = {"train": args.policy_prompts, "test": args.eval_prompts}
    out: dict[str, list[dict]] = {"train": [], "test": []}
    counts: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for line in args.data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["subset"] not in SUBSETS:
            continue
        messages = parse_hh_dialogue(row["prompt"])
        text = messages[0]["content"].strip() if len(messages) == 1 else ""
        if not text or len(text) > 400 or text in seen:
            continue
        side = split_of(messages)
        key = (side, row["subset"])
        if counts.get(key, 0) >= want[side]:
            continue
        seen.add(text)
        counts[key] = counts.get(key, 0) + 1
        out[side].append({"id": row["id"], "prompt": text, "subset": row["subset"]})
    return out


def accuracy(model, pairs: list[dict], weights: dict[str, float]) -> float:
    prompts = [p["prompt"] for p in pairs]
    chosen = model.score(prompts, [p["chosen"] for p in pairs], weights=weights).score
    rejected = model.score(prompts, [p["rejected"] for p in pairs], weights=weights).score
    return float(np.mean(chosen > rejected))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_HH)
    parser.add_argument("--majority-users", type=int, default=6)
    parser.add_argument("--minority-users", type=int, default=2)
    parser.add_argument("--pairs-per-user", type=int, default=60)
    parser.add_argument("--test-pairs", type=int, default=200, help="Held-out pairs per subset.")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "maxmin_groups.json")
    parser.add_argument("--save-dir", type=Path, default=None,
                        help="Keep the H=2 / H=1 models here (h2/, h1/) and write policy prompts beside them.")
    parser.add_argument("--policy-prompts", type=int, default=64, help="Train-side policy prompts per subset.")
    parser.add_argument("--eval-prompts", type=int, default=24, help="Test-side policy prompts per subset.")
    args = parser.parse_args()

    train, test = build(args)
    t0 = time.perf_counter()
    result: dict = {"train_pairs": len(train), "users": sorted({p["user"] for p in train}),
                    "test_pairs": {s: sum(p["subset"] == s for p in test) for s in SUBSETS}, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        write_jsonl_atomic(path, train)
        for h in (2, 1):
            config = MaxMinRMConfig(data=str(path), n_groups=h, backbone=args.backbone, seed=args.seed,
                                    progress=False,
                                    output_dir=str(args.save_dir / f"h{h}") if args.save_dir else None)
            model, fit, _ = train_maxmin_rm(config)
            groups = {u: int(g) for u, g in zip(fit.users, fit.assignment, strict=True)}
            run = {"assignment": groups, "iterations": fit.iterations, "converged": fit.converged,
                   "accuracy": {}}
            for g in range(h):
                name = f"group{g}"
                run["accuracy"][name] = {s: accuracy(model, [p for p in test if p["subset"] == s], {name: 1.0})
                                         for s in SUBSETS}
            result["runs"][f"H={h}"] = run
    two = result["runs"]["H=2"]
    members = {g: sorted(u for u, gg in two["assignment"].items() if gg == g) for g in (0, 1)}
    pure = all(len({u.split("/")[0] for u in m}) == 1 for m in members.values())
    result["partition_recovered"] = pure
    result["wall_s"] = time.perf_counter() - t0
    minority_head = next(g for g, m in members.items() if m and m[0].startswith("harmless")) if pure else None
    if minority_head is not None:
        result["minority_accuracy"] = {
            "own_head": two["accuracy"][f"group{minority_head}"]["harmless-base"],
            "pooled_head": result["runs"]["H=1"]["accuracy"]["group0"]["harmless-base"],
            "majority_own_head": two["accuracy"][f"group{1 - minority_head}"]["helpful-base"],
            "majority_pooled_head": result["runs"]["H=1"]["accuracy"]["group0"]["helpful-base"]}
    if args.save_dir:
        for side, rows in policy_prompts(args).items():
            write_jsonl_atomic(args.save_dir / f"prompts_{'eval' if side == 'test' else 'train'}.jsonl", rows)
    write_json_atomic(args.output, result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    for name, run in result["runs"].items():
        print(name, run["accuracy"], "iterations", run["iterations"])


if __name__ == "__main__":
    main()
