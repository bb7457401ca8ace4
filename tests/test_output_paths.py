"""Outputs never lose a user's data: the checks of paretoalign.output_paths and the library save paths using them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from paretoalign import output_paths as outputs
from paretoalign.atomic_io import atomic_directory
from paretoalign.errors import InputError
from paretoalign.rewards.loading import reward_model_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers (also used by tests/cli/test_cli_outputs.py)

def user_folder(path: Path) -> Path:
    """A folder of someone's own files (a thesis and a sub-folder) that no output may delete."""
    (path / "sub").mkdir(parents=True)
    (path / "thesis.txt").write_text("keep me\n")
    (path / "sub" / "notes.md").write_bytes(b"\x00binary\xff")
    return path


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every entry under `path` (or the file itself) with its bytes (None for folders)."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def leftovers(parent: Path) -> list[str]:
    """Temporary files or folders of an atomic write left beside the outputs (`.name.*.tmp`, `.name.old.*`)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and (".tmp" in p.name or ".old." in
                                                                                   p.name))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def fake_reward_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"format": "paretoalign-reward-model", "format_version": 1}))
    (path / "model.safetensors").write_bytes(b"old weights")
    return path


# ---------------------------------------------------------------- folder outputs

def test_missing_empty_and_own_folders_are_allowed(tmp_path):
    assert outputs.check_output_dir(tmp_path / "new" / "rm", outputs.REWARD_MODEL) == tmp_path / "new" / "rm"
    (tmp_path / "empty").mkdir()
    outputs.check_output_dir(tmp_path / "empty", outputs.REWARD_MODEL)
    outputs.check_output_dir(fake_reward_model_dir(tmp_path / "rm"), outputs.REWARD_MODEL)
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_a_folder_of_user_files_is_refused_naming_it_unless_overwrite(tmp_path):
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty") as err:
        outputs.check_output_dir(folder, outputs.REWARD_MODEL)
    assert str(folder) in str(err.value) and "--overwrite" in str(err.value)
    assert snapshot(folder) == before
    outputs.check_output_dir(folder, outputs.REWARD_MODEL, overwrite=True)


@pytest.mark.parametrize(("kind", "files"), [
    (outputs.REWARD_MODEL, {"config.json": {"model_type": "llama"}}),  # a transformers model is not our RM
    (outputs.HF_EXPORT, {"config.json": {"format": "paretoalign-reward-model"}}),  # an RM is not an export
    (outputs.MERGE, {"training.json": {"method": "dpo"}}),
    (outputs.FRONT_REPORT, {"front.json": ["not", "a", "report"]}),
    (outputs.training_run("dpo"), {"training.json": {"method": "modpo"}}),
    (outputs.training_run("dpo"), {outputs.RUN_MARKER: {"format": outputs.RUN_FORMAT, "method": "warp"}}),
])
def test_another_kind_of_output_is_not_ours(tmp_path, kind, files):
    folder = tmp_path / "out"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    with pytest.raises(InputError, match=f"no previous {kind.description.split(' (')[0]}"):
        outputs.check_output_dir(folder, kind)


@pytest.mark.parametrize(("kind", "files"), [
    (outputs.HF_EXPORT, {"paretoalign_export.json": {"format": "paretoalign-hf-export"}}),
    (outputs.MERGE, {"merge_record.json": {"operation": "slerp"}}),
    (outputs.FRONT_REPORT, {"front.json": {"points": [], "fronts": []}}),
    (outputs.GENARM, {"genarm_training.json": {}}),
    (outputs.training_run("dpo"), {outputs.RUN_MARKER: {"format": outputs.RUN_FORMAT, "method": "dpo"}}),
    (outputs.training_run("dpo"), {"training.json": {"method": "dpo"}}),
    (outputs.training_run("dpo"), {"checkpoint/state.json": {"step": 1}}),  # a run from before the marker
    (outputs.training_run("warp"), {"iter0/run1/checkpoint/state.json": {"step": 1}}),
    (outputs.training_run("modpo"), {"w-0.5-0.5/checkpoint/state.json": {"step": 1}}),
])
def test_a_previous_output_of_the_same_kind_is_recognised(tmp_path, kind, files):
    folder = tmp_path / "out"
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    outputs.check_output_dir(folder, kind)


def test_a_file_where_a_folder_is_expected_is_refused_even_with_overwrite(tmp_path):
    target = tmp_path / "thesis.txt"
    target.write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="is a file, not a directory"):
            outputs.check_output_dir(target, outputs.MERGE, overwrite=overwrite)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        outputs.check_output_dir(tmp_path / "f" / "out", outputs.MERGE)
    assert target.read_text() == "keep"


def test_current_home_and_their_parents_are_refused_even_with_overwrite(tmp_path, monkeypatch):
    home = tmp_path / "home"
    work = user_folder(home / "work")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for path in (".", str(work), str(home), str(tmp_path), "/"):
        with pytest.raises(InputError, match="current folder|home folder"):
            outputs.check_output_dir(path, outputs.REWARD_MODEL, overwrite=True)
    with pytest.raises(InputError, match="an output directory is required"):
        outputs.check_output_dir("", outputs.REWARD_MODEL)


def test_an_output_folder_that_is_holds_or_lies_in_an_input_is_refused_even_with_overwrite(tmp_path):
    model = user_folder(tmp_path / "runs" / "model")
    data = tmp_path / "pairs.jsonl"
    data.write_text("{}\n")
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    cases = {model: "is one of the inputs", tmp_path / "link": "is one of the inputs",
             tmp_path / "runs": "holds the input", model / "inner": "lies inside the input"}
    for out, message in cases.items():
        with pytest.raises(InputError, match=message):
            outputs.check_output_dir(out, outputs.MERGE, inputs=[str(model), None, "not-a-path"], overwrite=True)
    with pytest.raises(InputError, match="holds the input"):
        outputs.check_output_dir(tmp_path, outputs.MERGE, inputs=[[str(data)]], overwrite=True)
    outputs.check_output_dir(tmp_path / "runs" / "merged", outputs.MERGE, inputs=[str(model), str(data)])


# ---------------------------------------------------------------- file outputs

def test_file_outputs(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "p", "response": "r"}\n')
    (tmp_path / "old.jsonl").write_text("previous output\n")
    outputs.check_output_file(tmp_path / "old.jsonl", inputs=[rows])  # an output file is replaced as usual
    outputs.check_output_file(tmp_path / "new" / "out.jsonl", inputs=[rows])
    with pytest.raises(InputError, match="is a directory, not a file"):
        outputs.check_output_file(tmp_path, inputs=[rows])
    (tmp_path / "alias.jsonl").symlink_to(rows)
    os.link(rows, tmp_path / "hard.jsonl")
    for same in (rows, tmp_path / "alias.jsonl", tmp_path / "hard.jsonl", tmp_path / "x" / ".." / "rows.jsonl"):
        with pytest.raises(InputError, match="one of the inputs"):
            outputs.check_output_file(same, inputs=[str(rows)])
    model = user_folder(tmp_path / "rm")
    with pytest.raises(InputError, match="lies inside the input"):
        outputs.check_output_file(model / "scores.jsonl", inputs=[model])
    with pytest.raises(InputError, match="is a file"):
        outputs.check_output_file(rows / "out.jsonl")
    assert rows.read_text() == '{"prompt": "p", "response": "r"}\n'


def test_reward_model_inputs_name_the_local_backbone(tmp_path, tiny_llama_dir):
    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"format": "x", "backbone": {"model": str(tiny_llama_dir)}}))
    assert reward_model_inputs(rm) == [str(rm), str(tiny_llama_dir)]
    (rm / "config.json").write_text(json.dumps({"backbone": {"model": "minilm"}}))
    assert reward_model_inputs(rm) == [str(rm)]
    assert reward_model_inputs(tmp_path / "missing") == [str(tmp_path / "missing")]


# ---------------------------------------------------------------- training runs

def test_claim_run_dir_marks_keeps_or_replaces(tmp_path):
    run = tmp_path / "run"
    outputs.claim_run_dir(run, "dpo")
    assert json.loads((run / outputs.RUN_MARKER).read_text()) == {"format": outputs.RUN_FORMAT, "method": "dpo"}
    (run / "metrics.jsonl").write_text("{}\n")
    outputs.claim_run_dir(run, "dpo")  # the same method again: a resume, nothing deleted
    assert (run / "metrics.jsonl").is_file()
    with pytest.raises(InputError, match="no previous modpo training run"):
        outputs.claim_run_dir(run, "modpo")
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty"):
        outputs.claim_run_dir(folder, "dpo")
    assert snapshot(folder) == before
    outputs.claim_run_dir(folder, "dpo", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [outputs.RUN_MARKER]


# ---------------------------------------------------------------- library save paths

def test_reward_model_save_pretrained_guards_the_folder(tmp_path):
    from tests.rewards.model_factory import random_model

    model = random_model()
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty"):
        model.save_pretrained(folder)
    assert snapshot(folder) == before and leftovers(tmp_path) == []
    model.save_pretrained(tmp_path / "rm")
    model.save_pretrained(tmp_path / "rm")  # its own previous output is replaced
    assert outputs.REWARD_MODEL.recognise(tmp_path / "rm")
    model.save_pretrained(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert leftovers(tmp_path) == []


def test_train_reward_model_checks_the_folder_before_embedding(tmp_path):
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model
    from tests.rewards.fake_backbone import HashingBackbone

    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    backbone = HashingBackbone()
    config = ArmoRMConfig(output_dir=str(folder), embedding_cache=None, progress=False)
    with pytest.raises(InputError, match="not empty"):
        train_reward_model(config, data=object(), backbone=backbone)  # checked before the data is even read
    assert backbone.calls == 0 and snapshot(folder) == before


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_weights_get_the_permissions_of_the_other_files(tmp_path, umask):
    from safetensors.torch import save_file

    from tests.rewards.model_factory import random_model

    old = os.umask(umask)
    try:
        random_model().save_pretrained(tmp_path / "rm")
        with atomic_directory(tmp_path / "ckpt") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp / "w.safetensors"))
            (tmp / "sub").mkdir()
            save_file({"x": torch.zeros(2)}, str(tmp / "sub" / "w.safetensors"))
            (tmp / "state.json").write_text("{}")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert mode(tmp_path / "rm" / "model.safetensors") == mode(tmp_path / "rm" / "config.json") == expected
    assert {mode(p) for p in (tmp_path / "ckpt").rglob("*") if p.is_file()} == {expected}
    assert mode(tmp_path / "rm") == mode(tmp_path / "ckpt" / "sub") == 0o777 & ~umask


def test_policy_and_merge_weights_get_the_permissions_of_the_other_files(tmp_path, tiny_llama_dir):
    from paretoalign.train.merge import merge_policies
    from paretoalign.train.run import save_policy
    from tests.tiny import make_tiny_llama, make_tokenizer

    tokenizer = make_tokenizer()
    old = os.umask(0o002)
    try:
        policy = save_policy(make_tiny_llama(tokenizer), tokenizer, tmp_path / "policy", {"method": "test"})
        merged = merge_policies("ema", init=None, models=[str(tiny_llama_dir), str(policy)],
                                output_dir=str(tmp_path / "merged"), mu=0.5)
    finally:
        os.umask(old)
    for folder in (policy, merged):
        modes = {p.name: mode(p) for p in folder.iterdir()}
        assert modes["model.safetensors"] == modes["config.json"] == 0o664, modes
        assert set(modes.values()) == {0o664}, modes


def test_merge_refuses_a_user_folder_before_loading(tmp_path, tiny_llama_dir):
    from paretoalign.train.merge import merge_policies

    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty"):
        merge_policies("ema", init=None, models=[str(tmp_path / "missing-a"), str(tmp_path / "missing-b")],
                       output_dir=str(folder), mu=0.5)
    assert snapshot(folder) == before
    with pytest.raises(InputError, match="holds the input"):
        merge_policies("ema", init=None, models=[str(tiny_llama_dir), str(tiny_llama_dir)],
                       output_dir=str(tiny_llama_dir.parent), mu=0.5, overwrite=True)
    merge_policies("ema", init=None, models=[str(tiny_llama_dir), str(tiny_llama_dir)], output_dir=str(folder),
                   mu=0.5, overwrite=True)
    assert (folder / "merge_record.json").is_file() and not (folder / "thesis.txt").exists()


def test_front_report_refuses_a_user_folder_and_replaces_its_own(tmp_path):
    from paretoalign.eval.policy_eval import FrontPoint
    from paretoalign.report.front_report import write_front_report

    def point(name, kind, reward, kl, objectives):
        return FrontPoint(name=name, kind=kind, n=None, reward=reward, reward_stderr=0.1, objectives=objectives,
                          kl=kl, kl_stderr=0.1, kl_is_bound=False, num_prompts=2, num_samples=4,
                          finished_fraction=1.0, mean_response_tokens=5.0, source=name)

    points = [point("reference", "reference", 0.0, 0.0, {"a": 0.0, "b": 0.0}),
              point("p", "policy", 0.3, 0.5, {"a": 0.2, "b": -0.1})]
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not empty"):
        write_front_report(points, folder)
    assert snapshot(folder) == before
    write_front_report(points, tmp_path / "report")
    (tmp_path / "report" / "stale.png").write_bytes(b"old plot")
    write_front_report(points, tmp_path / "report")  # its own: replaced as a whole
    assert (tmp_path / "report" / "front.json").is_file() and not (tmp_path / "report" / "stale.png").exists()
    assert leftovers(tmp_path) == []


def test_trainers_check_the_run_folder_before_loading_anything(tmp_path):
    from paretoalign.train.bond_config import BONDConfig
    from paretoalign.train.bond_trainer import train_bond
    from paretoalign.train.dpo_config import DPOConfig
    from paretoalign.train.dpo_trainer import train_dpo
    from paretoalign.train.modpo_config import MODPOConfig
    from paretoalign.train.modpo_trainer import train_modpo, train_modpo_sweep
    from paretoalign.train.warp_config import WARPConfig
    from paretoalign.train.warp_trainer import train_warp

    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    missing = str(tmp_path / "no-such-model")  # loading it would fail with another error
    calls = [lambda: train_dpo(DPOConfig(output_dir=str(folder), model=missing)),
             lambda: train_modpo(MODPOConfig(output_dir=str(folder), model=missing)),
             lambda: train_modpo_sweep(MODPOConfig(output_dir=str(folder), model=missing)),
             lambda: train_bond(BONDConfig(output_dir=str(folder), model=missing)),
             lambda: train_warp(WARPConfig(output_dir=str(folder), model=missing))]
    for call in calls:
        with pytest.raises(InputError, match="not empty"):
            call()
    assert snapshot(folder) == before
    target = tmp_path / "file"
    target.write_text("keep")
    with pytest.raises(InputError, match="is a file"):
        train_dpo(DPOConfig(output_dir=str(target), model=missing), overwrite=True)
    assert target.read_text() == "keep"


def test_report_and_calibration_writers_refuse_a_folder(tmp_path):
    from paretoalign.eval.rm_eval import RMEvalReport
    from paretoalign.inference.calibration import CalibrationTable

    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    report = RMEvalReport(groups=[], metric_names=[], n_boot=0, level=0.95, seed=0)
    for write in (report.write, CalibrationTable().save):
        with pytest.raises(InputError, match="is a directory, not a file"):
            write(folder)
    assert snapshot(folder) == before and leftovers(tmp_path) == []
    report.write(tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text())["groups"] == []
