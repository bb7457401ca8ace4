import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.inference.engine import generate_candidates
from paretoalign.inference.guided_decoding import (
    GenARMHook,
    combine_logits,
    guided_rows,
    prompt_token_ids,
    reward_guided_generate,
)
from paretoalign.inference.policy import Policy
from paretoalign.inference.sampling_params import SamplingParams, candidate_generators, next_tokens
from tests.inference.conftest import with_eos_bias
from tests.tiny import make_tiny_gpt2, make_tiny_llama, make_tokenizer

PROMPTS = [[{"role": "user", "content": "How do I bake bread?"}], "What is the capital of France?"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def base(tokenizer):
    return make_tiny_llama(tokenizer, seed=1)


@pytest.fixture(scope="module")
def reward(tokenizer):
    return make_tiny_gpt2(tokenizer, seed=2)


def _hand_guided_logprobs(base_logits, reward_logits, weights, beta):
    """log of pi_base * prod_i pi_r,i^(w_i/beta), normalised, computed in probability space."""
    product = base_logits.double().softmax(-1)
    for logits, w in zip(reward_logits, weights, strict=True):
        product = product * logits.double().softmax(-1) ** (w / beta)
    return (product / product.sum(-1, keepdim=True)).log()


@torch.no_grad()
def _reference_sample(base, rewards, weights, beta, tokenizer, prompt, prompt_index, n, params):
    """Each candidate on its own: every model re-reads the whole sequence at every step (no cache)."""
    eos = {tokenizer.eos_token_id}
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    out = []
    for j, gen in enumerate(candidate_generators(params.seed, prompt_index, n)):
        del j
        ids: list[int] = []
        for _ in range(params.max_new_tokens):
            seq = torch.tensor([prompt_ids + ids])
            logits = base(input_ids=seq).logits[:, -1]
            if rewards:
                logits = _hand_guided_logprobs(logits, [r(input_ids=seq).logits[:, -1] for r in rewards],
                                               weights, beta).float()
            tok = int(next_tokens(logits, params, [gen])[0][0])
            ids.append(tok)
            if tok in eos:
                break
        out.append(ids)
    return out


def test_without_reward_models_matches_plain_sampling(base, tokenizer):
    params = SamplingParams(max_new_tokens=10, seed=3, temperature=0.9, top_k=50)
    got = reward_guided_generate(base, tokenizer, [], PROMPTS, n=3, params=params)
    for i, prompt in enumerate(PROMPTS):
        expected = _reference_sample(base, [], [], 1.0, tokenizer, prompt, i, 3, params)
        assert [c.token_ids for c in got[i]] == expected


def test_weight_zero_equals_no_reward_model(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=10, seed=4)
    plain = reward_guided_generate(base, tokenizer, [], PROMPTS, n=2, params=params)
    zero = reward_guided_generate(base, tokenizer, [(reward, 0.0)], PROMPTS, n=2, params=params)
    assert [[c.token_ids for c in row] for row in zero] == [[c.token_ids for c in row] for row in plain]


def test_one_reward_model_samples_the_normalised_product(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=8, seed=5)
    got = reward_guided_generate(base, tokenizer, [(reward, 0.7)], PROMPTS[:1], n=3, beta=0.5, params=params)
    expected = _reference_sample(base, [reward], [0.7], 0.5, tokenizer, PROMPTS[0], 0, 3, params)
    assert [c.token_ids for c in got[0]] == expected


def test_guided_logprobs_equal_hand_computed_product_at_each_step(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=3, seed=6)
    cand = reward_guided_generate(base, tokenizer, [(reward, 0.7)], PROMPTS[:1], n=1, beta=0.5, params=params)[0][0]
    prompt_ids = prompt_token_ids(tokenizer, PROMPTS[0])
    for t, tok in enumerate(cand.token_ids):
        seq = torch.tensor([prompt_ids + cand.token_ids[:t]])
        with torch.no_grad():
            b, r = base(input_ids=seq).logits[:, -1], reward(input_ids=seq).logits[:, -1]
        guided = _hand_guided_logprobs(b, [r], [0.7], 0.5)[0, tok].item()
        assert cand.adjusted_logprobs[t] == pytest.approx(guided, abs=1e-4)
        assert cand.logprobs[t] == pytest.approx(guided, abs=1e-4)  # temperature 1: sampled from the guided one
        assert cand.policy_logprobs[t] == pytest.approx(b.log_softmax(-1)[0, tok].item(), abs=1e-4)


def test_combine_logits_is_the_normalised_weighted_product():
    gen = torch.Generator().manual_seed(0)
    base_logits, r1, r2 = (torch.randn(2, 17, generator=gen) for _ in range(3))
    got = combine_logits(base_logits, [r1, r2], [0.3, 1.2], beta=0.8)
    assert torch.allclose(got.double(), _hand_guided_logprobs(base_logits, [r1, r2], [0.3, 1.2], 0.8), atol=1e-5)


def test_candidates_do_not_depend_on_n(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=6, seed=7)
    two = reward_guided_generate(base, tokenizer, [(reward, 1.0)], PROMPTS[:1], n=2, params=params)[0]
    four = reward_guided_generate(base, tokenizer, [(reward, 1.0)], PROMPTS[:1], n=4, params=params)[0]
    assert [c.token_ids for c in four[:2]] == [c.token_ids for c in two]


def _first_new_token_after_start(ids):
    """An index k >= 1 whose token does not occur before it (so it first appears there)."""
    return next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])


def test_eos_ends_a_candidate_and_the_others_continue(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=8, seed=8)
    free = reward_guided_generate(base, tokenizer, [(reward, 1.0)], PROMPTS[:1], n=3, params=params)[0]
    k = _first_new_token_after_start(free[0].token_ids)
    eos_tok = free[0].token_ids[k]
    original = base.generation_config.eos_token_id
    base.generation_config.eos_token_id = [tokenizer.eos_token_id, eos_tok]
    try:
        cut = reward_guided_generate(base, tokenizer, [(reward, 1.0)], PROMPTS[:1], n=3, params=params)[0]
    finally:
        base.generation_config.eos_token_id = original
    assert cut[0].token_ids == free[0].token_ids[: k + 1]
    assert cut[0].finished and cut[0].finish_reason == "eos"
    # the engine's text rule: all token ids, decoded like Policy.decode (skip_special_tokens=True); this EOS is an
    # ordinary token made EOS by the generation config, so its text stays
    assert cut[0].text == tokenizer.decode(free[0].token_ids[: k + 1], skip_special_tokens=True)
    for j in (1, 2):
        ids = free[j].token_ids
        end = ids.index(eos_tok) + 1 if eos_tok in ids else len(ids)
        assert cut[j].token_ids == ids[:end]


def test_length_cut_candidates_are_unfinished(base, tokenizer):
    cand = reward_guided_generate(base, tokenizer, [], PROMPTS[:1], params=SamplingParams(max_new_tokens=4))[0][0]
    assert len(cand.token_ids) == 4 and not cand.finished and cand.finish_reason == "length"


def test_stop_string_ends_a_candidate_and_is_cut_from_the_text(base, tokenizer):
    params = SamplingParams(max_new_tokens=8, seed=9, temperature=0.0)
    free = reward_guided_generate(base, tokenizer, [], PROMPTS[:1], params=params)[0][0]
    pieces = [tokenizer.decode([t]) for t in free.token_ids]
    k = next(i for i, p in enumerate(pieces) if i >= 1 and p.isascii() and p.strip() and p not in "".join(pieces[:i]))
    stopped = reward_guided_generate(base, tokenizer, [], PROMPTS[:1],
                                     params=SamplingParams(max_new_tokens=8, seed=9, temperature=0.0,
                                                           stop=(pieces[k],)))[0][0]
    assert stopped.finish_reason == "stop" and stopped.finished
    assert stopped.token_ids == free.token_ids[: k + 1]
    assert stopped.text == tokenizer.decode(free.token_ids[:k], skip_special_tokens=True)


def test_reward_model_with_another_vocabulary_raises(base, tokenizer):
    other = make_tiny_llama(tokenizer, seed=3)
    other.resize_token_embeddings(len(tokenizer) + 16)
    with pytest.raises(InputError) as info:
        reward_guided_generate(base, tokenizer, [(other, 1.0)], PROMPTS[:1])
    assert info.value.field == "reward_models"


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_non_positive_beta_raises(base, reward, tokenizer, beta):
    with pytest.raises(InputError) as info:
        reward_guided_generate(base, tokenizer, [(reward, 1.0)], PROMPTS[:1], beta=beta)
    assert info.value.field == "beta"


def test_negative_weight_raises(base, reward, tokenizer):
    with pytest.raises(InputError) as info:
        reward_guided_generate(base, tokenizer, [(reward, -0.5)], PROMPTS[:1])
    assert info.value.field == "reward_models"


def test_a_single_message_list_instead_of_a_list_of_prompts_raises(base, tokenizer):
    with pytest.raises(InputError) as info:
        reward_guided_generate(base, tokenizer, [], PROMPTS[0])
    assert info.value.field == "prompts"


def test_no_reward_model_or_weight_zero_is_plain_engine_sampling(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=12, seed=12, top_p=0.9)
    policy = Policy(base, tokenizer)
    plain = generate_candidates(policy, [prompt_token_ids(tokenizer, p) for p in PROMPTS], 3, params)
    for rewards in ([], [(reward, 0.0)]):
        got = reward_guided_generate(base, tokenizer, rewards, PROMPTS, n=3, params=params)
        for a, b in zip(got, plain, strict=True):
            assert [c.token_ids for c in a] == [c.token_ids for c in b]
            assert [c.text for c in a] == [c.text for c in b]
            assert [c.logprobs for c in a] == [c.logprobs for c in b]


def test_prompts_batched_together_sample_what_each_prompt_samples_alone(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=8, seed=13)
    together = reward_guided_generate(base, tokenizer, [(reward, 0.8)], PROMPTS, n=2, beta=0.7, params=params)
    for i, prompt in enumerate(PROMPTS):
        expected = _reference_sample(base, [reward], [0.8], 0.7, tokenizer, prompt, i, 2, params)
        assert [c.token_ids for c in together[i]] == expected
        assert [(c.prompt_index, c.index) for c in together[i]] == [(i, 0), (i, 1)]


def test_text_drops_special_tokens_like_policy_decode(base, tokenizer):
    """Changed with the move onto the engine: text was decoded with skip_special_tokens=False before."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    likes_start = with_eos_bias(make_tiny_gpt2(tokenizer, seed=5), start, bias=6.0)
    params = SamplingParams(max_new_tokens=8, seed=14)
    cands = reward_guided_generate(base, tokenizer, [(likes_start, 1.0)], PROMPTS, n=3, params=params)
    with_special = [c for row in cands for c in row if start in c.token_ids]
    assert with_special, "the reward model's bias should make <|im_start|> appear"
    for c in with_special:
        assert c.text == Policy(base, tokenizer).decode(c.token_ids)
        assert "<|im_start|>" not in c.text
        assert "<|im_start|>" in tokenizer.decode(c.token_ids, skip_special_tokens=False)


def test_guided_rows_are_the_cli_records(base, reward, tokenizer):
    params = SamplingParams(max_new_tokens=6, seed=15)
    cands = reward_guided_generate(base, tokenizer, [(reward, 0.7)], PROMPTS[:1], n=2, beta=0.5, params=params)[0]
    rows = guided_rows(cands)
    assert [set(r) for r in rows] == [{"response", "finished", "tokens", "logprob_base", "logprob_guided"}] * 2
    prompt_ids = prompt_token_ids(tokenizer, PROMPTS[0])
    for row, c in zip(rows, cands, strict=True):
        assert row["response"] == c.text and row["finished"] == c.finished and row["tokens"] == len(c.token_ids)
        seq = torch.tensor([prompt_ids + c.token_ids])
        with torch.no_grad():
            b, r = (m(input_ids=seq).logits[0, len(prompt_ids) - 1:-1] for m in (base, reward))
        idx = torch.tensor(c.token_ids)[:, None]
        assert row["logprob_base"] == pytest.approx(b.log_softmax(-1).gather(-1, idx).sum().item(), abs=1e-4)
        guided = _hand_guided_logprobs(b, [r], [0.7], 0.5).gather(-1, idx).sum().item()
        assert row["logprob_guided"] == pytest.approx(guided, abs=1e-4)
    plain = guided_rows(reward_guided_generate(base, tokenizer, [], PROMPTS[:1], n=2, params=params)[0])
    assert all(r["logprob_guided"] == r["logprob_base"] for r in plain)  # unguided: the base model's


def test_genarm_hook_checks_its_inputs(reward):
    with pytest.raises(InputError) as info:
        GenARMHook([(reward, -1.0)])
    assert info.value.field == "reward_models"
    with pytest.raises(InputError) as info:
        GenARMHook([(reward, 1.0)], beta=0.0)
    assert info.value.field == "beta"
