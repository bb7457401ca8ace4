"""Held-out HH-RLHF prompts for the generation benchmarks (the side of the split no reward model trained on)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from paretoalign.data.hh import parse_hh_dialogue
from paretoalign.data.splits import prompt_key, split_of

DEFAULT_HH = Path("..") / "shared" / "data" / "hh_rlhf" / "hh_rlhf_test.jsonl"


def heldout_hh_prompts(path: Path, n: int, seed: int, policy=None, max_prompt_tokens: int | None = None,
                       min_prompt_tokens: int = 0) -> list[list[dict]]:
    """n distinct held-out prompts (message lists), seeded; optionally with a token-length range under `policy`."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass --data (the HH-RLHF test file of ../shared/data)")
    lines = path.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(lines)
    seen, prompts = set(), []
    for line in lines:
        messages = parse_hh_dialogue(json.loads(line)["prompt"])
        key = prompt_key(messages)
        if key in seen or split_of(messages) != "test":
            continue
        if policy is not None:
            length = len(policy.prompt_ids(messages))
            if length < min_prompt_tokens or (max_prompt_tokens is not None and length > max_prompt_tokens):
                continue
        seen.add(key)
        prompts.append(messages)
        if len(prompts) == n:
            return prompts
    raise SystemExit(f"only {len(prompts)} usable held-out prompts in {path}, {n} requested")
