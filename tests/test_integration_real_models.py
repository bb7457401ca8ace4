"""End to end on the shipped models and a small slice of the bundled (real) data: train, save, load, score, export."""

import os
import random

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from paretoalign.data.bundled import default_sources_config
from paretoalign.data.sources import load_training_data
from paretoalign.rewards.armo_config import ArmoRMConfig
from paretoalign.rewards.armo_trainer import train_reward_model
from paretoalign.rewards.reward_model import RewardModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.integration

PAIRS_PER_OBJECTIVE = 16


@pytest.fixture(scope="module")
def real_slice():
    """PAIRS_PER_OBJECTIVE training pairs per objective and 12 other pairs to score, from the bundled data."""
    data = load_training_data(default_sources_config())
    rng = random.Random(0)
    train, rest = [], []
    for objective in data.objectives():
        pairs = data.pairs_for(objective)
        rng.shuffle(pairs)
        train += pairs[:PAIRS_PER_OBJECTIVE]
        rest += pairs[PAIRS_PER_OBJECTIVE:PAIRS_PER_OBJECTIVE + 3]
    data.pairs = train
    return data, rest[:12]


def _rows(pairs):
    prompts = [p.prompt for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.chosen, p.rejected)]
    return prompts, responses


@pytest.fixture(scope="module")
def minilm_rm(real_slice, tmp_path_factory):
    data, _ = real_slice
    config = ArmoRMConfig(backbone="minilm", embedding_cache=None, progress=False, gating_steps=200)
    model, stats = train_reward_model(config, data)
    directory = model.save_pretrained(tmp_path_factory.mktemp("minilm") / "rm")
    return model, stats, directory


def test_minilm_rm_objectives_and_decorrelation(minilm_rm, real_slice):
    model, stats, _ = minilm_rm
    assert model.objective_names[-1] == "verbosity"
    assert set(model.objective_names[:-1]) == set(real_slice[0].objectives())
    prompts, responses = _rows(real_slice[1])
    out = model.score(prompts, responses)
    assert np.isfinite(out.score).all() and out.objectives.shape == (len(responses), model.n_objectives)
    np.testing.assert_allclose(out.gating.sum(axis=1), 1.0, atol=1e-6)
    # Longer replies must get a higher verbosity reward: the length feature makes the head accurate.
    words = np.log1p([len(r.split()) for r in responses])
    assert spearmanr(out.objectives[:, -1], words).statistic > 0.8
    for name, info in model.metadata["decorrelation"].items():
        assert info["satisfied"] and info["spearman_after"] <= 0.03, name


def test_minilm_rm_scores_survive_batching_order_and_reload(minilm_rm, real_slice):
    model, _, directory = minilm_rm
    prompts, responses = _rows(real_slice[1])
    reference = model.score(prompts, responses, batch_size=32).score
    for batch_size in (1, 7):
        assert np.abs(model.score(prompts, responses, batch_size=batch_size).score - reference).max() < 1e-5
    order = np.random.default_rng(0).permutation(len(responses))
    shuffled = model.score([prompts[i] for i in order], [responses[i] for i in order]).score
    assert np.abs(shuffled - reference[order]).max() < 1e-5
    loaded = RewardModel.from_pretrained(directory)
    assert np.abs(loaded.score(prompts, responses).score - reference).max() < 1e-5


def test_smollm2_rm_export_equals_score(real_slice, tmp_path):
    """The shipped SmolLM2 GGUF as a causal-LM backbone; its HF export scores like `RewardModel.score`."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from paretoalign.rewards.export_hf import export_sequence_classifier

    data, heldout = real_slice
    data.pairs = [p for p in data.pairs if len(p.chosen) + len(p.rejected) < 1500][:24]
    config = ArmoRMConfig(backbone="smollm2", max_length=256, embedding_cache=None, progress=False,
                          gating_steps=50, gating_crossfit_folds=0)
    model, _ = train_reward_model(config, data)
    # Rows within max_length: the export documents that it does not cut long prompts from the left as we do.
    pairs = [p for p in heldout if sum(len(m["content"]) for m in p.prompt) + len(p.chosen) + len(p.rejected) < 800]
    prompts, responses = _rows(pairs[:3])
    model.backbone.embed(prompts, responses)
    stats = model.backbone.truncation_stats
    assert len(prompts) == 6 and stats.prompt_truncated == stats.response_truncated == 0
    weights = {name: 1.0 for name in model.objective_names}
    weights["verbosity"] = -0.5
    ours = model.score(prompts, responses, weights=weights, batch_size=4).score
    assert np.abs(model.score(prompts, responses, weights=weights, batch_size=1).score - ours).max() < 1e-5
    out = export_sequence_classifier(model, weights, tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(out)
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    theirs = []
    for prompt, response in zip(prompts, responses, strict=True):
        text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        with torch.no_grad():
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            theirs.append(classifier(**enc).logits[0, 0].item())
    assert np.abs(np.array(theirs) - ours).max() < 1e-4


@pytest.fixture(scope="module")
def smollm2_policy():
    from paretoalign.inference.policy import Policy

    return Policy.from_pretrained("smollm2")


def test_smollm2_shared_prefix_sampling_matches_the_repeated_cache_and_greedy_generate(smollm2_policy):
    from paretoalign.inference.engine import CandidateGenerator, generate_candidates
    from paretoalign.inference.sampling_params import SamplingParams

    policy = smollm2_policy
    prompts = [[{"role": "user", "content": "Give me three tips for staying healthy in winter."}],
               [{"role": "user", "content": "What is the capital of France?"}]]
    ids = policy.encode_prompts(prompts, 8)
    params = SamplingParams(max_new_tokens=8, seed=1)
    shared = CandidateGenerator(policy, ids, 4, params, shared_prefix=True)
    repeated = CandidateGenerator(policy, ids, 4, params, shared_prefix=False)
    for _ in range(4):
        torch.testing.assert_close(shared.next_logits, repeated.next_logits, atol=2e-4, rtol=1e-4)
        shared.step(2)
        repeated.step(2)
        if shared.done:
            break
    greedy = generate_candidates(policy, ids[:1], 1, SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
    ref = policy.model.generate(torch.tensor(ids[:1]), attention_mask=torch.ones(1, len(ids[0]), dtype=torch.long),
                                do_sample=False, max_new_tokens=8, pad_token_id=policy.tokenizer.pad_token_id)
    assert greedy.token_ids == ref[0, len(ids[0]):].tolist()[:greedy.num_tokens]
