"""Every option of every command has a help text; every config-driven command lists its config's fields."""

import argparse
import dataclasses
import importlib

import pytest

from paretoalign.cli.help import config_settings_help
from paretoalign.cli.registry import CONFIG_CLASSES, build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    missing = []
    for name, command in {"": parser, **subcommands(parser)}.items():
        for action in command._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name or 'paretoalign'} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize("command", sorted(CONFIG_CLASSES))
def test_help_of_a_config_driven_command_lists_every_config_field(command, capsys):
    module, name = CONFIG_CLASSES[command]
    config_cls = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"settings of {name}" in out
    for f in dataclasses.fields(config_cls):
        assert f"\n  {f.name}: " in out, f.name
        first_words = " ".join(f.metadata["help"].split()[:3])
        assert first_words in " ".join(out.split()), f.name


def test_settings_help_shows_type_default_and_help():
    @dataclasses.dataclass
    class Toy:
        alpha: float = dataclasses.field(default=0.5, metadata={"help": "How much alpha."})
        names: list = dataclasses.field(default_factory=lambda: ["a", "b"], metadata={"help": "Some names."})
        path: str | None = dataclasses.field(default=None, metadata={"help": "A file."})

    text = config_settings_help(Toy, width=80)
    assert "  alpha: float = 0.5\n      How much alpha.\n" in text
    assert "  names: list = [a, b]\n" in text
    assert "  path: str | None = null\n" in text


def test_every_config_driven_command_is_a_command():
    assert set(CONFIG_CLASSES) <= set(subcommands(build_parser()))
    assert {"train-rm", "train-genarm", "dpo", "modpo", "bond", "warp"} <= set(CONFIG_CLASSES)
