"""Prompts with verifiable constraints for the online-training demonstration (benchmarks/train_online.sh).

From ../shared/data HH-RLHF (MIT) single-turn helpful-base prompts, each gets one or two instructions a checker
verifies, appended to the user's message and attached as the row's ``constraints`` (the `prompt_constraints` reward
of a reward set reads them):

- always a word limit, "Answer in at most N words." (``word_count`` max N, N drawn from --word-limits);
- with probability --keyword-rate, "Use the word "W" in your answer." (``include_keywords``, W from a fixed list).

Writes ``prompts_train.jsonl`` (the TRAIN side of the project's held-out split) and ``prompts_eval.jsonl`` (the TEST
side: no prompt, and no prompt the default RM trained on, is shared) into --out. Every draw is seeded.
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
KEYWORDS = ("example", "simple", "important", "usually", "best", "easy", "time", "people")


def constrained(messages: list[dict[str, str]], rng: random.Random, limits: list[int], keyword_rate: float
                ) -> tuple[list[dict[str, str]], list[dict[str, object]]]:
    """The prompt with its instructions appended, and the matching checker specs."""
    limit = rng.choice(limits)
    text = [f"Answer in at most {limit} words."]
    constraints: list[dict[str, object]] = [{"checker": "word_count", "max": limit}]
    if rng.random() < keyword_rate:
        word = rng.choice(KEYWORDS)
        text.append(f'Use the word "{word}" in your answer.')
        constraints.append({"checker": "include_keywords", "keywords": [word]})
    content = messages[0]["content"].rstrip() + "\n\n" + " ".join(text)
    return [{"role": "user", "content": content}], constraints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_HH)
    parser.add_argument("--out", type=Path, default=Path("runs/online"))
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--max-prompt-tokens", type=int, default=96)
    parser.add_argument("--word-limits", type=int, nargs="+", default=[20, 30, 40])
    parser.add_argument("--keyword-rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = Policy.from_pretrained("smollm2").tokenizer
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(args.seed)
    rng.shuffle(rows)
    out: dict[str, list[dict[str, object]]] = {"train": [], "test": []}
    want = {"train": args.train_prompts, "test": args.eval_prompts}
    seen: set[str] = set()
    for row in rows:
        if row["subset"] != "helpful-base":
            continue
        messages = parse_hh_dialogue(row["prompt"])
        key = prompt_key(messages)
        if len(messages) != 1 or key in seen:
            continue
        seen.add(key)
        side = split_of(messages)
        if len(out[side]) >= want[side]:
            continue
        prompt, constraints = constrained(messages, rng, args.word_limits, args.keyword_rate)
        n_tokens = len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        if n_tokens > args.max_prompt_tokens:
            continue
        out[side].append({"id": row["id"], "prompt": prompt, "constraints": constraints, "subset": row["subset"]})
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(args.out / "prompts_train.jsonl", out["train"])
    write_jsonl_atomic(args.out / "prompts_eval.jsonl", out["test"])
    print(f"{len(out['train'])} train prompts, {len(out['test'])} eval prompts -> {args.out}")


if __name__ == "__main__":
    main()
