"""Every code block of README.md runs as pasted, top to bottom, in one fresh folder (as a user following it would).

What is real and what is substituted, so that the whole README runs in well under a minute on a CPU:

- every ``.venv/bin/paretoalign …`` line of every bash block is parsed by the real argparse parser (`build_parser`);
  every ``examples/…`` file it names exists; ``make`` targets exist in the Makefile and ``.venv/bin/python`` scripts
  exist; ``cat > FILE <<'EOF'`` blocks are written as the shell would write them; any other command fails the test;
- the commands in `RUN` (the quick start, the inference block, the DPO lines) run for real, in this process, through
  `paretoalign.cli.main`, and must exit 0; the others (training on ``../shared/data``, MODPO / BOND / WARP, merges and
  the front report that need their runs, benchmarks) are only parsed;
- Python blocks are executed (``exec``) as they are; YAML blocks must parse;
- substitutions, in this process only: the model alias ``smollm2`` resolves to a tiny random Llama (`tests.tiny`)
  instead of SmolLM2-135M, and `train_reward_model` (used by ``train-rm`` and the Python API) trains on 40 toy pairs
  with that tiny Llama as its backbone and a small gating network, instead of MiniLM on the 7 412 bundled pairs.
  Outputs are therefore meaningless as numbers; the test checks that the documented commands and calls work.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml

from paretoalign.cli import build_parser, main
from tests.cli.conftest import toy_pairs, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
HEREDOC = re.compile(r"^cat > (\S+) <<'(\w+)'$")
RUN = (
    "train-rm --output-dir runs/rm", "score ", "export-hf ", "bon ", "calibrate ", "train-genarm ", "guided ",
    "dpo --output-dir runs/dpo ", "dpo --config examples/configs/dpo.yaml",
)
"""Prefixes (after ``.venv/bin/paretoalign``) of the commands that run for real; the rest are parsed only."""
NOT_RUN = ("sources=shared", "--shared-heldout", "--engine ray", "embed_engine=ray")
"""Commands that need ../shared/data or a Ray cluster are parsed only, even when a prefix above matches."""


def blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of every fenced block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


def shell_commands(code: str) -> list[tuple[list[str], str | None, str | None]]:
    """(tokens, heredoc file, heredoc text) of each command of a bash block: continuations joined, comments dropped."""
    commands, lines = [], iter(code.splitlines())
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        match = HEREDOC.match(line.strip())
        if match:
            body = []
            for inner in lines:
                if inner == match.group(2):
                    break
                body.append(inner + "\n")
            commands.append((["cat"], match.group(1), "".join(body)))
            continue
        tokens = shlex.split(line, comments=True)
        if tokens:
            commands.append((tokens, None, None))
    return commands


def example_paths(tokens: list[str]) -> list[str]:
    """Every `examples/...` path an argument names (also as the value of key=value)."""
    values = [t.split("=", 1)[1] if "=" in t else t for t in tokens]
    return [v for v in values if v.startswith("examples/")]


def test_the_readme_has_the_blocks_this_test_expects():
    langs = [lang for lang, _, _ in blocks()]
    assert langs.count("bash") >= 4 and langs.count("python") >= 3 and "yaml" in langs


def test_no_bare_paretoalign_command_in_any_code_block():
    for lang, code, line in blocks():
        if lang == "bash":
            for tokens, _, _ in shell_commands(code):
                assert tokens[0] != "paretoalign", f"README line {line}: use .venv/bin/paretoalign"


def test_every_bash_line_parses_and_names_files_that_exist():
    parser = build_parser()
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    seen = 0
    for lang, code, line in blocks():
        if lang != "bash":
            continue
        for tokens, _, _ in shell_commands(code):
            where = f"README block at line {line}: {' '.join(tokens)}"
            if tokens[0] == ".venv/bin/paretoalign":
                try:
                    parser.parse_args(tokens[1:])
                except SystemExit as exc:  # argparse exits 2 on a bad command line
                    pytest.fail(f"{where}: does not parse ({exc})")
                seen += 1
                for path in example_paths(tokens):
                    assert (ROOT / path).is_file(), f"{where}: {path} is not shipped"
            elif tokens[0] == "make":
                assert set(tokens[1:]) <= targets, where
            elif tokens[0] in (".venv/bin/python", "bash"):
                assert (ROOT / tokens[1]).is_file(), where
            else:
                assert tokens[0] == "cat", f"{where}: a command this test does not know"
    assert seen >= 20


def test_yaml_blocks_parse():
    for lang, code, line in blocks():
        if lang == "yaml":
            assert isinstance(yaml.safe_load(code), dict), line


# ------------------------------------------------------------------ running the README
@pytest.fixture()
def readme_world(tmp_path, monkeypatch, tiny_llama_dir, one_thread):
    """A fresh working folder with examples/, and the tiny-model substitutions described in the module docstring."""
    import paretoalign.embed.models as models
    import paretoalign.rewards.armo_trainer as armo_trainer

    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    toy = tmp_path.parent / f"{tmp_path.name}-toy"
    toy.mkdir()
    write_jsonl(toy / "pairs.jsonl", toy_pairs())
    (toy / "sources.yaml").write_text("sources:\n  - name: toy\n    path: pairs.jsonl\n    format: pairs\n"
                                      "    subsets: {a: helpfulness, b: harmlessness}\n")
    real_alias_target, real_train = models._alias_target, armo_trainer.train_reward_model

    def alias_target(alias):
        return Path(tiny_llama_dir) if alias == "smollm2" else real_alias_target(alias)

    def train_small(config, *args, **kwargs):
        small = dataclasses.replace(config, backbone=str(tiny_llama_dir), backbone_kind="causal_lm",
                                    sources=str(toy / "sources.yaml"), embedding_cache=str(toy / "emb.sqlite"),
                                    gating_hidden=[8], gating_steps=20, progress=False)
        return real_train(small, *args, **kwargs)

    monkeypatch.setattr(models, "_alias_target", alias_target)
    monkeypatch.setattr(armo_trainer, "train_reward_model", train_small)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_block(lang: str, code: str, line: int, ran: list[str]) -> None:
    if lang == "python":
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_block_{line}"})
        ran.append(f"python block at line {line}")
        return
    if lang != "bash":
        return
    for tokens, heredoc_file, heredoc_text in shell_commands(code):
        if heredoc_file is not None:
            Path(heredoc_file).write_text(heredoc_text, encoding="utf-8")
            continue
        if tokens[0] != ".venv/bin/paretoalign":
            continue
        command = " ".join(tokens[1:])
        if not command.startswith(RUN) or any(s in command for s in NOT_RUN):
            continue
        rc = main(tokens[1:])
        assert rc == 0, f"README block at line {line}: `{command}` exited {rc}"
        ran.append(command)


def test_the_readme_runs_top_to_bottom_with_tiny_models(readme_world, capsys):
    ran: list[str] = []
    for lang, code, line in blocks():
        run_block(lang, code, line, ran)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert sum(r.startswith("python block") for r in ran) >= 3
    for prefix in RUN:
        assert any(r.startswith(prefix) for r in ran), f"nothing ran for {prefix!r}"
    for name in ("scored.jsonl", "reweighted.jsonl", "out.jsonl", "worst.jsonl", "fast.jsonl", "calib.jsonl",
                 "g.jsonl", "runs/hf", "runs/arm", "runs/dpo/policy", "runs/dpo-full/policy"):
        assert (readme_world / name).exists(), name
