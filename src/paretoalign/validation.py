"""The one set of value checks every layer uses: each raises `InputError` naming the field, else returns the value.

A check refuses booleans (``True`` is an ``int`` to Python, never a count or a rate here), NaN and infinities.
`path` and `line` locate the value when it came from a file or the command line.
"""

from __future__ import annotations

import math
import numbers

from paretoalign.errors import InputError


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fail(message: str, name: str, path: str | None, line: int | None) -> InputError:
    return InputError(message, field=name, path=path, line=line)


def positive_int(value: int, name: str, *, path: str | None = None, line: int | None = None) -> int:
    """`value` as an int >= 1."""
    if not _integer(value) or value < 1:
        raise _fail(f"{name} must be an integer >= 1, got {value!r}", name, path, line)
    return int(value)


def non_negative_int(value: int, name: str, *, path: str | None = None, line: int | None = None) -> int:
    """`value` as an int >= 0."""
    if not _integer(value) or value < 0:
        raise _fail(f"{name} must be an integer >= 0, got {value!r}", name, path, line)
    return int(value)


def finite_float(value: float, name: str, *, path: str | None = None, line: int | None = None) -> float:
    """`value` as a finite float."""
    if not _real(value):
        raise _fail(f"{name} must be a finite number, got {value!r}", name, path, line)
    return float(value)


def positive_float(value: float, name: str, *, path: str | None = None, line: int | None = None) -> float:
    """`value` as a finite float > 0."""
    if not _real(value) or float(value) <= 0:
        raise _fail(f"{name} must be a finite number > 0, got {value!r}", name, path, line)
    return float(value)


def non_negative_float(value: float, name: str, *, path: str | None = None, line: int | None = None) -> float:
    """`value` as a finite float >= 0."""
    if not _real(value) or float(value) < 0:
        raise _fail(f"{name} must be a finite number >= 0, got {value!r}", name, path, line)
    return float(value)


def unit_interval(value: float, name: str, *, open_low: bool = False, open_high: bool = False,
                  path: str | None = None, line: int | None = None) -> float:
    """`value` as a float in [0, 1], with either end excluded as asked."""
    ok = _real(value)
    if ok:
        v = float(value)
        ok = (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1)
    if not ok:
        lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
        raise _fail(f"{name} must be in {lo}0, 1{hi}, got {value!r}", name, path, line)
    return float(value)
