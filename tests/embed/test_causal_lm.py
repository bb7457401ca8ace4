"""CausalLMBackbone: features independent of batching, padding and order; h(x) from the shared pass; truncation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from paretoalign.embed.backbone import Backbone, TruncationWarning
from paretoalign.embed.causal_lm import CausalLMBackbone, _truncate
from paretoalign.embed.chat_format import conversation_text
from paretoalign.errors import InputError, ParetoAlignError
from tests.tiny import make_tiny_llama, make_tokenizer

TOL = 1e-5


def max_diff(a, b) -> float:
    return float(max(np.abs(a.response - b.response).max(), np.abs(a.prompt - b.prompt).max()))


def last_hidden(model, ids: list[int]) -> torch.Tensor:
    """The base model's last_hidden_state of one unpadded sequence."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).last_hidden_state[0]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def backbone(request, tiny_llama_dir, tiny_gpt2_dir) -> CausalLMBackbone:
    return CausalLMBackbone(str(tiny_llama_dir if request.param == "llama" else tiny_gpt2_dir))


def test_is_a_backbone_with_hidden_size_dims(backbone):
    assert isinstance(backbone, Backbone)
    assert backbone.feature_dim == backbone.prompt_feature_dim == 64
    assert type(backbone.model).__name__ in ("LlamaModel", "GPT2Model")  # the base model, no LM head


def test_features_identical_across_batch_sizes_padding_and_order(backbone, rows):
    prompts, responses = rows
    assert len(prompts) >= 40
    ref = backbone.embed(prompts, responses, batch_size=1)
    assert ref.response.dtype == np.float32 and ref.response.shape == (len(prompts), 64)
    assert np.isfinite(ref.response).all() and np.isfinite(ref.prompt).all()
    for size in (7, 32):
        assert max_diff(backbone.embed(prompts, responses, batch_size=size), ref) < TOL
    backbone.padding_side = "left"
    try:
        for size in (7, 32):
            assert max_diff(backbone.embed(prompts, responses, batch_size=size), ref) < TOL
    finally:
        backbone.padding_side = "right"
    perm = np.random.default_rng(1).permutation(len(prompts))
    shuffled = backbone.embed([prompts[i] for i in perm], [responses[i] for i in perm], batch_size=7)
    assert max_diff(shuffled, ref.take(perm)) < TOL


def test_prompt_feature_from_shared_pass_equals_separate_prompt_pass(backbone, rows):
    prompts, responses = rows
    feats = backbone.embed(prompts, responses, batch_size=7)
    tok = backbone.tokenizer
    for i in range(0, len(prompts), 5):
        generation = tok.apply_chat_template(prompts[i], add_generation_prompt=True, tokenize=False)
        prompt_ids = tok(generation, add_special_tokens=False)["input_ids"]
        full, _ = conversation_text(tok, prompts[i], responses[i])
        full_ids = tok(full, add_special_tokens=False)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids
        np.testing.assert_allclose(feats.prompt[i], last_hidden(backbone.model, prompt_ids)[-1], atol=TOL)
        np.testing.assert_allclose(feats.response[i], last_hidden(backbone.model, full_ids)[-1], atol=TOL)


def test_feature_positions_do_not_depend_on_pad_token_when_pad_equals_eos(rows):
    # A template whose text ENDS with the eos token, and pad == eos: searching for the first pad/eos id
    # would land inside the prompt (every turn ends with eos) or on padding.
    tok = make_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    backbone = CausalLMBackbone(make_tiny_llama(make_tokenizer()), tok)
    prompts, responses = rows
    feats = backbone.embed(prompts, responses, batch_size=16)
    for i in range(0, len(prompts), 4):
        full, _ = conversation_text(tok, prompts[i], responses[i])
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        np.testing.assert_allclose(feats.response[i], last_hidden(backbone.model, ids)[-1], atol=TOL)
    backbone.padding_side = "left"
    assert max_diff(backbone.embed(prompts, responses, batch_size=16), feats) < TOL


def test_object_built_backbone_matches_path_built_one(tiny_llama_dir, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts, responses = rows
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    from_object = CausalLMBackbone(lm, AutoTokenizer.from_pretrained(tiny_llama_dir))
    assert from_object.model is lm.model and from_object.model_path is None
    from_path = CausalLMBackbone(str(tiny_llama_dir))
    assert max_diff(from_object.embed(prompts, responses), from_path.embed(prompts, responses)) < TOL
    with pytest.raises(ParetoAlignError, match="model object"):
        from_object.spec()
    # The object fingerprint digests the parameters.
    before = from_object.fingerprint
    assert CausalLMBackbone(lm, from_object.tokenizer).fingerprint == before
    with torch.no_grad():
        lm.model.norm.weight[0] += 1.0
    assert CausalLMBackbone(lm, from_object.tokenizer).fingerprint != before


def test_object_without_tokenizer_needs_a_local_origin():
    lm = make_tiny_llama(make_tokenizer())
    with pytest.raises(InputError, match="tokenizer"):
        CausalLMBackbone(lm)


def test_spec_and_fingerprint(tiny_llama_dir):
    a = CausalLMBackbone(str(tiny_llama_dir), max_length=64)
    assert a.spec() == {"kind": "causal_lm", "model": str(tiny_llama_dir), "gguf_file": None, "max_length": 64,
                        "dtype": "float32"}
    assert a.fingerprint == CausalLMBackbone(str(tiny_llama_dir), max_length=64, batch_size=3).fingerprint
    assert a.fingerprint != CausalLMBackbone(str(tiny_llama_dir), max_length=65).fingerprint


def test_empty_input_and_mismatched_lengths(backbone):
    feats = backbone.embed([], [])
    assert feats.response.shape == (0, 64) and feats.prompt.shape == (0, 64)
    with pytest.raises(InputError):
        backbone.embed([[{"role": "user", "content": "hi"}]], [])


def test_bad_arguments(tiny_llama_dir):
    for kwargs in ({"max_length": 1}, {"batch_size": 0}, {"padding_side": "middle"}):
        with pytest.raises(InputError):
            CausalLMBackbone(str(tiny_llama_dir), **kwargs)


# ---------------------------------------------------------------- truncation

def test_truncate_rule():
    ids = list(range(10))  # 6 prompt tokens, 4 response tokens
    row = _truncate(ids, 6, 20)
    assert (row.ids, row.prompt_pos, row.prompt_cut, row.response_cut) == (ids, 5, False, False)
    row = _truncate(ids, 6, 7)  # prompt cut from the left: 3 prompt tokens kept
    assert (row.ids, row.prompt_pos, row.prompt_cut, row.response_cut) == ([3, 4, 5, 6, 7, 8, 9], 2, True, False)
    row = _truncate(ids, 6, 5)  # response (4) fits max_length - 1: one prompt token kept
    assert (row.ids, row.prompt_pos) == ([5, 6, 7, 8, 9], 0)
    row = _truncate(ids, 6, 3)  # response too long: last prompt token + the response's last 2 tokens
    assert (row.ids, row.prompt_pos, row.prompt_cut, row.response_cut) == ([5, 8, 9], 0, True, True)
    row = _truncate([0, 1, 2, 3], 1, 3)  # a one-token prompt is not "cut"
    assert (row.ids, row.prompt_pos, row.prompt_cut, row.response_cut) == ([0, 2, 3], 0, False, True)


def test_truncation_keeps_the_response_and_cuts_the_prompt_from_the_left(tiny_llama_dir, rows):
    prompts, responses = rows
    max_length = 48
    backbone = CausalLMBackbone(str(tiny_llama_dir), max_length=max_length)
    tok = backbone.tokenizer
    with pytest.warns(TruncationWarning) as record:
        feats = backbone.embed(prompts, responses, batch_size=8)
    assert len(record) == 1
    expected_prompt_cut = expected_response_cut = 0
    for i in range(len(prompts)):
        full, start = conversation_text(tok, prompts[i], responses[i])
        ids = tok(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tok(full[:start], add_special_tokens=False)["input_ids"])
        n_response = len(ids) - n_prompt
        if len(ids) <= max_length:
            kept, prompt_pos = ids, n_prompt - 1
        elif n_response <= max_length - 1:
            kept, prompt_pos = ids[-max_length:], max_length - n_response - 1
            expected_prompt_cut += 1
        else:
            kept, prompt_pos = [ids[n_prompt - 1]] + ids[-(max_length - 1):], 0
            expected_prompt_cut += 1
            expected_response_cut += 1
        hidden = last_hidden(backbone.model, kept)
        np.testing.assert_allclose(feats.response[i], hidden[-1], atol=TOL)
        np.testing.assert_allclose(feats.prompt[i], hidden[prompt_pos], atol=TOL)
    assert expected_prompt_cut > 0
    stats = backbone.truncation_stats
    assert (stats.rows, stats.prompt_truncated, stats.response_truncated) == (
        len(prompts), expected_prompt_cut, expected_response_cut)
    assert f"truncated the prompt of {expected_prompt_cut}/{len(prompts)} rows from the left" in str(
        record[0].message)


def test_long_response_keeps_its_last_tokens_and_is_counted(tiny_llama_dir):
    backbone = CausalLMBackbone(str(tiny_llama_dir), max_length=16)
    prompts = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "hi"}]]
    responses = ["the quick brown fox jumps over the lazy dog " * 4, "ok"]
    with pytest.warns(TruncationWarning, match=r"truncated the prompt of 2/2 rows from the left; "
                                                 r"truncated the response of 1/2 rows \(their first tokens"):
        feats = backbone.embed(prompts, responses)
    full, _ = conversation_text(backbone.tokenizer, prompts[0], responses[0])
    ids = backbone.tokenizer(full, add_special_tokens=False)["input_ids"]
    # Kept: the last prompt token (for h(x)), then the conversation's last max_length - 1 = 15 tokens.
    generation = backbone.tokenizer.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=False)
    prompt_ids = backbone.tokenizer(generation, add_special_tokens=False)["input_ids"]
    hidden = last_hidden(backbone.model, [prompt_ids[-1]] + ids[-15:])
    np.testing.assert_allclose(feats.response[0], hidden[-1], atol=TOL)
    np.testing.assert_allclose(feats.prompt[0], hidden[0], atol=TOL)


def test_no_warning_without_truncation(tiny_llama_dir, rows):
    backbone = CausalLMBackbone(str(tiny_llama_dir), max_length=512)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        backbone.embed(*rows)
    assert backbone.truncation_stats.prompt_truncated == 0
