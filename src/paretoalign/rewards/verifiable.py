"""Verifiable rewards: programmatic checkers that accept or reject a response (reward 1.0 or 0.0).

Supports (ALGORITHMS.md §11, Tulu 3 RLVR, DeAL's programmatic constraints) the checkers of `CHECKERS`, each
declaring its parameters so that a bad spec fails when it is built, naming the field:

- ``include_keywords(keywords, mode="all"|"any", case_sensitive=False)``: whole-word occurrences;
- ``avoid_keywords(keywords, case_sensitive=False)``: none of the keywords as a whole word;
- ``word_count(min, max)`` / ``sentence_count(min, max)``: inclusive bounds, at least one given;
- ``json(schema=None, keys=None, allow_code_fence=True)``: valid JSON, optionally an object holding `keys` and
  valid against a JSON Schema (the `jsonschema` library; the schema itself is checked when the checker is built);
- ``regex(pattern, mode="search"|"fullmatch", ignore_case=False)``: Python `re` syntax;
- ``final_number(reference)``: the last number in the response equals the reference.

Per-prompt constraints (`PromptConstraints`): a prompt-file row may carry ``"constraints": [{checker spec}, ...]``;
they are built here (data/prompts.py only checks their shape) and looked up by the prompt's `splits.prompt_key`.

Assumes: words are whitespace-separated tokens; a sentence is a stretch of text holding a word character, ended by
``!``, ``?``, a ``.`` not followed by a digit (3.5 stays one number) or the end of the text; a keyword is a whole
word when no word character touches either end; numbers are decimal (``-1,234.5``: thousands commas, sign, decimals,
exponent), equal when they differ by at most 1e-6 (absolute: 1,000,001 is not 1,000,000). Checkers are pure
functions of the response text, so partial responses (Speculative Rejection) are scored like any other text.
"""

from __future__ import annotations

import json as json_module
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paretoalign.data.records import split_location
from paretoalign.data.splits import prompt_key
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.data.prompts import PromptRow
    from paretoalign.data.schema import Message

FINAL_NUMBER_TOLERANCE = 1e-6
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```", re.DOTALL)
_SENTENCE_END = re.compile(r"(?:[!?]|\.(?!\d))+")
_WORD_CHAR = re.compile(r"\w")


@dataclass(frozen=True)
class CheckerParam:
    """One declared parameter of a checker."""

    name: str
    kind: type | tuple[type, ...]
    required: bool = False
    default: object = None
    help: str = ""


@dataclass(frozen=True)
class CheckerSpec:
    """A registered checker: its parameters, the check, and an optional build-time preparation of the arguments."""

    name: str
    help: str
    params: tuple[CheckerParam, ...]
    check: Callable[..., bool]
    """check(response, **prepared_args) -> bool."""
    prepare: Callable[[dict[str, Any], Callable[[str, str], InputError]], dict[str, Any]] | None = None
    """prepare(args, error) -> the arguments `check` takes; raises error(param, reason) for bad values."""


class Checker:
    """A checker bound to its arguments: call it on a response text."""

    def __init__(self, spec: CheckerSpec, args: dict[str, Any], prepared: dict[str, Any]) -> None:
        self.name = spec.name
        self.args = dict(args)
        self._check = spec.check
        self._prepared = prepared

    def __call__(self, response: str) -> bool:
        """Whether the response satisfies the checker."""
        return bool(self._check(str(response), **self._prepared))

    def __repr__(self) -> str:
        return f"Checker({self.name}, {self.args})"


# ---------------------------------------------------------------- argument checks
def _is_kind(value: object, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def _kind_text(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"NoneType": "null", "str": "string", "int": "integer", "float": "number", "bool": "boolean",
             "list": "list", "dict": "object"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _keywords(args: dict[str, Any], error: Callable[[str, str], InputError]) -> list[str]:
    words = args["keywords"]
    if not words:
        raise error("keywords", "give at least one keyword")
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w.strip():
            raise error("keywords", f"keyword {i} must be a non-empty string, got {w!r}")
    return [w.strip() for w in words]


def _keyword_patterns(words: Sequence[str], case_sensitive: bool) -> list[re.Pattern[str]]:
    flags = 0 if case_sensitive else re.IGNORECASE
    return [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", flags) for w in words]


def _prepare_include(args, error):
    if args["mode"] not in ("all", "any"):
        raise error("mode", f"must be 'all' or 'any', got {args['mode']!r}")
    return {"patterns": _keyword_patterns(_keywords(args, error), args["case_sensitive"]), "mode": args["mode"]}


def _prepare_avoid(args, error):
    return {"patterns": _keyword_patterns(_keywords(args, error), args["case_sensitive"])}


def _prepare_bounds(args, error):
    low, high = args["min"], args["max"]
    if low is None and high is None:
        raise error("min", "give min, max or both")
    for name, value in (("min", low), ("max", high)):
        if value is not None and value < 0:
            raise error(name, f"must be >= 0, got {value}")
    if low is not None and high is not None and low > high:
        raise error("max", f"max ({high}) is below min ({low})")
    return {"low": low, "high": high}


def _prepare_json(args, error):
    schema, keys = args["schema"], args["keys"]
    validator = None
    if schema is not None:
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise error("schema", f"not a valid JSON Schema: {exc.message}") from None
        validator = cls(schema)
    if keys is not None:
        if not keys or not all(isinstance(k, str) for k in keys):
            raise error("keys", "must be a non-empty list of strings")
    return {"validator": validator, "keys": None if keys is None else list(keys),
            "allow_code_fence": args["allow_code_fence"]}


def _prepare_regex(args, error):
    if args["mode"] not in ("search", "fullmatch"):
        raise error("mode", f"must be 'search' or 'fullmatch', got {args['mode']!r}")
    try:
        pattern = re.compile(args["pattern"], re.IGNORECASE if args["ignore_case"] else 0)
    except re.error as exc:
        raise error("pattern", f"not a valid regular expression: {exc}") from None
    return {"pattern": pattern, "mode": args["mode"]}


def parse_number(text: str) -> float | None:
    """A decimal number with optional thousands commas (``-1,234.5``) as a float; None when it is not one."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    return float(text.replace(",", ""))


def _prepare_final_number(args, error):
    ref = args["reference"]
    value = parse_number(ref) if isinstance(ref, str) else float(ref)
    if value is None or not math.isfinite(value):
        raise error("reference", f"must be a finite number (or a string holding one), got {ref!r}")
    return {"reference": value}


# ---------------------------------------------------------------- checks
def _check_include(response: str, patterns: list[re.Pattern[str]], mode: str) -> bool:
    found = [p.search(response) is not None for p in patterns]
    return all(found) if mode == "all" else any(found)


def _check_avoid(response: str, patterns: list[re.Pattern[str]]) -> bool:
    return not any(p.search(response) for p in patterns)


def _within(count: int, low: int | None, high: int | None) -> bool:
    return (low is None or count >= low) and (high is None or count <= high)


def word_count(text: str) -> int:
    """The number of whitespace-separated words."""
    return len(text.split())


def sentence_count(text: str) -> int:
    """The number of sentences: stretches holding a word character between . ! ? marks (see the module)."""
    return sum(1 for part in _SENTENCE_END.split(text) if _WORD_CHAR.search(part))


def _check_words(response: str, low: int | None, high: int | None) -> bool:
    return _within(word_count(response), low, high)


def _check_sentences(response: str, low: int | None, high: int | None) -> bool:
    return _within(sentence_count(response), low, high)


def _check_json(response: str, validator: Any, keys: list[str] | None, allow_code_fence: bool) -> bool:
    text = response.strip()
    if allow_code_fence:
        fenced = _FENCE.fullmatch(text)
        if fenced:
            text = fenced.group(1)
    try:
        data = json_module.loads(text)
    except ValueError:
        return False
    if keys is not None and not (isinstance(data, dict) and all(k in data for k in keys)):
        return False
    return validator is None or bool(validator.is_valid(data))


def _check_regex(response: str, pattern: re.Pattern[str], mode: str) -> bool:
    return (pattern.search(response) if mode == "search" else pattern.fullmatch(response)) is not None


def final_number(text: str) -> float | None:
    """The last number in a text (thousands commas removed), or None when it holds none."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _check_final_number(response: str, reference: float) -> bool:
    value = final_number(response)
    return value is not None and abs(value - reference) <= FINAL_NUMBER_TOLERANCE


_CASE = CheckerParam("case_sensitive", bool, default=False, help="match the keywords' case exactly")
_KEYWORDS = CheckerParam("keywords", list, required=True, help="the keywords (whole words or phrases)")
_MIN = CheckerParam("min", (int, type(None)), help="the least count accepted (inclusive)")
_MAX = CheckerParam("max", (int, type(None)), help="the largest count accepted (inclusive)")

CHECKERS: dict[str, CheckerSpec] = {spec.name: spec for spec in (
    CheckerSpec("include_keywords", "the response contains the keywords as whole words",
                (_KEYWORDS, CheckerParam("mode", str, default="all", help="'all' keywords or 'any' one"), _CASE),
                _check_include, _prepare_include),
    CheckerSpec("avoid_keywords", "the response contains none of the keywords as whole words",
                (_KEYWORDS, _CASE), _check_avoid, _prepare_avoid),
    CheckerSpec("word_count", "the number of whitespace-separated words lies within [min, max]",
                (_MIN, _MAX), _check_words, _prepare_bounds),
    CheckerSpec("sentence_count", "the number of sentences lies within [min, max]",
                (_MIN, _MAX), _check_sentences, _prepare_bounds),
    CheckerSpec("json", "the response is valid JSON (optionally holding keys, valid against a JSON Schema)",
                (CheckerParam("schema", (dict, type(None)), help="a JSON Schema the value must satisfy"),
                 CheckerParam("keys", (list, type(None)), help="keys the JSON object must hold"),
                 CheckerParam("allow_code_fence", bool, default=True,
                              help="accept the JSON inside one ``` code fence")),
                _check_json, _prepare_json),
    CheckerSpec("regex", "the response matches a regular expression",
                (CheckerParam("pattern", str, required=True, help="a Python regular expression"),
                 CheckerParam("mode", str, default="search", help="'search' anywhere or 'fullmatch' the whole text"),
                 CheckerParam("ignore_case", bool, default=False, help="match case-insensitively")),
                _check_regex, _prepare_regex),
    CheckerSpec("final_number", "the last number in the response equals the reference",
                (CheckerParam("reference", (int, float, str), required=True, help="the expected answer"),),
                _check_final_number, _prepare_final_number),
)}


def _field(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def build_checker(spec: Mapping[str, object], *, where: str, path: str | None = None,
                  line: int | None = None) -> Checker:
    """A bound checker from ``{"checker": name, param: value, ...}``; InputError naming ``{where}.{param}``."""
    def error(name: str, reason: str) -> InputError:
        return InputError(reason, path=path, line=line, field=_field(where, name))

    if not isinstance(spec, Mapping):
        raise InputError(f"a checker spec is an object with a 'checker' name, got {type(spec).__name__}",
                         path=path, line=line, field=where or None)
    name = spec.get("checker")
    if not isinstance(name, str) or name not in CHECKERS:
        raise error("checker", f"unknown checker {name!r}; the checkers are {', '.join(CHECKERS)}")
    checker = CHECKERS[name]
    declared = {p.name: p for p in checker.params}
    unknown = [str(k) for k in spec if k != "checker" and k not in declared]
    if unknown:
        raise error(unknown[0], f"unknown parameter of checker {name!r}; it takes "
                                f"{', '.join(declared) or 'no parameters'}")
    args: dict[str, Any] = {}
    for p in checker.params:
        if p.name not in spec:
            if p.required:
                raise error(p.name, f"checker {name!r} needs this parameter ({p.help})")
            args[p.name] = p.default
            continue
        value = spec[p.name]
        if not _is_kind(value, p.kind):
            raise error(p.name, f"must be a {_kind_text(p.kind)}, got {type(value).__name__} {value!r}")
        args[p.name] = value
    prepared = checker.prepare(args, error) if checker.prepare is not None else args
    return Checker(checker, args, prepared)


# ---------------------------------------------------------------- per-prompt constraints
@dataclass
class PromptConstraints:
    """The constraints of each prompt, keyed by `splits.prompt_key` of its messages."""

    by_key: dict[str, list[Checker]] = field(default_factory=dict)
    specs: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    """prompt key -> (where it was given, the specs as given): to refuse one prompt given different constraints."""

    @classmethod
    def from_rows(cls, rows: Sequence[PromptRow]) -> PromptConstraints:
        """The constraints of the rows that carry a ``constraints`` list; InputError naming the row's file:line."""
        out = cls()
        for row in rows:
            out.add(row.messages, row.row.get("constraints"), row.location)
        return out

    def add(self, messages: list[Message], specs: Any, location: str) -> None:
        """Register a prompt's constraint specs (None: it has none); InputError at `location` for a bad one."""
        if specs is None:
            return
        path, line = split_location(location)
        if not isinstance(specs, list) or not specs:
            raise InputError("must be a non-empty list of checker specs", path=path, line=line, field="constraints")
        key = prompt_key(messages)
        if key in self.specs:
            first, before = self.specs[key]
            if before != specs:
                raise InputError(f"the same prompt was given other constraints at {first}", path=path, line=line,
                                 field="constraints")
            return
        self.by_key[key] = [build_checker(s, where=f"constraints[{i}]", path=path, line=line)
                            for i, s in enumerate(specs)]
        self.specs[key] = (location, json_module.loads(json_module.dumps(specs)))

    def update(self, other: PromptConstraints) -> None:
        """Merge another set of constraints into this one (the same refusal of conflicting constraints)."""
        for key, checkers in other.by_key.items():
            location, specs = other.specs[key]
            if key in self.specs:
                if self.specs[key][1] != specs:
                    path, line = split_location(location)
                    raise InputError(f"the same prompt was given other constraints at {self.specs[key][0]}",
                                     path=path, line=line, field="constraints")
                continue
            self.by_key[key] = checkers
            self.specs[key] = (location, specs)

    def checkers(self, messages: list[Message]) -> list[Checker] | None:
        """The prompt's checkers, or None when it has no constraints."""
        return self.by_key.get(prompt_key(messages))

    def __len__(self) -> int:
        return len(self.by_key)
