"""The structural protocols (`Sampler`, `Scorer`, `Tokenizer`, `CausalLM`) match the classes that stand behind them,
Best-of-N runs on nothing but them, and no public model/tokenizer/policy/reward-model parameter is typed `Any`."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from paretoalign.embed.protocols import CausalLM, Tokenizer
from paretoalign.inference.best_of_n import best_of_n
from paretoalign.inference.engine import Candidate
from paretoalign.inference.policy import Policy
from paretoalign.inference.protocols import Sampler
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.vllm_backend import VLLMPolicy
from paretoalign.rewards.hf_classifier import SequenceClassifierRM
from paretoalign.rewards.protocols import Scorer
from paretoalign.rewards.reward_model import RewardOutput
from tests.rewards.model_factory import RecordingBackbone, random_model
from tests.tiny import make_tiny_llama, make_tokenizer

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "paretoalign"
P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
CALLABLE_DUNDERS = ("__call__", "__len__")


# ---------------------------------------------------------------- structural conformance
def _members(protocol: type) -> tuple[list[str], list[str]]:
    """(attributes, methods) that `protocol` itself declares."""
    methods = [name for name, value in vars(protocol).items() if inspect.isfunction(value)
               and (not name.startswith("_") or name in CALLABLE_DUNDERS)]
    return list(inspect.get_annotations(protocol)), methods


def _signature_problem(declared: inspect.Signature, actual: inspect.Signature) -> str | None:
    """Why a callable with `actual` cannot be called every way `declared` allows (None: it can)."""
    have = list(actual.parameters.values())
    var_pos = any(p.kind is P.VAR_POSITIONAL for p in have)
    var_kw = any(p.kind is P.VAR_KEYWORD for p in have)
    positional = [p for p in have if p.kind in POSITIONAL]
    used: set[str] = set()
    index = 0
    for p in declared.parameters.values():
        if p.kind is P.VAR_POSITIONAL and not var_pos:
            return f"takes no *{p.name}"
        if p.kind is P.VAR_KEYWORD and not var_kw:
            return f"takes no **{p.name}"
        if p.kind in POSITIONAL:
            if index < len(positional):
                q = positional[index]
                index += 1
                if p.kind is P.POSITIONAL_OR_KEYWORD and q.name != p.name:
                    return f"positional parameter {index} is {q.name!r}, not {p.name!r}"
                if p.default is not P.empty and q.default is P.empty:
                    return f"{q.name!r} has no default"
                used.add(q.name)
            elif not var_pos:
                return f"takes no positional parameter {p.name!r}"
        if p.kind is P.KEYWORD_ONLY:
            named = actual.parameters.get(p.name)
            if named is None or named.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
                if not var_kw:
                    return f"takes no keyword {p.name!r}"
            else:
                if p.default is not P.empty and named.default is P.empty:
                    return f"{named.name!r} has no default"
                used.add(named.name)
    required = [p.name for p in have if p.name not in used and p.default is P.empty
                and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
    return f"also requires {required}" if required else None


def conformance_problems(obj: object, protocol: type) -> list[str]:
    """What keeps `obj` from satisfying `protocol` structurally: missing members and incompatible signatures."""
    attributes, methods = _members(protocol)
    problems = [f"no attribute {name!r}" for name in attributes if not hasattr(obj, name)]
    for name in methods:
        member = getattr(obj, name, None)
        if not callable(member):
            problems.append(f"no method {name!r}")
            continue
        declared = inspect.signature(getattr(protocol, name))
        declared = declared.replace(parameters=list(declared.parameters.values())[1:])  # drop self
        problem = _signature_problem(declared, inspect.signature(member))
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


class FakeVLLM:
    """A backend shaped like `VLLMPolicy`: no logits hook, one fixed response per candidate."""

    def __init__(self, responses: Sequence[str]) -> None:
        self.responses = list(responses)
        self.calls: list[tuple[int, list[int]]] = []

    def encode_prompts(self, prompts: Sequence[object], max_new_tokens: int) -> list[list[int]]:
        return [[1, 2, 3] for _ in prompts]

    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams, *,
               prompt_indices: Sequence[int] | None = None,
               progress: Callable[[int], object] | None = None) -> list[list[Candidate]]:
        indices = list(prompt_indices) if prompt_indices is not None else list(range(len(prompt_ids)))
        self.calls.append((n, indices))
        return [[Candidate(prompt_index=p, index=j, token_ids=[7], finish_reason="eos", text=self.responses[j])
                 for j in range(n)] for p in indices]


class LengthScorer:
    """Scores a response by its length (one objective)."""

    objective_names = ["length"]

    def resolve_weights(self, weights: object) -> np.ndarray | None:
        return None if weights is None else np.ones(1)

    def score(self, prompts: Sequence[object], responses: Sequence[str], *, weights: object = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        lengths = np.array([[float(len(r))] for r in responses])
        return RewardOutput(score=lengths[:, 0].copy(), objectives=lengths, objectives_raw=lengths.copy(),
                            gating=np.ones_like(lengths), baseline=None, objective_names=["length"])


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def tiny_policy(tokenizer):
    return Policy(make_tiny_llama(tokenizer), tokenizer)


def classifier_rm(tokenizer) -> SequenceClassifierRM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id,
                         num_labels=2, id2label={0: "helpful", 1: "safe"}, label2id={"helpful": 0, "safe": 1})
    return SequenceClassifierRM(LlamaForSequenceClassification(config), tokenizer)


def test_the_checker_reports_missing_members_and_incompatible_signatures():
    class NoSample:
        def encode_prompts(self, prompts, max_new_tokens):
            return []

    class NoProgress(NoSample):
        def sample(self, prompt_ids, n, params, *, prompt_indices=None):
            return []

    class RequiredIndices(NoSample):
        def sample(self, prompt_ids, n, params, prompt_indices, progress=None):
            return []

    class Renamed(NoSample):
        def sample(self, ids, n, params, *, prompt_indices=None, progress=None):
            return []

    class ExtraRequired(NoSample):
        def sample(self, prompt_ids, n, params, *, prompt_indices=None, progress=None, seed):
            return []

    assert conformance_problems(NoSample(), Sampler) == ["no method 'sample'"]
    assert conformance_problems(NoProgress(), Sampler) == ["sample: takes no keyword 'progress'"]
    assert conformance_problems(RequiredIndices(), Sampler) == ["sample: 'prompt_indices' has no default"]
    assert conformance_problems(Renamed(), Sampler) == ["sample: positional parameter 1 is 'ids', not 'prompt_ids'"]
    assert conformance_problems(ExtraRequired(), Sampler) == ["sample: also requires ['seed']"]
    assert conformance_problems(object(), Scorer)[0] == "no attribute 'objective_names'"


def test_policy_and_the_vllm_backend_are_samplers(tiny_policy):
    assert conformance_problems(tiny_policy, Sampler) == []
    assert conformance_problems(FakeVLLM(["a"]), Sampler) == []
    # The real vLLM class, without running its __init__ (that needs vLLM and a GPU): its methods are the protocol's.
    assert conformance_problems(object.__new__(VLLMPolicy), Sampler) == []


def test_both_reward_model_kinds_are_scorers(tokenizer):
    assert conformance_problems(random_model(backbone=RecordingBackbone()), Scorer) == []
    assert conformance_problems(classifier_rm(tokenizer), Scorer) == []


def test_transformers_and_peft_objects_match_the_tokenizer_and_model_protocols(tokenizer, tiny_policy):
    from peft import LoraConfig, PeftModel

    from paretoalign.train.policy_setup import peft_model

    assert conformance_problems(tokenizer, Tokenizer) == []
    assert conformance_problems(tiny_policy.model, CausalLM) == []
    lora = peft_model(make_tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.0))
    assert isinstance(lora, PeftModel) and conformance_problems(lora, CausalLM) == []


def test_best_of_n_needs_nothing_beyond_the_protocols():
    backend = FakeVLLM(["ok", "the longest reply", "short"])
    results = best_of_n(backend, LengthScorer(), ["hi", "there"], n=3, params=SamplingParams(max_new_tokens=4))
    assert [r.response for r in results] == ["the longest reply"] * 2
    assert [c.score for c in results[0].candidates] == [2.0, 17.0, 5.0]
    assert backend.calls == [(3, [0, 1])]


def test_score_rows_takes_either_reward_model(tokenizer):
    from paretoalign.eval.rewardbench import BenchRow, score_rows

    rows = [BenchRow(location="rows.jsonl:1", prompt="hi", chosen=("hello",), rejected=("go away", "hey"),
                     subset="chat")]
    for model in (random_model(backbone=RecordingBackbone()), classifier_rm(tokenizer)):
        (scores,) = score_rows(model, rows)
        assert scores.shape == (3,) and np.all(np.isfinite(scores))


# ---------------------------------------------------------------- no `Any` on the public paths
MODEL_NAMES = frozenset({"model", "tokenizer", "policy", "reward_model", "reference", "base", "rm"})


def _is_any(annotation: ast.expr | None) -> bool:
    """Whether an annotation is `Any`, or a union with `Any` in it (``Any | None``, ``Optional[Any]``)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _is_any(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Name):
        return annotation.id == "Any"
    if isinstance(annotation, ast.Attribute):
        return annotation.attr == "Any"
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _is_any(annotation.left) or _is_any(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name) \
            and annotation.value.id in ("Optional", "Union"):
        inner = annotation.slice
        return any(_is_any(e) for e in (inner.elts if isinstance(inner, ast.Tuple) else [inner]))
    return False


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def any_typed_model_parameters(source: str) -> list[str]:
    """``function(parameter)`` / ``Class.field`` of every public function, method or class field named like a model
    and typed `Any` in `source` (nested functions and private names are not public)."""
    found = []

    def check_function(node: ast.FunctionDef | ast.AsyncFunctionDef, owner: str) -> None:
        args = node.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.arg in MODEL_NAMES and _is_any(a.annotation):
                found.append(f"{owner}{node.name}({a.arg})")

    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
            check_function(node, "")
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(item.name):
                    check_function(item, f"{node.name}.")
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) \
                        and item.target.id in MODEL_NAMES and _is_any(item.annotation):
                    found.append(f"{node.name}.{item.target.id}")
    return found


def test_the_any_check_finds_what_it_should():
    source = """
from typing import Any, Optional
def f(model: Any, tokenizer: "Any | None" = None, *, policy: Optional[Any] = None, other: Any = 1): ...
def _private(model: Any): ...
def typed(model: CausalLM, reward_model: Scorer | None): ...
class C:
    policy: Any
    def __init__(self, reference: typing.Any, base: int): ...
    def _helper(self, model: Any): ...
    def method(self, rm: Any):
        def nested(model: Any): ...
class _Hidden:
    def run(self, model: Any): ...
"""
    assert any_typed_model_parameters(source) == ["f(model)", "f(tokenizer)", "f(policy)", "C.policy",
                                                  "C.__init__(reference)", "C.method(rm)"]


def test_no_public_model_parameter_is_typed_any():
    offenders: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = any_typed_model_parameters(path.read_text(encoding="utf-8"))
        if found:
            offenders[path.relative_to(PACKAGE).as_posix()] = found
    assert not offenders, f"type these with the protocols (paretoalign.*.protocols), not Any: {offenders}"
