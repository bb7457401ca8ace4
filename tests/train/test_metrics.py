"""metrics.jsonl writing, truncation on resume, and the TensorBoard option."""

from __future__ import annotations

import importlib.util
import json

import pytest

from paretoalign.errors import InputError
from paretoalign.train.metrics import METRICS_FILE, MetricsLog


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_logged_step_is_one_json_line(tmp_path):
    log = MetricsLog(tmp_path)
    log.log({"step": 1, "loss": 0.5})
    log.log({"step": 2, "loss": 0.25, "note": "x"})
    assert rows(tmp_path / METRICS_FILE) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "note": "x"}]


def test_resume_keeps_only_the_steps_up_to_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.log({"step": step, "loss": float(step)})
    resumed = MetricsLog(tmp_path, resume_step=2)
    assert [r["step"] for r in rows(tmp_path / METRICS_FILE)] == [1, 2]
    assert [r["step"] for r in resumed.records] == [1, 2]


def test_a_fresh_run_starts_an_empty_file(tmp_path):
    MetricsLog(tmp_path).log({"step": 1, "loss": 1.0})
    MetricsLog(tmp_path)
    assert (tmp_path / METRICS_FILE).read_text() == ""


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_package_names_the_extra(tmp_path):
    with pytest.raises(InputError, match=r"paretoalign\[tensorboard\]") as info:
        MetricsLog(tmp_path, tensorboard=True)
    assert info.value.field == "tensorboard"


def test_tensorboard_needs_an_output_dir():
    with pytest.raises(InputError, match="output_dir"):
        MetricsLog(None, tensorboard=True)
