"""A resumed run says where it resumes from, and its metrics' elapsed_s continues from the checkpoint's."""

import json
import time

from paretoalign.train.checkpoint import load_checkpoint
from paretoalign.train.dpo_config import DPOConfig
from paretoalign.train.dpo_trainer import train_dpo
from tests.train.conftest import SMALL, fresh_policy, toy_pairs


def dpo(run_dir, **fields):
    model, tok = fresh_policy()
    config = DPOConfig(**{**SMALL, "output_dir": str(run_dir), "epochs": 2, "learning_rate": 1e-2, **fields})
    return train_dpo(config, toy_pairs(4), model=model, tokenizer=tok)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_a_resumed_run_says_so_and_keeps_elapsed_s_cumulative(tmp_path, capsys):
    run_dir = tmp_path / "run"
    dpo(run_dir, max_steps=1)
    assert "resuming" not in capsys.readouterr().err
    first = rows(run_dir)[0]["elapsed_s"]
    state_path = run_dir / "checkpoint" / "state.json"
    assert load_checkpoint(run_dir).elapsed_s >= first > 0
    # Pretend the first session trained for 1000 s: the resumed steps must count on from there.
    state = json.loads(state_path.read_text())
    state["elapsed_s"] = 1000.0
    state_path.write_text(json.dumps(state))
    t0 = time.perf_counter()
    dpo(run_dir, max_steps=3)
    wall = time.perf_counter() - t0
    assert "dpo: resuming from step 1 of 3" in capsys.readouterr().err
    metrics = rows(run_dir)
    assert [r["step"] for r in metrics] == [1, 2, 3]
    assert metrics[0]["elapsed_s"] == first
    assert all(1000.0 < r["elapsed_s"] < 1000.0 + wall for r in metrics[1:])
    assert metrics[1]["elapsed_s"] <= metrics[2]["elapsed_s"]
    assert 1000.0 < json.loads((run_dir / "training.json").read_text())["stats"]["train_s"] < 1000.0 + wall
    assert 1000.0 < load_checkpoint(run_dir).elapsed_s < 1000.0 + wall


def test_a_checkpoint_without_elapsed_s_resumes_from_zero(tmp_path, capsys):
    run_dir = tmp_path / "run"
    dpo(run_dir, max_steps=1)
    state_path = run_dir / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    del state["elapsed_s"]  # written before elapsed_s was recorded
    state_path.write_text(json.dumps(state))
    assert load_checkpoint(run_dir).elapsed_s == 0.0
    dpo(run_dir, max_steps=2)
    assert "resuming from step 1 of 2" in capsys.readouterr().err
    assert [r["step"] for r in rows(run_dir)] == [1, 2]
