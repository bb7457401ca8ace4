#!/usr/bin/env python3
"""Build the default training data shipped in the package (src/paretoalign/data/bundled/).

Reads the shared data (../shared/data beside the repo by default), keeps only the "train" side of the project's
held-out split (paretoalign.data.splits: fraction 0.3, seed 0, by prompt), and samples per objective from the
MIT / Apache-2.0 sources only (HH-RLHF, HHH, LLMBar, OASST). The small HHH subsets are kept whole; the rest of each
objective's quota is a seeded sample of the larger source. Nothing is truncated. Output:

- default_pairs.jsonl.gz: TRL conversational rows {id, prompt (messages), chosen, rejected (assistant messages),
  objective, subset}; byte-for-byte reproducible (gzip mtime 0);
- default_sources.yaml: the sources config that loads it;
- README.md: sources, commits, licences, counts and how it was built.

    python scripts/build_bundled_data.py [--shared ../shared/data] [--helpfulness 400] ...
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "src"))

from paretoalign.atomic_io import atomic_path, write_text_atomic  # noqa: E402
from paretoalign.data.bundled import (  # noqa: E402
    DEFAULT_PAIRS_FILE,
    DEFAULT_SOURCES_FILE,
    shared_data_config,  # noqa: E402
)
from paretoalign.data.schema import PreferencePair  # noqa: E402
from paretoalign.data.sources import load_training_data  # noqa: E402

# Sources that may ship in the package (licence), with the folder of their shared README.
SHIPPABLE = {
    "hh_rlhf": ("hh_rlhf", "Anthropic HH-RLHF (test splits)", "MIT"),
    "hhh": ("hhh_alignment", "BIG-bench HHH alignment (via prometheus-eval)", "Apache-2.0"),
    "llmbar": ("llmbar", "LLMBar (+ case studies, processed FairEval / LLMEval² / MT-Bench human)", "MIT"),
    "oasst": ("oasst_en100_ranked", "OpenAssistant en_100 ranked trees (pairs from sibling ranks)", "Apache-2.0"),
}
# objective -> (sources/subsets kept whole, sources/subsets sampled to fill the quota); "name" or "name/subset".
PLAN = {
    "helpfulness": (["hhh/helpful"], ["hh_rlhf/helpful-base", "hh_rlhf/helpful-online",
                                      "hh_rlhf/helpful-rejection-sampled"]),
    "harmlessness": (["hhh/harmless"], ["hh_rlhf/harmless-base"]),
    "honesty": (["hhh/honest"], []),
    "instruction_following": ([], ["llmbar"]),
    "overall": (["hhh/other"], ["oasst"]),
}
DEFAULT_SIZES = {"helpfulness": 400, "harmlessness": 300, "honesty": None, "instruction_following": 300,
                 "overall": 300}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared" / "data",
                        help="the shared data folder (default: ../shared/data beside the repo)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "src" / "paretoalign" / "data" / "bundled",
                        help="output folder (default: the package's data/bundled)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    for objective, default in DEFAULT_SIZES.items():
        parser.add_argument(f"--{objective.replace('_', '-')}", type=int, default=default, metavar="N",
                            help=f"pairs for {objective} (default {'all' if default is None else default})")
    parser.add_argument("--all", action="store_true",
                        help="every train-side pair of every shippable source (the shipped default RM's data)")
    args = parser.parse_args(argv)
    sizes = {objective: None if args.all else getattr(args, objective) for objective in DEFAULT_SIZES}

    config = shared_data_config(args.shared, split="train")
    config.sources = [spec for spec in config.sources if spec.name in SHIPPABLE]
    data = load_training_data(config)
    rows = select(data.pairs, sizes, args.seed)
    out = args.out
    write_pairs(out / DEFAULT_PAIRS_FILE, rows)
    write_text_atomic(out / DEFAULT_SOURCES_FILE, SOURCES_YAML)
    write_text_atomic(out / "README.md", readme(rows, args, sizes, config.heldout_fraction, config.seed))
    for name in (DEFAULT_PAIRS_FILE, DEFAULT_SOURCES_FILE, "README.md"):
        (out / name).chmod(0o644)  # package data: readable by all (atomic writes create 0600 temp files)
    counts = Counter(row["objective"] for row in rows)
    size = (out / DEFAULT_PAIRS_FILE).stat().st_size
    print(f"wrote {len(rows)} pairs ({dict(sorted(counts.items()))}) to {out / DEFAULT_PAIRS_FILE} "
          f"({size / 1e6:.2f} MB)")
    return 0


def _in(pair: PreferencePair, groups: list[str]) -> bool:
    return any(pair.subset == g or (pair.subset or "").startswith(g + "/") for g in groups)


def select(pairs: list[PreferencePair], sizes: dict[str, int | None], seed: int) -> list[dict]:
    """Per objective: the kept-whole groups plus a seeded sample of the fill groups, up to the quota."""
    rng = random.Random(seed)
    order = {id(p): i for i, p in enumerate(pairs)}
    rows: list[dict] = []
    for objective, (whole, fill) in PLAN.items():
        quota = sizes[objective]
        kept = [p for p in pairs if p.objective == objective and _in(p, whole)]
        pool = [p for p in pairs if p.objective == objective and _in(p, fill)]
        if quota is None:
            chosen = kept + pool
        elif quota <= len(kept):
            chosen = rng.sample(kept, quota)
        else:
            if quota - len(kept) > len(pool):
                raise SystemExit(f"{objective}: asked for {quota} pairs, only {len(kept) + len(pool)} train pairs")
            chosen = kept + rng.sample(pool, quota - len(kept))
        chosen.sort(key=lambda p: order[id(p)])
        rows.extend(to_row(p) for p in chosen)
    return rows


def to_row(pair: PreferencePair) -> dict:
    """A TRL conversational preference row (explicit prompt)."""
    return {"id": pair.id, "prompt": pair.prompt, "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}], "objective": pair.objective,
            "subset": pair.subset}


def write_pairs(path: Path, rows: list[dict]) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


SOURCES_YAML = """\
# The bundled default training data (see README.md here): loaded by paretoalign.data.default_sources_config().
# Each row carries its own objective and its subset ("dataset/subset"), so neither is set here.
heldout_fraction: 0.3
seed: 0
sources:
  - name: bundled
    path: default_pairs.jsonl.gz
    format: pairs
    prefix_subset: false
"""


def source_line(folder: Path) -> str:
    """The "- **Source**: ..." paragraph of a shared README, on one line."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.search(r"- \*\*Source\*\*: (.*?)(?=\n- \*\*)", text, re.S)
    return " ".join(match.group(1).split()) if match else "(see the shared README)"


def readme(rows: list[dict], args: argparse.Namespace, sizes: dict[str, int | None], fraction: float,
           split_seed: int) -> str:
    by_objective = Counter(row["objective"] for row in rows)
    by_subset = Counter((row["objective"], row["subset"]) for row in rows)
    lines = [
        "# Bundled default training data",
        "",
        f"`{DEFAULT_PAIRS_FILE}`: {len(rows)} human-labelled preference pairs in TRL's conversational format",
        "(`id`, `prompt` = message list ending with the user turn, `chosen` / `rejected` = one assistant message,",
        "`objective`, `subset` = `dataset/subset`). Loaded by `paretoalign.data.default_sources_config()`",
        f"(`{DEFAULT_SOURCES_FILE}`). Generated by `scripts/build_bundled_data.py`; do not edit by hand.",
        "",
        "## Held-out rule",
        "",
        "Only rows on the **train** side of the project's held-out split are here:",
        f"`heldout_split(prompt_key(prompt), fraction={fraction}, seed={split_seed})` (sha256 of the seed and",
        "the prompt conversation, so every row of a prompt falls on the same side). Evaluation on `../shared/data`",
        "uses the **test** side (`shared_data_config(shared, split=\"test\")`), so no test prompt is trained on.",
        "",
        "## Sources and licences",
        "",
        "Only MIT / Apache-2.0 data ships here. AlpacaEval (CC BY-NC), Topical-Chat USR (no licence) and the XSTest",
        "completions (model licences) are never bundled; they are read from `../shared/data` at evaluation time.",
        "",
        "| name | dataset | licence | source (from the shared README) |",
        "|---|---|---|---|",
    ]
    for name, (folder, title, licence) in SHIPPABLE.items():
        lines.append(f"| `{name}` | {title} | {licence} | {source_line(args.shared / folder)} |")
    lines += [
        "",
        "HH-RLHF rows with an empty reply (11) and the LLMBar row with an empty reply (1) are dropped before",
        "sampling. Replies and prompts are not truncated.",
        "",
        "## Counts",
        "",
        "| objective | pairs | from |",
        "|---|---|---|",
    ]
    for objective in PLAN:
        parts = ", ".join(f"{subset} {n}" for (obj, subset), n in sorted(by_subset.items()) if obj == objective)
        lines.append(f"| {objective} | {by_objective[objective]} | {parts} |")
    options = "--all" if args.all else " ".join(f"--{o.replace('_', '-')} {n}" for o, n in sizes.items()
                                                if n is not None)
    lines += [
        "",
        "## How it was built",
        "",
        "Per objective, the small HHH subsets (train side) are kept whole and the rest of the quota is a",
        f"`random.Random({args.seed})` sample of the train side of the larger source: helpfulness = HHH helpful +",
        "HH helpful-base/online/rejection-sampled; harmlessness = HHH harmless + HH harmless-base; honesty = every",
        "HHH honest train row; instruction_following = LLMBar (all subsets); overall = HHH other + OASST pairs.",
        "Verbosity is not in the data: the trainer derives it from reply length.",
        "",
        "```",
        f"python scripts/build_bundled_data.py --shared ../shared/data --seed {args.seed} {options}",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
