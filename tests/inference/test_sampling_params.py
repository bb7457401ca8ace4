import math

import numpy as np
import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.inference.sampling_params import (
    SamplingParams,
    candidate_generators,
    candidate_seed,
    draw_tokens,
    next_tokens,
    sampling_logprobs,
)


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = sampling_logprobs(logits, SamplingParams(top_k=2)).exp()
    torch.testing.assert_close(k2, torch.tensor([[0.5, 0.2, 0, 0, 0]]) / 0.7)
    # 0.5 + 0.2 = 0.7 < 0.75, so the third token is needed; the fourth is not
    p = sampling_logprobs(logits, SamplingParams(top_p=0.75)).exp()
    torch.testing.assert_close(p, torch.tensor([[0.5, 0.2, 0.15, 0, 0]]) / 0.85)
    # top_p below the largest probability keeps exactly the most likely token
    assert sampling_logprobs(logits, SamplingParams(top_p=0.1)).exp()[0, 0] == 1.0


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    got = sampling_logprobs(logits, SamplingParams(temperature=0.5))
    torch.testing.assert_close(got, (logits * 2).log_softmax(-1))
    greedy = sampling_logprobs(logits, SamplingParams(temperature=0.0))
    assert greedy[0, 2] == 0.0 and torch.isinf(greedy[0, :2]).all()


def test_draws_follow_the_distribution():
    probs = torch.tensor([0.05, 0.6, 0.0, 0.25, 0.1])
    n = 20000
    logp = probs.log().expand(n, -1)
    tokens = draw_tokens(logp, candidate_generators(0, 0, n))
    freq = np.bincount(tokens.numpy(), minlength=5) / n
    assert freq[2] == 0.0
    se = np.sqrt(probs.numpy() * (1 - probs.numpy()) / n)
    assert np.all(np.abs(freq - probs.numpy()) <= 4 * se + 1e-12)


def test_seeds_are_stable_and_distinct():
    assert candidate_seed(0, 1, 2) == candidate_seed(0, 1, 2)
    assert len({candidate_seed(s, p, j) for s in range(3) for p in range(3) for j in range(3)}) == 27


def test_next_tokens_reports_both_logprobs():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    params = SamplingParams(top_k=2)
    tok, lp_sample, lp_policy = next_tokens(logits, params, candidate_generators(1, 0, 1))
    t = int(tok[0])
    assert t in (0, 1)
    assert math.isclose(float(lp_policy[0]), float(logits.log_softmax(-1)[0, t]), abs_tol=1e-6)
    assert math.isclose(float(lp_sample[0]), float(logits[:, :2].log_softmax(-1)[0, t]), abs_tol=1e-6)


@pytest.mark.parametrize("kwargs, field", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                           ({"top_p": 1.5}, "top_p"), ({"top_k": -2}, "top_k"),
                                           ({"max_new_tokens": 0}, "max_new_tokens"), ({"stop": ("",)}, "stop")])
def test_bad_settings_are_refused(kwargs, field):
    with pytest.raises(InputError) as err:
        SamplingParams(**kwargs)
    assert err.value.field == field
