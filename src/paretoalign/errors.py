"""Errors that name the file, line and field of bad input."""

from __future__ import annotations


class ParetoAlignError(Exception):
    """Base class of every error paretoalign raises on purpose."""


class InputError(ParetoAlignError, ValueError):
    """Bad user input, located by file, line (1-based) and field where known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if path is not None:
            where.append(str(path) if line is None else f"{path}:{line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ModelFormatError(ParetoAlignError):
    """A saved model directory that this version cannot read (missing files, other format version)."""
