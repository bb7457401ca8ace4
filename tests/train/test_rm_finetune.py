"""Fine-tuned reward models (bt_finetune, GRM): losses by hand, learning, resume, the saved classifier, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from paretoalign.cli import main, train_rm_method
from paretoalign.config_loading import load_config
from paretoalign.data.schema import PreferencePair
from paretoalign.embed.chat_format import conversation_text
from paretoalign.errors import InputError
from paretoalign.output_paths import FINETUNED_RM, check_output_dir, training_run
from paretoalign.rewards.armo_config import ArmoRMConfig
from paretoalign.train.checkpoint import load_checkpoint, restore_trainable_
from paretoalign.train.policy_setup import load_policy_for_training
from paretoalign.train.rm_finetune_config import RMFinetuneConfig
from paretoalign.train.rm_finetune_trainer import (
    CLASSIFIER_DIR,
    CLASSIFIER_INFO_FILE,
    HEAD,
    attach_score_head,
    bt_loss,
    classifier_rewards,
    encode_conversations,
    forward_rows,
    read_classifier_info,
    score_head,
    train_reward_finetune,
)
from paretoalign.train.sequences import collate_rows
from tests.cli.conftest import write_jsonl
from tests.train.conftest import SMALL, assert_same_weights, fresh_policy, metric_rows

GOOD = ["Mix flour, water, salt and yeast, then bake.", "Paris is the capital of France.",
        "Here is a clear answer with steps.", "Knead the dough and let it rise."]
BAD = ["sorry", "no", "because", "I cannot help with that request."]
RM = {**SMALL, "max_length": 128, "val_fraction": 0.0}


def pairs_of(n: int = 6, objectives=("helpfulness",), margins: bool = False) -> list[PreferencePair]:
    """Toy pairs: a helpful chosen reply, an unhelpful rejected one; objectives (and margins) cycle."""
    return [PreferencePair(prompt=[{"role": "user", "content": f"question {i}: please explain why"}],
                           chosen=GOOD[i % 4], rejected=BAD[(i + 1) % 4], objective=objectives[i % len(objectives)],
                           margin=(0.5 * (i % 3)) if margins else None, source=f"toy:{i + 1}") for i in range(n)]


def train(run_dir, pairs, arch="llama", **fields):
    model, tok = fresh_policy(arch)
    config = RMFinetuneConfig(**{**RM, "output_dir": str(run_dir), "learning_rate": 1e-2, **fields})
    classifier, stats = train_reward_finetune(config, pairs, model=model, tokenizer=tok)
    return classifier, stats, tok


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ losses by hand
def hand_row(tok, pair: PreferencePair, response: str) -> tuple[list[int], int]:
    """Token ids of conversation_text and the number of prompt tokens, computed here without the trainer."""
    text, start = conversation_text(tok, pair.prompt, response)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), sum(1 for _, end in enc["offset_mapping"] if end <= start)


def hand_terms(model, head_weight, tok, pair, head):
    """(r_w, r_l, sum log pi(y_w|x), |y_w|, sum log pi(y_l|x)) of one pair, each row in its own unpadded pass."""
    out = []
    for response in (pair.chosen, pair.rejected):
        ids, n_prompt = hand_row(tok, pair, response)
        with torch.no_grad():
            result = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        reward = float(head_weight[head] @ result.hidden_states[-1][0, -1])
        logp = torch.log_softmax(result.logits[0, :-1].double(), dim=-1)
        picked = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        out.append((reward, float(picked[n_prompt - 1:].sum()), len(ids) - n_prompt))
    (rc, lc, nc), (rr, lr, _) = out
    return rc, rr, lc, nc, lr


def test_bt_loss_is_minus_log_sigmoid_of_the_reward_gap_less_the_margin():
    c, r, m = [1.0, 0.0, -2.0], [0.5, 0.0, 1.0], [0.0, 1.0, 2.0]
    expected = [math.log1p(math.exp(-(ci - ri - mi))) for ci, ri, mi in zip(c, r, m, strict=True)]
    assert bt_loss(torch.tensor(c), torch.tensor(r), torch.tensor(m)).tolist() == pytest.approx(expected, rel=1e-6)
    assert bt_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))


@pytest.mark.parametrize(("method", "regularizer"), [("bt_finetune", None), ("grm", "sft"), ("grm", "sft_nll"),
                                                     ("grm", "dpo"), ("grm", "dpo_noref")])
def test_the_first_step_loss_equals_a_hand_computation(tmp_path, method, regularizer):
    """Step 1 sees every pair (batch = all) with the initial weights (LoRA starts as the identity): its logged
    losses must equal -log sigmoid(r_w - r_l - m) etc. computed here, pair by pair, on each pair's own head."""
    pairs = pairs_of(6, objectives=("helpfulness", "honesty"), margins=True)
    extra = {"grm_regularizer": regularizer, "grm_alpha": 0.3} if regularizer else {}
    train(tmp_path / "run", pairs, method=method, batch_size=6, max_steps=1, per_objective_heads=True,
          use_margin=True, **extra)
    first = metric_rows(tmp_path / "run")[0]

    model, tok = fresh_policy()
    head = attach_score_head(model, 2, seed=0).weight.detach()
    heads = {"helpfulness": 0, "honesty": 1}
    bt, reg = [], []
    for p in pairs:
        rc, rr, lc, nc, lr = hand_terms(model, head, tok, p, heads[p.objective])
        bt.append(math.log1p(math.exp(-(rc - rr - p.margin))))
        reg.append({"sft": math.log1p(math.exp(-0.1 * lc)), "sft_nll": -lc / nc, "dpo": math.log(2),
                    "dpo_noref": math.log1p(math.exp(-0.1 * (lc - lr))), None: 0.0}[regularizer])
    assert first["bt_loss"] == pytest.approx(np.mean(bt), rel=1e-4)
    if regularizer is None:
        assert first["loss"] == pytest.approx(np.mean(bt), rel=1e-4) and "reg_loss" not in first
    else:
        assert first["reg_loss"] == pytest.approx(np.mean(reg), rel=1e-4)
        assert first["loss"] == pytest.approx(0.7 * np.mean(bt) + 0.3 * np.mean(reg), rel=1e-4)


def test_grm_with_alpha_zero_trains_exactly_like_bt(tmp_path):
    pairs = pairs_of(6)
    bt, _, _ = train(tmp_path / "bt", pairs, method="bt_finetune", max_steps=3)
    grm, _, _ = train(tmp_path / "grm", pairs, method="grm", grm_alpha=0.0, max_steps=3)
    assert_same_weights(state(bt), state(grm))
    bt_rows, grm_rows = metric_rows(tmp_path / "bt"), metric_rows(tmp_path / "grm")
    assert [r["loss"] for r in bt_rows] == [r["loss"] for r in grm_rows] == [r["bt_loss"] for r in grm_rows]
    assert all(r["reg_loss"] > 0 for r in grm_rows)  # computed (and logged) even at alpha = 0


def test_grm_with_alpha_above_zero_moves_the_lm_and_lowers_the_sft_loss(tmp_path):
    pairs = pairs_of(6)
    bt, _, _ = train(tmp_path / "bt", pairs, method="bt_finetune", max_steps=4, lora=False)
    grm, _, _ = train(tmp_path / "grm", pairs, method="grm", grm_alpha=0.5, grm_regularizer="sft_nll",
                      max_steps=4, lora=False)
    assert not torch.equal(state(bt)["model.layers.0.mlp.up_proj.weight"],
                           state(grm)["model.layers.0.mlp.up_proj.weight"])
    rows = metric_rows(tmp_path / "grm")
    assert rows[-1]["reg_loss"] < rows[0]["reg_loss"]


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("lora", [True, False])
def test_bt_finetune_learns_a_separable_toy_problem(tmp_path, lora):
    pairs = pairs_of(8)
    classifier, stats, tok = train(tmp_path / "run", pairs, method="bt_finetune", batch_size=8, epochs=12,
                                   lora=lora, learning_rate=2e-2 if lora else 3e-3)
    rows = metric_rows(tmp_path / "run")
    assert rows[0]["accuracy"] <= 0.75  # the random head does not already separate them
    rewards = classifier_rewards(classifier, tok, [p.prompt for p in pairs] * 2,
                                 [p.chosen for p in pairs] + [p.rejected for p in pairs], max_length=128)[:, 0]
    assert np.mean(rewards[:8] > rewards[8:]) == 1.0
    assert rows[-1]["bt_loss"] < 0.5 * rows[0]["bt_loss"]
    assert stats["steps"] == 12 and stats["complete"]


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize(("method", "lora"), [("bt_finetune", True), ("grm", True), ("bt_finetune", False)])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, method, lora):
    pairs = pairs_of(6)
    fields = {"method": method, "batch_size": 4, "epochs": 3, "lora": lora}
    full, _, _ = train(tmp_path / "full", pairs, max_steps=3, **fields)  # 2 steps per epoch: crosses an epoch
    train(tmp_path / "split", pairs, max_steps=1, **fields)
    assert load_checkpoint(tmp_path / "split").step == 1
    resumed, _, _ = train(tmp_path / "split", pairs, max_steps=3, **fields)
    assert_same_weights(state(full), state(resumed))
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "split")
    assert [r["step"] for r in metric_rows(tmp_path / "split")] == [1, 2, 3]
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert a.step == b.step == 3 and any(HEAD in name for name in a.trainable)
    assert_same_weights(a.optimizer_tensors, b.optimizer_tensors)


def test_a_deadline_stops_early_and_the_same_config_resumes_to_the_same_weights(tmp_path):
    pairs = pairs_of(6)
    fields = {"method": "bt_finetune", "batch_size": 2, "max_steps": 3}
    full, _, _ = train(tmp_path / "full", pairs, **fields)
    model, tok = fresh_policy()
    config = RMFinetuneConfig(**{**RM, "output_dir": str(tmp_path / "split"), "learning_rate": 1e-2, **fields})
    _, stats = train_reward_finetune(config, pairs, model=model, tokenizer=tok, deadline=0.0)
    assert stats["steps"] == 0 and stats["stopped_at_deadline"] and not stats["complete"]
    resumed, stats, _ = train(tmp_path / "split", pairs, **fields)
    assert stats["complete"] and stats["steps"] == 3
    assert_same_weights(state(full), state(resumed))


# ------------------------------------------------------------------ the saved classifier
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_saved_classifier_reloads_with_plain_transformers_and_scores_like_the_trainer(tmp_path, arch):
    pairs = pairs_of(12, objectives=("helpfulness", "honesty"))
    run = tmp_path / "run"
    _, stats, tok = train(run, pairs, arch=arch, method="grm", per_objective_heads=True, max_steps=3,
                          val_fraction=0.3)
    saved = run / CLASSIFIER_DIR
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    expected_arch = "LlamaForSequenceClassification" if arch == "llama" else "GPT2ForSequenceClassification"
    assert type(reloaded).__name__ == expected_arch and reloaded.config.architectures == [expected_arch]
    assert reloaded.config.num_labels == 2
    assert reloaded.config.id2label == {0: "helpfulness", 1: "honesty"}
    assert reloaded.config.pad_token_id == stats["pad_token_id"]
    weights = load_file(str(saved / "model.safetensors"))
    assert f"{HEAD}.weight" in weights and not any("lora" in k for k in weights)
    saved_tok = AutoTokenizer.from_pretrained(saved)
    assert saved_tok.chat_template == tok.chat_template and saved_tok.pad_token_id == stats["pad_token_id"]
    info = read_classifier_info(saved)
    assert info["objectives"] == ["helpfulness", "honesty"] and info["method"] == "grm"

    # the trainer's own model, rebuilt from the checkpoint: LoRA adapters + head, our forward and last-token rule
    model, fresh_tok = fresh_policy(arch)
    attach_score_head(model, 2, seed=0)
    config = RMFinetuneConfig(**{**RM, "output_dir": None})
    policy, _ = load_policy_for_training(config, model, fresh_tok, trainable_modules=(HEAD,))
    restore_trainable_(policy, load_checkpoint(run).trainable)
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    rows = [r for r, _ in encode_conversations(saved_tok, prompts, responses, 128)]
    with torch.no_grad():
        ours = forward_rows(policy, score_head(policy), collate_rows(rows, stats["pad_token_id"])).rewards.numpy()
    theirs = classifier_rewards(reloaded, saved_tok, prompts, responses, max_length=128, batch_size=5)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)

    # OpenRLHF's way: AutoModel base + a "score" value head, read at the last attended token
    base = AutoModel.from_pretrained(saved).eval()
    batch = collate_rows(rows, stats["pad_token_id"])
    with torch.no_grad():
        hidden = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    last = batch.attention_mask.sum(1) - 1
    openrlhf = (hidden[torch.arange(len(rows)), last] @ weights[f"{HEAD}.weight"].T).numpy()
    np.testing.assert_allclose(openrlhf, ours, rtol=1e-4, atol=1e-5)

    # the validation accuracy in the record is the reloaded classifier's on the held-out pairs
    record = json.loads((run / "training.json").read_text())
    val = record["stats"]["validation"]
    assert record["method"] == "grm" and 0 < val["pairs"] < len(pairs)
    assert val["pairs"] + record["stats"]["num_pairs"] == len(pairs)


def test_validation_accuracy_is_measured_on_held_out_prompts(tmp_path):
    pairs = pairs_of(30)
    classifier, stats, tok = train(tmp_path / "run", pairs, method="bt_finetune", max_steps=2, val_fraction=0.3)
    from paretoalign.train.rm_finetune_trainer import validation_split

    train_part, val_part = validation_split(pairs, 0.3, 0)
    assert stats["num_pairs"] == len(train_part) and stats["validation"]["pairs"] == len(val_part) > 0
    assert not {json.dumps(p.prompt) for p in train_part} & {json.dumps(p.prompt) for p in val_part}
    r = classifier_rewards(classifier, tok, [p.prompt for p in val_part] * 2,
                           [p.chosen for p in val_part] + [p.rejected for p in val_part], max_length=128)[:, 0]
    n = len(val_part)
    accuracy = np.mean(np.where(r[:n] > r[n:], 1.0, np.where(r[:n] < r[n:], 0.0, 0.5)))
    assert stats["validation"]["accuracy"] == pytest.approx(accuracy)


def test_output_kinds_recognise_the_classifier_and_the_run(tmp_path):
    train(tmp_path / "run", pairs_of(4), method="bt_finetune", max_steps=1)
    check_output_dir(tmp_path / "run" / CLASSIFIER_DIR, FINETUNED_RM)  # a previous classifier: may be replaced
    check_output_dir(tmp_path / "run", training_run("bt_finetune"))  # the same method: resumed
    with pytest.raises(InputError, match="holds no previous"):
        check_output_dir(tmp_path / "run", training_run("grm"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds no previous"):
        check_output_dir(other, FINETUNED_RM)
    assert read_classifier_info(other) is None
    assert (tmp_path / "run" / CLASSIFIER_DIR / CLASSIFIER_INFO_FILE).is_file()


def test_a_pad_token_that_ends_a_row_is_replaced_by_one_that_ends_none():
    from paretoalign.train.rm_finetune_trainer import choose_pad_id

    _, tok = fresh_policy()
    original = tok.pad_token_id
    pad = choose_pad_id(tok, [([5, 6, original], 1), ([5, 7, 8], 1)])
    assert pad not in {original, 8} and tok.pad_token_id == pad
    assert choose_pad_id(tok, [([5, 6, 7], 1)]) == pad  # kept while it ends no row


# ------------------------------------------------------------------ config and CLI
TINY = ["max_steps=2", "batch_size=2", "progress=false", "lora_r=4", "max_length=64"]
ROWS = [{"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast, then bake.", "rejected": "no"},
        {"prompt": [{"role": "user", "content": "Capital of France?"}], "chosen": "Paris.", "rejected": "Berlin."},
        {"prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "sorry"}]


def test_cli_train_rm_bt_finetune_end_to_end(tmp_path, tiny_llama_dir, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "run"
    rc = main(["train-rm", "--output-dir", str(out), "method=bt_finetune", f"data={data}", f"model={tiny_llama_dir}",
               "val_fraction=0", *TINY])
    assert rc == 0
    model = AutoModelForSequenceClassification.from_pretrained(out / CLASSIFIER_DIR)
    assert model.config.num_labels == 1 and model.config.id2label == {0: "reward"}
    assert [r["step"] for r in metric_rows(out)] == [1, 2]
    record = json.loads((out / "training.json").read_text())
    assert record["method"] == "bt_finetune" and record["config"]["data"] == str(data)
    assert "saved to" in capsys.readouterr().err


def test_cli_train_rm_reads_the_method_from_the_yaml_config(tmp_path, tiny_llama_dir):
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    (tmp_path / "grm.yaml").write_text(f"method: grm\ndata: {data}\nmodel: {tiny_llama_dir}\ngrm_alpha: 0.1\n")
    rc = main(["train-rm", "--config", str(tmp_path / "grm.yaml"), "--output-dir", str(tmp_path / "run"), *TINY])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "training.json").read_text())["config"]["grm_alpha"] == 0.1
    assert "reg_loss" in metric_rows(tmp_path / "run")[0]


def test_train_rm_method_dispatch(tmp_path):
    assert train_rm_method(None, []) == "armo"
    (tmp_path / "c.yaml").write_text("method: grm\n")
    assert train_rm_method(str(tmp_path / "c.yaml"), []) == "grm"
    assert train_rm_method(str(tmp_path / "c.yaml"), ["method=bt_finetune"]) == "bt_finetune"
    (tmp_path / "armo.yaml").write_text("method: armo\ngating_steps: 7\n")
    config = load_config(ArmoRMConfig, tmp_path / "armo.yaml", ["method=armo"], ignore=("method",))
    assert config.gating_steps == 7


@pytest.mark.parametrize(("settings", "named"), [
    (["method=ppo"], ["unknown method 'ppo'", "armo, bt_finetune, grm"]),
    (["method=grm", "grm_alpha=1.5"], ["grm_alpha", "[0, 1]"]),
    (["method=grm", "grm_regularizer=kl"], ["grm_regularizer", "sft, sft_nll, dpo, dpo_noref"]),
    (["method=bt_finetune", "per_objective_heads=false", "objectives=[a]"], ["objectives"]),
])
def test_bad_settings_exit_2_naming_the_field_and_write_nothing(tmp_path, tiny_llama_dir, settings, named, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    rc = main(["train-rm", "--output-dir", str(tmp_path / "run"), *settings, f"data={data}", f"model={tiny_llama_dir}",
               *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and all(n in err for n in named) and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_data_file_missing_rejected_names_file_line_and_field(tmp_path, tiny_llama_dir, capsys):
    rows = [ROWS[0], {"prompt": "hello there", "chosen": "Hello!"}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    rc = main(["train-rm", "--output-dir", str(tmp_path / "run"), "method=bt_finetune", f"data={data}",
               f"model={tiny_llama_dir}", *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{data}:2" in err and "rejected" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_train_rm_help_lists_both_configs(capsys):
    import dataclasses

    with pytest.raises(SystemExit):
        main(["train-rm", "--help"])
    out = capsys.readouterr().out
    assert "settings of ArmoRMConfig" in out and "settings of RMFinetuneConfig" in out
    for f in dataclasses.fields(RMFinetuneConfig):
        assert f"\n  {f.name}: " in out, f.name


def test_the_two_sides_of_the_split_partition_a_pairs_file_as_a_sources_config_splits_it(tmp_path):
    from paretoalign.train.rm_finetune_trainer import load_rm_pairs

    rows = [{"prompt": f"question {i}", "chosen": "a fine answer", "rejected": "no"} for i in range(40)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    train_side = load_rm_pairs(RMFinetuneConfig(data=str(data), split="train"))
    test_side = load_rm_pairs(RMFinetuneConfig(data=str(data), split="test"))
    assert train_side and test_side and len(train_side) + len(test_side) == 40
    assert not {p.prompt[0]["content"] for p in train_side} & {p.prompt[0]["content"] for p in test_side}
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - name: toy\n    path: pairs.jsonl\n    format: pairs\n    objective: honesty\n")
    from_sources = load_rm_pairs(RMFinetuneConfig(sources=str(tmp_path / "sources.yaml"), split="train"))
    assert [p.prompt for p in from_sources] == [p.prompt for p in train_side]
    assert {p.objective for p in from_sources} == {"honesty"}
    assert len(load_rm_pairs(RMFinetuneConfig(data=str(data), max_pairs=7))) == 7


def test_the_bundled_pairs_are_the_default_and_hold_no_test_side():
    from paretoalign.train.rm_finetune_trainer import load_rm_pairs

    assert len(load_rm_pairs(RMFinetuneConfig())) > 1000
    with pytest.raises(InputError, match="no preference pairs on the 'test' side"):
        load_rm_pairs(RMFinetuneConfig(split="test"))


def test_the_example_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "configs" / "grm.yaml"
    assert train_rm_method(str(path), []) == "grm"
    config = load_config(RMFinetuneConfig, path, ["max_steps=3"])
    assert config.method == "grm" and config.grm_alpha == 0.01 and config.max_steps == 3


def test_grm_dpo_regulariser_with_full_fine_tuning_starts_at_log_2_and_keeps_its_reference(tmp_path):
    """Full fine-tuning keeps a frozen copy of the initial LM as pi_ref: log pi/pi_ref = 0 at the first step."""
    pairs = pairs_of(4)
    train(tmp_path / "run", pairs, method="grm", grm_regularizer="dpo", grm_alpha=0.5, lora=False, batch_size=4,
          epochs=3)
    rows = metric_rows(tmp_path / "run")
    assert rows[0]["reg_loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert rows[-1]["reg_loss"] != pytest.approx(math.log(2), rel=1e-6)  # the policy moved away from its reference
