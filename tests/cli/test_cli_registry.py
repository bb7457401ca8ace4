"""The parser is built from the command registry: every command, its shared flag groups, --version, the entry points,
and the merge errors that the CLI words in flags."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys

import pytest

from paretoalign.cli import main
from paretoalign.cli.flags import GENERATION, GENERATION_WITHOUT_RM, SAMPLING
from paretoalign.cli.registry import COMMANDS, build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not isinstance(a, argparse._HelpAction)]


def test_every_registered_command_is_a_subcommand_in_registry_order_and_runs_its_function():
    commands = subcommands(build_parser())
    assert list(commands) == [c.name for c in COMMANDS]
    assert len(COMMANDS) == 19 and len({c.name for c in COMMANDS}) == 19
    for c in COMMANDS:
        defaults = commands[c.name]._defaults
        assert defaults["func"] is c.func, c.name
        assert {k: defaults[k] for k in c.defaults} == dict(c.defaults)


def test_each_command_has_its_flags_then_overwrite_threads_and_debug():
    commands = subcommands(build_parser())
    for c in COMMANDS:
        names = option_names(commands[c.name])
        tail = (["--overwrite"] if c.writes_folder else []) + ["--threads", "--debug"]
        assert names == [f.names[0] for f in c.flags] + tail, c.name
    writers = {c.name for c in COMMANDS if c.writes_folder}
    assert writers == {"train-rm", "export-hf", "train-genarm", "dpo", "modpo", "bond", "warp", "grpo", "merge",
                       "front", "demo", "maxmin-rm"}


def test_the_sampling_commands_share_one_declaration_of_their_flags():
    commands = subcommands(build_parser())
    generation = [f.names[0] for f in GENERATION]
    assert option_names(commands["bon"])[: len(generation)] == generation
    assert option_names(commands["calibrate"])[: len(generation)] == generation
    guided = option_names(commands["guided"])
    assert guided[: len(GENERATION_WITHOUT_RM)] == [f.names[0] for f in GENERATION_WITHOUT_RM]
    assert "--rm" not in guided and "--weights" not in guided
    sampling = {f.names[0] for f in SAMPLING}
    assert sampling == {"--temperature", "--top-p", "--top-k", "--max-new-tokens", "--stop", "--seed"}
    assert sampling <= set(guided) and sampling <= set(option_names(commands["bon"]))


def test_a_shared_flag_keeps_its_type_and_takes_a_commands_own_default_and_help():
    commands = subcommands(build_parser())

    def action(command, name):
        return next(a for a in commands[command]._actions if name in a.option_strings)

    bon, front = action("bon", "--max-new-tokens"), action("front", "--max-new-tokens")
    assert (bon.default, front.default) == (128, 64)
    assert bon.type is front.type and bon.help != front.help
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["front", "--runs", "r", "--output", "o", "--max-new-tokens", "0"])
    assert exc.value.code == 2


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"paretoalign {importlib.metadata.version('paretoalign')}\n"


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "paretoalign.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"paretoalign {importlib.metadata.version('paretoalign')}\n"


def test_the_console_script_names_main():
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "paretoalign"]
    assert script.value == "paretoalign.cli:main"
    assert script.load() is main


MERGE_ERRORS = [
    (["liti", "--init", "{t}/a", "--models", "{t}/a", "{t}/b", "--eta", "0.3"],
     {"op": "liti", "init": "a", "models": ["a", "b"], "eta": 0.3}, "models",
     "liti takes exactly one model (e.g. the SLERP result), got 2"),
    (["slerp", "--models", "{t}/a", "{t}/b"], {"op": "slerp", "init": None, "models": ["a", "b"]}, "init",
     "slerp needs --init (the policy the models were fine-tuned from)"),
    (["ema", "--models", "{t}/a", "{t}/b"], {"op": "ema", "init": None, "models": ["a", "b"]}, "mu",
     "ema needs --mu"),
    (["slerp", "--init", "{t}/a", "--models", "{t}/a", "{t}/b", "{t}/c", "--lam", "0.5"],
     {"op": "slerp", "init": "a", "models": ["a", "b", "c"], "lam": 0.5}, "lam",
     "--lam applies to 2 models only; 3 models are merged with equal weights"),
]


@pytest.mark.parametrize(("argv", "kwargs", "field", "reason"), MERGE_ERRORS)
def test_merge_argument_errors_name_the_argument_and_the_cli_names_the_flag(argv, kwargs, field, reason, tmp_path,
                                                                            capsys):
    from paretoalign.errors import InputError
    from paretoalign.train.merge import merge_policies

    out = tmp_path / "out"
    with pytest.raises(InputError) as err:  # the library: the argument, no flag, no command line
        merge_policies(kwargs.pop("op"), output_dir=str(out), **{
            k: [str(tmp_path / m) for m in v] if k == "models" else str(tmp_path / v) if k == "init" and v else v
            for k, v in kwargs.items()})
    assert (err.value.path, err.value.field, err.value.reason) == (None, field, reason)
    assert main(["merge", *[a.format(t=tmp_path) for a in argv], "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == f"error: command line, field '--{field}': {reason}\n"
    assert not out.exists()


def test_a_merge_output_error_names_output_dir_in_the_library_and_the_flag_in_the_cli(tmp_path, capsys):
    from paretoalign.errors import InputError
    from paretoalign.train.merge import merge_policies

    run = tmp_path / "run"
    (run / "policy").mkdir(parents=True)
    with pytest.raises(InputError, match="lies inside the input") as err:
        merge_policies("ema", init=None, models=[str(run), str(run)], output_dir=str(run / "policy"), mu=0.5)
    assert err.value.field == "output_dir"
    assert main(["merge", "ema", "--models", str(run), str(run), "--mu", "0.5", "--output-dir",
                 str(run / "policy")]) == 2
    message = capsys.readouterr().err
    assert message.startswith(f"error: {run / 'policy'}, field '--output-dir': ") and message.count("\n") == 1
    assert "lies inside the input" in message
