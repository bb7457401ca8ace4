import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.eval.policy_eval import (
    FrontPoint,
    best_of_n_points,
    check_same_tokenizer,
    default_eval_prompts,
    evaluate_policy,
)
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.statistics import bon_kl_bound
from tests.inference.conftest import make_policy
from tests.rewards.model_factory import RecordingBackbone, random_model

PROMPTS = ["How do I bake bread?", "Capital of France?", "hello there, explain why"]
PARAMS = SamplingParams(max_new_tokens=10, seed=3)
M = 3


@pytest.fixture(scope="module", autouse=True)
def few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference():
    return make_policy("llama")


@pytest.fixture(scope="module")
def twin():
    """A separately built copy of the reference (same weights)."""
    return make_policy("llama")


@pytest.fixture(scope="module")
def other():
    """The same model without the EOS bias: a clearly different distribution."""
    return make_policy("llama", eos_bias=0.0)


@pytest.fixture()
def rm():
    return random_model(backbone=RecordingBackbone())


def redraw(policy, params=PARAMS, m=M):
    """The samples evaluate_policy draws (same seed, every prompt in one batch)."""
    ids = policy.encode_prompts(PROMPTS, params.max_new_tokens)
    return ids, policy.sample(ids, m, params)


def summed_logprob(model, prompt_ids, tokens):
    """log p(tokens | prompt) by one plain forward pass over the whole sequence."""
    seq = torch.tensor([list(prompt_ids) + list(tokens)])
    with torch.no_grad():
        logp = model(input_ids=seq).logits[0].double().log_softmax(-1)
    p = len(prompt_ids)
    return float(sum(logp[p + t - 1, tok] for t, tok in enumerate(tokens)))


def test_a_policy_against_an_identical_model_has_kl_exactly_zero(reference, twin, rm):
    point = evaluate_policy(twin, reference, rm, PROMPTS, samples_per_prompt=M, params=PARAMS)
    assert point.kl == 0.0 and point.kl_stderr == 0.0
    assert not point.kl_is_bound and point.meta["kl_of"] == "policy"


def test_kl_of_a_different_policy_is_the_mean_summed_log_ratio(reference, other, rm):
    point = evaluate_policy(other, reference, rm, PROMPTS, samples_per_prompt=M, params=PARAMS, name="other")
    ids, sampled = redraw(other)
    ratios = np.array([[summed_logprob(other.model, ids[i], c.token_ids)
                        - summed_logprob(reference.model, ids[i], c.token_ids) for c in cands]
                       for i, cands in enumerate(sampled)])
    assert point.kl > 0.1
    assert point.kl == pytest.approx(ratios.mean(), rel=1e-4, abs=1e-4)
    per_prompt = ratios.mean(axis=1)
    assert point.kl_stderr == pytest.approx(per_prompt.std(ddof=1) / math.sqrt(len(PROMPTS)), rel=1e-3, abs=1e-4)


def test_rewards_are_the_rm_scores_of_every_sampled_text(twin, reference, rm):
    weights = {"helpfulness": 1.0, "verbosity": -0.5}
    point = evaluate_policy(twin, reference, rm, PROMPTS, samples_per_prompt=M, params=PARAMS, weights=weights)
    _, sampled = redraw(twin)
    texts = [c.text for cands in sampled for c in cands]
    prompts = [p for p in PROMPTS for _ in range(M)]
    out = rm.score(prompts, texts, weights=weights)
    assert point.reward == pytest.approx(out.score.mean(), rel=1e-12)
    obj = dict(zip(out.objective_names, out.objectives.mean(axis=0), strict=True))
    assert point.objectives == pytest.approx(obj, rel=1e-12)
    assert point.reward == pytest.approx(obj["helpfulness"] - 0.5 * obj["verbosity"], rel=1e-9)
    flat = [c for cands in sampled for c in cands]
    assert point.finished_fraction == pytest.approx(np.mean([c.finished for c in flat]))
    assert 0.0 < point.finished_fraction < 1.0  # unfinished samples are scored too
    assert point.mean_response_tokens == pytest.approx(np.mean([c.num_tokens for c in flat]))
    assert point.num_prompts == 3 and point.num_samples == 9
    assert point.per_prompt_reward == pytest.approx(out.score.reshape(len(PROMPTS), M).mean(axis=1), rel=1e-12)


def test_gated_reward_uses_the_rm_gating(twin, reference, rm):
    point = evaluate_policy(twin, reference, rm, PROMPTS, samples_per_prompt=M, params=PARAMS)
    _, sampled = redraw(twin)
    out = rm.score([p for p in PROMPTS for _ in range(M)], [c.text for cands in sampled for c in cands])
    assert point.reward == pytest.approx(out.score.mean(), rel=1e-12)


def test_a_tempered_sampler_warns_that_kl_is_the_samplers(other, reference, rm):
    params = SamplingParams(max_new_tokens=6, temperature=0.7, seed=0)
    with pytest.warns(UserWarning, match="sampler"):
        point = evaluate_policy(other, reference, rm, PROMPTS[:2], samples_per_prompt=2, params=params)
    assert point.meta["kl_of"] == "sampler" and math.isfinite(point.kl)


def test_best_of_n_reward_grows_with_n_and_kl_is_the_bound(reference, rm):
    points = best_of_n_points(reference, rm, PROMPTS, (4, 2, 8), params=PARAMS)
    assert [p.name for p in points] == ["reference", "best-of-2", "best-of-4", "best-of-8"]
    ref, bon = points[0], points[1:]
    assert ref.kind == "reference" and ref.kl == 0.0 and not ref.kl_is_bound
    assert [p.kl for p in bon] == [bon_kl_bound(n) for n in (2, 4, 8)] and all(p.kl_is_bound for p in bon)
    assert all(p.kl_stderr is None for p in bon)
    rewards = [p.reward for p in bon]
    assert rewards == sorted(rewards) and rewards[-1] > ref.reward


def test_best_of_n_picks_the_best_finished_of_the_first_n_draws(reference, rm):
    points = best_of_n_points(reference, rm, PROMPTS, (2, 8), params=PARAMS)
    _, sampled = redraw(reference, m=8)
    out = rm.score([p for p in PROMPTS for _ in range(8)], [c.text for cands in sampled for c in cands])
    scores = out.score.reshape(3, 8)
    finished = np.array([[c.finished for c in cands] for cands in sampled])
    assert points[0].reward == pytest.approx(scores.mean(), rel=1e-12)
    for point, n in zip(points[1:], (2, 8), strict=True):
        best = np.where(finished[:, :n], scores[:, :n], -np.inf).max(axis=1)
        answered = np.isfinite(best)
        assert point.reward == pytest.approx(best[answered].mean(), rel=1e-12)
        assert point.answered_fraction == pytest.approx(answered.mean())
        assert point.num_samples == 3 * n and point.n == n


class LengthRM:
    """Scores a response by its length: the longest draw, usually one cut at the token limit, scores best."""

    objective_names = ["length"]

    def score(self, prompts, responses, *, weights=None, batch_size=None):
        length = np.array([float(len(r)) for r in responses])
        return SimpleNamespace(score=length, objectives=length[:, None], objective_names=self.objective_names)


def test_best_of_n_point_is_what_paretoalign_bon_picks(reference):
    from paretoalign.inference.best_of_n import best_of_n

    points = best_of_n_points(reference, LengthRM(), PROMPTS, (1, 4), params=PARAMS)
    for point, n in zip(points[1:], (1, 4), strict=True):
        picked = best_of_n(reference, LengthRM(), PROMPTS, n=n, params=PARAMS)
        expected = [np.nan if r.pick is None else r.pick.score for r in picked]
        np.testing.assert_array_equal(point.per_prompt_reward, expected)
        assert point.answered_fraction == sum(r.pick is not None for r in picked) / len(PROMPTS)
        assert point.reward == pytest.approx(np.nanmean(expected), rel=1e-12)
        assert point.mean_response_tokens == pytest.approx(
            np.mean([r.pick.candidate.num_tokens for r in picked if r.pick is not None]))
        if n == 4:
            # the case of the issue: the longest, best-scored draw was cut at the token limit, so it is not the pick
            longest = [max(r.candidates, key=lambda c: c.score) for r in picked]
            assert any(not c.candidate.finished for c in longest)
            assert point.reward < np.mean([c.score for c in longest])
    assert points[1].answered_fraction < 1.0 and points[1].to_dict()["per_prompt_reward"].count(None) > 0


class ConstantRM:
    """Every response scores 0; objectives differ by text, so the tie-break shows in them."""

    objective_names = ["a", "b"]

    def score(self, prompts, responses, *, weights=None, batch_size=None):
        obj = np.array([[len(r), sum(map(ord, r)) % 7] for r in responses], dtype=float)
        return SimpleNamespace(score=np.zeros(len(responses)), objectives=obj, objective_names=self.objective_names)


def test_best_of_n_ties_go_to_the_first_finished_draw(reference):
    points = best_of_n_points(reference, ConstantRM(), PROMPTS, (2, 4), params=PARAMS)
    _, sampled = redraw(reference, m=4)
    for point, n in zip(points[1:], (2, 4), strict=True):
        first = np.array([next([len(c.text), sum(map(ord, c.text)) % 7] for c in cands[:n] if c.finished)
                          for cands in sampled if any(c.finished for c in cands[:n])], dtype=float)
        assert point.objectives == pytest.approx({"a": first[:, 0].mean(), "b": first[:, 1].mean()})


def test_reference_point_uses_at_least_samples_per_prompt_draws(reference, rm):
    points = best_of_n_points(reference, rm, PROMPTS, (), params=PARAMS, samples_per_prompt=2)
    assert len(points) == 1 and points[0].num_samples == 6 and points[0].kl == 0.0


def test_bad_inputs_raise_before_sampling(reference, rm):
    with pytest.raises(InputError, match="samples_per_prompt"):
        evaluate_policy(reference, reference, rm, PROMPTS, samples_per_prompt=0)
    with pytest.raises(InputError, match="unknown objective"):
        evaluate_policy(reference, reference, rm, PROMPTS, weights={"nope": 1.0}, params=PARAMS)
    with pytest.raises(InputError, match="ns"):
        best_of_n_points(reference, rm, PROMPTS, (0, 2), params=PARAMS)
    with pytest.raises(InputError, match="no prompts"):
        evaluate_policy(reference, reference, rm, [], params=PARAMS)


def test_different_tokenizers_are_rejected():
    def fake(vocab):
        return SimpleNamespace(name="x", tokenizer=SimpleNamespace(get_vocab=lambda: vocab))

    check_same_tokenizer(fake({"a": 0}), fake({"a": 0}))
    with pytest.raises(InputError, match="different tokenizers"):
        check_same_tokenizer(fake({"a": 0}), fake({"b": 0}))


def test_to_dict_is_json_with_undefined_values_as_null():
    point = FrontPoint(name="p", kind="best_of_n", n=4, reward=np.float64(1.5), reward_stderr=float("nan"),
                       objectives={"a": np.float32(0.25)}, kl=bon_kl_bound(4), kl_stderr=None, kl_is_bound=True,
                       num_prompts=1, num_samples=4, finished_fraction=1.0, mean_response_tokens=3.0, source="ref")
    d = json.loads(json.dumps(point.to_dict()))
    assert d["reward"] == 1.5 and d["reward_stderr"] is None and d["objectives"] == {"a": 0.25}
    assert d["kl_is_bound"] is True and d["n"] == 4
    with pytest.raises(InputError, match="kind"):
        FrontPoint(name="p", kind="other", n=None, reward=0, reward_stderr=None, objectives={}, kl=0,
                   kl_stderr=None, kl_is_bound=False, num_prompts=1, num_samples=1, finished_fraction=1,
                   mean_response_tokens=1, source="")


def test_default_prompts_are_a_deterministic_sample_of_distinct_short_prompts():
    a = default_eval_prompts(12, seed=1)
    assert a == default_eval_prompts(12, seed=1) and a != default_eval_prompts(12, seed=2)
    assert len(a) == 12 and len({json.dumps(p) for p in a}) == 12
    assert all(sum(len(m["content"]) for m in p) <= 400 and p[-1]["role"] == "user" for p in a)


def test_deal_point_is_the_search_result_scored_with_its_exact_point_mass_kl(reference, rm):
    from paretoalign.eval.policy_eval import deal_point
    from paretoalign.inference.deal import DeALParams, deal_generate

    params = DeALParams(beams=2, top_k=2, lookahead=2, lam=3.0, reward_every=2, max_new_tokens=8)
    point = deal_point(reference, rm, PROMPTS, params)
    results = deal_generate(reference, rm, PROMPTS, beams=2, top_k=2, lookahead=2, lam=3.0, reward_every=2,
                            max_new_tokens=8)
    assert point.kind == "deal" and point.name == "deal b2 k2 l2 λ3 m2" and point.num_samples == len(PROMPTS)
    expected = rm.score(PROMPTS, [r.text for r in results]).score
    assert point.per_prompt_reward == pytest.approx(list(expected), abs=1e-6)
    ids = reference.encode_prompts(PROMPTS, 8)
    kl = [-summed_logprob(reference.model, p, r.token_ids) for p, r in zip(ids, results, strict=True)]
    assert point.kl == pytest.approx(float(np.mean(kl)), abs=1e-4) and point.kl > 0 and not point.kl_is_bound
    assert point.finished_fraction == pytest.approx(np.mean([r.finished for r in results]))
    assert point.meta["tokens_evaluated_per_prompt"] == pytest.approx(np.mean([r.tokens_evaluated for r in results]))
    assert set(point.per_prompt_objectives) == set(rm.objective_names)
    json.dumps(point.to_dict())


def test_a_deal_search_with_one_beam_and_no_reward_is_greedy_with_its_own_kl(reference, rm):
    from paretoalign.eval.policy_eval import deal_point
    from paretoalign.inference.deal import DeALParams

    point = deal_point(reference, rm, PROMPTS, DeALParams(beams=1, top_k=1, lam=0.0, max_new_tokens=6))
    ids = reference.encode_prompts(PROMPTS, 6)
    greedy = reference.sample(ids, 1, SamplingParams(temperature=0.0, max_new_tokens=6))
    kl = [-summed_logprob(reference.model, p, c[0].token_ids) for p, c in zip(ids, greedy, strict=True)]
    assert point.kl == pytest.approx(float(np.mean(kl)), abs=1e-4)
