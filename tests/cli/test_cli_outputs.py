"""Every writing command: a user's folder or file is never lost, refused before any model loads (issue 9)."""

from __future__ import annotations

import json
import shutil

import pytest

from paretoalign.cli import main
from tests.cli.conftest import forbid_calls, toy_pairs, write_jsonl
from tests.test_output_paths import leftovers, snapshot, user_folder

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [{"id": "p1", "prompt": "How do I bake bread?"}, {"id": "p2", "prompt": "Capital of France?"}]
TINY_RUN = ["max_steps=1", "batch_size=2", "progress=false", "lora_r=4", "max_length=64"]


@pytest.fixture()
def no_work(monkeypatch):
    """Every model load / training entry point records its call and fails: a refusal must come before all of them."""
    import paretoalign.embed.models
    import paretoalign.inference.policy
    import paretoalign.rewards.armo_trainer
    import paretoalign.rewards.reward_model
    import paretoalign.train.merge
    import paretoalign.train.policy_setup
    import paretoalign.train.run

    return forbid_calls(monkeypatch, [(paretoalign.rewards.reward_model.RewardModel, "from_pretrained"),
                                      (paretoalign.inference.policy.Policy, "from_pretrained"),
                                      (paretoalign.embed.models, "load_causal_lm"),
                                      (paretoalign.train.policy_setup, "load_causal_lm"),
                                      (paretoalign.rewards.armo_trainer, "load_config_data"),
                                      (paretoalign.rewards.armo_trainer, "train_reward_model"),
                                      (paretoalign.train.run, "load_policy_for_training"),
                                      (paretoalign.train.merge, "load_policy_state")],
                        "the output should have been checked before it")


@pytest.fixture()
def files(tmp_path, tiny_llama_dir, trained_dir):
    """Inputs every command can use."""
    return {"pairs": write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(6)),
            "prompts": write_jsonl(tmp_path / "prompts.jsonl", PROMPTS),
            "rows": write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r"}]),
            "tiny": tiny_llama_dir, "rm": trained_dir}


def folder_commands(f, out):
    """Each command writing a folder, with valid inputs and `out` as its output folder."""
    return {
        "train-rm": ["train-rm", "--output-dir", out],
        "export-hf": ["export-hf", "--model", f["rm"], "--weights", "helpfulness=1", "--output-dir", out],
        "train-genarm": ["train-genarm", "--pairs", f["pairs"], "--output-dir", out, f"model={f['tiny']}"],
        "dpo": ["dpo", "--output-dir", out, f"data={f['pairs']}", f"model={f['tiny']}"],
        "modpo": ["modpo", "--output-dir", out, f"data={f['pairs']}", f"model={f['tiny']}"],
        "bond": ["bond", "--output-dir", out, f"model={f['tiny']}", f"reward_model={f['rm']}"],
        "warp": ["warp", "--output-dir", out, f"model={f['tiny']}", f"reward_model={f['rm']}"],
        "merge": ["merge", "ema", "--models", f["tiny"], f["tiny"], "--mu", "0.5", "--output-dir", out],
        "front": ["front", "--runs", f["tiny"], "--reward-model", f["rm"], "--reference", f["tiny"], "--output", out],
        "demo": ["demo", "--output-dir", out, "--skip-bon"],
    }


def file_commands(f, out):
    """Each command writing a file, with valid inputs and `out` as its output file."""
    gen = ["--policy", f["tiny"], "--max-new-tokens", "4", "--quiet"]
    return {
        "score": ["score", "--model", f["rm"], "--input", f["rows"], "--output", out],
        "eval-rm": ["eval-rm", "--model", f["rm"], "--data", f["pairs"], "--output", out],
        "bon": ["bon", "--rm", f["rm"], "--prompts", f["prompts"], "--n", "2", *gen, "--output", out],
        "calibrate": ["calibrate", "--rm", f["rm"], "--prompts", f["prompts"], "--m", "2", *gen, "--output", out],
        "guided": ["guided", "--reward-lm", f"{f['tiny']}=1", "--prompts", f["prompts"], *gen, "--output", out],
    }


def run(argv):
    return main([str(a) for a in argv])


def assert_refused(rc, capsys, named, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert str(named) in err, err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


FOLDER_COMMANDS = list(folder_commands({k: "x" for k in ("pairs", "prompts", "rows", "tiny", "rm")}, "o"))
FILE_COMMANDS = list(file_commands({k: "x" for k in ("pairs", "prompts", "rows", "tiny", "rm")}, "o"))


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_of_user_files_is_refused_before_any_work(command, files, tmp_path, no_work, capsys):
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    rc = run(folder_commands(files, folder)[command])
    assert_refused(rc, capsys, folder, "not empty", "--overwrite")
    assert snapshot(folder) == before and leftovers(tmp_path) == [] and no_work == []


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_file_given_as_output_folder_is_refused_even_with_overwrite(command, files, tmp_path, no_work, capsys):
    target = tmp_path / "thesis.txt"
    target.write_text("keep me\n")
    rc = run([*folder_commands(files, target)[command], "--overwrite"])
    assert_refused(rc, capsys, target, "is a file")
    assert target.read_text() == "keep me\n" and leftovers(tmp_path) == [] and no_work == []


@pytest.mark.parametrize("command", [c for c in FOLDER_COMMANDS if c != "demo"])  # demo reads no input
def test_an_output_folder_holding_an_input_is_refused_even_with_overwrite(command, files, tmp_path, no_work,
                                                                          capsys):
    models = tmp_path / "models"
    inputs = {**files, "tiny": shutil.copytree(files["tiny"], models / "tiny"),
              "rm": shutil.copytree(files["rm"], models / "rm")}
    argv = folder_commands(inputs, models)[command]
    if command == "train-rm":
        argv.append(f"backbone={inputs['tiny']}")
    before = snapshot(models)
    rc = run([*argv, "--overwrite"])
    assert_refused(rc, capsys, models, "holds the input")
    assert snapshot(models) == before and no_work == []


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_folder_given_as_output_file_is_refused_before_any_work(command, files, tmp_path, no_work, capsys):
    folder = user_folder(tmp_path / "v")
    before = snapshot(folder)
    rc = run(file_commands(files, folder)[command])
    assert_refused(rc, capsys, folder, "is a directory, not a file")
    assert snapshot(folder) == before and no_work == []


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_input_given_as_output_file_is_refused(command, files, tmp_path, no_work, capsys):
    key = {"score": "rows", "eval-rm": "pairs"}.get(command, "prompts")
    before = files[key].read_bytes()
    rc = run(file_commands(files, files[key])[command])
    assert_refused(rc, capsys, files[key], "one of the inputs")
    assert files[key].read_bytes() == before and leftovers(tmp_path) == [] and no_work == []


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_output_file_inside_an_input_folder_is_refused(command, files, no_work, capsys):
    inside = (files["tiny"] if command == "guided" else files["rm"]) / "out.jsonl"
    rc = run(file_commands(files, inside)[command])
    assert_refused(rc, capsys, inside, "lies inside the input")
    assert not inside.exists() and no_work == []


def test_an_input_reached_through_a_symlink_is_refused(files, tmp_path, no_work, capsys):
    link = tmp_path / "link.jsonl"
    link.symlink_to(files["rows"])
    rc = run(file_commands(files, link)["score"])
    assert_refused(rc, capsys, link, "one of the inputs")
    assert json.loads(files["rows"].read_text()) == {"prompt": "p", "response": "r"}


def test_train_rm_into_the_current_folder_is_refused_before_training(tmp_path, monkeypatch, no_work, capsys):
    user_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):
        rc = run(["train-rm", "--output-dir", ".", *extra])
        assert_refused(rc, capsys, ".", "current folder")
    assert (tmp_path / "thesis.txt").read_text() == "keep me\n" and no_work == []


# ---------------------------------------------------------------- what stays allowed

def test_train_rm_replaces_its_own_output_and_overwrites_a_user_folder_only_when_asked(trained_dir, tmp_path,
                                                                                       capsys):
    config = trained_dir.parent / "train.yaml"
    out = tmp_path / "rm"
    out.mkdir()  # an empty folder is fine
    for _ in range(2):  # the second run replaces the first one's reward model
        assert run(["train-rm", "--config", config, "--output-dir", out, "gating_steps=5", "progress=false"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    folder = user_folder(tmp_path / "v")
    rc = run(["train-rm", "--config", config, "--output-dir", folder, "gating_steps=5", "progress=false",
              "--overwrite"])
    assert rc == 0 and sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert leftovers(tmp_path) == []
    capsys.readouterr()


def test_merge_missing_own_and_overwrite(tiny_llama_dir, tmp_path):
    base = ["merge", "ema", "--models", tiny_llama_dir, tiny_llama_dir, "--mu", "0.5", "--output-dir"]
    out = tmp_path / "merged"
    assert run([*base, out]) == 0
    assert run([*base, out]) == 0  # its own previous merge
    folder = user_folder(tmp_path / "v")
    assert run([*base, folder]) == 2
    assert run([*base, folder, "--overwrite"]) == 0
    assert (folder / "merge_record.json").is_file() and not (folder / "thesis.txt").exists()
    assert leftovers(tmp_path) == []


def test_dpo_resumes_its_own_run_and_starts_over_in_a_user_folder_only_with_overwrite(tiny_llama_dir, tmp_path,
                                                                                       capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(4))
    folder = user_folder(tmp_path / "v")
    argv = ["dpo", "--output-dir", folder, f"data={pairs}", f"model={tiny_llama_dir}", *TINY_RUN]
    assert run(argv) == 2
    assert run([*argv, "--overwrite"]) == 0
    assert not (folder / "thesis.txt").exists() and (folder / "policy" / "model.safetensors").is_file()
    assert json.loads((folder / "paretoalign_run.json").read_text())["method"] == "dpo"
    assert run([*argv[:-len(TINY_RUN)], *TINY_RUN[1:], "max_steps=2"]) == 0  # resume: one more step
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    err = capsys.readouterr().err
    assert "not empty" in err
    rc = run(["modpo", "--output-dir", folder, f"data={pairs}", f"model={tiny_llama_dir}", *TINY_RUN])
    assert rc == 2 and "no previous modpo training run" in capsys.readouterr().err  # another method's run


def test_score_replaces_its_previous_output_file(trained_dir, tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r"}])
    out = tmp_path / "scored.jsonl"
    out.write_text("an older output\n")
    assert run(["score", "--model", trained_dir, "--input", rows, "--output", out, "--quiet"]) == 0
    assert "score" in json.loads(out.read_text().splitlines()[0])


def test_front_refuses_a_report_folder_holding_the_reward_model(trained_dir, tiny_llama_dir, tmp_path, no_work,
                                                                capsys):
    rm = shutil.copytree(trained_dir, tmp_path / "reports" / "rm")
    rc = run(["front", "--runs", tiny_llama_dir, "--reward-model", rm, "--output", tmp_path / "reports",
              "--overwrite"])
    assert_refused(rc, capsys, tmp_path / "reports", "holds the input")
    assert (rm / "config.json").is_file()
