import json

import pytest
import torch
from safetensors.torch import load_file

import paretoalign.train.warp_trainer as warp_trainer
from paretoalign.train.policy_files import load_policy_state
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.warp_trainer import train_warp
from paretoalign.train.weight_ops import liti, slerp
from tests.train.conftest import ONLINE, PROMPTS, fresh_policy, metric_rows, tiny_reward_model, weights_of

WARP = {**ONLINE, "samples_per_prompt": 2, "eta_grid": [0.25, 1.0]}


def run_warp(tmp_path, name="run", **fields):
    model, tok = fresh_policy()
    initial = weights_of(model)
    config = WARPConfig(**{**WARP, "output_dir": str(tmp_path / name), **fields})
    final, stats = train_warp(config, PROMPTS[:2], model=model, tokenizer=tok, reward_model=tiny_reward_model())
    return final, stats, tmp_path / name, initial


def saved(path):
    """The tensors of a saved policy (read directly: the tiny policies' EOS-biased head is not standard Llama)."""
    return load_policy_state(path)[0]


def assert_close_states(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def one_iteration(tmp_path_factory):
    """A 1-iteration WARP run, M = 2, 2 steps each, LITI eta 0.5."""
    return run_warp(tmp_path_factory.mktemp("warp"), max_steps=2, learning_rate=1e-2, liti_eta=0.5)


def test_warp_runs_differ_and_are_merged_by_slerp(one_iteration):
    _, stats, run_dir, initial = one_iteration
    runs = [saved(run_dir / "iter0" / f"run{m}" / "policy") for m in (0, 1)]
    assert not torch.equal(runs[0]["model.layers.0.self_attn.q_proj.weight"],
                           runs[1]["model.layers.0.self_attn.q_proj.weight"])
    assert_close_states(saved(run_dir / "iter0" / "slerp"), slerp(initial, runs, 0.5))
    assert 0 < stats["iterations"][0]["angle_summary"]["mean_angle_deg"] < 180
    for m in (0, 1):
        assert [r["step"] for r in metric_rows(run_dir / "iter0" / f"run{m}")] == [1, 2]


def test_warp_saves_liti_of_the_slerp_for_the_final_policy_and_the_eta_grid(one_iteration):
    final, _, run_dir, initial = one_iteration
    merged = saved(run_dir / "iter0" / "slerp")
    assert_close_states(weights_of(final), liti(initial, merged, 0.5))
    assert_close_states(saved(run_dir / "policy"), weights_of(final))
    assert_close_states(saved(run_dir / "eta-0.25"), liti(initial, merged, 0.25))
    assert_close_states(saved(run_dir / "eta-1"), merged)
    record = json.loads((run_dir / "training.json").read_text())
    assert record["method"] == "warp" and record["config"]["liti_eta"] == 0.5


def test_warp_ema_anchor_follows_the_policy(tmp_path):
    mu = 0.3
    _, _, run_dir, initial = run_warp(tmp_path, max_steps=1, ema_rate=mu, learning_rate=1e-2)
    policy = saved(run_dir / "iter0" / "run0" / "policy")
    anchor = load_file(str(run_dir / "iter0" / "run0" / "checkpoint" / "anchor.safetensors"))
    assert len(anchor) == 4  # q/v projections of the 2 layers LoRA adapts
    for name, value in anchor.items():
        assert not torch.equal(policy[name], initial[name])
        torch.testing.assert_close(value, (1 - mu) * initial[name] + mu * policy[name], atol=1e-6, rtol=0)


def test_each_warp_iteration_starts_from_the_previous_liti_policy(tmp_path):
    final, stats, run_dir, initial = run_warp(tmp_path, iterations=2, max_steps=1, learning_rate=1e-2,
                                              liti_eta=0.5)
    assert [it["iteration"] for it in stats["iterations"]] == [0, 1]
    init1 = liti(initial, saved(run_dir / "iter0" / "slerp"), 0.5)
    assert_close_states(weights_of(final), liti(init1, saved(run_dir / "iter1" / "slerp"), 0.5))
    # iteration 1's runs are fine-tuned from init1: their untouched weights are init1's
    name = "model.layers.0.mlp.up_proj.weight"
    run1 = saved(run_dir / "iter1" / "run0" / "policy")
    torch.testing.assert_close(run1[name], init1[name], atol=1e-6, rtol=0)
    assert not torch.allclose(init1["model.layers.0.self_attn.q_proj.weight"],
                              initial["model.layers.0.self_attn.q_proj.weight"])


def test_warp_anchor_never_gets_gradients(tmp_path, monkeypatch):
    anchors = []

    class Capturing(warp_trainer.Reference):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            anchors.append(self.model)

    monkeypatch.setattr(warp_trainer, "Reference", Capturing)
    run_warp(tmp_path, max_steps=2, learning_rate=1e-2)
    assert len(anchors) == 2
    for anchor in anchors:
        for name, p in anchor.named_parameters():
            assert p.grad is None, name


def test_warp_without_output_dir_returns_the_policy_only(tmp_path):
    model, tok = fresh_policy()
    final, stats = train_warp(WARPConfig(**WARP, max_steps=1), PROMPTS[:2], model=model, tokenizer=tok,
                              reward_model=tiny_reward_model())
    assert not final.training and stats["num_prompts"] == 2
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ streamed merge, memory sharing
def test_warp_without_output_dir_merges_the_same_weights_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    saved_run, _, _, _ = run_warp(tmp_path, max_steps=2, learning_rate=1e-2, liti_eta=0.5)
    monkeypatch.setattr(warp_trainer.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model, tok = fresh_policy()
    final, _ = train_warp(WARPConfig(**WARP, max_steps=2, learning_rate=1e-2, liti_eta=0.5), PROMPTS[:2], model=model,
                          tokenizer=tok, reward_model=tiny_reward_model())
    assert_close_states(weights_of(final), weights_of(saved_run))
    assert list((tmp_path / "tmp").iterdir()) == []


def test_lora_runs_share_the_weights_they_do_not_adapt_and_leave_the_callers_model_alone(tmp_path, monkeypatch):
    anchors = []

    class Capturing(warp_trainer.Reference):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            anchors.append(self.model)

    monkeypatch.setattr(warp_trainer, "Reference", Capturing)
    model, tok = fresh_policy()
    before = weights_of(model)
    final, _ = train_warp(WARPConfig(**WARP, max_steps=1, learning_rate=1e-2), PROMPTS[:2], model=model,
                          tokenizer=tok, reward_model=tiny_reward_model())
    for name, p in model.state_dict().items():
        assert torch.equal(p, before[name]), name
    live = dict(final.named_parameters())
    for anchor in anchors:
        params = dict(anchor.named_parameters())
        shared, adapted = "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"
        assert params[shared].data_ptr() == live[shared].data_ptr()
        assert params[adapted].data_ptr() != live[adapted].data_ptr()


def test_warp_from_a_model_folder_with_tied_weights_saves_loadable_merges(tmp_path):
    from transformers import AutoModelForCausalLM

    from tests.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "gpt2", arch="gpt2")
    initial = weights_of(AutoModelForCausalLM.from_pretrained(folder))
    config = WARPConfig(**{**WARP, "model": str(folder), "output_dir": str(tmp_path / "run"), "max_steps": 1,
                           "learning_rate": 1e-3, "lora": False, "liti_eta": 0.5})  # full fine-tune: wte moves
    final, _ = train_warp(config, PROMPTS[:2], reward_model=tiny_reward_model())
    load = lambda name: AutoModelForCausalLM.from_pretrained(tmp_path / "run" / name)  # noqa: E731
    runs = [weights_of(load(f"iter0/run{m}/policy")) for m in (0, 1)]
    merged = load("iter0/slerp")
    assert merged.lm_head.weight.data_ptr() == merged.transformer.wte.weight.data_ptr()
    assert not torch.equal(merged.transformer.wte.weight, initial["transformer.wte.weight"])
    assert_close_states(weights_of(merged), slerp(initial, runs, 0.5))
    assert_close_states(weights_of(load("eta-0.25")), liti(initial, weights_of(merged), 0.25))
    assert_close_states(weights_of(final), liti(initial, weights_of(merged), 0.5))
    assert_close_states(weights_of(load("policy")), weights_of(final))
