"""The `paretoalign` command line: `main` runs one command of the registry (`paretoalign.cli.registry`) and turns
its errors into one line and an exit status.

Modules: `registry` (every command and its flags), `flags` (the shared flag groups), `args` (checks of flag values),
`common` (run config, sampling settings, Ctrl-C during training), `help` (the parser class), and one per command
family: `rm`, `inference`, `train`, `report`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from paretoalign.cli.registry import build_parser
from paretoalign.cli.rm import train_rm_method
from paretoalign.errors import InputError, ModelFormatError

__all__ = ["build_parser", "main", "train_rm_method"]

DEBUG_ENV = "PARETOALIGN_DEBUG"
"""PARETOALIGN_DEBUG=1 shows the full traceback of an error, like --debug."""
EXIT_INPUT_ERROR = 2
"""Exit status of a known error (bad input, a model folder we cannot read, a file we cannot write)."""
EXIT_UNEXPECTED = 1
"""Exit status of an unexpected error (a bug, or something we did not foresee)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells use."""


def _one_line(text: str, limit: int = 600) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def known_error_message(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input or environment; None for anything else."""
    if isinstance(exc, (InputError, ModelFormatError)):
        return str(exc)
    if isinstance(exc, OSError) and getattr(exc, "filename", None) is not None:
        target = f" -> {exc.filename2}" if getattr(exc, "filename2", None) is not None else ""
        return f"{exc.filename}{target}: {exc.strerror or exc}"
    return None


def _wants_debug(args: argparse.Namespace | None) -> bool:
    import os

    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `paretoalign` command.

    Known errors (InputError, ModelFormatError, an OSError naming its file): one line `error: ...`, exit 2.
    Anything unexpected: one line and a hint to rerun with --debug, exit 1. Ctrl-C: one line, exit 130 (outputs are
    written atomically, so nothing partial is left). --debug or PARETOALIGN_DEBUG=1 prints the traceback too.
    """
    args = None
    try:
        args = build_parser().parse_args(argv)
        from paretoalign.threads import threads_scope

        with threads_scope(args.threads):
            return args.func(args)
    except KeyboardInterrupt as exc:
        if _wants_debug(args):
            import traceback

            traceback.print_exc()
        note = getattr(exc, "note", "") or "no output was left half-written (outputs are written only once complete)"
        start = "\n" if sys.stderr.isatty() else ""  # past a progress bar drawn on the same line
        print(f"{start}interrupted: {_one_line(note)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _wants_debug(args):
            import traceback

            traceback.print_exc()
        known = known_error_message(exc)
        if known is not None:
            print(f"error: {_one_line(known)}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        hint = "the traceback is above" if _wants_debug(args) else "rerun with `--debug` for the traceback"
        print(f"error: unexpected {type(exc).__name__}: {_one_line(str(exc), 400)} (a bug? {hint})",
              file=sys.stderr)
        return EXIT_UNEXPECTED
