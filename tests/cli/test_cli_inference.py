import json

import numpy as np
import pytest

from paretoalign.cli import main
from paretoalign.inference.calibration import CalibrationTable
from tests.cli.conftest import toy_pairs, write_jsonl

# The tiny random policy rarely samples EOS; common characters as stop strings end its responses.
STOPS = ["--stop", "e", "--stop", "a", "--stop", "o"]
PROMPTS = [{"id": "p1", "prompt": "How do I bake bread?", "topic": "food"},
           {"id": "p2", "prompt": [{"role": "user", "content": "Capital of France?"}], "topic": "geo"},
           {"id": "p3", "prompt": "\n\nHuman: hello there\n\nAssistant: hi\n\nHuman: explain why", "topic": "chat"}]


def run_bon(trained_dir, tiny_llama_dir, tmp_path, *extra):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "out.jsonl"
    rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(trained_dir), "--prompts", str(prompts),
               "--output", str(out), "--max-new-tokens", "12", "--quiet", *STOPS, *extra])
    return rc, out


def test_bon_rows_follow_the_output_contract(trained_dir, tiny_llama_dir, tmp_path):
    rc, out = run_bon(trained_dir, tiny_llama_dir, tmp_path, "--n", "5", "--weights", "helpfulness=1,verbosity=-0.3")
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"] and [r["topic"] for r in rows] == ["food", "geo", "chat"]
    for row in rows:
        assert len(row["candidates"]) == 5
        finished = [i for i, c in enumerate(row["candidates"]) if c["finished"]]
        assert finished
        scores = [row["candidates"][i]["score"] for i in finished]
        assert row["selected"] == finished[int(np.argmax(scores))]
        assert row["response"] == row["candidates"][row["selected"]]["response"]
        for c in row["candidates"]:
            assert set(c["objectives"]) == {"harmlessness", "helpfulness", "verbosity"}
            weighted = c["objectives"]["helpfulness"] - 0.3 * c["objectives"]["verbosity"]
            assert c["score"] == pytest.approx(weighted, rel=1e-6, abs=1e-9)
            assert c["rejected_at"] is None and c["tokens"] >= 1
        assert row["stats"]["n"] == 5 and row["stats"]["rm_calls"] == 5
        assert row["stats"]["kl_bound"] == pytest.approx(np.log(5) - 4 / 5)


def test_worst_of_n_picks_the_lowest_finished_score(trained_dir, tiny_llama_dir, tmp_path):
    rc, out = run_bon(trained_dir, tiny_llama_dir, tmp_path, "--n", "5", "--select", "worst")
    assert rc == 0
    for row in map(json.loads, out.read_text().splitlines()):
        done = [c["score"] for c in row["candidates"] if c["finished"]]
        assert row["candidates"][row["selected"]]["score"] == min(done)


def test_speculative_method_reports_rejections(trained_dir, tiny_llama_dir, tmp_path):
    rc, out = run_bon(trained_dir, tiny_llama_dir, tmp_path, "--n", "8", "--method", "speculative",
                      "--rejection-rate", "0.5", "--decision-tokens", "1,2")
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["stats"]["method"] == "speculative" for r in rows)
    assert any(c["rejected_at"] is not None for r in rows for c in r["candidates"])
    for r in rows:
        if r["selected"] is not None:
            assert r["candidates"][r["selected"]]["finished"]


def test_calibrate_saves_reference_rewards_per_prompt(trained_dir, tiny_llama_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "calibration.jsonl"
    rc = main(["calibrate", "--policy", str(tiny_llama_dir), "--rm", str(trained_dir), "--prompts", str(prompts),
               "--m", "6", "--output", str(out), "--max-new-tokens", "6", "--quiet"])
    assert rc == 0
    table = CalibrationTable.load(out)
    assert list(table) == ["p1", "p2", "p3"] and table.m == 6
    refs = table.reference_rewards("p1")
    assert np.all(np.diff(np.sort(refs)) >= 0) and refs.size == 6
    c = table.calibrate("p1", [refs.min() - 1.0, refs.max() + 1.0])
    assert c.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("extra, rows, message", [
    (["--n", "0"], PROMPTS, "--n: must be an integer >= 1"),  # argparse: exit 2 before any work
    (["--n", "2", "--method", "speculative", "--rejection-rate", "1.0"], PROMPTS, "rejection rate"),
    (["--n", "2", "--weights", "kindness=1"], PROMPTS, "unknown objective"),
    (["--n", "2"], [], "no rows"),
    (["--n", "2"], [{"id": "a", "prompt": "fine"}, {"id": "b", "text": "no prompt"}], "prompts.jsonl:2"),
    (["--n", "2"], [{"prompt": "word " * 600}], "context"),
])
def test_bad_input_fails_with_a_clear_error_and_no_output(trained_dir, tiny_llama_dir, tmp_path, capsys, extra, rows,
                                                          message):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "out.jsonl"
    try:
        rc = main(["bon", "--policy", str(tiny_llama_dir), "--rm", str(trained_dir), "--prompts", str(prompts),
                   "--output", str(out), "--max-new-tokens", "4", "--quiet", *extra])
    except SystemExit as exc:  # a bad flag value, refused by argparse
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_train_genarm_then_guided_decoding(tiny_llama_dir, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(8))
    arm = tmp_path / "arm"
    rc = main(["train-genarm", "--pairs", str(pairs), "--output-dir", str(arm), f"model={tiny_llama_dir}",
               "max_steps=2", "batch_size=4", "progress=false"])
    assert rc == 0 and (arm / "model.safetensors").is_file()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:2])
    out = tmp_path / "guided.jsonl"
    rc = main(["guided", "--policy", str(tiny_llama_dir), "--reward-lm", f"{arm}=0.5", "--prompts", str(prompts),
               "--n", "2", "--beta", "0.5", "--max-new-tokens", "5", "--output", str(out), "--quiet"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2"]
    assert all(len(r["candidates"]) == 2 and 1 <= r["candidates"][0]["tokens"] <= 5 for r in rows)


def test_guided_refuses_a_bad_reward_lm_spec(tiny_llama_dir, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:1])
    rc = main(["guided", "--policy", str(tiny_llama_dir), "--reward-lm", f"{tiny_llama_dir}=heavy", "--prompts",
               str(prompts), "--output", str(tmp_path / "o.jsonl")])
    assert rc == 2 and "DIR=WEIGHT" in capsys.readouterr().err
