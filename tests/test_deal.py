"""DeAL search decoding: against a reference search written here by full recomputation (no KV cache), beam search and
greedy decoding as special cases, a reward steering the result, cost accounting by hand, batch independence,
argument checks and the `deal` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from paretoalign.cli import main
from paretoalign.errors import InputError
from paretoalign.inference.deal import DeALParams, deal_generate
from paretoalign.inference.engine import generate_candidates
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.rewards.reward_model import RewardOutput
from tests.cli.conftest import trained_dir, write_jsonl  # noqa: F401  (trained_dir: a fixture)
from tests.inference.conftest import make_policy

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hello there", "How do I bake bread?", "explain why the fox jumps"]


class CountScorer:
    """A fake Scorer: the reward is how often `word` occurs in the response (one objective)."""

    objective_names = ["count"]

    def __init__(self, word: str) -> None:
        self.word = word
        self.rows = 0

    def resolve_weights(self, weights):
        return None

    def reward(self, response: str) -> float:
        return float(response.count(self.word))

    def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
        self.rows += len(responses)
        s = np.array([self.reward(r) for r in responses])
        n = len(responses)
        return RewardOutput(score=s, objectives=s[:, None], objectives_raw=s[:, None], gating=np.ones((n, 1)),
                            baseline=None, objective_names=list(self.objective_names))


class LengthScorer(CountScorer):
    """A fake Scorer: the reward is the response's length in characters."""

    def __init__(self) -> None:
        super().__init__("")

    def reward(self, response: str) -> float:
        return float(len(response))


@pytest.fixture(scope="module")
def policy():
    """A random tiny Llama without an EOS bias: EOS is rarely a top token, so beams run long."""
    return make_policy("llama", eos_bias=0.0)


@pytest.fixture(scope="module")
def gpt2_policy():
    return make_policy("gpt2", eos_bias=0.0)


@pytest.fixture(scope="module")
def eager():
    """A policy whose most likely first token is EOS (beam search then returns the empty response)."""
    return make_policy("llama")


@pytest.fixture(scope="module")
def endless():
    """A policy that never ends on its own (EOS strongly disfavoured): every beam runs to the budget."""
    return make_policy("llama", eos_bias=-100.0)


# ---------------------------------------------------------------- the reference search
@torch.inference_mode()
def reference_deal(policy, scorer, prompt, *, beams, top_k, lookahead, lam, reward_every, max_new_tokens,
                   stop=()):
    """DeAL by full recomputation: every log-prob from a forward pass over prompt + tokens, no cache."""
    eos = policy.eos_token_ids

    def ends(tokens):
        return tokens[-1] in eos or any(s in policy.decode(tokens) for s in stop)

    def text(tokens):
        out = policy.decode(tokens)
        cuts = [out.find(s) for s in stop if s in out]
        return out[:min(cuts)] if cuts else out

    prompt_ids = policy.prompt_ids(prompt)
    messages = [{"role": "user", "content": prompt}]

    def logp(tokens):
        ids = torch.tensor([prompt_ids + tokens])
        return policy.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)

    def reward(texts):
        return [float(v) for v in scorer.score([messages] * len(texts), texts).score]

    beam_set = [{"tokens": [], "lp": 0.0, "r": 0.0, "done": False}]
    archive = []
    for t in range(max_new_tokens):
        if all(b["done"] for b in beam_set):
            break
        pool, new = [], []
        for b in beam_set:
            if b["done"]:
                pool.append(b)
                continue
            values, order = torch.sort(logp(b["tokens"]), descending=True, stable=True)
            for j in range(top_k):
                tok = int(order[j])
                c = {"tokens": b["tokens"] + [tok], "lp": b["lp"] + float(values[j].double()), "r": b["r"]}
                c["done"] = ends(c["tokens"])
                pool.append(c)
                new.append(c)
        done = [c for c in new if c["done"]]
        live = [c for c in new if not c["done"]]
        if lam > 0:
            for c, r in zip(done, reward([text(c["tokens"]) for c in done]), strict=True):
                c["r"] = r
            if t % reward_every == 0 and live:
                steps = min(lookahead, max_new_tokens - (t + 1))
                texts = []
                for c in live:
                    roll = []
                    for _ in range(steps):
                        tok = int(logp(c["tokens"] + roll).argmax())
                        roll.append(tok)
                        if ends(c["tokens"] + roll):
                            break
                    texts.append(text(c["tokens"] + roll))
                for c, r in zip(live, reward(texts), strict=True):
                    c["r"] = r
        order = sorted(range(len(pool)), key=lambda j: -(pool[j]["lp"] + lam * pool[j]["r"]))
        beam_set = [pool[j] for j in order[:beams]]
        archive += [b for b in beam_set if b["done"] and not any(b is a for a in archive)]
    best = max(archive or beam_set, key=lambda b: b["lp"] + lam * b["r"])
    return best["tokens"], best["lp"] + lam * best["r"], bool(best["done"]), len(archive)


# ---------------------------------------------------------------- exactness
STOPS = ("e", "a", "o")
"""Stop strings that end some beams of the EOS-free policy after a few tokens (finished beams of several lengths)."""


@pytest.mark.parametrize("beams, top_k, max_new, stop", [(2, 2, 8, ()), (3, 2, 10, STOPS), (2, 4, 12, STOPS)])
def test_lambda_zero_is_beam_search(policy, endless, beams, top_k, max_new, stop):
    pol = endless if stop else policy
    scorer = CountScorer("e")
    results = deal_generate(pol, scorer, PROMPTS, beams=beams, top_k=top_k, lookahead=3, lam=0.0,
                            max_new_tokens=max_new, stop=stop)
    assert scorer.rows == len(PROMPTS)  # only the returned beam of each prompt is scored, no look-ahead
    for prompt, res in zip(PROMPTS, results, strict=True):
        tokens, score, done, archived = reference_deal(pol, scorer, prompt, beams=beams, top_k=top_k, lookahead=3,
                                                       lam=0.0, reward_every=1, max_new_tokens=max_new, stop=stop)
        assert res.token_ids == tokens and len(tokens) > 1
        assert res.score == pytest.approx(score, abs=1e-4) and res.logprob == pytest.approx(score, abs=1e-4)
        assert res.finished == done and res.stats["finished_beams"] == archived
        assert res.reward == float(res.text.count("e"))
    assert any(r.finished for r in results) == bool(stop)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "llama-stops"])
@pytest.mark.parametrize("lookahead, reward_every", [(3, 1), (2, 3), (0, 1)])
def test_reward_look_ahead_matches_the_reference_search(policy, gpt2_policy, endless, arch, lookahead, reward_every):
    # shared-prefix attention (llama), the plain cache (gpt2), and beams that end on stop strings
    pol = {"llama": policy, "gpt2": gpt2_policy, "llama-stops": endless}[arch]
    stop = STOPS if arch == "llama-stops" else ()
    scorer = LengthScorer() if stop else CountScorer("e")
    kw = dict(beams=2, top_k=3, lookahead=lookahead, lam=0.7, reward_every=reward_every, max_new_tokens=9, stop=stop)
    results = deal_generate(pol, scorer, PROMPTS, **kw)
    plain = deal_generate(pol, scorer, PROMPTS, **{**kw, "lam": 0.0})
    assert [r.token_ids for r in results] != [r.token_ids for r in plain]  # the reward changed something
    for prompt, res in zip(PROMPTS, results, strict=True):
        tokens, score, done, archived = reference_deal(pol, scorer, prompt, **kw)
        assert res.token_ids == tokens
        assert res.score == pytest.approx(score, abs=1e-4)
        assert res.finished == done and res.stats["finished_beams"] == archived
        assert res.reward == scorer.reward(res.text)


@pytest.mark.parametrize("stop", [(), STOPS])
def test_one_beam_top_one_lambda_zero_is_greedy_decoding(policy, stop):
    params = SamplingParams(temperature=0.0, max_new_tokens=16, stop=stop)
    results = deal_generate(policy, CountScorer("e"), PROMPTS, beams=1, top_k=1, lam=0.0, max_new_tokens=16,
                            stop=stop)
    greedy = generate_candidates(policy, [policy.prompt_ids(p) for p in PROMPTS], 1, params)
    for res, (cand,) in zip(results, greedy, strict=True):
        assert res.token_ids == cand.token_ids and res.text == cand.text and res.finished == cand.finished
        assert res.logprob == pytest.approx(sum(cand.policy_logprobs), abs=1e-4)


def test_a_reward_for_a_word_steers_the_result_toward_it(policy):
    word = " the"
    assert len(policy.tokenizer.encode(word)) == 1  # one token of the tiny vocabulary
    vocab = len(policy.tokenizer)
    plain = deal_generate(policy, CountScorer(word), PROMPTS, beams=2, top_k=vocab, lookahead=0, lam=0.0,
                          max_new_tokens=8)
    steered = deal_generate(policy, CountScorer(word), PROMPTS, beams=2, top_k=vocab, lookahead=0, lam=20.0,
                            reward_every=1, max_new_tokens=8)
    assert all(r.reward == 0.0 for r in plain)
    for p, s in zip(plain, steered, strict=True):
        assert word not in p.text and s.text.count(word) >= 1 and s.reward > p.reward
        assert s.score == pytest.approx(s.logprob + 20.0 * s.reward, abs=1e-6)


def test_select_by_reward_returns_the_finished_beam_with_the_highest_reward(endless):
    scorer = LengthScorer()
    kw = dict(beams=4, top_k=4, lam=0.0, max_new_tokens=12, stop=STOPS)
    by_score = deal_generate(endless, scorer, PROMPTS, **kw)
    by_reward = deal_generate(endless, scorer, PROMPTS, select_by="reward", **kw)
    assert [r.token_ids for r in by_score] != [r.token_ids for r in by_reward]
    for s, r in zip(by_score, by_reward, strict=True):
        assert r.reward >= s.reward and r.logprob <= s.logprob + 1e-9
        assert r.finished and s.finished and r.stats["select_by"] == "reward"
        assert r.stats["finished_beams"] >= 2 and r.reward_calls == r.stats["finished_beams"]


def test_beam_search_prefers_an_early_eos_as_log_pi_says(eager):
    results = deal_generate(eager, CountScorer("e"), PROMPTS, beams=2, top_k=2, lam=0.0, max_new_tokens=8)
    assert all(r.finished and r.token_ids == [eager.tokenizer.eos_token_id] and r.text == "" for r in results)


# ---------------------------------------------------------------- cost accounting
def test_tokens_evaluated_and_reward_calls_by_hand(endless):
    # beams 2, top_k 2, look-ahead 3, budget 4, no EOS. Step t has 2 children at t = 0, else 4; they are fed
    # (1 token each) and rolled out min(3, 4 - (t + 1)) - 1 more tokens: t=0: 2 + 2*2, t=1: 4 + 4, t=2: 4, t=3: 0
    # (the budget: the children are scored as they are).
    scorer = CountScorer("e")
    (res,) = deal_generate(endless, scorer, PROMPTS[:1], beams=2, top_k=2, lookahead=3, lam=1.0, reward_every=1,
                           max_new_tokens=4)
    assert res.tokens_evaluated == 6 + 8 + 4 + 0
    assert res.reward_calls == 2 + 4 + 4 + 4 == scorer.rows  # the pick was scored on its own text at t=3
    assert not res.finished and len(res.token_ids) == 4 and res.finish_reason == "length"
    # reward every 2: t=0 as above (6), t=1 a plain step (the 2 kept beams fed), t=2: 4 children, no roll-out,
    # t=3 plain at the budget (no feed); the pick's reward is then of a look-ahead, so it is scored once more.
    scorer = CountScorer("e")
    (res,) = deal_generate(endless, scorer, PROMPTS[:1], beams=2, top_k=2, lookahead=3, lam=1.0, reward_every=2,
                           max_new_tokens=4)
    assert res.tokens_evaluated == 6 + 2 + 4 + 0
    assert res.reward_calls == 2 + 4 + 1 == scorer.rows
    assert res.reward == float(res.text.count("e"))
    # beam search: b kept beams fed per step (1 at t=0, then 2), the last step feeds nothing
    (res,) = deal_generate(endless, CountScorer("e"), PROMPTS[:1], beams=2, top_k=2, lam=0.0, max_new_tokens=4)
    assert res.tokens_evaluated == 2 + 2 + 2 and res.reward_calls == 1


def test_results_do_not_depend_on_the_other_prompts_of_the_batch(policy):
    kw = dict(beams=2, top_k=3, lookahead=2, lam=0.5, reward_every=2, max_new_tokens=10)
    together = deal_generate(policy, CountScorer("e"), PROMPTS, **kw)
    for i, prompt in enumerate(PROMPTS):
        (alone,) = deal_generate(policy, CountScorer("e"), [prompt], **kw)
        both = together[i]
        assert alone.token_ids == both.token_ids and alone.reward == both.reward
        assert alone.tokens_evaluated == both.tokens_evaluated and alone.reward_calls == both.reward_calls
        assert alone.score == pytest.approx(both.score, abs=1e-4)
    small = deal_generate(policy, CountScorer("e"), PROMPTS, batch_rows=1, **kw)  # one prompt per batch
    assert [r.token_ids for r in small] == [r.token_ids for r in together]


def test_stop_strings_end_beams_and_are_cut_from_the_text(endless):
    results = deal_generate(endless, CountScorer("t"), PROMPTS, beams=2, top_k=2, lam=0.5, lookahead=2,
                            reward_every=1, max_new_tokens=24, stop=["e", "a", "o"])
    for r in results:  # only a stop string can end a beam of this policy
        assert r.finish_reason in ("stop", "length") and r.finished == (r.finish_reason == "stop")
        if r.finished:
            assert not any(s in r.text for s in "eao") and any(s in endless.decode(r.token_ids) for s in "eao")
            assert r.reward == float(r.text.count("t"))
    assert any(r.finished for r in results)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, name", [
    ({"beams": 0}, "beams"), ({"beams": True}, "beams"), ({"top_k": 0}, "top_k"), ({"top_k": 1.5}, "top_k"),
    ({"lookahead": -1}, "lookahead"), ({"lam": -0.1}, "lam"), ({"lam": math.nan}, "lam"), ({"lam": math.inf}, "lam"),
    ({"reward_every": 0}, "reward_every"), ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"select_by": "best"}, "select_by"), ({"batch_rows": 0}, "batch_rows"), ({"stop": [""]}, "stop"),
])
def test_bad_arguments_raise_input_errors_naming_the_field(policy, kw, name):
    scorer = CountScorer("e")
    with pytest.raises(InputError) as err:
        deal_generate(policy, scorer, PROMPTS, **kw)
    assert err.value.field == name
    assert scorer.rows == 0


def test_top_k_beyond_the_vocabulary_and_a_single_string_prompt_raise(policy):
    with pytest.raises(InputError) as err:
        deal_generate(policy, CountScorer("e"), PROMPTS, top_k=len(policy.tokenizer) + 1, max_new_tokens=2)
    assert err.value.field == "top_k"
    with pytest.raises(InputError) as err:
        deal_generate(policy, CountScorer("e"), "hello", max_new_tokens=2)
    assert err.value.field == "prompts"


def test_top_k_below_beams_fills_the_beams_over_the_first_steps(endless):
    assert DeALParams(beams=4, top_k=2).top_k == 2
    (res,) = deal_generate(endless, CountScorer("e"), PROMPTS[:1], beams=4, top_k=2, lam=0.0, max_new_tokens=3)
    assert res.tokens_evaluated == 2 + 4  # 2 beams after step 0, 4 after step 1, nothing fed after the last


# ---------------------------------------------------------------- the command
CLI_PROMPTS = [{"id": "p1", "prompt": "How do I bake bread?", "topic": "food"},
               {"id": "p2", "prompt": [{"role": "user", "content": "Capital of France?"}], "topic": "geo"}]


def test_deal_command_writes_one_row_per_prompt(trained_dir, tiny_llama_dir, tmp_path):  # noqa: F811
    prompts = write_jsonl(tmp_path / "prompts.jsonl", CLI_PROMPTS)
    out = tmp_path / "out.jsonl"
    rc = main(["deal", "--model", str(tiny_llama_dir), "--reward-model", str(trained_dir), "--prompts", str(prompts),
               "--output", str(out), "--max-new-tokens", "6", "--beams", "2", "--top-k", "2", "--lookahead", "2",
               "--lam", "0.5", "--reward-every", "2", "--weights", "helpfulness=1", "--stop", "e", "--quiet"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2"] and [r["topic"] for r in rows] == ["food", "geo"]
    for r in rows:
        (cand,) = r["candidates"]
        assert r["tokens_evaluated"] == r["stats"]["tokens_evaluated"] > 0
        assert r["stats"]["method"] == "deal" and r["stats"]["rm_calls"] >= 1
        assert cand["score"] == pytest.approx(cand["objectives"]["helpfulness"], abs=1e-9)
        assert (r["response"] == cand["response"]) if cand["finished"] else r["response"] is None


def test_deal_command_bad_flag_writes_nothing(trained_dir, tiny_llama_dir, tmp_path, capsys):  # noqa: F811
    prompts = write_jsonl(tmp_path / "prompts.jsonl", CLI_PROMPTS)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["deal", "--model", str(tiny_llama_dir), "--reward-model", str(trained_dir), "--prompts", str(prompts),
              "--output", str(out), "--beams", "0"])
    assert exit_info.value.code == 2 and "--beams" in capsys.readouterr().err
    rc = main(["deal", "--model", str(tiny_llama_dir), "--reward-model", str(trained_dir), "--prompts", str(prompts),
               "--output", str(out), "--weights", "nosuch=1", "--quiet"])
    assert rc != 0 and not out.exists()


def test_deal_command_attaches_the_prompts_constraints_to_a_reward_set(tiny_llama_dir, tmp_path):
    rows = [{"id": "p1", "prompt": "How do I bake bread?", "constraints": [{"checker": "word_count", "max": 3}]},
            {"id": "p2", "prompt": "Capital of France?", "constraints": [{"checker": "word_count", "min": 50}]}]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    rewards = tmp_path / "rewards.json"
    rewards.write_text(json.dumps({"rewards": [{"name": "constraints", "checker": "prompt_constraints",
                                                "weight": 1.0}]}))
    out = tmp_path / "out.jsonl"
    rc = main(["deal", "--model", str(tiny_llama_dir), "--reward-model", str(rewards), "--prompts", str(prompts),
               "--output", str(out), "--max-new-tokens", "4", "--lam", "1", "--reward-every", "1", "--quiet"])
    assert rc == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    # 4 tokens can never make 50 words: the second prompt's constraint is never met
    met = [row["candidates"][0]["objectives"]["constraints"] for row in got]
    assert met[1] == 0.0 and all(r["constraints"] == rows[i]["constraints"] for i, r in enumerate(got))
    assert [row["candidates"][0]["score"] for row in got] == met
