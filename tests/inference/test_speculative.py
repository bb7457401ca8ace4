import pytest

from paretoalign.errors import InputError
from paretoalign.inference.best_of_n import best_of_n
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
