import json
import math

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import best_of_n
from paretoalign.inference.guided_decoding import GenARMHook, reward_guided_generate
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.selection import pick_index
from paretoalign.inference.statistics import bon_kl_bound
from tests.inference.conftest import make_policy
from tests.tiny import make_tiny_gpt2

PROMPTS = ["hello there", "How do I bake bread?", [{"role": "user", "content": "explain why"}]]
PARAMS = SamplingParams(max_new_tokens=16, seed=4)


def test_pick_index_takes_the_best_finished_with_ties_to_the_lowest_index():
    scores = [1.0, 3.0, 3.0, 5.0, -2.0]
    finished = [True, True, True, False, True]
    assert pick_index(scores, finished, "best") == 1
    assert pick_index(scores, finished, "worst") == 4
    assert pick_index([2.0, 2.0], [True, True], "worst") == 0
    assert pick_index(scores, [False] * 5) is None


def test_best_of_n_picks_the_argmax_of_the_weighted_score(tiny_policy, tiny_rm):
    weights = {"helpfulness": 1.0, "verbosity": -0.3}
    results = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=6, weights=weights, params=PARAMS)
    assert len(results) == len(PROMPTS)
    for res in results:
        texts = [c.candidate.text for c in res.candidates]
        expected = tiny_rm.score([res.prompt] * len(texts), texts, weights=weights)
        np.testing.assert_allclose([c.score for c in res.candidates], expected.score)
        finished = [i for i, c in enumerate(res.candidates) if c.candidate.finished]
        assert finished, "the EOS bias makes most candidates finish"
        best = max(finished, key=lambda i: (expected.score[i], -i))
        assert res.selected == best and res.response == texts[best]
        assert set(res.candidates[0].objectives) == set(tiny_rm.objective_names)


def test_worst_of_n_picks_the_minimum(tiny_policy, tiny_rm):
    best = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=6, params=PARAMS)
    worst = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=6, params=PARAMS, select="worst")
    for b, w in zip(best, worst, strict=True):
        assert [c.candidate.token_ids for c in b.candidates] == [c.candidate.token_ids for c in w.candidates]
        done = [c.score for c in w.candidates if c.candidate.finished]
        assert w.candidates[w.selected].score == min(done)
        assert b.candidates[b.selected].score == max(done)


def test_results_are_reproducible_and_do_not_depend_on_grouping(tiny_policy, tiny_rm):
    a = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS, batch_rows=4)
    b = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS, batch_rows=64)
    for ra, rb in zip(a, b, strict=True):
        assert [c.candidate.token_ids for c in ra.candidates] == [c.candidate.token_ids for c in rb.candidates]
        assert ra.selected == rb.selected


def test_output_row_contract_and_stats(tiny_policy, tiny_rm):
    res = best_of_n(tiny_policy, tiny_rm, PROMPTS[:1], n=5, params=PARAMS)[0]
    row = json.loads(json.dumps(res.row()))
    assert set(row) == {"response", "selected", "candidates", "stats"}
    assert set(row["candidates"][0]) == {"response", "score", "objectives", "finished", "tokens", "rejected_at"}
    stats = row["stats"]
    assert stats["n"] == 5 and stats["method"] == "best-of-n" and stats["rm_calls"] == 5
    assert stats["tokens_generated"] == sum(c["tokens"] for c in row["candidates"])
    assert math.isclose(stats["kl_bound"], math.log(5) - 4 / 5) and stats["wall_s"] > 0


def test_no_finished_candidate_means_no_pick(tiny_rm):
    never_ends = make_policy("llama", eos_bias=-50.0)
    res = best_of_n(never_ends, tiny_rm, PROMPTS[:1], n=3, params=SamplingParams(max_new_tokens=4, seed=0))[0]
    assert all(c.candidate.finish_reason == "length" for c in res.candidates)
    assert all(c.score is not None for c in res.candidates)  # scored and reported, just never picked
    assert res.selected is None and res.response is None


def test_reference_logprobs_give_a_zero_kl_against_itself(tiny_policy, tiny_rm):
    res = best_of_n(tiny_policy, tiny_rm, PROMPTS[:1], n=4, params=PARAMS, reference=tiny_policy)[0]
    assert abs(res.stats["sampler_kl_mc"]) < 1e-4
    hot = best_of_n(tiny_policy, tiny_rm, PROMPTS[:1], n=8, reference=tiny_policy,
                    params=SamplingParams(max_new_tokens=16, seed=4, temperature=0.5))[0]
    assert hot.stats["sampler_kl_mc"] > 0.1  # a sharpened sampler is far from the policy


def test_kl_bound_values():
    assert bon_kl_bound(1) == 0.0
    assert math.isclose(bon_kl_bound(4), 0.6363, abs_tol=1e-4)
    assert math.isclose(bon_kl_bound(16), 1.8351, abs_tol=1e-4)


class ExplodingPolicy:
    """A policy that must never be asked to generate."""

    def __init__(self, inner):
        self.inner = inner

    def encode_prompts(self, prompts, max_new_tokens):
        return self.inner.encode_prompts(prompts, max_new_tokens)

    def sample(self, *args, **kwargs):
        raise AssertionError("generation started before the input was checked")


@pytest.mark.parametrize("kwargs, field", [({"n": 0}, "n"), ({"n": 2, "weights": {"nope": 1.0}}, "weights"),
                                           ({"n": 2, "select": "median"}, "select"),
                                           ({"n": 2, "prompts": []}, "prompts"),
                                           ({"n": 2, "prompts": ["ok", "word " * 600]}, "prompt")])
def test_bad_input_fails_before_any_generation(tiny_policy, tiny_rm, kwargs, field):
    kwargs = {"prompts": PROMPTS, **kwargs}
    with pytest.raises(InputError) as err:
        best_of_n(ExplodingPolicy(tiny_policy), tiny_rm, kwargs.pop("prompts"), params=PARAMS, **kwargs)
    assert err.value.field == field


def test_best_of_n_over_genarm_guided_samples(tiny_policy, tiny_rm):
    reward_lm = make_tiny_gpt2(tiny_policy.tokenizer, seed=2)
    hook = GenARMHook([(reward_lm, 1.0)], beta=0.5)
    results = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS, hook=hook, batch_rows=8)
    guided = reward_guided_generate(tiny_policy.model, tiny_policy.tokenizer, [(reward_lm, 1.0)], PROMPTS, n=4,
                                    beta=0.5, params=PARAMS)
    plain = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS)
    for res, cands in zip(results, guided, strict=True):
        assert [c.candidate.token_ids for c in res.candidates] == [c.token_ids for c in cands]
        texts = [c.candidate.text for c in res.candidates]
        expected = tiny_rm.score([res.prompt] * len(texts), texts).score
        np.testing.assert_allclose([c.score for c in res.candidates], expected)
        finished = [i for i, c in enumerate(res.candidates) if c.candidate.finished]
        assert res.selected == (max(finished, key=lambda i: (expected[i], -i)) if finished else None)
        assert res.stats["hook"] == "GenARMHook"
    assert [[c.candidate.token_ids for c in r.candidates] for r in results] != \
        [[c.candidate.token_ids for c in r.candidates] for r in plain]  # the guidance changed the samples


class NoHookPolicy(ExplodingPolicy):
    """A backend whose ``sample`` takes no logits hook (like the vLLM one)."""

    def sample(self, prompt_ids, n, params, *, prompt_indices=None):
        raise AssertionError("generation started before the input was checked")


def test_a_hook_for_a_backend_without_hooks_fails_before_any_generation(tiny_policy, tiny_rm):
    hook = GenARMHook([(make_tiny_gpt2(tiny_policy.tokenizer, seed=2), 1.0)])
    with pytest.raises(InputError) as err:
        best_of_n(NoHookPolicy(tiny_policy), tiny_rm, PROMPTS, n=2, params=PARAMS, hook=hook)
    assert err.value.field == "hook"
