import pytest
import torch

from paretoalign.errors import InputError
from paretoalign.inference.engine import CandidateGenerator, LogitsHook, generate_candidates
from paretoalign.inference.sampling_params import SamplingParams
from tests.inference.conftest import make_policy

PROMPTS = ["hello there", [{"role": "system", "content": "be brief"},
                           {"role": "user", "content": "How do I bake bread? please explain why"}]]


def full_forward_logits(policy, prompt_ids, tokens):
    with torch.no_grad():
        return policy.model(torch.tensor([list(prompt_ids) + list(tokens)])).logits[0, -1].float()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prefill_gives_the_logits_of_a_full_forward(arch):
    policy = make_policy(arch)
    ids = policy.encode_prompts(PROMPTS, 12)
    gen = CandidateGenerator(policy, ids, 5, SamplingParams(max_new_tokens=12, seed=3))
    for _ in range(4):
        for row, c in zip(gen.next_logits, gen.active, strict=True):
            expected = full_forward_logits(policy, ids[c.prompt_index], c.token_ids)
            torch.testing.assert_close(row, expected, atol=2e-5, rtol=1e-5)
        gen.step(2)
        if gen.done:
            break


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prefix_attention_equals_the_repeated_cache(arch):
    policy = make_policy(arch)
    ids = policy.encode_prompts(PROMPTS, 16)
    params = SamplingParams(max_new_tokens=16, seed=8)
    shared = CandidateGenerator(policy, ids, 6, params, shared_prefix=True)
    repeated = CandidateGenerator(policy, ids, 6, params, shared_prefix=False)
    assert shared._prefix is not None and repeated._prefix is None
    for k in (1, 1, 2, 3):
        torch.testing.assert_close(shared.next_logits, repeated.next_logits, atol=2e-5, rtol=1e-5)
        shared.step(k)
        repeated.step(k)
        if shared.done:
            break
        # prune the same candidates in both (exercises row selection of the shared prefix and the own-token cache)
        keep = [c.index for c in shared.active if c.index % 3 != 1 or c.prompt_index == 0]
        shared.prune([c for c in shared.active if c.index in keep])
        repeated.prune([c for c in repeated.active if c.index in keep])
    for a, b in zip(shared.candidates, repeated.candidates, strict=True):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]


def test_policy_logprobs_match_a_full_forward(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 16)
    for prompt_ids, group in zip(ids, generate_candidates(tiny_policy, ids, 4, SamplingParams(max_new_tokens=16)),
                                 strict=True):
        for c in group:
            seq = torch.tensor([prompt_ids + c.token_ids])
            with torch.no_grad():
                logp = tiny_policy.model(seq).logits[0].float().log_softmax(-1)
            expected = logp[len(prompt_ids) - 1:-1].gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
            torch.testing.assert_close(torch.tensor(c.policy_logprobs), expected, atol=2e-5, rtol=0)
            # temperature 1, no top-k/top-p: the sampling distribution is the policy
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=2e-5, rtol=0)


def test_chunked_generation_equals_one_shot(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 20)
    params = SamplingParams(max_new_tokens=20, seed=11, top_p=0.9)
    one_shot = generate_candidates(tiny_policy, ids, 6, params)
    gen = CandidateGenerator(tiny_policy, ids, 6, params)
    while not gen.done:
        gen.step(3)
    for a, b in zip(one_shot, gen.candidates, strict=True):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        assert [c.finish_reason for c in a] == [c.finish_reason for c in b]


def test_candidates_do_not_depend_on_batch_composition(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 16)
    params = SamplingParams(max_new_tokens=16, seed=5)
    together = generate_candidates(tiny_policy, ids, 8, params)
    alone = generate_candidates(tiny_policy, [ids[1]], 3, params, prompt_indices=[1])[0]
    assert [c.token_ids for c in alone] == [c.token_ids for c in together[1][:3]]


def test_different_seeds_and_candidates_differ(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS[:1], 16)
    a = generate_candidates(tiny_policy, ids, 6, SamplingParams(max_new_tokens=16, seed=0))[0]
    b = generate_candidates(tiny_policy, ids, 6, SamplingParams(max_new_tokens=16, seed=1))[0]
    assert len({tuple(c.token_ids) for c in a}) > 1
    assert [c.token_ids for c in a] != [c.token_ids for c in b]


def test_greedy_equals_transformers_generate():
    policy = make_policy("llama", eos_bias=0.0)
    ids = policy.encode_prompts(PROMPTS[1:], 10)
    ours = generate_candidates(policy, ids, 2, SamplingParams(temperature=0.0, max_new_tokens=10))[0]
    ref = policy.model.generate(torch.tensor(ids), attention_mask=torch.ones(1, len(ids[0]), dtype=torch.long),
                                do_sample=False, max_new_tokens=10, pad_token_id=policy.tokenizer.pad_token_id)
    assert ours[0].token_ids == ref[0, len(ids[0]):].tolist() == ours[1].token_ids


def test_eos_finishes_and_the_token_limit_does_not(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 6)
    cands = [c for g in generate_candidates(tiny_policy, ids, 16, SamplingParams(max_new_tokens=6)) for c in g]
    eos = tiny_policy.tokenizer.eos_token_id
    assert {c.finish_reason for c in cands} == {"eos", "length"}
    for c in cands:
        assert c.num_tokens <= 6
        assert (c.token_ids[-1] == eos) == c.finished
        assert eos not in c.token_ids[:-1]
        assert c.finished or c.num_tokens == 6


def test_stop_strings_end_a_candidate_and_are_cut_from_its_text():
    policy = make_policy("llama", eos_bias=0.0)
    ids = policy.encode_prompts(PROMPTS[:1], 30)
    free = generate_candidates(policy, ids, 4, SamplingParams(max_new_tokens=30, seed=2))[0]
    text = free[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), "the free text should contain a usable stop string"
    stopped = generate_candidates(policy, ids, 4, SamplingParams(max_new_tokens=30, seed=2, stop=(stop,)))[0]
    c = stopped[0]
    assert c.finish_reason == "stop" and c.finished
    assert c.text == text[:text.find(stop)]
    assert c.token_ids == free[0].token_ids[:c.num_tokens]


def test_prune_keeps_the_survivors_samples(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 20)
    params = SamplingParams(max_new_tokens=20, seed=9)
    full = generate_candidates(tiny_policy, ids, 6, params)
    gen = CandidateGenerator(tiny_policy, ids, 6, params)
    gen.step(3)
    keep = gen.active[::2]
    pruned = gen.prune(keep)
    assert pruned and all(c.rejected_at == 3 and not c.active for c in pruned)
    assert gen.active == keep
    gen.step()
    for a, b in zip(full, gen.candidates, strict=True):
        for ca, cb in zip(a, b, strict=True):
            if cb.rejected_at is None:
                assert ca.token_ids == cb.token_ids
            else:
                assert ca.token_ids[:cb.rejected_at] == cb.token_ids
    assert gen.tokens_generated < sum(c.num_tokens for g in full for c in g)


def test_response_logprobs_share_the_prefill_and_match_a_full_forward(tiny_gpt2_policy):
    policy = tiny_gpt2_policy
    prompt = policy.encode_prompts(PROMPTS[1:], 8)[0]
    responses = [[5, 6, 7, 8, 9], [10], [], [11, 12]]
    got = policy.response_logprobs(prompt, responses)
    for r, lp in zip(responses, got, strict=True):
        assert lp.shape == (len(r),)
        if r:
            with torch.no_grad():
                logp = policy.model(torch.tensor([prompt + r])).logits[0].float().log_softmax(-1)
            expected = logp[len(prompt) - 1:-1].gather(-1, torch.tensor(r)[:, None])[:, 0].double().numpy()
            assert abs(lp - expected).max() < 2e-5


def test_prompts_are_checked_before_generation(tiny_policy):
    with pytest.raises(InputError, match="context"):
        tiny_policy.encode_prompts(["fine", "word " * 600], 10)
    with pytest.raises(InputError, match="empty"):
        tiny_policy.encode_prompts(["  "], 10)
    with pytest.raises(InputError, match="no prompts"):
        tiny_policy.encode_prompts([], 10)
    with pytest.raises(InputError, match="role"):
        tiny_policy.encode_prompts([[{"content": "x"}]], 10)


# ---------------------------------------------------------------- logits hook


class RecordingHook:
    """Follows the batch rows itself (prompt position, candidate index) and checks the generator's view of them."""

    def __init__(self, force: int | None = None):
        self.force = force
        """When set, candidate 0 of every prompt may only draw this token."""
        self.keys: list[tuple[int, int]] = []
        self.fed: dict[tuple[int, int], list[int]] = {}
        self.prefills = 0

    def prefill(self, prompt_ids, n):
        self.prefills += 1
        self.keys = [(p, j) for p in range(len(prompt_ids)) for j in range(n)]
        self.fed = {k: [] for k in self.keys}

    def adjust(self, logits, rows):
        assert [(c.prompt_index, c.index) for c in rows] == self.keys
        if self.force is None:
            return logits
        out = logits.clone()
        for r, c in enumerate(rows):
            if c.index == 0:
                out[r] = float("-inf")
                out[r, self.force] = 0.0
        return out

    def select(self, keep):
        self.keys = [self.keys[i] for i in keep]

    def step(self, tokens):
        assert tokens.shape == (len(self.keys),)
        for k, t in zip(self.keys, tokens.tolist(), strict=True):
            self.fed[k].append(t)


def test_a_hook_that_changes_nothing_gives_the_tokens_of_no_hook(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 16)
    params = SamplingParams(max_new_tokens=16, seed=6, top_k=40)
    plain = generate_candidates(tiny_policy, ids, 5, params)
    hook: LogitsHook = RecordingHook()  # the protocol is structural: any object with the four methods
    hooked = generate_candidates(tiny_policy, ids, 5, params, hook=hook)
    for a, b in zip(plain, hooked, strict=True):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        assert [c.logprobs for c in a] == [c.logprobs for c in b]
        assert [c.policy_logprobs for c in a] == [c.policy_logprobs for c in b]
        assert [c.text for c in a] == [c.text for c in b]
        assert all(c.adjusted_logprobs == [] for c in a)  # no hook, nothing recorded
        for c in b:
            torch.testing.assert_close(torch.tensor(c.adjusted_logprobs), torch.tensor(c.policy_logprobs))


def test_a_hook_that_forces_a_token_changes_only_its_rows(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 8)
    params = SamplingParams(max_new_tokens=8, seed=2, temperature=0.8)
    forced = 100
    assert forced not in tiny_policy.eos_token_ids
    plain = generate_candidates(tiny_policy, ids, 4, params)
    gen = CandidateGenerator(tiny_policy, ids, 4, params, hook=RecordingHook(force=forced))
    gen.run()
    for prompt_ids, free, group in zip(ids, plain, gen.candidates, strict=True):
        c = group[0]
        assert c.token_ids == [forced] * 8 and c.finish_reason == "length"
        assert c.logprobs == [0.0] * 8 and c.adjusted_logprobs == [0.0] * 8  # probability 1 where it was drawn
        with torch.no_grad():
            logp = tiny_policy.model(torch.tensor([prompt_ids + c.token_ids])).logits[0].float().log_softmax(-1)
        expected = logp[len(prompt_ids) - 1:-1, forced]
        # the unmodified policy's log-probs, not the hooked distribution's
        torch.testing.assert_close(torch.tensor(c.policy_logprobs), expected, atol=2e-5, rtol=0)
        assert [x.token_ids for x in group[1:]] == [x.token_ids for x in free[1:]]


def test_the_hook_drops_finished_and_pruned_rows_and_is_fed_the_chosen_tokens(tiny_policy):
    ids = tiny_policy.encode_prompts(PROMPTS, 20)
    hook = RecordingHook()
    gen = CandidateGenerator(tiny_policy, ids, 6, SamplingParams(max_new_tokens=20, seed=9), hook=hook)
    assert hook.prefills == 1
    gen.step(3)
    gen.prune(gen.active[::2])
    assert hook.keys == [(c.prompt_index, c.index) for c in gen.active]
    gen.step()
    assert hook.keys == []
    for group in gen.candidates:
        for c in group:
            fed = hook.fed[(c.prompt_index, c.index)]
            # a pruned row was fed every token it drew; a row that stopped leaves before its last token is fed
            assert fed == (c.token_ids if c.rejected_at is not None else c.token_ids[:-1])
    assert any(c.rejected_at is not None for g in gen.candidates for c in g)
    assert any(c.finish_reason == "eos" for g in gen.candidates for c in g)


def test_a_hook_returning_the_wrong_shape_is_refused(tiny_policy):
    class Truncating(RecordingHook):
        def adjust(self, logits, rows):
            return logits[:, :10]

    ids = tiny_policy.encode_prompts(PROMPTS[:1], 4)
    with pytest.raises(ValueError, match="shape"):
        generate_candidates(tiny_policy, ids, 2, SamplingParams(max_new_tokens=4), hook=Truncating())
