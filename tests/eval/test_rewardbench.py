"""RewardBench / RewardBench 2 evaluation: the aggregation by hand, the readers, bad input, eval-rm end to end, and
the comparison with the `rewardbench` package's own functions."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paretoalign.cli import build_parser, main
from paretoalign.errors import InputError
from paretoalign.eval import rewardbench as rb
from paretoalign.eval.rewardbench import BenchRow
from tests.cli.conftest import forbid_calls

pytestmark = pytest.mark.usefixtures("one_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "rewardbench"
V1 = FIXTURES / "rewardbench_v1.jsonl"
V2 = FIXTURES / "rewardbench_v2.jsonl"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CHECK = REPO_ROOT / "benchmarks" / "check_rewardbench_agg.py"


def row(subset: str, chosen=("a",), rejected=("b",), row_id: str | None = None) -> BenchRow:
    return BenchRow(f"t.jsonl:{row_id}", "q", tuple(chosen), tuple(rejected), subset, row_id)


# ---------------------------------------------------------------- aggregation, by hand
def test_a_v1_pair_is_correct_only_when_chosen_scores_strictly_higher():
    assert rb.pair_outcomes([2.0, 1.0, 1.0], [1.0, 1.0, 2.0]).tolist() == [1.0, 0.0, 0.0]


def test_sections_weight_subsets_by_rewardbench_example_counts():
    # alpacaeval-easy counts 100, mt-bench-easy 28: (1 * 100 + 0 * 28) / 128
    s = rb.section_scores({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.0})
    assert s["Chat"] == pytest.approx(100 / 128)
    assert s["Chat Hard"] is None and s["Safety"] is None and s["Reasoning"] is None


def test_reasoning_weighs_math_prm_as_much_as_the_six_code_subsets():
    # math-prm counts 984 = 6 x 164: with all seven subsets, Reasoning = (math + mean(code)) / 2
    code = {f"hep-{lang}": acc for lang, acc in zip(["cpp", "go", "java", "js", "python", "rust"],
                                                    [1.0, 0.5, 1.0, 0.0, 1.0, 0.5], strict=True)}
    assert rb.section_scores({"math-prm": 0.2, **code})["Reasoning"] == pytest.approx((0.2 + 4.0 / 6) / 2)
    # with one code subset only: (0.2 * 984 + 1.0 * 164) / 1148, math dominating
    assert rb.section_scores({"math-prm": 0.2, "hep-cpp": 1.0})["Reasoning"] == pytest.approx(
        (0.2 * 984 + 164) / 1148)


def test_v1_report_by_hand():
    rows = [row("llmbar-natural"), row("llmbar-natural"), row("refusals-dangerous"), row("my-own")]
    scores = [[2.0, 1.0], [1.0, 1.0], [0.5, -3.0], [0.0, 1.0]]  # correct, tie (wrong), correct, wrong
    report = rb.rewardbench_report(rows, [np.array(s) for s in scores])
    by_name = {s.name: s for s in report.subsets}
    assert (by_name["llmbar-natural"].n, by_name["llmbar-natural"].score) == (2, 0.5)
    assert by_name["refusals-dangerous"].score == 1.0 and by_name["my-own"].score == 0.0
    assert report.sections == {"Chat": None, "Chat Hard": 0.5, "Safety": 1.0, "Reasoning": None}
    assert report.overall == pytest.approx(0.75) and report.overall_of == ["Chat Hard", "Safety"]
    assert not report.overall_complete and report.excluded == ["my-own"]
    d = report.to_dict()
    assert d["subsets"]["my-own"] == {"n": 1, "metric": "accuracy", "accuracy": 0.0, "section": None}
    table = report.format_table()
    assert "(in no section)" in table and "partial" in table and "my-own" in table
    json.dumps(d, allow_nan=False)


def test_best_of_n_splits_a_shared_top_score():
    assert rb.best_of_n_outcome(3.0, [1.0, 2.0, 0.0]) == 1.0
    assert rb.best_of_n_outcome(3.0, [3.0, 1.0, 0.0]) == 0.5
    assert rb.best_of_n_outcome(3.0, [3.0, 3.0, 1.0]) == pytest.approx(1 / 3)
    assert rb.best_of_n_outcome(1.0, [3.0, 0.0]) == 0.0


def test_ties_score_by_hand():
    prompts = {
        ("ref", 0): ([5.0], [1.0, 2.0]),        # accurate, margin 3
        ("tied", 0): ([4.0, 3.0], [1.0]),       # accurate, margin 2, spread 1
        ("ref", 1): ([1.0], [2.0]),             # wrong, margin -1
        ("tied", 1): ([6.0, 2.0], [3.0]),       # wrong, margin -1, spread 4
    }
    r = rb.ties_score(prompts)
    assert (r.tied_accuracy, r.ref_accuracy) == (0.5, 0.5)
    assert r.correctness_preferred == 0.5       # n=0: 2 > 1; n=1: -1 > 4 is false
    assert r.correctness_preferred_hard == 0.5  # n=0: min(3, 2) > 1; n=1: min(-1, -1) > 4 is false
    margin = (math.tanh(2 / 1 - 1) + math.tanh(-1 / 4 - 1)) / 2
    assert r.margin_score == pytest.approx(margin)
    assert r.score == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin)
    assert (r.n_ref, r.n_tied, r.n_paired) == (2, 2, 2)


def test_ties_unpaired_prompts_count_in_accuracy_only_and_zero_spread_follows_upstream():
    prompts = {("ref", 0): ([3.0], [0.0]), ("tied", 0): ([2.0, 2.0], [1.0]),  # spread 0, hard margin 1: +1
               ("ref", 7): ([0.0], [1.0])}                                    # unpaired, wrong
    r = rb.ties_score(prompts)
    assert r.ref_accuracy == 0.5 and r.tied_accuracy == 1.0 and r.n_paired == 1
    assert (r.correctness_preferred, r.correctness_preferred_hard, r.margin_score) == (1.0, 1.0, 1.0)
    level = rb.ties_score({("ref", 0): ([1.0], [1.0]), ("tied", 0): ([2.0, 2.0], [1.0])})  # 0 / 0 -> 0
    assert level.margin_score == 0.0 and level.ref_accuracy == 0.0
    with pytest.raises(ValueError, match="both a ref and a tied"):
        rb.ties_score({("ref", 0): ([1.0], [0.0]), ("tied", 1): ([2.0, 1.0], [0.0])})


def test_v2_report_by_hand():
    rows = [row("Focus", rejected="bcd", row_id="0"), row("Focus", rejected="bcd", row_id="1"),
            row("Custom", rejected="b", row_id="2"),
            row("Ties", chosen="a", rejected="bc", row_id="ref:0"),
            row("Ties", chosen="ab", rejected="c", row_id="tied:0")]
    scores = [[4, 1, 2, 3], [3, 3, 0, 0], [1, 0], [5, 1, 2], [4, 3, 1]]
    report = rb.rewardbench2_report(rows, [np.array(s, dtype=float) for s in scores])
    by_name = {s.name: s for s in report.subsets}
    assert by_name["Focus"].score == pytest.approx((1 + 0.5) / 2)
    ties = rb.ties_score({("ref", 0): ([5.0], [1.0, 2.0]), ("tied", 0): ([4.0, 3.0], [1.0])})
    assert by_name["Ties"].score == pytest.approx(ties.score) and by_name["Ties"].metric == "ties"
    assert report.overall == pytest.approx((0.75 + ties.score) / 2)  # Custom is not one of the six
    assert report.excluded == ["Custom"] and not report.overall_complete
    d = report.to_dict()
    assert d["subsets"]["Ties"]["components"]["n_paired"] == 1 and d["subsets"]["Custom"]["in_overall"] is False
    assert "sections" not in d and "not in overall" in report.format_table()


def test_aggregation_refuses_mismatched_scores():
    with pytest.raises(ValueError, match="2 scores for 3 replies"):
        rb.rewardbench2_report([row("Focus", rejected="bc", row_id="0")], [np.array([1.0, 2.0])])


def test_score_rows_makes_one_score_call_and_splits_its_scores_per_row():
    calls = []

    class FakeModel:
        def score(self, prompts, responses, *, weights=None, batch_size=None, progress=False):
            calls.append((list(prompts), list(responses), weights, batch_size, progress))
            return type("Out", (), {"score": np.arange(len(responses), dtype=np.float32)})()

    rows = [BenchRow("f:1", "p1", ("c1",), ("r1", "r2"), "Focus"), BenchRow("f:2", "p2", ("c2",), ("r3",), "X")]
    out = rb.score_rows(FakeModel(), rows, weights={"helpfulness": 1.0}, batch_size=3, progress=True)
    assert [s.tolist() for s in out] == [[0.0, 1.0, 2.0], [3.0, 4.0]]
    assert calls == [(["p1", "p1", "p1", "p2", "p2"], ["c1", "r1", "r2", "c2", "r3"], {"helpfulness": 1.0}, 3,
                      True)]


# ---------------------------------------------------------------- readers and fixtures
def test_the_fixtures_read_with_rewardbench_subset_names():
    v1 = rb.load_bench_rows(str(V1), "rewardbench")
    assert 20 <= len(v1) <= 40 and all(len(r.chosen) == len(r.rejected) == 1 for r in v1)
    names = {r.subset for r in v1}
    assert names - set(rb.SECTION_OF) == {"anthropic_hhh"} and {"llmbar-natural", "donotanswer"} <= names
    assert v1[0].location == f"{V1}:1"
    v2 = rb.load_bench_rows(str(V2), "rewardbench2")
    assert 20 <= len(v2) <= 40 and {r.subset for r in v2} <= set(rb.RB2_SUBSETS)
    focus = [r for r in v2 if r.subset == "Focus"]
    assert focus and all(len(r.rejected) == 3 for r in focus)
    ties = {r.id for r in v2 if r.subset == "Ties"}
    assert {"ref:0", "tied:0"} <= ties


def test_a_json_list_reads_like_json_lines(tmp_path):
    lines = [json.loads(line) for line in V1.read_text(encoding="utf-8").splitlines()]
    (tmp_path / "v1.json").write_text(json.dumps(lines), encoding="utf-8")
    from_json = rb.load_bench_rows(str(tmp_path / "v1.json"), "rewardbench")
    from_jsonl = rb.load_bench_rows(str(V1), "rewardbench")
    strip = [(r.prompt, r.chosen, r.rejected, r.subset, r.id) for r in from_json]
    assert strip == [(r.prompt, r.chosen, r.rejected, r.subset, r.id) for r in from_jsonl]
    assert from_json[4].location == f"{tmp_path / 'v1.json'}:5"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared data folder is not beside the repo")
def test_the_fixture_script_rebuilds_the_fixtures_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_rewardbench_fixtures.py"), "--shared",
                    str(SHARED_DATA), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("rewardbench_v1.jsonl", "rewardbench_v2.jsonl"):
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name


def test_the_cli_format_choices_are_the_modules():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    eval_rm = sub.choices["eval-rm"]
    action = next(a for a in eval_rm._actions if a.dest == "format")
    assert tuple(action.choices) == rb.FORMATS and action.default == "pairs"


# ---------------------------------------------------------------- a tiny reward model
@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory, tiny_llama_dir) -> Path:
    """A saved RewardModel with random heads on the tiny Llama (no training: only the wiring is under test)."""
    from tests.test_trust import make_reward_model

    return make_reward_model(tmp_path_factory.mktemp("rb_rm") / "rm", tiny_llama_dir, stored_trust=False)


# ---------------------------------------------------------------- bad input
V1_ROW = {"id": 1, "prompt": "q", "chosen": "good", "rejected": "bad", "subset": "llmbar-natural"}
V2_ROW = {"id": "1", "prompt": "q", "chosen": ["good"], "rejected": ["bad", "worse"], "subset": "Focus"}
TIES_OK = [{"id": "ref:0", "prompt": "q", "chosen": ["a"], "rejected": ["b"], "subset": "Ties"},
           {"id": "tied:0", "prompt": "q", "chosen": ["a", "c"], "rejected": ["b"], "subset": "Ties"}]


def lines(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD = [  # id, --format, file name, file text, needles in the message
    ("v1-missing-subset", "rewardbench", "rb.jsonl", lines(V1_ROW, V1_ROW, without(V1_ROW, "subset")),
     ["rb.jsonl:3", "field 'subset'", "missing"]),
    ("v1-json-list-missing-subset", "rewardbench", "rb.json", json.dumps([V1_ROW, without(V1_ROW, "subset")]),
     ["rb.json:2", "field 'subset'"]),
    ("v1-chosen-list", "rewardbench", "rb.jsonl", lines({**V1_ROW, "chosen": ["x"]}),
     ["rb.jsonl:1", "field 'chosen'", "rewardbench2"]),
    ("v1-prompt-messages", "rewardbench", "rb.jsonl", lines({**V1_ROW, "prompt": [{"role": "user", "content": "q"}]}),
     ["rb.jsonl:1", "field 'prompt'", "single-turn"]),
    ("v1-rejected-number", "rewardbench", "rb.jsonl", lines(V1_ROW, {**V1_ROW, "rejected": 3}),
     ["rb.jsonl:2", "field 'rejected'"]),
    ("v1-subset-number", "rewardbench", "rb.jsonl", lines({**V1_ROW, "subset": 4}), ["rb.jsonl:1", "field 'subset'"]),
    ("v1-id-object", "rewardbench", "rb.jsonl", lines({**V1_ROW, "id": {"a": 1}}), ["rb.jsonl:1", "field 'id'"]),
    ("v1-malformed-line", "rewardbench", "rb.jsonl", lines(V1_ROW) + "{not json\n", ["rb.jsonl:2", "malformed"]),
    ("v1-empty-file", "rewardbench", "rb.jsonl", "", ["rb.jsonl", "no rows"]),
    ("v2-empty-chosen", "rewardbench2", "rb2.jsonl", lines(V2_ROW, {**V2_ROW, "chosen": []}),
     ["rb2.jsonl:2", "field 'chosen'", "empty list"]),
    ("v2-chosen-string", "rewardbench2", "rb2.jsonl", lines({**V2_ROW, "chosen": "good"}),
     ["rb2.jsonl:1", "field 'chosen'", "list of strings"]),
    ("v2-rejected-item-number", "rewardbench2", "rb2.jsonl", lines({**V2_ROW, "rejected": ["x", 2]}),
     ["rb2.jsonl:1", "field 'rejected'", "item 1"]),
    ("v2-missing-subset", "rewardbench2", "rb2.jsonl", lines(without(V2_ROW, "subset")),
     ["rb2.jsonl:1", "field 'subset'"]),
    ("v2-two-chosen-outside-ties", "rewardbench2", "rb2.jsonl", lines({**V2_ROW, "chosen": ["a", "b"]}),
     ["rb2.jsonl:1", "field 'chosen'", "exactly one"]),
    ("v2-num-correct-mismatch", "rewardbench2", "rb2.jsonl", lines({**V2_ROW, "num_correct": 2}),
     ["rb2.jsonl:1", "field 'num_correct'"]),
    ("v2-ties-bad-id", "rewardbench2", "rb2.jsonl", lines(*TIES_OK, {**TIES_OK[0], "id": "7"}),
     ["rb2.jsonl:3", "field 'id'", "ref:<n>"]),
    ("v2-ties-one-correct-tied", "rewardbench2", "rb2.jsonl", lines(TIES_OK[0], {**TIES_OK[1], "chosen": ["a"]}),
     ["rb2.jsonl:2", "field 'chosen'", "two or more"]),
    ("v2-ties-duplicate-id", "rewardbench2", "rb2.jsonl", lines(*TIES_OK, TIES_OK[1]),
     ["rb2.jsonl:3", "field 'id'", "duplicate"]),
    ("v2-ties-unpaired", "rewardbench2", "rb2.jsonl", lines(TIES_OK[0], {**TIES_OK[1], "id": "tied:1"}),
     ["rb2.jsonl:1", "field 'id'", "both"]),
]


@pytest.mark.parametrize(("fmt", "name", "text", "needles"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_rows_fail_naming_file_line_and_field_before_the_model_loads(fmt, name, text, needles, tiny_rm,
                                                                        tmp_path, monkeypatch, capsys):
    import paretoalign.rewards.reward_model as reward_model

    (tmp_path / name).write_text(text, encoding="utf-8")
    calls = forbid_calls(monkeypatch, [(reward_model.RewardModel, "from_pretrained")], "bad rows load no model")
    out_file = tmp_path / "report.json"
    rc = main(["eval-rm", "--format", fmt, "--model", str(tiny_rm), "--data", str(tmp_path / name), "--output",
               str(out_file), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err + out and len([x for x in err.splitlines() if x.strip()]) == 1, err
    assert err.startswith("error:")
    for needle in needles:
        assert needle in err, (needle, err)
    assert str(tmp_path) in err  # the full path of the file
    assert not out_file.exists() and calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left either


def test_the_loader_raises_one_input_error_with_path_line_and_field(tmp_path):
    (tmp_path / "rb.jsonl").write_text(lines(V1_ROW, without(V1_ROW, "subset")), encoding="utf-8")
    with pytest.raises(InputError) as info:
        rb.load_bench_rows(str(tmp_path / "rb.jsonl"), "rewardbench")
    assert (info.value.path, info.value.line, info.value.field) == (str(tmp_path / "rb.jsonl"), 2, "subset")


def test_ties_rows_pair_up_across_files_and_their_ids_stay_distinct(tmp_path):
    (tmp_path / "a.jsonl").write_text(lines(TIES_OK[0], V2_ROW), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(lines(TIES_OK[1]), encoding="utf-8")
    rows = rb.load_bench_files([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], "rewardbench2")
    assert [r.id for r in rows] == ["ref:0", "1", "tied:0"]
    with pytest.raises(InputError, match="both"):  # alone, a.jsonl has no pair
        rb.load_bench_rows(str(tmp_path / "a.jsonl"), "rewardbench2")
    (tmp_path / "c.jsonl").write_text(lines(TIES_OK[1]), encoding="utf-8")
    with pytest.raises(InputError) as info:
        rb.load_bench_files([str(tmp_path / n) for n in ("a.jsonl", "b.jsonl", "c.jsonl")], "rewardbench2")
    assert (info.value.path, info.value.line, info.value.field) == (str(tmp_path / "c.jsonl"), 1, "id")


def test_an_unknown_format_is_an_argparse_error(tiny_rm, tmp_path, capsys):
    (tmp_path / "rb.jsonl").write_text(lines(V1_ROW), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["eval-rm", "--format", "rewardbench3", "--model", str(tiny_rm), "--data", str(tmp_path / "rb.jsonl"),
              "--output", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--format" in err and "invalid choice" in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("flag", [["--shared-heldout", "."], ["--drop-empty"], ["--max-pairs-per-dataset", "3"]])
def test_pairs_only_flags_are_refused_with_the_rewardbench_formats(flag, tiny_rm, tmp_path, capsys):
    (tmp_path / "rb.jsonl").write_text(lines(V1_ROW), encoding="utf-8")
    rc = main(["eval-rm", "--format", "rewardbench", "--model", str(tiny_rm), "--data", str(tmp_path / "rb.jsonl"),
               *flag, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and flag[0] in err and "--format pairs" in err


# ---------------------------------------------------------------- end to end
@pytest.mark.filterwarnings("ignore::paretoalign.embed.backbone.TruncationWarning")  # the tiny RM reads 64 tokens
@pytest.mark.parametrize(("fmt", "data"), [("rewardbench", V1), ("rewardbench2", V2)])
def test_eval_rm_rewardbench_end_to_end_matches_the_pure_aggregation(fmt, data, tiny_rm, tmp_path, capsys):
    from paretoalign.rewards.reward_model import RewardModel

    out_file = tmp_path / "report.json"
    rc = main(["eval-rm", "--format", fmt, "--model", str(tiny_rm), "--data", str(data), "--output", str(out_file),
               "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out_file.read_text(encoding="utf-8"))
    rows = rb.load_bench_rows(str(data), fmt)
    assert report["format"] == fmt and sum(s["n"] for s in report["subsets"].values()) == len(rows)
    assert report["meta"]["n_replies"] == sum(len(r.replies) for r in rows)
    # the same rows scored directly and aggregated by the pure functions give the same numbers
    scores = rb.score_rows(RewardModel.from_pretrained(tiny_rm), rows)
    build = rb.rewardbench_report if fmt == "rewardbench" else rb.rewardbench2_report
    expected = build(rows, scores).to_dict()
    assert list(report["subsets"]) == list(expected["subsets"])
    for name, entry in expected["subsets"].items():  # approx: the CLI may score with another thread count
        got = report["subsets"][name]
        assert (got["n"], got["metric"]) == (entry["n"], entry["metric"])
        key = "accuracy" if entry["metric"] == "accuracy" else "score"
        assert got[key] == pytest.approx(entry[key], abs=1e-6), name
    assert report["overall"] == pytest.approx(expected["overall"], abs=1e-6)
    assert report["excluded_subsets"] == expected["excluded_subsets"]
    if fmt == "rewardbench":
        assert report["sections"]["Reasoning"] is None and report["excluded_subsets"] == ["anthropic_hhh"]
        for name, value in expected["sections"].items():
            assert report["sections"][name] == (None if value is None else pytest.approx(value, abs=1e-6))
        assert all(name in out for name in ("Chat Hard", "Safety", "overall", "anthropic_hhh"))
    else:
        assert report["subsets"]["Ties"]["metric"] == "ties" and report["overall_of"] == [
            "Focus", "Precise IF", "Safety", "Factuality", "Ties"]
        assert "Ties" in out and "ties rule" in out
    assert not report["overall_complete"] and "partial" in out
    assert f"wrote {out_file}" in err


# ---------------------------------------------------------------- the rewardbench package
@pytest.mark.skipif(importlib.util.find_spec("rewardbench") is None,
                    reason="rewardbench is not installed (benchmarks/requirements-rewardbench.txt)")
def test_our_aggregation_equals_the_rewardbench_packages(monkeypatch):
    # find_spec, not importorskip: `import rewardbench` itself fails without its heavy dependencies (fastchat), so
    # the check script loads the package's constants and aggregation functions from its files instead.
    spec = importlib.util.spec_from_file_location("check_rewardbench_agg", CHECK)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    ref = check.reference()
    results = check.run_all(ref)  # asserts ours == theirs for every subset, section and overall score
    assert len(results) == 4
    v1_all = results["v1 synthetic, all 23 subsets + 2 prior sets (seed 1)"]
    assert {q for q, _, _ in v1_all} >= {"section Reasoning", "section Chat", "overall"}
    assert all(o is not None and t is not None for q, o, t in v1_all if q.startswith("section"))
    ties = [line for line in results["v2 synthetic, 6 subsets + 1 unknown, unpaired Ties prompts (seed 3)"]
            if line[0] == "subset Ties"]
    assert ties and 0 < ties[0][1] < 1
    # the comparison can fail: unweighted sections, or no 1/k split of a shared top score, are caught
    def unweighted(accuracies):
        return {name: float(np.mean([accuracies[s] for s in subsets if s in accuracies]))
                if any(s in accuracies for s in subsets) else None for name, subsets in rb.SECTIONS.items()}

    with monkeypatch.context() as m:
        m.setattr(rb, "section_scores", unweighted)
        with pytest.raises(AssertionError):
            check.compare_v1(*check.synthetic_v1(1), ref)
    with monkeypatch.context() as m:
        m.setattr(rb, "best_of_n_outcome", lambda c, r: float(c > max(r)))
        with pytest.raises(AssertionError):
            check.compare_v2(*check.synthetic_v2(3), ref)
