"""The argument parser class of the CLI: short flag errors, and --help that lists a command's config settings."""

from __future__ import annotations

import argparse
from typing import Any


def _format_default(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def config_settings_help(config_cls: type, width: int | None = None) -> str:
    """Every field of a config dataclass as 'name: type = default' and its metadata help, for a --help epilog."""
    import dataclasses
    import shutil
    import textwrap

    width = width or max(60, min(shutil.get_terminal_size().columns, 120) - 2)
    lines = [textwrap.fill(f"settings of {config_cls.__name__} (key=value after the options, or keys of the "
                           "--config YAML file):", width=width)]
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if f.default is not dataclasses.MISSING:
            default = f" = {_format_default(f.default)}"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" = {_format_default(f.default_factory())}"
        else:
            default = " (required)"
        lines.append(f"  {f.name}: {kind}{default}")
        text = f.metadata.get("help", "")
        if text:
            lines.append(textwrap.fill(" ".join(text.split()), width=width, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6))
    return "\n".join(lines) + "\n"


class HelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose --help ends with its config's settings, imported only when help is printed."""

    config_classes: tuple[tuple[str, str], ...] = ()
    """(module, class name) of each config dataclass whose fields the command's --help lists."""

    def format_help(self) -> str:
        text = super().format_help()
        import importlib

        for module, name in self.config_classes:
            text += "\n" + config_settings_help(getattr(importlib.import_module(module), name))
        return text

    def error(self, message: str):
        """A bad flag: two short lines (the error naming the flag, where to find the options), exit 2; argparse's
        default prints the whole usage, a dozen lines for the generation commands."""
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")
