from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import best_of_n
from paretoalign.inference.engine import CandidateGenerator, generate_candidates
from paretoalign.inference.resume import resume_candidates
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.speculative import default_decision_tokens, speculative_rejection, survivors

PROMPTS = ["hello there", "How do I bake bread?", "explain why the fox jumps"]
PARAMS = SamplingParams(max_new_tokens=24, seed=7)


def test_alpha_zero_is_best_of_n(tiny_policy, tiny_rm):
    bon = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=8, params=PARAMS)
    spec = speculative_rejection(tiny_policy, tiny_rm, PROMPTS, n=8, rejection_rate=0.0, params=PARAMS,
                                 decision_tokens=[2, 4, 8])
    for b, s in zip(bon, spec, strict=True):
        assert s.selected == b.selected and s.response == b.response
        assert [c.score for c in s.candidates] == [c.score for c in b.candidates]
        assert s.stats["tokens_generated"] == b.stats["tokens_generated"]
        assert all(c.candidate.rejected_at is None for c in s.candidates)


def test_rejection_prunes_and_never_returns_an_unfinished_response(tiny_policy, tiny_rm):
    bon = best_of_n(tiny_policy, tiny_rm, PROMPTS, n=16, params=PARAMS)
    spec = speculative_rejection(tiny_policy, tiny_rm, PROMPTS, n=16, rejection_rate=0.5, params=PARAMS,
                                 decision_tokens=[2, 4])
    assert sum(s.stats["tokens_generated"] for s in spec) < sum(b.stats["tokens_generated"] for b in bon)
    for b, s in zip(bon, spec, strict=True):
        rejected = [c for c in s.candidates if c.candidate.rejected_at is not None]
        assert rejected and all(not c.candidate.finished for c in rejected)
        if s.selected is not None:
            assert s.candidates[s.selected].candidate.finished
            assert s.candidates[s.selected].candidate.rejected_at is None
        # surviving candidates are the same samples as Best-of-N's (one generator per candidate)
        for cb, cs in zip(b.candidates, s.candidates, strict=True):
            if cs.candidate.rejected_at is None:
                assert cb.candidate.token_ids == cs.candidate.token_ids
        assert s.stats["rm_calls"] > len([c for c in s.candidates if c.candidate.rejected_at is None])


def test_survivors_keep_the_top_fraction_with_ties_to_lower_indices(tiny_policy):
    from paretoalign.inference.engine import Candidate

    cands = [Candidate(0, j) for j in range(5)]
    scores = [0.1, 0.9, 0.5, 0.9, -1.0]
    assert [c.index for c in survivors(cands, scores, 0.5, "best")] == [1, 2, 3]
    assert [c.index for c in survivors(cands, scores, 0.6, "best")] == [1, 3]
    assert [c.index for c in survivors(cands, scores, 0.8, "best")] == [1]
    assert [c.index for c in survivors(cands, scores, 0.8, "worst")] == [4]
    assert [c.index for c in survivors(cands, scores, 0.0, "best")] == [0, 1, 2, 3, 4]


def test_default_schedule_doubles_below_the_limit():
    assert default_decision_tokens(128) == [16, 32, 64]
    assert default_decision_tokens(16) == []


@pytest.mark.parametrize("kwargs, field", [({"rejection_rate": 1.0}, "rejection_rate"),
                                           ({"rejection_rate": -0.1}, "rejection_rate"),
                                           ({"decision_tokens": [4, 4]}, "decision_tokens"),
                                           ({"decision_tokens": [0]}, "decision_tokens"),
                                           ({"decision_tokens": [30]}, "decision_tokens"),
                                           ({"n": 0}, "n")])
def test_bad_settings_are_refused(tiny_policy, tiny_rm, kwargs, field):
    kwargs = {"n": 4, **kwargs}
    with pytest.raises(InputError) as err:
        speculative_rejection(tiny_policy, tiny_rm, PROMPTS, params=PARAMS, **kwargs)
    assert err.value.field == field


class PrefixRM:
    """Scores 1 for a text that starts one of `liked` (partial or whole), else 0: it keeps the candidates that will
    be cut at the token limit and prunes the ones that would finish, the failure of issue 11 made certain."""

    objective_names = ["liked"]

    def __init__(self, liked):
        self.liked = list(liked)

    def score(self, prompts, responses, *, weights=None, batch_size=None):
        s = np.array([float(any(u.startswith(r) for u in self.liked)) for r in responses])
        return SimpleNamespace(score=s, objectives=s[:, None], objective_names=self.objective_names)


def cut_and_resume(policy, params, n, cut_at, which):
    """Generate to `cut_at` tokens, prune the candidates `which(candidate)` selects, finish the rest, resume them."""
    ids = policy.encode_prompts(PROMPTS, params.max_new_tokens)
    gen = CandidateGenerator(policy, ids, n, params)
    gen.step(cut_at)
    cut = [c for c in gen.active if which(c)]
    generators = [c.generator for c in cut]
    gen.prune([c for c in gen.active if not which(c)])
    gen.step()
    assert cut and all(c.rejected_at == cut_at for c in cut)
    made = resume_candidates(policy, [ids[c.prompt_index] for c in cut], cut, generators, params)
    assert made == sum(c.num_tokens - cut_at for c in cut)
    return generate_candidates(policy, ids, n, params), gen.candidates


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_resumed_candidates_are_the_rest_of_best_of_n_samples(arch, tiny_policy, tiny_gpt2_policy):
    policy = tiny_policy if arch == "llama" else tiny_gpt2_policy
    full, resumed = cut_and_resume(policy, PARAMS, 6, 3, lambda c: c.index % 2 == 0)
    for row_full, row in zip(full, resumed, strict=True):
        for a, b in zip(row_full, row, strict=True):
            assert b.rejected_at is None and b.generator is None
            assert (b.token_ids, b.text, b.finish_reason) == (a.token_ids, a.text, a.finish_reason)
            np.testing.assert_allclose(b.logprobs, a.logprobs, atol=1e-4)


def test_a_stop_string_across_the_resume_boundary_ends_the_response(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, PARAMS.max_new_tokens)
    cut_at = 3
    for c in (c for row in generate_candidates(tiny_policy, ids, 6, PARAMS) for c in row):
        head, text = tiny_policy.decode(c.token_ids[:cut_at]), c.text
        stop = text[len(head) - 1:len(head) + 1]
        if c.num_tokens > cut_at + 1 and text.startswith(head) and len(stop) == 2 and text.find(stop) == len(head) - 1:
            break
    else:
        pytest.fail("no candidate to put a stop string across the boundary")
    params = replace(PARAMS, stop=(stop,))
    target = (c.prompt_index, c.index)
    full, resumed = cut_and_resume(tiny_policy, params, 6, cut_at, lambda x: (x.prompt_index, x.index) == target)
    a, b = full[target[0]][target[1]], resumed[target[0]][target[1]]
    assert b.finish_reason == a.finish_reason == "stop" and b.text == a.text == text[:len(head) - 1]
    assert b.token_ids == a.token_ids


def test_resume_refuses_candidates_that_were_not_cut(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS[:1], PARAMS.max_new_tokens)
    (row,) = generate_candidates(tiny_policy, ids, 2, PARAMS)
    with pytest.raises(ValueError, match="pruned"):
        resume_candidates(tiny_policy, ids, row[:1], [None], PARAMS)


def test_resuming_until_one_finishes_cuts_the_others_of_that_prompt_again(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, PARAMS.max_new_tokens)
    full = generate_candidates(tiny_policy, ids, 6, PARAMS)
    gen = CandidateGenerator(tiny_policy, ids, 6, PARAMS)
    gen.step(2)
    cut = gen.active
    generators = [c.generator for c in cut]
    gen.prune([])
    resume_candidates(tiny_policy, [ids[c.prompt_index] for c in cut], cut, generators, PARAMS,
                      until_one_finishes=True)
    cut_again = 0
    for row_full, row in zip(full, gen.candidates, strict=True):
        pairs = [(a, b) for a, b in zip(row_full, row, strict=True) if b in cut]
        first = min((a.num_tokens for a, _ in pairs if a.finished), default=None)
        for a, b in pairs:
            assert a.token_ids[:b.num_tokens] == b.token_ids  # Best-of-N's sample, possibly cut short again
            if first is None or a.num_tokens <= first:  # stopped on its own no later than the first finisher
                assert (b.token_ids, b.finish_reason, b.rejected_at) == (a.token_ids, a.finish_reason, None)
            else:
                assert b.rejected_at == b.num_tokens == first and b.text == tiny_policy.decode(b.token_ids)
                assert b.finish_reason is None and b.generator is None
                cut_again += 1
    assert cut_again > 0


@pytest.mark.parametrize("max_new_tokens, points", [(8, [2, 4]), (12, [2, 4, 8])])
def test_speculative_answers_whenever_best_of_n_does(tiny_policy, max_new_tokens, points):
    params = SamplingParams(max_new_tokens=max_new_tokens, seed=7)
    bon = best_of_n(tiny_policy, PrefixRM([]), PROMPTS, n=8, params=params)
    rm = PrefixRM([c.candidate.text for b in bon for c in b.candidates if not c.candidate.finished])
    kwargs = {"n": 8, "rejection_rate": 0.75, "params": params, "decision_tokens": points}
    plain = speculative_rejection(tiny_policy, rm, PROMPTS, resume=False, **kwargs)
    spec = speculative_rejection(tiny_policy, rm, PROMPTS, **kwargs)
    assert all(b.selected is not None for b in bon)
    assert any(p.selected is None for p in plain)  # the paper's algorithm: no answer where Best-of-N has one
    assert all(s.selected is not None for s in spec)
    for p, s, b in zip(plain, spec, bon, strict=True):
        assert s.stats["resumed"] == 0 if p.selected is not None else s.stats["resumed"] > 0
        assert s.candidates[s.selected].candidate.finished
        assert s.stats["tokens_generated"] <= b.stats["tokens_generated"]
        for cs, cb in zip(s.candidates, b.candidates, strict=True):
            c = cs.candidate
            if c.rejected_at is None:  # complete (surviving or resumed): Best-of-N's sample
                assert (c.token_ids, c.text) == (cb.candidate.token_ids, cb.candidate.text)
            else:  # its score is that of the text it was left with (cut again after a resume, or pruned)
                assert c.token_ids == cb.candidate.token_ids[:c.num_tokens]
                assert c.text == tiny_policy.decode(c.token_ids)
                assert cs.score == rm.score([None], [c.text]).score[0]
