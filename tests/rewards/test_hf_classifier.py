"""Plain Hugging Face sequence classifiers as reward models: scoring, weights, loading, and every command."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

from paretoalign.cli import main
from paretoalign.embed.backbone import TruncationWarning
from paretoalign.errors import InputError
from paretoalign.rewards import shipped
from paretoalign.rewards.export_hf import export_sequence_classifier
from paretoalign.rewards.hf_classifier import SequenceClassifierRM
from paretoalign.rewards.loading import PARETOALIGN, SEQUENCE_CLASSIFIER, inspect_reward_model, load_reward_model
from paretoalign.rewards.reward_model import RewardModel
from tests.cli.conftest import write_jsonl
from tests.rewards.model_factory import random_llama_rm
from tests.tiny import make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = {0: "helpful", 1: "safe", 2: "brief"}
PROMPTS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris is the capital of?"}],
    "hello there",
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello, question?"},
     {"role": "user", "content": "explain why the fox jumps"}],
    "thanks",
]
RESPONSES = [
    "Mix flour, water, salt and yeast, knead, let it rise, then bake.",
    "France.",
    "Hello! How can I help?",
    "Because the quick brown fox jumps over the lazy dog, please.",
    "",
]
STOPS = ["--stop", "e", "--stop", "a", "--stop", "o"]


def llama_classifier(num_labels, id2label=None, seed=0, tokenizer=None, **extra):
    tokenizer = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    labels = {} if id2label is None else {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=num_labels, **labels, **extra)
    model = LlamaForSequenceClassification(config).eval()
    with torch.no_grad():  # a visible head: random logits of order 1
        model.score.weight.normal_(0.0, 1.0)
    return model, tokenizer


def save(model, tokenizer, directory):
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def clf3_dir(tmp_path_factory):
    return save(*llama_classifier(3, LABELS), tmp_path_factory.mktemp("clf3") / "rm")


@pytest.fixture(scope="module")
def clf1_dir(tmp_path_factory):
    return save(*llama_classifier(1, seed=1), tmp_path_factory.mktemp("clf1") / "rm")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = None  # the plain "prompt\n\nresponse" path
    torch.manual_seed(2)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, num_labels=1)
    model = GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    return save(model, tokenizer, tmp_path_factory.mktemp("gpt2") / "rm")


@pytest.fixture(scope="module")
def clf3(clf3_dir):
    return load_reward_model(clf3_dir)


def as_messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def manual_logits(directory, prompt, response, chat=True):
    """One unpadded forward pass of the base model, the head applied to the LAST token's hidden state."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    messages = as_messages(prompt)
    if chat:
        text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer("\n\n".join([m["content"] for m in messages] + [response]))["input_ids"]
    with torch.no_grad():
        hidden = model.base_model(input_ids=torch.tensor([ids])).last_hidden_state
        return model.score(hidden[0, -1]).double().numpy()


# ---------------------------------------------------------------- scoring


def test_scores_are_the_head_at_the_last_real_token(clf3, clf3_dir):
    out = clf3.score(PROMPTS, RESPONSES, batch_size=3)
    assert out.objective_names == ["helpful", "safe", "brief"] and out.objectives.shape == (5, 3)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        np.testing.assert_allclose(out.objectives[i], manual_logits(clf3_dir, p, r), atol=1e-5)
    assert np.ptp(out.objectives[:, 0]) > 1e-2  # the rows really differ
    # no weights: the plain mean of the three logits
    np.testing.assert_allclose(out.score, out.objectives.mean(axis=1), rtol=1e-12)
    assert out.baseline is None and out.verbosity_contribution is None
    assert all(row["verbosity_contribution"] is None for row in out.rows())


def test_gpt2_without_chat_template_joins_prompt_and_response(gpt2_dir):
    rm = load_reward_model(gpt2_dir)
    assert isinstance(rm, SequenceClassifierRM) and rm.objective_names == ["LABEL_0"]
    out = rm.score(PROMPTS, RESPONSES, batch_size=2)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        np.testing.assert_allclose(out.objectives[i], manual_logits(gpt2_dir, p, r, chat=False), atol=1e-5)
    np.testing.assert_array_equal(out.score, out.objectives[:, 0])  # num_labels=1: the logit itself


def test_scalar_head_score_is_its_logit(clf1_dir):
    out = load_reward_model(clf1_dir).score(PROMPTS, RESPONSES)
    np.testing.assert_array_equal(out.score, out.objectives[:, 0])
    np.testing.assert_allclose(out.score[0], manual_logits(clf1_dir, PROMPTS[0], RESPONSES[0])[0], atol=1e-5)


def test_scores_do_not_depend_on_batch_size_order_or_padding(clf3):
    full = clf3.score(PROMPTS, RESPONSES, batch_size=5)
    for size in (1, 2, 4):
        np.testing.assert_allclose(clf3.score(PROMPTS, RESPONSES, batch_size=size).objectives, full.objectives,
                                   rtol=0, atol=1e-5)
    order = [4, 2, 0, 3, 1]
    shuffled = clf3.score([PROMPTS[i] for i in order], [RESPONSES[i] for i in order], batch_size=2)
    np.testing.assert_allclose(shuffled.objectives, full.objectives[order], rtol=0, atol=1e-5)
    # a short row padded far to the right beside a long one scores as it does alone
    long_response = "the quick brown fox jumps over the lazy dog " * 8
    alone = clf3.score(["thanks"], ["ok"]).objectives
    padded = clf3.score(["thanks", "How do I bake bread?"], ["ok", long_response], batch_size=2).objectives
    np.testing.assert_allclose(padded[0], alone[0], rtol=0, atol=1e-5)


def test_last_token_comes_from_the_attention_mask_not_the_pad_id(tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # pad == eos == "<|im_end|>", the text's last token
    tokenizer.chat_template = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
                               "{{ message['content'] }}<|im_end|>{% endfor %}")
    model, tokenizer = llama_classifier(1, tokenizer=tokenizer, seed=3)
    directory = save(model, tokenizer, tmp_path / "rm")
    rm = load_reward_model(directory)
    out = rm.score(PROMPTS[:3], RESPONSES[:3], batch_size=3)
    for i in range(3):
        np.testing.assert_allclose(out.objectives[i], manual_logits(directory, PROMPTS[i], RESPONSES[i]), atol=1e-5)
    # transformers' own pooling (rightmost token that is not the pad id) reads an earlier token here
    text = tokenizer.apply_chat_template(PROMPTS[0] + [{"role": "assistant", "content": RESPONSES[0]}],
                                         tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        theirs = model(input_ids=ids).logits[0, 0].item()
    assert abs(theirs - out.score[0]) > 1e-4


def test_long_rows_lose_the_start_of_the_prompt(tmp_path):
    model, tokenizer = llama_classifier(1, seed=4)
    rm = SequenceClassifierRM(model, tokenizer, max_length=24)
    long_prompt = "bread " * 60
    with pytest.warns(TruncationWarning, match="truncated 1/2 rows from the left"):
        out = rm.score([long_prompt, "hi"], ["ok", "ok"], batch_size=2)
    text = tokenizer.apply_chat_template([{"role": "user", "content": long_prompt},
                                          {"role": "assistant", "content": "ok"}], tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][-24:]
    with torch.no_grad():
        hidden = model.base_model(input_ids=torch.tensor([ids])).last_hidden_state
        expected = model.score(hidden[0, -1]).item()
    assert out.score[0] == pytest.approx(expected, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to cut: no warning
        rm.score(["hi"], ["ok"])


# ---------------------------------------------------------------- weights


def test_weights_reweight_the_logits(clf3):
    logits = clf3.score(PROMPTS, RESPONSES).objectives
    out = clf3.score(PROMPTS, RESPONSES, weights={"helpful": 1.0, "brief": -0.5})
    np.testing.assert_allclose(out.score, logits[:, 0] - 0.5 * logits[:, 2], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out.gating, np.tile([1.0, 0.0, -0.5], (5, 1)))
    vec = clf3.score(PROMPTS, RESPONSES, weights=[0.2, 0.3, 0.5])
    np.testing.assert_allclose(vec.score, logits @ np.array([0.2, 0.3, 0.5]), rtol=1e-12, atol=1e-12)


def test_config_default_weights_replace_the_mean(tmp_path):
    model, tokenizer = llama_classifier(3, LABELS, seed=5, paretoalign_weights={"helpful": 2.0, "safe": 1.0})
    rm = load_reward_model(save(model, tokenizer, tmp_path / "rm"))
    out = rm.score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(out.score, 2.0 * out.objectives[:, 0] + out.objectives[:, 1], rtol=1e-12)


def test_a_weight_for_a_missing_label_names_label_model_and_field(clf3, clf3_dir):
    with pytest.raises(InputError) as info:
        clf3.score(PROMPTS, RESPONSES, weights={"helpful": 1.0, "honesty": 1.0})
    message = str(info.value)
    assert "'honesty'" in message and str(clf3_dir) in message and "helpful, safe, brief" in message
    assert info.value.field == "weights" and info.value.path == str(clf3_dir)


def test_weights_that_disagree_with_num_labels(clf3, clf1_dir):
    with pytest.raises(InputError, match=r"num_labels=3 .*shape \(2,\)") as info:
        clf3.resolve_weights([1.0, 2.0])
    assert info.value.field == "weights"
    # placeholder labels LABEL_0..: a named weight cannot match, and the message says why
    with pytest.raises(InputError, match="placeholder") as info:
        load_reward_model(clf1_dir).resolve_weights({"helpfulness": 1.0})
    assert "'helpfulness'" in str(info.value) and str(clf1_dir) in str(info.value)
    with pytest.raises(InputError, match="all weights are zero"):
        clf3.resolve_weights({"safe": 0.0})


def test_bad_config_default_weights_name_the_config_file(tmp_path):
    model, tokenizer = llama_classifier(3, LABELS, paretoalign_weights={"kind": 1.0})
    directory = save(model, tokenizer, tmp_path / "rm")
    with pytest.raises(InputError, match="'kind'") as info:
        load_reward_model(directory)
    assert info.value.field == "paretoalign_weights" and info.value.path == str(directory / "config.json")


# ---------------------------------------------------------------- loading


def test_loader_dispatches_on_the_folder(clf3_dir, tiny_llama_dir, tmp_path):
    assert inspect_reward_model(clf3_dir).kind == SEQUENCE_CLASSIFIER
    ours = random_rm(tiny_llama_dir).save_pretrained(tmp_path / "ours")
    assert inspect_reward_model(ours).kind == PARETOALIGN
    assert isinstance(load_reward_model(ours), RewardModel)
    with pytest.raises(InputError, match="neither a paretoalign reward model nor") as info:
        load_reward_model(tiny_llama_dir)  # a causal LM
    assert "LlamaForCausalLM" in str(info.value) and info.value.field == "reward_model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no reward model here"):
        load_reward_model(tmp_path / "empty")
    with pytest.raises(InputError, match="no such reward model folder"):
        load_reward_model(tmp_path / "missing")


def test_hub_id_that_cannot_be_reached_fails_clearly(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="no such reward model folder, and no hub repository") as info:
        inspect_reward_model("nobody-here/no-such-rm", field="--rm")
    assert info.value.field == "--rm" and info.value.path == "nobody-here/no-such-rm"


def test_default_alias_is_the_shipped_folder(monkeypatch, clf3_dir, tmp_path, capsys):
    monkeypatch.setattr(shipped, "default_rm_dir", lambda: tmp_path / "not-shipped")
    with pytest.raises(InputError, match="shipped default reward model is missing") as info:
        load_reward_model("default")
    assert str(tmp_path / "not-shipped") in str(info.value)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}])
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", "default", "--input", str(inputs), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "shipped default reward model is missing" in err and "--model" in err and not out.exists()
    monkeypatch.setattr(shipped, "default_rm_dir", lambda: clf3_dir)
    assert load_reward_model("default").objective_names == ["helpful", "safe", "brief"]


def test_a_classifier_with_auto_map_needs_trust_remote_code(clf3_dir, tmp_path, capsys):
    evil = tmp_path / "evil"
    shutil.copytree(clf3_dir, evil)
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "evil.py").write_text("open('PWNED', 'w').write('x')\n")
    with pytest.raises(InputError, match="auto_map"):
        load_reward_model(evil)
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "hi", "response": "hello"}])
    out = tmp_path / "out.jsonl"
    rc = main(["score", "--model", str(evil), "--input", str(rows), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "auto_map" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "PWNED").exists()


def test_export_of_our_model_scores_the_same_as_a_classifier(tiny_llama_dir, tmp_path):
    ours = random_rm(tiny_llama_dir)
    weights = {"helpfulness": 1.0, "verbosity": -0.4}
    exported = export_sequence_classifier(ours, weights, tmp_path / "hf")
    as_classifier = load_reward_model(exported)
    assert isinstance(as_classifier, SequenceClassifierRM) and as_classifier.objective_names == ["reward"]
    got = as_classifier.score(PROMPTS, RESPONSES, batch_size=3).score
    expected = ours.score(PROMPTS, RESPONSES, weights=weights).score
    assert np.abs(got - expected).max() < 1e-4 and np.ptp(expected) > 1e-2


# ---------------------------------------------------------------- commands


random_rm = random_llama_rm  # the tiny-Llama RewardModel of test_export_hf


def test_score_command_accepts_a_classifier(clf3, clf3_dir, tmp_path):
    rows = [{"id": "a", "prompt": "How do I bake bread?", "response": RESPONSES[0]},
            {"id": "b", "prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "no"}]
    out = tmp_path / "scored.jsonl"
    rc = main(["score", "--model", str(clf3_dir), "--input", str(write_jsonl(tmp_path / "in.jsonl", rows)),
               "--output", str(out), "--weights", "helpful=1,brief=-0.5", "--quiet"])
    assert rc == 0
    single, pair = map(json.loads, out.read_text().splitlines())
    expected = clf3.score(["How do I bake bread?", "hello there", "hello there"],
                          [RESPONSES[0], "Hello! How can I help?", "no"], weights={"helpful": 1.0, "brief": -0.5})
    assert single["score"] == pytest.approx(expected.score[0], abs=1e-5)
    assert list(single["objectives"]) == ["helpful", "safe", "brief"]
    assert single["gating"] == {"helpful": 1.0, "safe": 0.0, "brief": -0.5}
    assert single["verbosity_contribution"] is None
    assert pair["chosen_score"] == pytest.approx(expected.score[1], abs=1e-5)
    assert pair["rejected_score"] == pytest.approx(expected.score[2], abs=1e-5)
    assert pair["chosen_verbosity_contribution"] is None and pair["rejected_verbosity_contribution"] is None


def test_score_command_reports_the_verbosity_contribution(tiny_llama_dir, tmp_path):
    rm_dir = random_rm(tiny_llama_dir).save_pretrained(tmp_path / "rm")
    rows = [{"prompt": "How do I bake bread?", "response": RESPONSES[0]},
            {"prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "no"}]
    inputs = write_jsonl(tmp_path / "in.jsonl", rows)
    for extra in ([], ["--weights", "helpfulness=1,verbosity=-0.4"]):
        out = tmp_path / "scored.jsonl"
        assert main(["score", "--model", str(rm_dir), "--input", str(inputs), "--output", str(out), "--quiet",
                     *extra]) == 0
        single, pair = map(json.loads, out.read_text().splitlines())
        w = single["gating"]["verbosity"]  # g_v(x) with the gating, w_v with weights
        scale = 1.0 if extra else RewardModel.from_pretrained(rm_dir).scale
        assert single["verbosity_contribution"] == pytest.approx(scale * w * single["objectives"]["verbosity"])
        assert pair["chosen_verbosity_contribution"] == pytest.approx(
            scale * pair["gating"]["verbosity"] * pair["chosen_objectives"]["verbosity"])
        assert pair["rejected_verbosity_contribution"] == pytest.approx(
            scale * pair["gating"]["verbosity"] * pair["rejected_objectives"]["verbosity"])
        if extra:
            assert w == -0.4


def test_score_command_refuses_a_missing_label(clf3_dir, clf1_dir, tmp_path, capsys):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}])
    out = tmp_path / "scored.jsonl"
    rc = main(["score", "--model", str(clf3_dir), "--input", str(inputs), "--output", str(out),
               "--weights", "helpful=1,honesty=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "'honesty'" in err and str(clf3_dir) in err and "--weights" in err
    assert "Traceback" not in err and not out.exists()
    rc = main(["score", "--model", str(clf1_dir), "--input", str(inputs), "--output", str(out),
               "--weights", "helpfulness=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "placeholder" in err and str(clf1_dir) in err and not out.exists()


def test_commands_refuse_a_folder_of_neither_kind_before_loading(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    from paretoalign.rewards import hf_classifier, reward_model

    for owner, name in ((hf_classifier.SequenceClassifierRM, "from_pretrained"),
                        (reward_model.RewardModel, "from_pretrained")):
        monkeypatch.setattr(owner, name, lambda *a, **k: pytest.fail("a model loaded"))
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "response": "hello"}])
    out = tmp_path / "scored.jsonl"
    rc = main(["score", "--model", str(tiny_llama_dir), "--input", str(inputs), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "neither a paretoalign reward model nor" in err and "--model" in err and not out.exists()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hi"}])
    rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(tiny_llama_dir), "--prompts", str(prompts),
               "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "neither" in err and "--rm" in err and not out.exists()


def test_export_hf_refuses_a_classifier(clf3_dir, tmp_path, capsys):
    rc = main(["export-hf", "--model", str(clf3_dir), "--weights", "helpful=1", "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "export-hf exports a paretoalign reward model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_eval_rm_command_accepts_a_classifier(clf3, clf3_dir, tmp_path):
    pairs = [{"prompt": f"question {i} about bread", "chosen": RESPONSES[i % 4], "rejected": "no",
              "subset": "a" if i % 2 else "b"} for i in range(8)]
    out = tmp_path / "report.json"
    rc = main(["eval-rm", "--model", str(clf3_dir), "--data", str(write_jsonl(tmp_path / "pairs.jsonl", pairs)),
               "--bootstrap", "20", "--output", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"final", "length", "objective:helpful", "objective:safe", "objective:brief"} <= set(
        report["metric_names"]) and "bt_baseline" not in report["metric_names"]
    c = clf3.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]).score
    r = clf3.score([p["prompt"] for p in pairs], [p["rejected"] for p in pairs]).score
    mean = next(g for g in report["groups"] if g["name"] == "pairs")
    expected = np.mean((c > r) + 0.5 * (c == r))
    assert mean["metrics"]["final"]["accuracy"] == pytest.approx(expected)


def test_bon_and_calibrate_accept_a_classifier(clf3, clf3_dir, tiny_llama_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p1", "prompt": "How do I bake bread?"},
                                                       {"id": "p2", "prompt": "Capital of France?"}])
    out = tmp_path / "bon.jsonl"
    rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(clf3_dir), "--prompts", str(prompts),
               "--output", str(out), "--n", "3", "--max-new-tokens", "8", "--weights", "safe=1,brief=0.5",
               "--quiet", *STOPS])
    assert rc == 0
    for row, prompt in zip(map(json.loads, out.read_text().splitlines()),
                           ["How do I bake bread?", "Capital of France?"], strict=True):
        texts = [c["response"] for c in row["candidates"]]
        expected = clf3.score([prompt] * 3, texts, weights={"safe": 1.0, "brief": 0.5}).score
        np.testing.assert_allclose([c["score"] for c in row["candidates"]], expected, atol=1e-5)
        assert set(row["candidates"][0]["objectives"]) == {"helpful", "safe", "brief"}
    table = tmp_path / "calibration.jsonl"
    rc = main(["calibrate", "--policy", str(tiny_llama_dir), "--rm", str(clf3_dir), "--prompts", str(prompts),
               "--m", "3", "--output", str(table), "--max-new-tokens", "4", "--quiet"])
    assert rc == 0 and table.is_file()


def test_online_trainer_accepts_a_classifier(clf1_dir, tiny_llama_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I bake bread?"}, {"prompt": "hello"}])
    run = tmp_path / "run"
    rc = main(["bond", "--output-dir", str(run), f"model={tiny_llama_dir}", f"reward_model={clf1_dir}",
               f"prompts={prompts}", "max_steps=1", "progress=false", "lora=false", "max_new_tokens=4",
               "batch_size=2", "max_length=64"])
    assert rc == 0 and (run / "policy" / "config.json").is_file()


def test_modpo_margins_from_a_classifier(clf3):
    from paretoalign.data.schema import PreferencePair
    from paretoalign.train.modpo_trainer import reward_model_margins

    pairs = [PreferencePair(prompt=[{"role": "user", "content": "hi"}], chosen="hello", rejected="no")]
    chosen, rejected = reward_model_margins(clf3, pairs, ["safe"])
    assert chosen[0, 0] == pytest.approx(clf3.score(["hi"], ["hello"]).objectives[0, 1])
    assert rejected.shape == (1, 1)


@pytest.mark.parametrize("labels", [3, 1])
def test_front_accepts_a_classifier(clf3_dir, clf1_dir, tiny_llama_dir, tmp_path, labels):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I bake bread?"}, {"prompt": "hello"}])
    report = tmp_path / "report"
    rc = main(["front", "--runs", str(tiny_llama_dir), "--reference", str(tiny_llama_dir), "--reward-model",
               str(clf3_dir if labels == 3 else clf1_dir), "--prompts", str(prompts), "--output", str(report),
               "--samples-per-prompt", "2", "--max-new-tokens", "4", "--bon", "2"])
    assert rc == 0
    table = json.loads((report / "front.json").read_text())
    names = ["helpful", "safe", "brief"] if labels == 3 else ["LABEL_0"]
    assert all(list(p["objectives"]) == names for p in table["points"])
