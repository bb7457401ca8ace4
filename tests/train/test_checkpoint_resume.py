import json

import pytest
import torch
from safetensors.torch import load_file

from paretoalign.errors import InputError
from paretoalign.train.bond_config import BONDConfig
from paretoalign.train.bond_trainer import train_bond
from paretoalign.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    restore_optimizer,
    restore_trainable_,
    save_checkpoint,
)
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.dpo_trainer import train_dpo
from paretoalign.train.metrics import MetricsLog
from paretoalign.train.policy_files import load_policy_state
from paretoalign.train.warp_config import WARPConfig
from paretoalign.train.warp_trainer import train_warp
from tests.train.conftest import (
    ONLINE,
    PROMPTS,
    SMALL,
    assert_same_weights,
    fresh_policy,
    metric_rows,
    tiny_reward_model,
    toy_pairs,
    weights_of,
)

PAIRS = toy_pairs(4)


def dpo(run_dir, **fields):
    model, tok = fresh_policy()
    config = DPOConfig(**{**SMALL, "output_dir": str(run_dir), "epochs": 2, "learning_rate": 1e-2, **fields})
    return weights_of(train_dpo(config, PAIRS, model=model, tokenizer=tok)[0])


def jbond(run_dir, **fields):
    model, tok = fresh_policy()
    config = BONDConfig(**{**ONLINE, "output_dir": str(run_dir), "gamma": 0.1, "anchor_ema": 0.5,
                           "learning_rate": 1e-2, **fields})
    return weights_of(train_bond(config, PROMPTS, model=model, tokenizer=tok, reward_model=tiny_reward_model())[0])


def warp(run_dir, **fields):
    model, tok = fresh_policy()
    config = WARPConfig(**{**ONLINE, "output_dir": str(run_dir), "samples_per_prompt": 2, "eta_grid": [0.5],
                           "learning_rate": 1e-2, **fields})
    return weights_of(train_warp(config, PROMPTS[:2], model=model, tokenizer=tok,
                                 reward_model=tiny_reward_model())[0])


# ------------------------------------------------------------------ resume equality
def test_resumed_dpo_equals_an_uninterrupted_run(tmp_path):
    full = dpo(tmp_path / "full", max_steps=3)  # crosses the epoch boundary
    dpo(tmp_path / "split", max_steps=1)
    assert load_checkpoint(tmp_path / "split").step == 1
    resumed = dpo(tmp_path / "split", max_steps=3)
    assert_same_weights(full, resumed)
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "split")
    assert [r["step"] for r in metric_rows(tmp_path / "split")] == [1, 2, 3]
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert a.step == b.step == 3
    assert_same_weights(a.optimizer_tensors, b.optimizer_tensors)


def test_resume_after_a_crash_drops_metrics_past_the_last_checkpoint(tmp_path, monkeypatch):
    full = dpo(tmp_path / "full", max_steps=4)
    log = MetricsLog.log

    def crash_after_step_3(self, record):
        log(self, record)
        if record["step"] == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(MetricsLog, "log", crash_after_step_3)
    with pytest.raises(RuntimeError):
        dpo(tmp_path / "crash", max_steps=4, save_every=2)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "crash").step == 2
    assert [r["step"] for r in metric_rows(tmp_path / "crash")] == [1, 2, 3]
    resumed = dpo(tmp_path / "crash", max_steps=4, save_every=2)
    assert_same_weights(full, resumed)
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "crash")


def test_resumed_jbond_restores_its_anchor(tmp_path):
    full = jbond(tmp_path / "full", max_steps=3)
    jbond(tmp_path / "split", max_steps=1)
    resumed = jbond(tmp_path / "split", max_steps=3)
    assert_same_weights(full, resumed)
    assert metric_rows(tmp_path / "full") == metric_rows(tmp_path / "split")
    anchors = [load_file(str(tmp_path / d / "checkpoint" / "anchor.safetensors")) for d in ("full", "split")]
    assert_same_weights(*anchors)


def test_resumed_warp_continues_its_runs(tmp_path):
    full = warp(tmp_path / "full", max_steps=2)
    short = warp(tmp_path / "split", max_steps=1)
    resumed = warp(tmp_path / "split", max_steps=2)
    assert_same_weights(full, resumed)
    assert any(not torch.equal(short[k], full[k]) for k in full)
    for m in (0, 1):
        run = f"iter0/run{m}"
        assert metric_rows(tmp_path / "full" / run) == metric_rows(tmp_path / "split" / run)
        assert_same_weights(load_file(str(tmp_path / "full" / run / "checkpoint" / "anchor.safetensors")),
                            load_file(str(tmp_path / "split" / run / "checkpoint" / "anchor.safetensors")))
    assert_same_weights(load_policy_state(tmp_path / "full" / "eta-0.5")[0],
                        load_policy_state(tmp_path / "split" / "eta-0.5")[0])


def test_resumed_warp_retrains_later_iterations_from_the_new_merge(tmp_path):
    full = warp(tmp_path / "full", max_steps=2, iterations=2)
    warp(tmp_path / "split", max_steps=1, iterations=2)
    resumed = warp(tmp_path / "split", max_steps=2, iterations=2)
    assert_same_weights(full, resumed)
    assert metric_rows(tmp_path / "full" / "iter1" / "run1") == metric_rows(tmp_path / "split" / "iter1" / "run1")


def test_finished_warp_runs_are_reused_unless_resume_is_off(tmp_path):
    first = warp(tmp_path / "run", max_steps=2)
    assert_same_weights(first, warp(tmp_path / "run", max_steps=2))
    assert len(metric_rows(tmp_path / "run" / "iter0" / "run0")) == 2
    warp(tmp_path / "run", max_steps=1, resume=False)  # starts over
    assert len(metric_rows(tmp_path / "run" / "iter0" / "run0")) == 1


@pytest.mark.parametrize(("trainer", "change"), [(dpo, {"beta": 0.2}), (jbond, {"anchor_ema": 0.25}),
                                                  (warp, {"kl_beta": 0.5})])
def test_resuming_with_a_changed_setting_names_it(tmp_path, trainer, change):
    trainer(tmp_path / "run", max_steps=1)
    field = next(iter(change))
    with pytest.raises(InputError) as err:
        trainer(tmp_path / "run", max_steps=2, **change)
    assert err.value.field == field and "resume=false" in str(err.value)


def test_resume_off_starts_over_and_clears_old_metrics(tmp_path):
    dpo(tmp_path / "run", max_steps=3)
    dpo(tmp_path / "run", max_steps=1, beta=0.2, resume=False)
    rows = metric_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1]
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["config"]["beta"] == 0.2


# ------------------------------------------------------------------ checkpoint pieces
def adam_after_two_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95), weight_decay=0.01)
    for _ in range(2):
        model(torch.randn(4, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    model, opt = adam_after_two_steps()
    config = DPOConfig(**SMALL)
    save_checkpoint(tmp_path, step=2, trainable=dict(model.named_parameters()), optimizer=opt, config=config,
                    method_state={"note": 1}, tensor_groups={"extra": {"x": torch.arange(3.0)}})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 2 and ckpt.method_state == {"note": 1}
    assert torch.equal(ckpt.tensor_groups["extra"]["x"], torch.arange(3.0))
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.5)
    restore_trainable_(fresh, ckpt.trainable)
    restore_optimizer(fresh_opt, ckpt.optimizer_tensors, ckpt.optimizer_meta)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, entries in a["state"].items():
        for key, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key])), key
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        m(x).square().sum().backward()
        o.step()
    assert torch.equal(model.weight, fresh.weight) and torch.equal(model.bias, fresh.bias)


def test_no_checkpoint_reads_as_none_and_a_broken_one_names_its_file(tmp_path):
    assert load_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(InputError) as err:
        load_checkpoint(tmp_path)
    assert "state.json" in str(err.value.path)


def test_restoring_trainable_parameters_needs_matching_names():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(InputError) as err:
        restore_trainable_(model, {"weight": torch.zeros(2, 2)})
    assert err.value.field == "checkpoint" and "bias" in str(err.value)


def test_resume_ignores_only_the_run_length_and_logging_fields(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, step=1, trainable=dict(model.named_parameters()), optimizer=None,
                    config=DPOConfig(**SMALL, max_steps=1))
    ckpt = load_checkpoint(tmp_path)
    check_resumable(ckpt, DPOConfig(**{**SMALL, "progress": True}, max_steps=9, save_every=2), tmp_path)
    with pytest.raises(InputError) as err:
        check_resumable(ckpt, DPOConfig(**SMALL, max_steps=1, seed=1), tmp_path)
    assert err.value.field == "seed"


def test_metrics_keep_only_rows_up_to_the_resumed_step(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n"
                                                    for s in (1, 2, 3, 4)))
    log = MetricsLog(tmp_path, resume_step=2)
    log.log({"step": 3, "loss": 0.5})
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "loss": 0.1}, {"step": 2, "loss": 0.2}, {"step": 3, "loss": 0.5}]
    MetricsLog(tmp_path, resume_step=0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""
