"""A tiny reward model trained once through the CLI, shared by the CLI tests."""

import json

import pytest

from paretoalign.cli import main

WORDS = ["clear", "steps", "example", "bread", "flour", "water", "capital", "paris", "sorry", "help"]


def forbid_calls(monkeypatch, targets, reason: str) -> list[str]:
    """Make each (owner, attribute) raise AssertionError when called; returns the list of the names that were called."""
    calls: list[str] = []

    def forbidden(name):
        def fail(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran: {reason}")
        return fail

    for owner, name in targets:
        monkeypatch.setattr(owner, name, forbidden(f"{getattr(owner, '__name__', owner)}.{name}"))
    return calls


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_pairs(n=40):
    rows = []
    for i in range(n):
        good = " ".join(WORDS[: 3 + i % 5])
        bad = " ".join(WORDS[5 + i % 3: 7 + i % 3])
        rows.append({"id": f"r{i}", "prompt": f"question {i % 7} about bread", "chosen": good, "rejected": bad,
                     "subset": "a" if i % 2 else "b"})
    return rows


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("cli")
    write_jsonl(tmp / "pairs.jsonl", toy_pairs())
    (tmp / "sources.yaml").write_text(
        "sources:\n  - name: toy\n    path: pairs.jsonl\n    format: pairs\n"
        "    subsets: {a: helpfulness, b: harmlessness}\n")
    (tmp / "train.yaml").write_text(
        f"sources: {tmp / 'sources.yaml'}\nbackbone: {tiny_llama_dir}\nbackbone_kind: causal_lm\n"
        f"embedding_cache: {tmp / 'emb.sqlite'}\ngating_hidden: [8]\n")
    rc = main(["train-rm", "--config", str(tmp / "train.yaml"), "--output-dir", str(tmp / "rm"), "gating_steps=20",
               "progress=false"])
    assert rc == 0
    return tmp / "rm"


