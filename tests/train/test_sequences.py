import pytest
import torch

from paretoalign.embed.chat_format import pad_token_id
from paretoalign.errors import InputError
from paretoalign.train.sequences import (
    collate_rows,
    encode_pair,
    fit_row,
    forward_logits,
    reply_end_token_id,
    row_logprob_sums,
    sequence_logprob_sums,
    token_kl,
    token_logprobs,
)
from tests.train.conftest import fresh_policy

P, R = [1, 2, 3, 4, 5], [10, 11, 12]


def test_fit_row_keeps_a_row_that_fits():
    assert fit_row(P, R, 8) == (P + R, 5, False)


def test_fit_row_cuts_the_prompt_from_the_left_first():
    assert fit_row(P, R, 6) == ([3, 4, 5, 10, 11, 12], 3, True)


def test_fit_row_cuts_the_response_from_the_right_keeping_one_prompt_token():
    assert fit_row(P, R, 3) == ([5, 10, 11], 1, True)
    assert fit_row(P, R, 4) == ([5, 10, 11, 12], 1, True)


def test_fit_row_rejects_a_budget_below_two():
    with pytest.raises(InputError) as err:
        fit_row(P, R, 1)
    assert err.value.field == "max_length"


@pytest.fixture(scope="module")
def llama():
    model, tok = fresh_policy("llama")
    return model, tok


def test_encode_pair_appends_the_reply_end_token_and_counts_prompt_tokens(llama):
    _, tok = llama
    end = reply_end_token_id(tok)
    assert end == tok.convert_tokens_to_ids("<|im_end|>")
    ids, n_prompt, cut = encode_pair(tok, "hello there", "Paris", 64, end)
    prompt = tok.apply_chat_template([{"role": "user", "content": "hello there"}], tokenize=False,
                                     add_generation_prompt=True)
    assert ids[:n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[n_prompt:] == tok("Paris", add_special_tokens=False)["input_ids"] + [end]
    assert not cut


def test_encode_pair_reports_a_cut_row(llama):
    _, tok = llama
    ids, n_prompt, cut = encode_pair(tok, "hello there " * 20, "Paris", 16, None)
    assert cut and len(ids) == 16 and ids[n_prompt:] == tok("Paris", add_special_tokens=False)["input_ids"]


def test_collate_rows_pads_on_the_right_and_marks_response_tokens():
    batch = collate_rows([([1, 2, 3], 2), ([4, 5], 1)], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.response_mask.tolist() == [[False, False, True], [False, True, False]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_collate_rows_rejects_an_empty_batch():
    with pytest.raises(InputError):
        collate_rows([], pad_id=0)


def test_sequence_logprob_sums_adds_the_response_tokens_log_probs():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.5, 0.5, 3.0]]])
    batch = collate_rows([([0, 2, 1], 1)], pad_id=0)
    logp = logits.log_softmax(-1)
    expected = logp[0, 0, 2] + logp[0, 1, 1]  # logits at t predict token t + 1
    out = sequence_logprob_sums(logits, batch.input_ids, batch.response_mask)
    torch.testing.assert_close(out, expected.view(1))
    torch.testing.assert_close(token_logprobs(logits, batch).sum(-1), out)


def manual_logprob(model, ids, n_prompt):
    """log pi(response | prompt) of one row from an unpadded forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(float(logits[t - 1, ids[t]]) for t in range(n_prompt, len(ids)))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_row_logprob_sums_equal_unpadded_per_row_forwards(arch):
    model, tok = fresh_policy(arch)
    rows = [([5, 9, 30, 31, 32, 33, 34, 40], 3), ([7, 8, 50], 2), ([11, 12, 13, 14, 60, 61], 4)]
    with torch.no_grad():
        batched = row_logprob_sums(model, rows, pad_token_id(tok))
    expected = torch.tensor([manual_logprob(model, ids, n) for ids, n in rows])
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=1e-5)


def test_row_logprob_sums_carry_gradients_to_the_model(llama):
    model, tok = llama
    out = row_logprob_sums(model, [([5, 9, 30, 31], 2)], pad_token_id(tok))
    assert out.requires_grad


def test_token_kl_of_a_model_with_itself_is_zero_and_positive_against_another(llama):
    model, tok = llama
    other, _ = fresh_policy("llama")
    with torch.no_grad():
        other.lm_head.weight.add_(0.5 * torch.randn(other.lm_head.weight.shape, generator=torch.Generator()
                                                    .manual_seed(1)))
    batch = collate_rows([([5, 9, 30, 31, 32], 2), ([7, 8, 50], 1)], pad_token_id(tok))
    with torch.no_grad():
        logits_p, logits_q = forward_logits(model, batch), forward_logits(other, batch)
    torch.testing.assert_close(token_kl(logits_p, logits_p, batch), torch.zeros(2))
    kl = token_kl(logits_p, logits_q, batch)
    assert bool((kl > 1e-4).all())
    # only response positions count: the same rows as prompt-only have no KL
    prompt_only = collate_rows([([5, 9, 30, 31, 32], 5), ([7, 8, 50], 3)], pad_token_id(tok))
    torch.testing.assert_close(token_kl(logits_p, logits_q, prompt_only), torch.zeros(2))
