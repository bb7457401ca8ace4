import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from paretoalign.cli import main
from paretoalign.inference.statistics import bon_kl_bound
from tests.cli.conftest import write_jsonl

PROMPTS = [{"id": "p1", "prompt": "How do I bake bread?"},
           {"id": "p2", "prompt": [{"role": "user", "content": "Capital of France?"}]},
           {"id": "p3", "prompt": "hello there, explain why"}]


@pytest.fixture(scope="module")
def perturbed_dir(tmp_path_factory, tiny_llama_dir):
    """A second 'run': the tiny Llama with noise added to its output layer."""
    out = tmp_path_factory.mktemp("perturbed") / "run"
    shutil.copytree(tiny_llama_dir, out)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
    model.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finishing_dir(tmp_path_factory, tiny_llama_dir):
    """The tiny Llama with every other token id an EOS (its generation config), so most samples finish within a
    few tokens and Best-of-N (finished samples only, like `paretoalign bon`) has a pick for every prompt."""
    out = tmp_path_factory.mktemp("finishing") / "run"
    shutil.copytree(tiny_llama_dir, out)
    config = json.loads((out / "generation_config.json").read_text()) if (out / "generation_config.json").exists() \
        else {}
    vocab = json.loads((out / "config.json").read_text())["vocab_size"]
    config["eos_token_id"] = list(range(0, vocab, 2))
    (out / "generation_config.json").write_text(json.dumps(config))
    return out


def front_args(trained_dir, tiny_llama_dir, tmp_path, runs, *extra):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    return ["front", "--runs", *map(str, runs), "--reference", str(tiny_llama_dir), "--reward-model",
            str(trained_dir), "--prompts", str(prompts), "--output", str(tmp_path / "report"),
            "--samples-per-prompt", "2", "--max-new-tokens", "6", *extra]


def test_front_end_to_end(trained_dir, finishing_dir, perturbed_dir, tmp_path, capsys):
    args = front_args(trained_dir, finishing_dir, tmp_path, [finishing_dir, perturbed_dir], "--names", "base",
                      "noisy", "--bon", "2,4", "--weights", "helpfulness=1,verbosity=-0.5")
    assert main(args) == 0
    report = tmp_path / "report"
    table = json.loads((report / "front.json").read_text())
    points = {p["name"]: p for p in table["points"]}
    assert list(points) == ["reference", "best-of-2", "best-of-4", "base", "noisy"]
    assert points["base"]["kl"] == 0.0  # the reference itself, saved as a run
    assert points["noisy"]["kl"] > 0.0 and not points["noisy"]["kl_is_bound"]
    assert points["best-of-4"]["kl"] == pytest.approx(bon_kl_bound(4)) and points["best-of-4"]["kl_is_bound"]
    assert points["best-of-2"]["answered_fraction"] == points["best-of-4"]["answered_fraction"] == 1.0
    assert points["best-of-4"]["reward"] >= points["best-of-2"]["reward"]
    for p in points.values():
        assert set(p["objectives"]) == {"helpfulness", "harmlessness", "verbosity"}
        assert p["num_prompts"] == 3
    assert points["noisy"]["source"] == str(perturbed_dir) and points["noisy"]["num_samples"] == 6
    meta = table["meta"]
    assert meta["num_prompts"] == 3 and meta["prompts"].endswith("prompts.jsonl")
    assert meta["sampling_params"]["max_new_tokens"] == 6 and meta["weights"] == {"helpfulness": 1.0,
                                                                                    "verbosity": -0.5}
    assert meta["reference"] == str(finishing_dir) and meta["best_of_n"] == [2, 4]
    assert sorted(p.name for p in report.glob("*.png")) == [
        "objective_harmlessness_vs_helpfulness.png", "objective_harmlessness_vs_verbosity.png",
        "objective_helpfulness_vs_verbosity.png", "reward_vs_kl.png"]
    assert "noisy" in (report / "index.html").read_text()
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["name", "kind"] and "noisy" in out and "best-of-4" in out


def test_front_without_best_of_n_on_bundled_prompts(trained_dir, tiny_llama_dir, tmp_path):
    args = ["front", "--runs", str(tiny_llama_dir), "--reference", str(tiny_llama_dir), "--reward-model",
            str(trained_dir), "--output", str(tmp_path / "report"), "--num-prompts", "2", "--samples-per-prompt", "1",
            "--max-new-tokens", "4", "--bon", "", "--objectives", "helpfulness,verbosity"]
    assert main(args) == 0
    table = json.loads((tmp_path / "report" / "front.json").read_text())
    assert [p["kind"] for p in table["points"]] == ["reference", "policy"]
    assert table["meta"]["num_prompts"] == 2 and table["meta"]["prompts"].startswith("bundled default pairs")
    assert [f["name"] for f in table["fronts"]] == ["reward_vs_kl", "objective_helpfulness_vs_verbosity"]


def test_front_with_deal_points(trained_dir, finishing_dir, tmp_path):
    args = front_args(trained_dir, finishing_dir, tmp_path, [finishing_dir], "--names", "base", "--bon", "2",
                      "--deal", "2,2,2,4,2; 1,1,0,0,1")
    no_runs_args = front_args(trained_dir, finishing_dir, tmp_path, [], "--bon", "2", "--deal", "2,2,2,4,2; 1,1,0,0,1")
    no_runs_args[no_runs_args.index("--output") + 1] = str(tmp_path / "no-runs")
    assert main(no_runs_args) == 0  # no --runs: a valid front
    no_runs = json.loads((tmp_path / "no-runs" / "front.json").read_text())
    assert [p["name"] for p in no_runs["points"]] == ["reference", "best-of-2", "deal b2 k2 l2 λ4 m2",
                                                       "deal b1 k1 l0 λ0 m1"]
    assert main(args) == 0
    table = json.loads((tmp_path / "report" / "front.json").read_text())
    points = {p["name"]: p for p in table["points"]}
    assert list(points) == ["reference", "best-of-2", "base", "deal b2 k2 l2 λ4 m2", "deal b1 k1 l0 λ0 m1"]
    for name in ("deal b2 k2 l2 λ4 m2", "deal b1 k1 l0 λ0 m1"):
        p = points[name]
        assert p["kind"] == "deal" and p["num_samples"] == 3 and p["kl"] > 0 and not p["kl_is_bound"]
        assert p["meta"]["tokens_evaluated_per_prompt"] > 0
    # λ = 0: no reward during the search, only the returned answer's
    assert points["deal b1 k1 l0 λ0 m1"]["meta"]["reward_calls_per_prompt"] == 1
    assert points["deal b2 k2 l2 λ4 m2"]["meta"]["reward_calls_per_prompt"] > 1
    assert table["meta"]["deal"] == list(points)[3:]
    assert "deal b2 k2 l2" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.parametrize("change, message", [
    ({"extra": ["--deal", "2,2,4"]}, "beams,top_k,lookahead,lam,reward_every"),
    ({"extra": ["--deal", "2,0,4,1,4"]}, "top_k must be an integer >= 1"),
    ({"extra": ["--deal", "2,2,4,-1,4"]}, "lam must be"),
    ({"extra": ["--deal", "2,2,4,1,4;2,2,4,1.0,4"]}, "repeated DeAL setting"),
    ({"runs": [], "extra": ["--bon", ""]}, "nothing to compare"),
    ({"runs": ["missing"]}, "no such run directory"),
    ({"extra": ["--names", "a", "b", "c"]}, "3 names for 2 runs"),
    ({"extra": ["--weights", "nope=1"]}, "unknown objective"),
    ({"extra": ["--objectives", "helpfulness,nope"]}, "unknown objective"),
    ({"extra": ["--bon", "2,zero"]}, "comma-separated integers"),
    ({"extra": ["--names", "reference", "b"]}, "used by the reference"),
    ({"rm": "no-rm"}, "paretoalign demo"),
])
def test_bad_input_exits_2_and_writes_nothing(trained_dir, tiny_llama_dir, perturbed_dir, tmp_path, capsys, change,
                                              message):
    runs = [tmp_path / r for r in change["runs"]] if "runs" in change else [tiny_llama_dir, perturbed_dir]
    args = front_args(trained_dir, tiny_llama_dir, tmp_path, runs, *change.get("extra", []))
    if "rm" in change:
        args[args.index("--reward-model") + 1] = str(tmp_path / change["rm"])
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
