"""RewardOutput.take / .reweighted reproduce model.score bit for bit; resolve_weight_vector's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from paretoalign.errors import InputError
from paretoalign.rewards.hf_classifier import SequenceClassifierRM
from paretoalign.rewards.reward_model import RewardOutput, resolve_weight_vector
from tests.rewards.fake_backbone import HashingBackbone
from tests.rewards.model_factory import NAMES, random_model
from tests.tiny import make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    "How do I bake bread?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris is the capital of?"}],
    "hello there",
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello, question?"},
     {"role": "user", "content": "explain why the fox jumps"}],
    "thanks",
    "why is the sky blue",
]
RESPONSES = [
    "Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "France.",
    "Hello! How can I help?",
    "Because the quick brown fox jumps over the lazy dog, please.",
    "",
    "Rayleigh scattering of sunlight by the air, which scatters blue light more than red light.",
]
FIELDS = ("score", "objectives", "objectives_raw", "gating", "baseline", "verbosity_contribution")


def assert_same(a: RewardOutput, b: RewardOutput) -> None:
    """Every array of two outputs is equal bit for bit (None where the other is None)."""
    assert a.objective_names == b.objective_names
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), f"{name}: max |diff| {np.max(np.abs(x - y))}"


@pytest.fixture(scope="module")
def hashed_model():
    return random_model(d=HashingBackbone.feature_dim, dp=HashingBackbone.prompt_feature_dim,
                        backbone=HashingBackbone())


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tokenizer = make_tokenizer()
    torch.manual_seed(3)
    labels = {0: "helpful", 1: "safe", 2: "brief"}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=3, id2label=labels,
                         label2id={v: k for k, v in labels.items()})
    model = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    directory = tmp_path_factory.mktemp("clf") / "rm"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return SequenceClassifierRM.from_pretrained(directory)


WEIGHTS = [
    {"helpfulness": 1.0, "verbosity": -0.5},
    [0.3, -1.25, 2.0, 0.0],
    np.array([1e-3, 7.0, -0.1, 0.4]),
    {"honesty": 2.5},
]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_reweighted_is_score_with_weights_for_a_reward_model(hashed_model, weights):
    model = hashed_model
    plain = model.score(PROMPTS, RESPONSES)
    w = model.resolve_weights(weights)
    expected = model.score(PROMPTS, RESPONSES, weights=weights)
    got = plain.reweighted(w, model.verbosity_objective)
    assert_same(got, expected)
    assert got.verbosity_contribution is not None  # the factory's model has a verbosity objective
    # the unweighted output is untouched
    assert_same(plain, model.score(PROMPTS, RESPONSES))


def test_take_then_reweighted_is_score_of_those_rows(hashed_model):
    model = hashed_model
    plain = model.score(PROMPTS, RESPONSES)
    w = model.resolve_weights(WEIGHTS[0])
    for index in ([3], [5, 0, 2], np.array([4, 4, 1]), range(6), []):
        rows = list(index)
        part = plain.take(index)
        assert len(part) == len(rows)
        if rows:
            assert_same(part, model.score([PROMPTS[i] for i in rows], [RESPONSES[i] for i in rows]))
            assert_same(part.reweighted(w, model.verbosity_objective),
                        model.score([PROMPTS[i] for i in rows], [RESPONSES[i] for i in rows], weights=w))


def test_take_copies(hashed_model):
    plain = hashed_model.score(PROMPTS, RESPONSES)
    before = plain.score.copy()
    part = plain.take([0, 1])
    part.score[:] = 99.0
    part.objectives[:] = 99.0
    part.verbosity_contribution[:] = 99.0
    assert np.array_equal(plain.score, before)
    assert not np.any(plain.objectives == 99.0)


def test_reweighted_without_a_verbosity_objective_leaves_it_none(hashed_model):
    plain = hashed_model.score(PROMPTS, RESPONSES)
    out = plain.reweighted(np.array([1.0, 0.0, 0.0, 0.0]), None)
    assert out.verbosity_contribution is None
    assert np.array_equal(out.score, plain.objectives[:, 0])


def test_reweighted_refuses_a_vector_of_the_wrong_length(hashed_model):
    plain = hashed_model.score(PROMPTS[:2], RESPONSES[:2])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        plain.reweighted(np.ones(3), None)


@pytest.mark.parametrize("weights", [{"helpful": 1.0, "brief": -0.5}, [0.2, 0.5, -1.0], {"safe": 3.0}])
def test_reweighted_is_score_with_weights_for_a_sequence_classifier(classifier, weights):
    plain = classifier.score(PROMPTS, RESPONSES)
    w = classifier.resolve_weights(weights)
    got = plain.reweighted(w, classifier.verbosity_objective)
    assert_same(got, classifier.score(PROMPTS, RESPONSES, weights=weights))
    assert got.baseline is None and got.verbosity_contribution is None
    assert_same(plain.take([4, 1]).reweighted(w, None), got.take([4, 1]))
    assert not np.array_equal(got.score, plain.score)  # the weights did change the score


def test_resolve_weight_vector_matches_the_model(hashed_model):
    for weights in [*WEIGHTS, None]:
        a = resolve_weight_vector(weights, NAMES)
        b = hashed_model.resolve_weights(weights)
        assert (a is None and b is None) or (a.dtype == np.float64 and np.array_equal(a, b))
    assert np.array_equal(resolve_weight_vector({"honesty": 2}, NAMES), [0.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize(("weights", "match"), [
    ({"helpfullness": 1.0}, "unknown objective.*'helpfullness'.*helpfulness, harmlessness, honesty, verbosity"),
    ([1.0, 2.0], r"needs 4 values .*got shape \(2,\)"),
    ("helpfulness", "not a string"),
    ({"honesty": "a lot"}, "must be numbers"),
    ([1.0, float("nan"), 0.0, 0.0], "finite"),
    ({"honesty": 0.0}, "all weights are zero"),
])
def test_resolve_weight_vector_errors_name_the_field_and_path(weights, match):
    with pytest.raises(InputError, match=match) as info:
        resolve_weight_vector(weights, NAMES, field="$.weights", path="request.json")
    assert info.value.field == "$.weights" and info.value.path == "request.json"
    with pytest.raises(InputError, match=match) as info:
        resolve_weight_vector(weights, NAMES)
    assert info.value.field == "weights" and info.value.path is None
