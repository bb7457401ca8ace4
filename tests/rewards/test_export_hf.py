import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from paretoalign.embed.causal_lm import CausalLMBackbone
from paretoalign.errors import InputError
from paretoalign.rewards.export_hf import export_sequence_classifier
from paretoalign.rewards.reward_model import RewardModel
from tests.rewards.model_factory import random_llama_rm, random_model

PROMPTS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris is the capital of?"}],
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello, question?"},
     {"role": "user", "content": "explain why the fox jumps"}],
    [{"role": "user", "content": "thanks"}],
]
RESPONSES = [
    "Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "France.",
    "Because the quick brown fox jumps over the lazy dog, please.",
    "",
]
WEIGHTS = {"helpfulness": 1.0, "harmlessness": 0.7, "verbosity": -0.4}


@pytest.fixture(scope="module")
def llama_rm(tiny_llama_dir):
    return random_llama_rm(tiny_llama_dir)


@pytest.fixture(scope="module")
def exported(llama_rm, tmp_path_factory):
    return export_sequence_classifier(llama_rm, WEIGHTS, tmp_path_factory.mktemp("export") / "hf")


def plain_transformers_scores(directory, prompts, responses, batch_size):
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
             for p, r in zip(prompts, responses, strict=True)]
    scores = []
    for lo in range(0, len(texts), batch_size):
        batch = tokenizer(texts[lo:lo + batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.no_grad():
            scores.append(model(**batch).logits[:, 0])
    return torch.cat(scores).double().numpy(), tokenizer


@pytest.mark.parametrize("batch_size", [1, 4])
def test_exported_classifier_reproduces_weighted_scores(llama_rm, exported, batch_size):
    expected = llama_rm.score(PROMPTS, RESPONSES, weights=WEIGHTS).score
    got, tokenizer = plain_transformers_scores(exported, PROMPTS, RESPONSES, batch_size)
    assert np.abs(got - expected).max() < 1e-4
    assert np.ptp(expected) > 1e-2  # the rows really differ
    if batch_size > 1:  # the batch was padded on the right
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
                   for t in (tokenizer.apply_chat_template(p + [{"role": "assistant", "content": r}],
                                                           tokenize=False)
                             for p, r in zip(PROMPTS, RESPONSES, strict=True))]
        assert len(set(lengths)) > 1 and tokenizer.padding_side == "right"


def test_export_directory_contents(exported, llama_rm):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "paretoalign_export.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    info = json.loads((exported / "paretoalign_export.json").read_text())
    assert info["objectives"] == llama_rm.objective_names
    assert info["weights"] == {"helpfulness": 1.0, "harmlessness": 0.7, "verbosity": -0.4}
    assert info["pad_token_from_eos"] is False and info["chat_template"] is True
    readme = (exported / "README.md").read_text()
    assert "add_special_tokens=False" in readme and "apply_chat_template" in readme and "logits[:, 0]" in readme
    config = json.loads((exported / "config.json").read_text())
    assert config["pad_token_id"] == AutoTokenizer.from_pretrained(exported).pad_token_id


def test_export_after_save_and_lazy_backbone_reload(llama_rm, tmp_path):
    path = llama_rm.save_pretrained(tmp_path / "rm")
    loaded = RewardModel.from_pretrained(path)  # the backbone comes back from the saved spec
    np.testing.assert_allclose(loaded.score(PROMPTS, RESPONSES).score, llama_rm.score(PROMPTS, RESPONSES).score,
                               rtol=1e-6, atol=1e-6)
    out = export_sequence_classifier(loaded, [1.0, 0.0, 0.0], tmp_path / "hf")
    got, _ = plain_transformers_scores(out, PROMPTS[:2], RESPONSES[:2], batch_size=2)
    np.testing.assert_allclose(got, loaded.score(PROMPTS[:2], RESPONSES[:2], weights=[1.0, 0.0, 0.0]).score,
                               atol=1e-4)


def test_export_refused_for_sentence_encoders_and_gated_scores(llama_rm, tmp_path):
    st_model = random_model(spec={"kind": "sentence_encoder", "model": "minilm"})
    with pytest.raises(InputError, match="causal-LM backbone") as info:
        export_sequence_classifier(st_model, {"helpfulness": 1.0}, tmp_path / "st")
    assert info.value.field == "backbone"
    with pytest.raises(InputError, match="give weights"):
        export_sequence_classifier(llama_rm, None, tmp_path / "gated")
    assert not (tmp_path / "st").exists() and not (tmp_path / "gated").exists()


def test_tokenizer_without_pad_token_exports_with_eos_as_pad(tmp_path):
    from tests.tiny import save_tiny_model

    directory = save_tiny_model(tmp_path / "nopad", "llama")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)
    assert AutoTokenizer.from_pretrained(directory).pad_token_id is None
    backbone = CausalLMBackbone(str(directory))
    model = random_model(d=backbone.feature_dim, dp=backbone.prompt_feature_dim, spec=backbone.spec(),
                         backbone=backbone)
    weights = {"helpfulness": 1.0, "honesty": -0.5}
    out = export_sequence_classifier(model, weights, tmp_path / "hf")
    info = json.loads((out / "paretoalign_export.json").read_text())
    assert info["pad_token_from_eos"] is True and info["pad_token_id"] == tokenizer.eos_token_id
    assert "no pad token" in (out / "README.md").read_text()
    # ChatML texts end with "<|im_end|>\n": the last token is not the eos used as pad, so batches still match.
    got, _ = plain_transformers_scores(out, PROMPTS, RESPONSES, batch_size=4)
    assert np.abs(got - model.score(PROMPTS, RESPONSES, weights=weights).score).max() < 1e-4
