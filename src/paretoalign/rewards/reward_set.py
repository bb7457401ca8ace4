"""Several rewards as one scorer: RM objectives, verifiable checkers and user functions, weighted on the simplex.

A `RewardSet` satisfies `rewards.protocols.Scorer`, so it goes wherever a reward model does (Best-of-N, Speculative
Rejection, front, the online trainers, the server). Its objectives are its components, in order; its score is
sum_k w_k c_k(x, y) (ALGORITHMS.md §11 "Several rewards" and "Verifiable rewards").

Reward-set file (YAML or JSON, a top-level mapping; the same ``rewards`` list goes inside a trainer config)::

    reward_model: default             # the RM that `rm:` components read (any --rm reference; omit if none)
    aggregation: sum_then_normalize   # or normalize_then_sum: how GRPO combines the components (stored here)
    rewards:
      - {name: helpfulness, rm: helpfulness, weight: 0.5}   # an RM objective r'_k by name; `rm: score` is the
                                                            # RM's own final score
      - {name: brief, checker: word_count, max: 60, weight: 0.3}   # a checker of rewards.verifiable, its params
      - {name: constraints, checker: prompt_constraints, weight: 0.2}   # fraction of the prompt's own
                                                            # constraints met (the prompt file's `constraints`)
      - {name: mine, function: "my_module:my_reward", weight: 0.0, args: {alpha: 2}}

Each component has exactly one of ``rm`` / ``checker`` / ``function``; ``name`` defaults to the rm objective, the
checker or the function name and must be unique; weights are >= 0 and sum to 1 (tolerance 1e-6), or are all
omitted (equal weights). A checker component is 1.0 when the checker accepts the response, else 0.0. A relative
``reward_model`` path is taken from the working folder, like every path given on the command line; a reward set
without ``rm`` components needs no reward model (one it names is then not loaded).

User functions follow TRL's reward-function convention::

    def my_reward(prompts: list[list[Message]], completions: list[str], **args) -> Sequence[float]

called once per scoring batch with the rows' prompts (lists of {"role", "content"} messages) and responses, plus
the component's ``args``; it returns one finite number per completion. ``module:function`` is imported from the
Python path, else from the reward-set file's folder or the working folder; it is the user's own code, run as is.
A function that raises, returns the wrong length, non-numbers, NaN or inf raises InputError naming
``rewards[i].function``; `RewardSet.probe` makes it fail before any run is written.

Assumes: rm components are scored by ONE call of the reward model per batch (its `batch_size` passed through);
checkers are pure functions of the response text (partial texts score like any other); every row's components depend
on that row only (user functions aside), so a row scores the same in any batch.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretoalign.errors import InputError
from paretoalign.rewards.gating import row_sum
from paretoalign.rewards.reward_model import RewardOutput, Weights, check_score_inputs, resolve_weight_vector
from paretoalign.rewards.verifiable import Checker, PromptConstraints, build_checker

if TYPE_CHECKING:
    from paretoalign.data.prompts import PromptRow
    from paretoalign.data.schema import Message
    from paretoalign.rewards.protocols import Scorer

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
REWARD_SET_SUFFIXES = (".yaml", ".yml", ".json")
PROMPT_CONSTRAINTS = "prompt_constraints"
RM_SCORE = "score"
"""`rm: score`: the reward model's own final score (its gating, or its fixed combination), not an objective."""
SIMPLEX_TOLERANCE = 1e-6
KINDS = ("rm", "checker", "function")
SPEC_KEYS = ("reward_model", "aggregation", "rewards")
_PROBE_PROMPT: list[dict[str, str]] = [{"role": "user", "content": "Say hello."}]
_PROBE_RESPONSE = "Hello."

RewardFunction = Callable[..., Sequence[float]]


@dataclass
class RewardComponent:
    """One reward of a set: an RM objective, a checker, the prompt's constraints or a user function."""

    name: str
    kind: str
    """"rm", "checker", "prompt_constraints" or "function"."""
    field: str
    """Where it was given, e.g. ``rewards[2]``: the prefix of its errors' fields."""
    weight: float | None = None
    """None: not given (all omitted: equal weights)."""
    rm: str | None = None
    checker: Checker | None = None
    function: RewardFunction | None = None
    reference: str | None = None
    """The function as given, ``module:function``."""
    args: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    line: int | None = None

    def error(self, reason: str, key: str | None = None) -> InputError:
        """An InputError naming this component (``rewards[i].key``) and where it was given."""
        return InputError(reason, path=self.path, line=self.line, field=self.field if key is None
                          else f"{self.field}.{key}")


@dataclass
class RewardSetSpec:
    """A checked reward-set spec: its components (nothing loaded yet), aggregation and reward-model reference."""

    components: list[RewardComponent]
    aggregation: str
    reward_model: str | None

    @property
    def needs_reward_model(self) -> bool:
        """Whether some component reads the reward model."""
        return any(c.kind == "rm" for c in self.components)


# ---------------------------------------------------------------- reading and checking specs
def read_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level mapping of a reward-set file (YAML or JSON); InputError naming the file (and line)."""
    import yaml

    text_path = str(path)
    try:
        text = Path(text_path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the reward-set file: {exc}", path=text_path) from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML/JSON: {getattr(exc, 'problem', None) or exc}", path=text_path,
                         line=None if mark is None else mark.line + 1) from None
    if not isinstance(spec, dict) or "rewards" not in spec:
        raise InputError("a reward-set file is a mapping with a top-level `rewards` list (see "
                         "paretoalign.rewards.reward_set)", path=text_path, field="rewards")
    return spec


def _component_lines(path: str | None) -> dict[int, int]:
    """1-based line of each item of the file's top-level ``rewards`` list (best effort: {} when unknown)."""
    if path is None or Path(path).suffix.lower() not in REWARD_SET_SUFFIXES or not Path(path).is_file():
        return {}
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if getattr(key, "value", None) == "rewards" and isinstance(value, yaml.SequenceNode):
            return {i: item.start_mark.line + 1 for i, item in enumerate(value.value)}
    return {}


def _import_function(reference: Any, component: RewardComponent) -> RewardFunction:
    if not isinstance(reference, str) or reference.count(":") != 1 or not all(reference.split(":")):
        raise component.error(f"a function is given as 'module:function', got {reference!r}", "function")
    module_name, name = reference.split(":")
    extra = [str(Path(component.path).expanduser().resolve().parent)] if component.path else []
    extra.append(os.getcwd())
    added = [p for p in extra if p not in sys.path]
    sys.path[len(sys.path):] = added  # after the Python path: installed modules win
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import user code: report it, naming the field
        raise component.error(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}",
                              "function") from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    fn = getattr(module, name, None)
    if fn is None:
        raise component.error(f"module {module_name!r} has no attribute {name!r}", "function")
    if not callable(fn):
        raise component.error(f"{reference} is a {type(fn).__name__}, not a function", "function")
    return fn


def _parse_component(item: Any, where: str, path: str | None, line: int | None) -> RewardComponent:
    if not isinstance(item, Mapping):
        raise InputError(f"a reward is an object with one of {', '.join(KINDS)}, got {type(item).__name__}",
                         path=path, line=line, field=where)
    kinds = [k for k in KINDS if k in item]
    if len(kinds) != 1:
        found = f"got {' and '.join(kinds)}" if kinds else f"got keys {sorted(map(str, item))}"
        raise InputError(f"a reward has exactly one of {', '.join(KINDS)} ({found})", path=path, line=line,
                         field=where)
    kind = kinds[0]
    component = RewardComponent(name="", kind=kind, field=where, path=path, line=line)
    if "weight" in item:
        weight = item["weight"]
        if isinstance(weight, str):
            try:
                weight = float(weight)
            except ValueError:
                pass
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise component.error(f"a weight is a finite number, got {item['weight']!r}", "weight")
        if weight < 0:
            raise component.error(f"weights must lie on the simplex (>= 0, summing to 1), got {weight}", "weight")
        component.weight = float(weight)
    value = item[kind]
    rest = {str(k): v for k, v in item.items() if k not in ("name", "weight", kind)}
    if kind == "rm":
        if not isinstance(value, str) or not value.strip():
            raise component.error(f"rm names a reward-model objective (or 'score'), got {value!r}", "rm")
        component.rm, default = value.strip(), value.strip()
    elif kind == "checker" and value == PROMPT_CONSTRAINTS:
        component.kind, default = PROMPT_CONSTRAINTS, PROMPT_CONSTRAINTS
    elif kind == "checker":
        component.checker = build_checker({"checker": value, **rest}, where=where, path=path, line=line)
        default, rest = str(value), {}
    else:
        component.reference = value if isinstance(value, str) else None
        component.function = _import_function(value, component)
        default = value.split(":")[1]
        args = rest.pop("args", {})
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise component.error(f"args is a mapping of keyword arguments, got {type(args).__name__}", "args")
        component.args = dict(args)
    if rest:
        raise component.error(f"unknown key for a {kind} reward (it takes name, weight, {kind}"
                              f"{', args' if kind == 'function' else ''})", sorted(rest)[0])
    name = item.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise component.error(f"a name is a non-empty string, got {name!r}", "name")
    component.name = name.strip()
    return component


def check_components(components: Sequence[RewardComponent]) -> np.ndarray:
    """The (K,) weights of the components (equal when none is given); InputError for duplicate names or weights off
    the simplex."""
    if not components:
        raise InputError("give at least one reward", field="rewards")
    seen: dict[str, str] = {}
    for c in components:
        if c.name in seen:
            raise c.error(f"duplicate reward name {c.name!r} (also {seen[c.name]}); give each a unique name", "name")
        seen[c.name] = c.field
    given = [c.weight is not None for c in components]
    if not any(given):
        return np.full(len(components), 1.0 / len(components), dtype=np.float64)
    if not all(given):
        missing = next(c for c in components if c.weight is None)
        raise missing.error("give every reward a weight, or none (equal weights)", "weight")
    w = np.array([c.weight for c in components], dtype=np.float64)
    total = float(w.sum())
    if abs(total - 1.0) > SIMPLEX_TOLERANCE:
        listing = ", ".join(f"{c.name}={c.weight:g}" for c in components)
        raise components[-1].error(f"weights must lie on the simplex: they sum to {total:.6g}, not 1 ({listing})",
                                   "weight")
    return w


def check_spec(spec: Mapping[str, Any], *, path: str | None = None, field_prefix: str = "") -> RewardSetSpec:
    """Check a reward-set spec without loading any model (imports its user functions' modules)."""
    prefix = field_prefix if not field_prefix or field_prefix.endswith(".") else field_prefix + "."
    if not isinstance(spec, Mapping):
        raise InputError(f"a reward set is a mapping, got {type(spec).__name__}", path=path,
                         field=field_prefix or None)
    unknown = [str(k) for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise InputError(f"unknown key(s) {unknown}; a reward set has {', '.join(SPEC_KEYS)}", path=path,
                         field=f"{prefix}{unknown[0]}")
    rewards = spec.get("rewards")
    if not isinstance(rewards, list) or not rewards:
        raise InputError("`rewards` is a non-empty list of rewards", path=path, field=f"{prefix}rewards")
    aggregation = spec.get("aggregation", "sum_then_normalize")
    if aggregation not in AGGREGATIONS:
        raise InputError(f"aggregation is one of {', '.join(AGGREGATIONS)}, got {aggregation!r}", path=path,
                         field=f"{prefix}aggregation")
    reference = spec.get("reward_model")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise InputError(f"reward_model is a reward-model reference (a folder, `default`, ...), got {reference!r}",
                         path=path, field=f"{prefix}reward_model")
    lines = _component_lines(path) if not prefix else {}
    components = [_parse_component(item, f"{prefix}rewards[{i}]", path, lines.get(i))
                  for i, item in enumerate(rewards)]
    check_components(components)
    return RewardSetSpec(components, str(aggregation), reference)


# ---------------------------------------------------------------- the scorer
class RewardSet:
    """Several rewards scored together; a `Scorer` whose objectives are the components."""

    def __init__(self, components: Sequence[RewardComponent], *, reward_model: Scorer | None = None,
                 aggregation: str = "sum_then_normalize", constraints: PromptConstraints | None = None) -> None:
        if aggregation not in AGGREGATIONS:
            raise InputError(f"aggregation is one of {', '.join(AGGREGATIONS)}, got {aggregation!r}",
                             field="aggregation")
        self.components = list(components)
        self.weights = check_components(self.components)
        self.objective_names = [c.name for c in self.components]
        self.aggregation = aggregation
        self.reward_model = reward_model
        self.constraints = constraints if constraints is not None else PromptConstraints()
        self.verbosity_objective: str | None = None
        rm_components = [c for c in self.components if c.kind == "rm"]
        if rm_components and reward_model is None:
            c = rm_components[0]
            raise InputError(f"{c.field} reads the reward model's objective {c.rm!r}: name a reward_model",
                             path=c.path, field=f"{c.field.rsplit('rewards[', 1)[0]}reward_model")
        names = list(reward_model.objective_names) if reward_model is not None else []
        for c in rm_components:
            if c.rm != RM_SCORE and c.rm not in names:
                raise c.error(f"unknown reward-model objective {c.rm!r}; its objectives are {', '.join(names)} "
                              f"(or {RM_SCORE!r}, its final score)", "rm")

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}={w:g}" for c, w in zip(self.components, self.weights, strict=True))
        return f"RewardSet({parts}; aggregation={self.aggregation})"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, reward_model: Scorer | str | None = None, path: str | None = None,
                  field_prefix: str = "", trust_remote_code: bool = False) -> RewardSet:
        """A reward set from a spec (see the module); `reward_model` (an object or a reference) overrides the
        spec's, and loads only when some component reads it."""
        checked = check_spec(spec, path=path, field_prefix=field_prefix)
        rm = reward_model if reward_model is not None else checked.reward_model
        if isinstance(rm, (str, os.PathLike)):
            if checked.needs_reward_model:
                from paretoalign.rewards.model_loading import load_reward_model

                prefix = field_prefix if not field_prefix or field_prefix.endswith(".") else field_prefix + "."
                rm = load_reward_model(str(rm), trust_remote_code=trust_remote_code, field=f"{prefix}reward_model")
            else:
                rm = None
        return cls(checked.components, reward_model=rm, aggregation=checked.aggregation)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw: Any) -> RewardSet:
        """A reward set from a YAML / JSON reward-set file (keywords as `from_spec`)."""
        return cls.from_spec(read_spec_file(path), path=str(path), **kw)

    # ------------------------------------------------------------------ prompts
    def attach_prompts(self, rows: Sequence[PromptRow]) -> None:
        """Register the constraints the prompt rows carry (merged with those already attached)."""
        self.constraints.update(PromptConstraints.from_rows(rows))

    def check_prompts(self, prompts: Sequence[str | list[Message]]) -> None:
        """InputError unless every prompt has constraints, when a component scores the prompts' constraints."""
        component = next((c for c in self.components if c.kind == PROMPT_CONSTRAINTS), None)
        if component is None:
            return
        for i, messages in enumerate(check_score_inputs(list(prompts), [""] * len(prompts))):
            if self.constraints.checkers(messages) is None:
                raise component.error(f"prompt {i} has no constraints, but this reward scores the fraction of its "
                                      "constraints met: give the row a `constraints` list", "checker")

    # ------------------------------------------------------------------ scoring
    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """User weights by component name ({name: w}) or as a (K,) vector; None: the set's own weights."""
        return resolve_weight_vector(weights, self.objective_names)

    def _call_function(self, c: RewardComponent, prompts: list[list[Message]], responses: list[str]) -> np.ndarray:
        copies = [[dict(m) for m in messages] for messages in prompts]
        try:
            result = c.function(copies, list(responses), **c.args)
        except Exception as exc:  # the user's code failed: report it naming the field
            raise c.error(f"the reward function {c.reference} raised {type(exc).__name__}: {exc}",
                          "function") from None
        if isinstance(result, (str, bytes, Mapping)) or not hasattr(result, "__len__"):
            raise c.error(f"the reward function {c.reference} must return a sequence of numbers (one per "
                          f"completion), got {type(result).__name__}", "function")
        if len(result) != len(responses):
            raise c.error(f"the reward function {c.reference} returned {len(result)} values for {len(responses)} "
                          "completions (one per completion)", "function")
        values = np.empty(len(responses), dtype=np.float64)
        for j, v in enumerate(result):
            if not isinstance(v, (int, float, np.integer, np.floating, np.bool_)):
                raise c.error(f"the reward function {c.reference} returned {type(v).__name__} {v!r} at position "
                              f"{j}: rewards are numbers", "function")
            values[j] = float(v)
            if not math.isfinite(values[j]):
                raise c.error(f"the reward function {c.reference} returned {values[j]} at position {j}: rewards "
                              "are finite numbers", "function")
        return values

    def _constraints_met(self, c: RewardComponent, prompts: list[list[Message]], responses: list[str]) -> np.ndarray:
        values = np.empty(len(responses), dtype=np.float64)
        for j, (messages, response) in enumerate(zip(prompts, responses, strict=True)):
            checkers = self.constraints.checkers(messages)
            if checkers is None:
                raise c.error(f"row {j}: prompt has no constraints, but this reward scores the fraction of its "
                              "constraints met: give the prompt-file row a `constraints` list", "checker")
            values[j] = sum(1.0 for check in checkers if check(response)) / len(checkers)
        return values

    def components_matrix(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *,
                          batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """(n, K) float64: each row's raw component values, in component order."""
        conversations = check_score_inputs(prompts, responses)
        texts = list(responses)
        matrix = np.zeros((len(texts), len(self.components)), dtype=np.float64)
        if not texts:
            return matrix
        if any(c.kind == "rm" for c in self.components):
            out = self.reward_model.score(conversations, texts, batch_size=batch_size, progress=progress)
            names = list(out.objective_names)
            for k, c in enumerate(self.components):
                if c.kind == "rm":
                    column = out.score if c.rm == RM_SCORE else np.asarray(out.objectives)[:, names.index(c.rm)]
                    matrix[:, k] = np.asarray(column, dtype=np.float64)
        for k, c in enumerate(self.components):
            if c.kind == "checker":
                matrix[:, k] = [1.0 if c.checker(t) else 0.0 for t in texts]
            elif c.kind == PROMPT_CONSTRAINTS:
                matrix[:, k] = self._constraints_met(c, conversations, texts)
            elif c.kind == "function":
                matrix[:, k] = self._call_function(c, conversations, texts)
        return matrix

    def score(self, prompts: Sequence[str | list[Message]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """The components of each row and their weighted sum (the set's weights, or `weights`)."""
        w = self.resolve_weights(weights)
        w = self.weights if w is None else w
        matrix = self.components_matrix(prompts, responses, batch_size=batch_size, progress=progress)
        return RewardOutput(score=row_sum(matrix * w), objectives=matrix, objectives_raw=matrix.copy(),
                            gating=np.broadcast_to(w, matrix.shape).copy(), baseline=None,
                            objective_names=list(self.objective_names), verbosity_contribution=None)

    def probe(self) -> None:
        """Call each user function once on a tiny row, and check that prompt constraints are attached, so that a
        bad set fails before any run is written (the reward model is not called)."""
        for c in self.components:
            if c.kind == "function":
                self._call_function(c, [_PROBE_PROMPT], [_PROBE_RESPONSE])
            elif c.kind == PROMPT_CONSTRAINTS and len(self.constraints) == 0:
                raise c.error("no prompt carries constraints, but this reward scores the fraction of each prompt's "
                              "constraints met: give the prompt-file rows a `constraints` list", "checker")
