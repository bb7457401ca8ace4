"""Data source configs: which files feed which objectives.

A sources config (YAML or a dict) lists data files and maps them, or their subsets or rating columns, to
objectives::

    heldout_fraction: 0.3      # the project's held-out split (see paretoalign.data.splits)
    seed: 0
    sources:
      - name: hh_rlhf
        path: ${shared}/hh_rlhf/hh_rlhf_test.jsonl   # ${shared}: the shared data dir; else relative to this file
        format: pairs                                 # pairs | ratings | rankings
        subsets: {helpful-base: helpfulness, harmless-base: harmlessness}
        other_subsets: skip                           # rows of other subsets: error (default) | skip (warns)
        drop_empty: true
      - name: topical_chat
        path: ${shared}/topical_chat_usr/topical_chat_usr_ratings.jsonl
        format: ratings
        prompt_format: turns
        attributes: {overall: tc_overall, coherence: tc_coherence}   # rating column -> objective

Each pair's ``subset`` becomes ``"name/subset"`` (or ``"name"``) so evaluation can report per dataset and subset.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from paretoalign.data.preference import load_preference_pairs
from paretoalign.data.rankings import load_ranked_pairs
from paretoalign.data.ratings import load_ratings
from paretoalign.data.records import SUPPORTED_SUFFIXES, data_suffix, location_error
from paretoalign.data.schema import PreferencePair, RatedResponse
from paretoalign.data.splits import DEFAULT_HELDOUT_FRACTION, DEFAULT_SEED, check_fraction, split_of
from paretoalign.errors import InputError

FORMATS = ("pairs", "ratings", "rankings")
SPLITS = ("train", "test")


@dataclass
class SourceSpec:
    """One data file and how its rows map to objectives (see the module docstring)."""

    path: str
    """The data file; after ``load_sources_config`` an absolute path with ``${shared}`` substituted."""
    format: str = "pairs"
    name: str = ""
    """Short name, kept in ``subset`` as ``"name/subset"``; defaults to the file name without extensions."""
    objective: str | None = None
    """Every row -> this objective (pairs, rankings). With neither objective nor subsets, each row's own
    ``objective`` field is used."""
    subsets: dict[str, str] | None = None
    """Value of `subset_field` -> objective (pairs, rankings)."""
    other_subsets: str = "error"
    """What to do with rows whose subset is not in `subsets`: ``"error"`` or ``"skip"`` (with a warning)."""
    attributes: dict[str, str] | None = None
    """Ratings only: rating column -> objective name. None keeps every numeric column under its own name."""
    prompt_field: str | None = None
    """Default "prompt"; for rankings, "messages" where a row has it, else "prompt"."""
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    response_field: str = "response"
    rank_field: str = "rank"
    subset_field: str | None = "subset"
    group_by: str = "prompt"
    lower_is_better: bool = True
    prompt_format: str = "auto"
    """"auto" (string, HH text or message list) or "turns" (newline-separated turns, the last one the user's)."""
    prefix_subset: bool = True
    """Store subsets as "name/subset"; false keeps a row's subset as it is (for files written that way)."""
    drop_empty: bool = False
    limit: int | None = None
    """Keep at most this many pairs / rated replies (the first ones, after the split and subset filters)."""
    split: str | None = None
    """"train" or "test": keep only that side of the held-out split."""


@dataclass
class SourcesConfig:
    """A list of sources and the held-out split settings they share."""

    sources: list[SourceSpec] = field(default_factory=list)
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION
    seed: int = DEFAULT_SEED


@dataclass
class TrainingData:
    """Everything a sources config loads: pairs (objective set) and ratings (keyed by objective name)."""

    pairs: list[PreferencePair] = field(default_factory=list)
    ratings: list[RatedResponse] = field(default_factory=list)

    def objectives(self) -> list[str]:
        """Sorted names of the objectives with at least one pair or rating."""
        names = {p.objective for p in self.pairs if p.objective is not None}
        names.update(k for r in self.ratings for k, v in r.ratings.items() if not math.isnan(v))
        return sorted(names)

    def summary(self) -> dict[str, dict[str, int]]:
        """``{objective: {"pairs": n, "ratings": n}}`` (ratings = replies with a value for that objective)."""
        pairs = Counter(p.objective for p in self.pairs)
        ratings = Counter(k for r in self.ratings for k, v in r.ratings.items() if not math.isnan(v))
        return {name: {"pairs": pairs.get(name, 0), "ratings": ratings.get(name, 0)} for name in self.objectives()}

    def subset_counts(self) -> dict[str, int]:
        """Number of pairs and rated replies per ``subset`` ("name/subset"), sorted by subset."""
        counts = Counter(p.subset for p in self.pairs) + Counter(r.subset for r in self.ratings)
        return {str(k): counts[k] for k in sorted(counts, key=str)}

    def pairs_for(self, objective: str) -> list[PreferencePair]:
        """The pairs of one objective."""
        return [p for p in self.pairs if p.objective == objective]


_SPEC_FIELDS = {f.name: f for f in fields(SourceSpec)}
_TOP_KEYS = ("sources", "heldout_fraction", "seed")
_STR_KEYS = ("path", "format", "name", "objective", "other_subsets", "prompt_field", "chosen_field",
             "rejected_field", "response_field", "rank_field", "subset_field", "group_by", "prompt_format", "split")
_NULLABLE = ("objective", "subsets", "attributes", "prompt_field", "subset_field", "limit", "split")
_PAIR_ONLY = ("objective", "subsets", "chosen_field", "rejected_field")
_RANK_ONLY = ("rank_field", "group_by", "lower_is_better")


def load_sources_config(path_or_dict: str | os.PathLike | dict, *, shared_dir: str | os.PathLike | None = None,
                        base_dir: str | os.PathLike | None = None) -> SourcesConfig:
    """Read and validate a sources config from a YAML file or a dict.

    ``${shared}`` in a path is replaced by `shared_dir`; other relative paths are resolved against the YAML file's
    folder (for a dict: `base_dir`, default the working directory). Unknown keys, bad values and missing data
    files raise ``InputError`` naming the YAML file, the line and the key (e.g. ``sources[2].format``).
    """
    lines: dict[str, int] = {}
    if isinstance(path_or_dict, dict):
        data, label = path_or_dict, "<sources config>"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        config_path = Path(path_or_dict)
        label = str(config_path)
        base = Path(base_dir) if base_dir is not None else config_path.resolve().parent
        try:
            text = config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("sources config not found", path=label) from None
        try:
            data = yaml.safe_load(text)
            lines = _yaml_lines(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"invalid YAML: {getattr(e, 'problem', None) or e}", path=label,
                             line=mark.line + 1 if mark is not None else None) from None
    # ${shared} is given relative to the caller's working directory, never to the YAML file's folder.
    shared = Path(shared_dir).expanduser().resolve() if shared_dir is not None else None
    return _parse_config(data, _Where(label, lines), shared, base)


def restrict_to_split(config: SourcesConfig, split: str | None) -> SourcesConfig:
    """`config` with every source keeping only one side ("train" / "test") of the held-out split (None: unchanged)."""
    if split is not None:
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS} or None, got {split!r}", field="split")
        for spec in config.sources:
            spec.split = split
    return config


def load_training_data(config: SourcesConfig) -> TrainingData:
    """Load every source of `config`: objectives assigned, subsets prefixed, split and limit applied."""
    data = TrainingData()
    for spec in config.sources:
        if spec.format == "ratings":
            data.ratings.extend(_load_ratings(spec, config))
        else:
            data.pairs.extend(_load_pairs(spec, config))
    return data


def _load_pairs(spec: SourceSpec, config: SourcesConfig) -> list[PreferencePair]:
    filtering = spec.split is not None or spec.other_subsets == "skip"
    limit = None if filtering else spec.limit
    if spec.format == "pairs":
        pairs = load_preference_pairs(spec.path, objective=spec.objective, prompt_field=spec.prompt_field or "prompt",
                                      chosen_field=spec.chosen_field, rejected_field=spec.rejected_field,
                                      subset_field=spec.subset_field, drop_empty=spec.drop_empty, limit=limit,
                                      prompt_format=spec.prompt_format)
    else:
        pairs = load_ranked_pairs(spec.path, rank_field=spec.rank_field, response_field=spec.response_field,
                                  prompt_field=spec.prompt_field, group_by=spec.group_by,
                                  lower_is_better=spec.lower_is_better, objective=spec.objective,
                                  subset_field=spec.subset_field, drop_empty=spec.drop_empty, limit=limit,
                                  prompt_format=spec.prompt_format)
    kept: list[PreferencePair] = []
    skipped: Counter[str] = Counter()
    for pair in pairs:
        subset = pair.subset
        if spec.subsets is not None:
            if subset not in spec.subsets:
                if spec.other_subsets == "skip":
                    skipped[str(subset)] += 1
                    continue
                listed = ", ".join(spec.subsets)
                raise location_error(f"subset {subset!r} is not mapped to an objective in source {spec.name!r} "
                                     f"(mapped: {listed}); add it to 'subsets' or set 'other_subsets: skip'",
                                     pair.source, spec.subset_field)
            pair.objective = spec.subsets[subset]
        elif pair.objective is None:
            raise location_error(f"source {spec.name!r} gives this row no objective: set 'objective' or 'subsets' "
                                 "in the sources config, or an 'objective' field in each row", pair.source,
                                 "objective")
        if spec.split is not None and split_of(pair.prompt, fraction=config.heldout_fraction,
                                               seed=config.seed) != spec.split:
            continue
        if spec.prefix_subset:
            pair.subset = f"{spec.name}/{subset}" if subset is not None else spec.name
        kept.append(pair)
        if spec.limit is not None and len(kept) >= spec.limit:
            break
    if skipped:
        detail = ", ".join(f"{name}: {n}" for name, n in sorted(skipped.items()))
        warnings.warn(f"source {spec.name!r}: skipped {sum(skipped.values())} rows of subsets not mapped to an "
                      f"objective ({detail})", stacklevel=3)
    return kept


def _load_ratings(spec: SourceSpec, config: SourcesConfig) -> list[RatedResponse]:
    rows = load_ratings(spec.path, attributes=list(spec.attributes) if spec.attributes is not None else None,
                        prompt_field=spec.prompt_field or "prompt", response_field=spec.response_field,
                        subset_field=spec.subset_field, drop_empty=spec.drop_empty,
                        limit=None if spec.split is not None else spec.limit, prompt_format=spec.prompt_format)
    kept: list[RatedResponse] = []
    for row in rows:
        if spec.split is not None and split_of(row.prompt, fraction=config.heldout_fraction,
                                               seed=config.seed) != spec.split:
            continue
        if spec.attributes is not None:
            row.ratings = {spec.attributes[column]: value for column, value in row.ratings.items()}
        if spec.prefix_subset:
            row.subset = f"{spec.name}/{row.subset}" if row.subset is not None else spec.name
        kept.append(row)
        if spec.limit is not None and len(kept) >= spec.limit:
            break
    return kept


# --- config parsing -----------------------------------------------------------------------------------------


@dataclass
class _Where:
    label: str
    lines: dict[str, int]

    def error(self, message: str, key: str | None = None) -> InputError:
        return InputError(message, path=self.label, line=self.line(key) if key else None, field=key)

    def line(self, key: str) -> int | None:
        """The line of `key`, or of its nearest enclosing key that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            match = re.fullmatch(r"(.*?)(\.[^.\[\]]+|\[\d+\])", key)
            key = match.group(1) if match else ""
        return None


def _yaml_lines(text: str) -> dict[str, int]:
    """Key path (``sources[1].format``) -> 1-based line, from the YAML node tree."""
    lines: dict[str, int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                path = f"{prefix}[{i}]"
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    if root is not None:
        walk(root, "")
    return lines


def _unknown_key(key: Any, allowed: Any, where: _Where, prefix: str) -> InputError:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
    return where.error(f"unknown key {key!r}{hint}", f"{prefix}{key}")


def _parse_config(data: Any, where: _Where, shared_dir: Path | None, base: Path) -> SourcesConfig:
    if not isinstance(data, dict):
        raise where.error(f"a sources config must be a mapping with a 'sources' list, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown_key(key, _TOP_KEYS, where, "")
    fraction = data.get("heldout_fraction", DEFAULT_HELDOUT_FRACTION)
    try:
        check_fraction(fraction)
    except InputError as e:
        raise where.error(e.reason, "heldout_fraction") from None
    seed = data.get("seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise where.error(f"seed must be an integer, got {seed!r}", "seed")
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise where.error("'sources' must be a non-empty list of sources", "sources")
    sources = [_parse_source(raw, i, where, shared_dir, base) for i, raw in enumerate(raw_sources)]
    names = Counter(spec.name for spec in sources)
    for i, spec in enumerate(sources):
        if names[spec.name] > 1:
            raise where.error(f"two sources are named {spec.name!r}; give each a distinct 'name'",
                              f"sources[{i}].name")
    return SourcesConfig(sources=sources, heldout_fraction=float(fraction), seed=seed)


def _parse_source(raw: Any, index: int, where: _Where, shared_dir: Path | None, base: Path) -> SourceSpec:
    prefix = f"sources[{index}]."
    if not isinstance(raw, dict):
        raise where.error(f"each source must be a mapping, got {type(raw).__name__}", f"sources[{index}]")
    for key in raw:
        if key not in _SPEC_FIELDS:
            raise _unknown_key(key, _SPEC_FIELDS, where, prefix)
    if "path" not in raw:
        raise where.error("missing required key 'path'", f"sources[{index}]")
    values = dict(raw)
    for key, value in values.items():
        _check_type(key, value, where, prefix + key)
    fmt = values.get("format", "pairs")
    if fmt not in FORMATS:
        raise where.error(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", prefix + "format")
    if values.get("other_subsets", "error") not in ("error", "skip"):
        raise where.error(f"other_subsets must be 'error' or 'skip', got {values['other_subsets']!r}",
                          prefix + "other_subsets")
    if values.get("split") not in (None, *SPLITS):
        raise where.error(f"split must be 'train', 'test' or null, got {values['split']!r}", prefix + "split")
    if values.get("prompt_format", "auto") not in ("auto", "turns"):
        raise where.error(f"prompt_format must be 'auto' or 'turns', got {values['prompt_format']!r}",
                          prefix + "prompt_format")
    if fmt == "ratings":
        for key in (*_PAIR_ONLY, *_RANK_ONLY, "other_subsets"):
            if key in values:
                raise where.error(f"{key!r} does not apply to format 'ratings' (map rating columns to objectives "
                                  "with 'attributes')", prefix + key)
    else:
        if "attributes" in values:
            raise where.error(f"'attributes' applies to format 'ratings' only, not {fmt!r}", prefix + "attributes")
        if fmt == "pairs":
            for key in _RANK_ONLY:
                if key in values:
                    raise where.error(f"{key!r} applies to format 'rankings' only", prefix + key)
        else:
            for key in ("chosen_field", "rejected_field"):
                if key in values:
                    raise where.error(f"{key!r} does not apply to format 'rankings'", prefix + key)
        if values.get("objective") is not None and values.get("subsets") is not None:
            raise where.error("give 'objective' (all rows) or 'subsets' (per subset), not both", prefix + "subsets")
        if values.get("subsets") is not None and values.get("subset_field", "subset") is None:
            raise where.error("'subsets' needs a 'subset_field'", prefix + "subsets")
        if "other_subsets" in values and values.get("subsets") is None:
            raise where.error("'other_subsets' needs 'subsets'", prefix + "other_subsets")
    attributes = values.get("attributes")
    if isinstance(attributes, list):
        attributes = values["attributes"] = {name: name for name in attributes}
    if attributes is not None:
        targets = Counter(attributes.values())
        for column, objective in attributes.items():
            if targets[objective] > 1:
                raise where.error(f"two rating columns map to objective {objective!r}", f"{prefix}attributes.{column}")
    values["path"] = _resolve_path(values["path"], where, prefix + "path", shared_dir, base)
    if not values.get("name"):
        values["name"] = _stem(Path(values["path"]))
    return SourceSpec(**values)


def _check_type(key: str, value: Any, where: _Where, at: str) -> None:
    if value is None:
        if key not in _NULLABLE:
            raise where.error("must not be null", at)
        return
    if key in _STR_KEYS:
        if not isinstance(value, str) or (key != "name" and not value):
            raise where.error(f"expected a non-empty string, got {value!r}", at)
    elif key in ("drop_empty", "lower_is_better", "prefix_subset"):
        if not isinstance(value, bool):
            raise where.error(f"expected true or false, got {value!r}", at)
    elif key == "limit":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise where.error(f"expected a non-negative integer or null, got {value!r}", at)
    elif key == "subsets":
        if not isinstance(value, dict) or not value:
            raise where.error("expected a non-empty mapping of subset -> objective", at)
        for name, objective in value.items():
            if not isinstance(objective, str) or not objective:
                raise where.error(f"objective of subset {name!r} must be a non-empty string, got {objective!r}",
                                  f"{at}.{name}")
            if not isinstance(name, str):
                raise where.error(f"subset names must be strings (quote {name!r} in YAML)", f"{at}.{name}")
    elif key == "attributes":
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                raise where.error("expected a mapping of rating column -> objective, or a list of columns", at)
        elif not isinstance(value, dict) or not value:
            raise where.error("expected a non-empty mapping of rating column -> objective", at)
        else:
            for column, objective in value.items():
                if not isinstance(objective, str) or not objective or not isinstance(column, str):
                    raise where.error(f"rating column {column!r} must map to an objective name, got {objective!r}",
                                      f"{at}.{column}")


def _resolve_path(text: str, where: _Where, at: str, shared_dir: Path | None, base: Path) -> str:
    if "${shared}" in text:
        if shared_dir is None:
            raise where.error(f"path {text!r} uses ${{shared}} but no shared data directory was given "
                              "(pass shared_dir=)", at)
        text = text.replace("${shared}", str(shared_dir))
    unknown = re.findall(r"\$\{[^}]*\}", text)
    if unknown:
        raise where.error(f"unknown variable {unknown[0]} in path {text!r} (only ${{shared}} is known)", at)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if not path.exists():
        raise where.error(f"data file not found: {path}", at)
    return str(path)


def _stem(path: Path) -> str:
    suffix = data_suffix(path)
    return path.name[: -len(suffix)] if suffix in SUPPORTED_SUFFIXES else path.name
