import json

import pytest
from transformers import AutoModelForCausalLM

from paretoalign.cli import main
from tests.cli.conftest import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [{"prompt": "How do I bake bread?", "chosen": "Mix flour, water and yeast, then bake.", "rejected": "no"},
         {"prompt": [{"role": "user", "content": "Capital of France?"}], "chosen": "Paris.", "rejected": "Berlin."},
         {"prompt": "hello there", "chosen": "Hello! How can I help?", "rejected": "sorry"}]
TINY = ["max_steps=2", "batch_size=2", "progress=false", "lora_r=4", "max_length=64"]


@pytest.fixture()
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def test_dpo_command_trains_and_saves_a_loadable_policy(tmp_path, tiny_llama_dir, pairs_file, capsys):
    out = tmp_path / "run"
    rc = main(["dpo", "--output-dir", str(out), f"data={pairs_file}", f"model={tiny_llama_dir}", *TINY])
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(out / "policy")
    assert model.config.vocab_size == AutoModelForCausalLM.from_pretrained(tiny_llama_dir).config.vocab_size
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("loss" in r for r in rows)
    record = json.loads((out / "training.json").read_text())
    assert record["method"] == "dpo" and record["config"]["data"] == str(pairs_file)
    assert "policy saved to" in capsys.readouterr().err


def test_modpo_command_with_implicit_margins(tmp_path, tiny_llama_dir, pairs_file):
    out = tmp_path / "run"
    rc = main(["modpo", "--output-dir", str(out), f"data={pairs_file}", f"model={tiny_llama_dir}", "objective=null",
               "margin_source=implicit", f"margin_policies=[{tiny_llama_dir}]", "weights=[0.6, 0.4]", *TINY])
    assert rc == 0
    record = json.loads((out / "training.json").read_text())
    # the margin policy is the reference itself: its implicit rewards are 0
    assert record["stats"]["mean_margin_difference"] == {"harmlessness": 0.0}


@pytest.mark.parametrize(("command", "override", "named"), [
    ("dpo", "no_such_setting=1", "no_such_setting"),
    ("dpo", "beta=0", "beta"),
    ("modpo", "weights=[0.5, 0.6]", "weights"),
    ("bond", "beta=2", "beta"),
    ("warp", "num_runs=1", "num_runs"),
])
def test_bad_settings_exit_2_with_the_field_named(tmp_path, tiny_llama_dir, command, override, named, capsys):
    rc = main([command, "--output-dir", str(tmp_path / "run"), f"model={tiny_llama_dir}", override])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and named in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["bond", "warp"])
def test_online_trainers_need_an_existing_reward_model(tmp_path, tiny_llama_dir, command, capsys):
    missing = tmp_path / "no-rm"
    rc = main([command, "--output-dir", str(tmp_path / "run"), f"model={tiny_llama_dir}", f"reward_model={missing}",
               *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert "reward_model" in err and str(missing) in err


def test_training_needs_an_output_dir(tiny_llama_dir, pairs_file, capsys):
    assert main(["dpo", f"data={pairs_file}", f"model={tiny_llama_dir}", *TINY]) == 2
    assert "--output-dir" in capsys.readouterr().err


def test_modpo_sweep_trains_one_policy_per_weighting(tmp_path, tiny_llama_dir, pairs_file):
    out = tmp_path / "sweep"
    rc = main(["modpo", "--output-dir", str(out), f"data={pairs_file}", f"model={tiny_llama_dir}", "objective=null",
               "margin_source=implicit", f"margin_policies=[{tiny_llama_dir}]",
               "sweep_weights=[[1.0, 0.0], [0.5, 0.5]]", *TINY])
    assert rc == 0
    for name, weights in (("w-1-0", [1.0, 0.0]), ("w-0.5-0.5", [0.5, 0.5])):
        record = json.loads((out / name / "training.json").read_text())
        assert record["config"]["weights"] == weights and record["config"]["sweep_weights"] is None
        assert (out / name / "policy" / "config.json").is_file()


def test_modpo_sweep_rejects_a_weighting_off_the_simplex(tmp_path, tiny_llama_dir, pairs_file, capsys):
    out = tmp_path / "sweep"
    rc = main(["modpo", "--output-dir", str(out), f"data={pairs_file}", f"model={tiny_llama_dir}", "objective=null",
               "margin_source=implicit", f"margin_policies=[{tiny_llama_dir}]",
               "sweep_weights=[[1.0, 0.0], [0.7, 0.7]]", *TINY])
    assert rc == 2
    assert "sweep_weights" in capsys.readouterr().err
    assert not out.exists()
