"""Best-of-N and Speculative Rejection show a bar over the token budget while generating (none when progress=False)."""

import pytest

from paretoalign.inference.best_of_n import best_of_n
from paretoalign.inference.engine import CandidateGenerator
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.inference.speculative import speculative_rejection

PROMPTS = ["hello there", "How do I bake bread?", "explain why"]
PARAMS = SamplingParams(max_new_tokens=12, seed=1)


def test_the_engine_reports_the_whole_token_budget_by_the_end(tiny_policy):
    ticks = []
    ids = tiny_policy.encode_prompts(PROMPTS[:2], PARAMS.max_new_tokens)
    gen = CandidateGenerator(tiny_policy, ids, 3, PARAMS, progress=ticks.append)
    gen.step(4)
    assert sum(ticks) >= 2 * 3 * 4
    gen.prune([c for c in gen.active][:1])
    gen.step()
    assert sum(ticks) == 2 * 3 * PARAMS.max_new_tokens
    assert len(ticks) > 2, "ticks arrive during generation, not once at the end"


@pytest.mark.parametrize("method", ["bon", "speculative"])
def test_a_token_bar_is_shown_and_silenced_by_progress_false(tiny_policy, tiny_rm, method, capsys):
    def run(progress):
        if method == "bon":
            return best_of_n(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS, batch_rows=4, progress=progress)
        return speculative_rejection(tiny_policy, tiny_rm, PROMPTS, n=4, params=PARAMS, decision_tokens=[4],
                                     batch_rows=4, progress=progress)

    quiet = run(False)
    assert capsys.readouterr().err == ""
    loud = run(True)
    err = capsys.readouterr().err
    budget = len(PROMPTS) * 4 * PARAMS.max_new_tokens
    assert f" {budget}/{budget} " in err and "tok" in err and f"{len(PROMPTS)}/{len(PROMPTS)} prompts" in err
    assert [r.response for r in quiet] == [r.response for r in loud]


class NoProgressBackend:
    """A backend whose ``sample`` takes no progress callback (like a third-party one)."""

    def __init__(self, inner):
        self.inner = inner

    def encode_prompts(self, prompts, max_new_tokens):
        return self.inner.encode_prompts(prompts, max_new_tokens)

    def sample(self, prompt_ids, n, params, *, prompt_indices=None):
        return self.inner.sample(prompt_ids, n, params, prompt_indices=prompt_indices)


def test_a_backend_without_a_progress_callback_still_works_with_a_bar(tiny_policy, tiny_rm, capsys):
    results = best_of_n(NoProgressBackend(tiny_policy), tiny_rm, PROMPTS, n=2, params=PARAMS, progress=True)
    assert len(results) == len(PROMPTS)
    budget = len(PROMPTS) * 2 * PARAMS.max_new_tokens
    assert f" {budget}/{budget} " in capsys.readouterr().err
