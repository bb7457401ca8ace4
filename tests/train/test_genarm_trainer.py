import dataclasses
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.data.schema import PreferencePair
from paretoalign.errors import InputError
from paretoalign.inference.guided_decoding import prompt_token_ids, reward_guided_generate
from paretoalign.inference.sampling_params import SamplingParams
from paretoalign.train.checkpoint import load_checkpoint
from paretoalign.train.genarm_config import GenARMConfig
from paretoalign.train.genarm_trainer import genarm_loss, response_logprob_sums, train_autoregressive_rm
from paretoalign.train.sequences import encode_pair, sequence_logprob_sums
from tests.tiny import make_tiny_llama, make_tokenizer
from tests.train.conftest import assert_same_weights, metric_rows, weights_of

PAIRS = [
    PreferencePair([{"role": "user", "content": "How do I bake bread?"}],
                   "Mix flour, water, salt and yeast, then bake.", "I cannot help with that request."),
    PreferencePair([{"role": "user", "content": "What is the capital of France?"}],
                   "Paris is the capital of France.", "Berlin is the capital of Germany."),
    PreferencePair([{"role": "user", "content": "please explain why"}],
                   "because the answer is clear", "no"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def _config(**overrides) -> GenARMConfig:
    settings = {"model": "unused", "batch_size": 3, "epochs": 1, "learning_rate": 5e-3, "beta_r": 0.1,
                "progress": False, "device": "cpu"}
    settings.update(overrides)
    return GenARMConfig(**settings)


def _pair_logps(model, tokenizer, pairs=PAIRS):
    with torch.no_grad():
        chosen = response_logprob_sums(model, tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs])
        rejected = response_logprob_sums(model, tokenizer, [p.prompt for p in pairs], [p.rejected for p in pairs])
    return chosen, rejected


def test_genarm_loss_matches_hand_computation():
    chosen = torch.tensor([-3.0, -5.0, -1.5])
    rejected = torch.tensor([-4.0, -2.0, -1.5])
    beta = 0.3
    expected = sum(math.log1p(math.exp(-beta * (c - r))) for c, r in [(-3, -4), (-5, -2), (-1.5, -1.5)]) / 3
    assert genarm_loss(chosen, rejected, beta).item() == pytest.approx(expected, rel=1e-6)


def _toy_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=gen)
    ids = torch.randint(0, 11, (2, 6), generator=gen)
    response = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    return logits, ids, response


def test_sequence_logprob_sums_ignore_logits_that_predict_prompt_tokens():
    logits, ids, response = _toy_logits()
    changed = logits.clone()
    changed[0, :2] += 5 * torch.randn(2, 11)  # positions 0-1 predict prompt tokens 1-2 of row 0
    changed[1, 0] += 5 * torch.randn(11)
    changed[1, 4:] += 5 * torch.randn(2, 11)  # position 4 predicts padding, position 5 predicts nothing
    assert torch.allclose(sequence_logprob_sums(logits, ids, response), sequence_logprob_sums(changed, ids, response))


def test_sequence_logprob_sums_equal_sum_over_response_tokens():
    logits, ids, response = _toy_logits()
    logp = logits.log_softmax(-1)
    row0 = sum(logp[0, t - 1, ids[0, t]] for t in (3, 4, 5))
    row1 = sum(logp[1, t - 1, ids[1, t]] for t in (2, 3, 4))
    assert torch.allclose(sequence_logprob_sums(logits, ids, response), torch.stack([row0, row1]))


def test_prompt_logits_get_no_gradient():
    logits, ids, response = _toy_logits()
    logits.requires_grad_(True)
    loss = genarm_loss(*sequence_logprob_sums(logits, ids, response), beta_r=0.1)
    loss.backward()
    assert logits.grad[0, :2].abs().max() == 0 and logits.grad[1, 0].abs().max() == 0
    assert logits.grad[0, 2:5].abs().max() > 0


def test_response_logprob_sums_match_unpadded_single_rows(tokenizer):
    model = make_tiny_llama(tokenizer, seed=0)
    prompts = [PAIRS[0].prompt, PAIRS[2].prompt]
    responses = ["Mix flour, water, salt and yeast, then bake.", "no"]
    batched = response_logprob_sums(model, tokenizer, prompts, responses).detach()
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        p = prompt_token_ids(tokenizer, prompt)
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([p + r])).logits[0].log_softmax(-1)
        expected = sum(logp[len(p) + k - 1, tok] for k, tok in enumerate(r))
        assert batched[i].item() == pytest.approx(expected.item(), abs=1e-4)


def test_encode_pair_cuts_prompt_from_the_left_first(tokenizer):
    prompt = [{"role": "user", "content": "How do I bake bread? " * 5}]
    full, n_prompt_full, _ = encode_pair(tokenizer, prompt, "yes", 10_000, tokenizer.eos_token_id)
    ids, n_prompt, cut = encode_pair(tokenizer, prompt, "yes", 12, tokenizer.eos_token_id)
    assert cut and len(ids) == 12
    assert ids == full[n_prompt_full - n_prompt:]


def test_training_raises_margin_and_accuracy(tokenizer):
    model = make_tiny_llama(tokenizer, seed=0)
    chosen0, rejected0 = _pair_logps(model, tokenizer)
    model, stats = train_autoregressive_rm(_config(epochs=15), PAIRS, model=model, tokenizer=tokenizer)
    chosen1, rejected1 = _pair_logps(model, tokenizer)
    assert (chosen1 - rejected1).mean() > (chosen0 - rejected0).mean() + 1.0
    assert (chosen1 > rejected1).float().mean() > (chosen0 > rejected0).float().mean()
    assert stats["steps"][-1]["loss"] < stats["steps"][0]["loss"]


def test_training_is_reproducible_with_a_seed(tokenizer):
    runs = []
    for _ in range(2):
        _, stats = train_autoregressive_rm(_config(batch_size=2, max_steps=3, seed=7),
                                           PAIRS, model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
        runs.append([s["loss"] for s in stats["steps"]])
    assert runs[0] == runs[1]


def test_max_steps_bounds_training(tokenizer):
    _, stats = train_autoregressive_rm(_config(batch_size=1, epochs=5, max_steps=4), PAIRS,
                                       model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    assert stats["num_steps"] == 4 and len(stats["steps"]) == 4


def test_gradient_accumulation_matches_one_big_batch(tokenizer):
    losses = []
    for micro in (None, 1):
        model, _ = train_autoregressive_rm(_config(max_steps=1, micro_batch_size=micro), PAIRS,
                                           model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
        chosen, rejected = _pair_logps(model, tokenizer)
        losses.append(genarm_loss(chosen, rejected, 0.1).item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_saved_model_reloads_with_the_same_logprobs(tokenizer, tmp_path):
    out = tmp_path / "arm"
    model, _ = train_autoregressive_rm(_config(max_steps=1, output_dir=str(out)), PAIRS,
                                       model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    assert (out / "model.safetensors").is_file() and (out / "genarm_training.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert torch.allclose(_pair_logps(reloaded, tokenizer)[0], _pair_logps(model, tokenizer)[0], atol=1e-5)


def test_lora_training_returns_a_merged_plain_model(tokenizer):
    pytest.importorskip("peft")
    model = make_tiny_llama(tokenizer, seed=0)
    before = model.lm_head.weight.detach().clone()
    trained, _ = train_autoregressive_rm(_config(max_steps=2, lora=True, lora_target_modules=["q_proj", "v_proj"]),
                                         PAIRS, model=model, tokenizer=tokenizer)
    assert type(trained).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in trained.named_parameters())
    assert torch.equal(trained.lm_head.weight, before)  # only the adapted projections change


def test_lora_without_peft_raises_input_error(tokenizer, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(InputError) as info:
        train_autoregressive_rm(_config(max_steps=1, lora=True), PAIRS, model=make_tiny_llama(tokenizer),
                                tokenizer=tokenizer)
    assert info.value.field == "lora"


@pytest.mark.parametrize("beta_r", [0.0, -0.1, float("nan")])
def test_config_rejects_non_positive_beta_r(beta_r):
    with pytest.raises(InputError) as info:
        GenARMConfig(beta_r=beta_r)
    assert info.value.field == "beta_r"


def test_config_defaults_to_the_papers_lora_learning_rate():
    assert GenARMConfig(lora=True).effective_learning_rate == 5e-4
    assert GenARMConfig(lora=False).effective_learning_rate < 5e-4


def test_training_without_pairs_raises_input_error(tokenizer):
    with pytest.raises(InputError):
        train_autoregressive_rm(_config(), [], model=make_tiny_llama(tokenizer), tokenizer=tokenizer)


# ------------------------------------------------------------------ the shared loop: resume, metrics, records
def _run(tokenizer, run_dir, **overrides):
    config = _config(batch_size=2, output_dir=str(run_dir), **overrides)
    model, stats = train_autoregressive_rm(config, PAIRS, model=make_tiny_llama(tokenizer, seed=0),
                                           tokenizer=tokenizer)
    return weights_of(model), stats


@pytest.mark.parametrize("lora", [False, True])
def test_resumed_run_equals_an_uninterrupted_one(tokenizer, tmp_path, lora):
    if lora:
        pytest.importorskip("peft")
    extra = {"lora": True, "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]} if lora else {}
    full, _ = _run(tokenizer, tmp_path / "full", max_steps=3, epochs=2, **extra)  # 2 steps per epoch: crosses it
    short, _ = _run(tokenizer, tmp_path / "split", max_steps=1, epochs=2, **extra)
    assert load_checkpoint(tmp_path / "split").step == 1
    resumed, stats = _run(tokenizer, tmp_path / "split", max_steps=3, epochs=2, **extra)
    assert_same_weights(full, resumed)
    assert any(not torch.equal(short[k], full[k]) for k in full)
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "split")
    assert [s["step"] for s in stats["steps"]] == [1, 2, 3] and stats["num_steps"] == 3
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert a.step == b.step == 3
    assert_same_weights(a.optimizer_tensors, b.optimizer_tensors)


def test_metrics_jsonl_has_one_row_per_step(tokenizer, tmp_path):
    _, stats = _run(tokenizer, tmp_path / "run", max_steps=3, epochs=2)
    rows = metric_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["epoch"] for r in rows] == [0, 0, 1]
    for row in rows:
        assert {"loss", "accuracy", "margin", "chosen_logp", "rejected_logp", "grad_norm"} <= set(row)
        # -log sigmoid is convex, so the mean loss is at least the loss of the mean margin (Jensen)
        assert row["loss"] >= math.log1p(math.exp(-row["margin"])) - 1e-6
    assert [{k: v for k, v in s.items() if k != "elapsed_s"} for s in stats["steps"]] == rows


def test_training_record_holds_the_config_and_resume_checks_it(tokenizer, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(batch_size=2, max_steps=1, output_dir=str(run_dir))
    train_autoregressive_rm(config, PAIRS, model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    expected = json.loads(json.dumps(dataclasses.asdict(config)))
    for name in ("genarm_training.json", "training.json"):
        record = json.loads((run_dir / name).read_text())
        assert record["method"] == "genarm" and record["config"] == expected
        assert record["stats"]["steps"] == 1 and record["stats"]["learning_rate"] == 5e-3
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["config"]["beta_r"] == 0.1
    with pytest.raises(InputError) as err:
        train_autoregressive_rm(dataclasses.replace(config, max_steps=2, beta_r=0.2), PAIRS,
                                model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    assert err.value.field == "beta_r" and "resume=false" in str(err.value)


def test_saved_lora_run_loads_as_a_plain_lm_that_guides_decoding(tokenizer, tmp_path):
    pytest.importorskip("peft")
    from paretoalign.embed.models import load_causal_lm

    out = tmp_path / "arm"
    trained, _ = train_autoregressive_rm(_config(max_steps=2, lora=True, lora_target_modules=["q_proj", "v_proj"],
                                                 output_dir=str(out)), PAIRS,
                                         model=make_tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    assert (out / "metrics.jsonl").is_file() and (out / "checkpoint" / "state.json").is_file()
    assert not list(out.glob(".*"))  # no staging folder left behind
    reward_lm, _ = load_causal_lm(str(out))
    assert not any("lora" in name for name in reward_lm.state_dict())
    assert torch.allclose(_pair_logps(reward_lm, tokenizer)[0], _pair_logps(trained, tokenizer)[0], atol=1e-5)
    base = make_tiny_llama(tokenizer, seed=1)
    results = reward_guided_generate(base, tokenizer, [(reward_lm, 0.5)], [PAIRS[0].prompt], n=2, beta=0.5,
                                     params=SamplingParams(max_new_tokens=4, seed=3))
    assert len(results) == 1 and len(results[0]) == 2
    assert all(1 <= len(c.token_ids) <= 4 for c in results[0])


def test_an_output_of_the_previous_trainer_is_replaced_and_a_user_folder_refused(tokenizer, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "genarm_training.json").write_text("{}")
    (old / "model.safetensors").write_text("stale")
    _run(tokenizer, old, max_steps=1)
    assert json.loads((old / "genarm_training.json").read_text())["method"] == "genarm"
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.txt").write_text("keep")
    with pytest.raises(InputError, match="--overwrite"):
        _run(tokenizer, user, max_steps=1)
    assert (user / "thesis.txt").read_text() == "keep" and sorted(p.name for p in user.iterdir()) == ["thesis.txt"]


def test_config_extends_the_shared_training_config():
    from paretoalign.train.training_config import PolicyTrainingConfig

    config = GenARMConfig()
    assert isinstance(config, PolicyTrainingConfig)
    assert (config.batch_size, config.lora, config.lora_r, config.lora_alpha, config.beta_r) == (32, False, 8, 16.0,
                                                                                                  0.05)
    with pytest.raises(InputError) as err:
        GenARMConfig(reference="smollm2")
    assert err.value.field == "reference"
