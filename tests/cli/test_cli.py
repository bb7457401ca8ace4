import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from paretoalign.cli import main
from paretoalign.data.schema import PreferencePair  # noqa: F401  (schema import keeps the layer order explicit)
from tests.cli.conftest import WORDS, toy_pairs, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

@pytest.mark.parametrize("command", ["train-rm", "score", "eval-rm", "export-hf", "demo", "bon", "calibrate",
                                     "train-genarm", "guided"])
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_train_rm_writes_model_directory(trained_dir):
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["objective_names"] == ["harmlessness", "helpfulness", "verbosity"]
    assert (trained_dir / "model.safetensors").is_file()


def test_score_keeps_fields_and_order(trained_dir, tmp_path):
    rows = [{"id": f"x{i}", "prompt": "question about bread", "response": " ".join(WORDS[: i + 1]), "extra": i}
            for i in range(6)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--quiet"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    assert all(r["extra"] == i for i, r in enumerate(out))
    assert set(out[0]["objectives"]) == {"harmlessness", "helpfulness", "verbosity"}
    assert abs(sum(out[0]["gating"].values()) - 1.0) < 1e-5
    assert isinstance(out[0]["score"], float)


def test_score_pairs_get_both_scores(trained_dir, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", toy_pairs(3))
    assert main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--quiet"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {"chosen_score", "rejected_score", "chosen_objectives", "rejected_objectives", "gating"} <= set(out[0])


def test_score_with_weights_equals_weighted_objectives(trained_dir, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "clear steps"}])
    assert main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl"), "--weights", "helpfulness=1,verbosity=-0.5", "--quiet"]) == 0
    row = json.loads((tmp_path / "out.jsonl").read_text())
    expected = row["objectives"]["helpfulness"] - 0.5 * row["objectives"]["verbosity"]
    assert abs(row["score"] - expected) < 1e-5


def test_unknown_weight_fails_without_output(trained_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "r"}])
    rc = main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
               str(tmp_path / "out.jsonl"), "--weights", "helpfulnes=1"])
    assert rc != 0
    assert "--weights" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_malformed_line_names_file_and_line(trained_dir, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"prompt": "q", "response": "r"}\n{"prompt": "q", "respo\n')
    rc = main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
               str(tmp_path / "out.jsonl")])
    assert rc != 0
    assert f"{tmp_path / 'in.jsonl'}:2" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_field_is_named(trained_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "r"}, {"prompt": "q"}])
    rc = main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
               str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err
    assert rc != 0 and ":2" in err and "response" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_empty_response_is_refused(trained_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "   "}])
    rc = main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
               str(tmp_path / "out.jsonl")])
    assert rc != 0 and "response" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_model_from_another_version_is_refused(trained_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["format_version"] = 99
    (other / "config.json").write_text(json.dumps(config))
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "r"}])
    rc = main(["score", "--model", str(other), "--input", str(tmp_path / "in.jsonl"), "--output",
               str(tmp_path / "out.jsonl")])
    assert rc != 0 and "version" in capsys.readouterr().err


def test_export_hf_matches_score_with_same_weights(trained_dir, tmp_path):
    rows = [{"prompt": "question about bread", "response": " ".join(WORDS[: i + 2])} for i in range(4)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    weights = "helpfulness=1,harmlessness=0.5,verbosity=-0.3"
    assert main(["score", "--model", str(trained_dir), "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl"), "--weights", weights, "--quiet"]) == 0
    assert main(["export-hf", "--model", str(trained_dir), "--weights", weights, "--output-dir",
                 str(tmp_path / "hf")]) == 0
    ours = [json.loads(line)["score"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    theirs = []
    for r in rows:
        conv = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        text = tok.apply_chat_template(conv, tokenize=False)
        with torch.no_grad():
            theirs.append(clf(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item())
    assert np.max(np.abs(np.array(ours) - np.array(theirs))) < 1e-4


def test_eval_rm_prints_table_and_writes_json(trained_dir, tmp_path, capsys):
    write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(12))
    rc = main(["eval-rm", "--model", str(trained_dir), "--data", str(tmp_path / "pairs.jsonl"), "--output",
               str(tmp_path / "report.json"), "--bootstrap", "50", "--quiet"])
    assert rc == 0
    assert "pairs" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report
