"""Files for the real training runs (benchmarks/train_real.sh) from ../shared/data HH-RLHF.

Writes into --out (default runs/real):
- ``pairs_helpful.jsonl``: helpful-base pairs on the TRAIN side of the project's held-out split (no default-RM
  training row is on the test side), single-turn prompts, both replies short, objective "helpfulness";
- ``prompts_train.jsonl``: train-side prompts (helpful and harmless subsets) for the online methods;
- ``prompts_eval.jsonl``: held-out (test-side) prompts for `paretoalign front`.
Every prompt is at most --max-prompt-tokens under the SmolLM2 chat template; all draws are seeded.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from paretoalign.atomic_io import write_jsonl_atomic
from paretoalign.data.hh import parse_hh_dialogue
from paretoalign.data.splits import prompt_key, split_of
from paretoalign.inference.policy import Policy

DEFAULT_HH = Path("..") / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_HH)
    parser.add_argument("--out", type=Path, default=Path("runs/real"))
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--max-prompt-tokens", type=int, default=96)
    parser.add_argument("--max-reply-words", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = Policy.from_pretrained("smollm2").tokenizer
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()]
    random.Random(args.seed).shuffle(rows)
    pairs, train_prompts, eval_prompts = [], [], []
    seen: set[str] = set()
    for row in rows:
        messages = parse_hh_dialogue(row["prompt"])
        key = prompt_key(messages)
        n_tokens = len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        if n_tokens > args.max_prompt_tokens:
            continue
        side = split_of(messages)
        if side == "train" and row["subset"] == "helpful-base" and len(messages) == 1 and len(pairs) < args.pairs:
            lengths = (len(row["chosen"].split()), len(row["rejected"].split()))
            if min(lengths) > 0 and max(lengths) <= args.max_reply_words:
                pairs.append({"id": row["id"], "prompt": messages, "chosen": row["chosen"],
                              "rejected": row["rejected"], "objective": "helpfulness", "subset": row["subset"]})
        if key in seen:
            continue
        seen.add(key)
        if side == "train" and len(train_prompts) < args.train_prompts:
            train_prompts.append({"id": row["id"], "prompt": messages, "subset": row["subset"]})
        elif side == "test" and len(eval_prompts) < args.eval_prompts:
            eval_prompts.append({"id": row["id"], "prompt": messages, "subset": row["subset"]})
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(args.out / "pairs_helpful.jsonl", pairs)
    write_jsonl_atomic(args.out / "prompts_train.jsonl", train_prompts)
    write_jsonl_atomic(args.out / "prompts_eval.jsonl", eval_prompts)
    print(f"{len(pairs)} pairs, {len(train_prompts)} train prompts, {len(eval_prompts)} eval prompts -> {args.out}")


if __name__ == "__main__":
    main()
