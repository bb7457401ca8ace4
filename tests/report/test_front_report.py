import base64
import html
import json
import re

import numpy as np
import pytest

from paretoalign.errors import InputError
from paretoalign.eval.pareto import pareto_front
from paretoalign.eval.policy_eval import FrontPoint
from paretoalign.inference.statistics import bon_kl_bound
from paretoalign.report.front_report import choose_objectives, format_front_table, write_front_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def point(name, kind, reward, kl, objectives, n=None, stderr=0.1):
    bound = kind == "best_of_n"
    return FrontPoint(name=name, kind=kind, n=n, reward=reward, reward_stderr=stderr, objectives=objectives, kl=kl,
                      kl_stderr=None if bound or kind == "reference" else stderr, kl_is_bound=bound, num_prompts=4,
                      num_samples=16, finished_fraction=0.75, mean_response_tokens=12.0, source=f"runs/{name}")


def objectives(help_, harm, honest, const=1.0):
    return {"helpfulness": help_, "harmlessness": harm, "honesty": honest, "flat": const}


@pytest.fixture()
def points():
    return [
        point("reference", "reference", 0.0, 0.0, objectives(0.0, 0.0, 0.0)),
        point("best-of-2", "best_of_n", 0.5, bon_kl_bound(2), objectives(0.6, -0.2, 0.1), n=2),
        point("best-of-4", "best_of_n", 0.9, bon_kl_bound(4), objectives(1.0, -0.4, 0.3), n=4),
        point("dpo <b>&", "policy", 1.2, 0.7, objectives(0.2, 1.5, 0.0)),
        point("sft", "policy", 0.4, 1.0, objectives(-0.5, 0.2, 0.9)),
        point("twin", "policy", 0.4, 1.0, objectives(-0.5, 0.2, 0.9)),
    ]


def test_report_writes_every_file(points, tmp_path):
    write_front_report(points, tmp_path / "report", meta={"prompts": "p.jsonl"})
    files = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert files == ["front.json", "index.html", "objective_harmlessness_vs_honesty.png",
                     "objective_helpfulness_vs_harmlessness.png", "objective_helpfulness_vs_honesty.png",
                     "reward_vs_kl.png"]
    for f in files:
        if f.endswith(".png"):
            assert (tmp_path / "report" / f).read_bytes().startswith(PNG_MAGIC)


def test_front_json_flags_match_pareto_front(points, tmp_path):
    returned = write_front_report(points, tmp_path, meta={"num_prompts": 4, "x": np.float64(0.5)})
    table = json.loads((tmp_path / "front.json").read_text())
    assert table == returned
    assert table["meta"] == {"num_prompts": 4, "x": 0.5}
    rows = table["points"]
    assert [r["name"] for r in rows] == [p.name for p in points]
    expected = pareto_front([[p.kl, p.reward] for p in points], [False, True])
    assert [r["on_front"]["reward_vs_kl"] for r in rows] == expected.tolist()
    assert expected.tolist() == [True, True, True, True, False, False]
    pair = pareto_front([[p.objectives["helpfulness"], p.objectives["honesty"]] for p in points], [True, True])
    assert [r["on_front"]["objective_helpfulness_vs_honesty"] for r in rows] == pair.tolist()
    fronts = {f["name"]: f for f in table["fronts"]}
    assert fronts["reward_vs_kl"]["members"] == ["reference", "best-of-2", "best-of-4", "dpo <b>&"]
    assert rows[1]["kl_is_bound"] is True and rows[1]["kl_stderr"] is None


def test_default_objectives_are_the_three_that_vary_most(points):
    assert choose_objectives(points) == ["helpfulness", "harmlessness", "honesty"]  # "flat" never varies


def test_chosen_objectives_give_only_their_pairs(points, tmp_path):
    table = write_front_report(points, tmp_path, objectives_to_plot=["honesty", "flat"])
    assert [f["name"] for f in table["fronts"]] == ["reward_vs_kl", "objective_honesty_vs_flat"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["objective_honesty_vs_flat.png", "reward_vs_kl.png"]


def test_html_is_self_contained_and_escapes_names(points, tmp_path):
    write_front_report(points, tmp_path, title="Trade-off <test>", meta={"reference": "smollm2"})
    page = (tmp_path / "index.html").read_text()
    for p in points:
        assert html.escape(p.name) in page
    assert "dpo <b>&" not in page and "Trade-off &lt;test&gt;" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert base64.b64decode(images[0]) == (tmp_path / "reward_vs_kl.png").read_bytes()
    assert f"≤ {bon_kl_bound(4):.3f} (bound)" in page
    assert "<img" in page and "src=\"http" not in page


def test_text_table_lists_points_and_front_marks(points):
    mask = pareto_front([[p.kl, p.reward] for p in points], [False, True])
    text = format_front_table(points, mask)
    lines = text.splitlines()
    assert len(lines) == 1 + len(points)
    assert lines[3].startswith("best-of-4") and "≤ 0.636 (bound)" in lines[3] and lines[3].endswith("✓")
    assert not lines[5].endswith("✓") and "75%" in lines[5]


@pytest.mark.parametrize("kwargs, message", [
    ({"objectives_to_plot": ["helpfulness", "nope"]}, "unknown objective"),
    ({"objectives_to_plot": ["helpfulness"]}, "at least two"),
])
def test_bad_objectives_write_nothing(points, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_front_report(points, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_repeated_names_are_rejected(points, tmp_path):
    points[-1].name = "sft"
    with pytest.raises(InputError, match="unique"):
        write_front_report(points, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file_is_rejected(points, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        write_front_report(points, tmp_path / "file")


def test_paired_gain_uses_per_prompt_differences():
    from paretoalign.eval.policy_eval import paired_gain

    ref = point("reference", "reference", 0.0, 0.0, objectives(0, 0, 0))
    pol = point("p", "policy", 0.0, 0.1, objectives(0, 0, 0))
    ref.per_prompt_reward = [0.0, 2.0, -1.0, 5.0]
    pol.per_prompt_reward = [0.5, 2.25, -0.75, 5.5]
    gain, se = paired_gain(pol, ref)
    diffs = np.array([0.5, 0.25, 0.25, 0.5])
    assert gain == pytest.approx(diffs.mean())
    assert se == pytest.approx(diffs.std(ddof=1) / 2)
    # far smaller than the unpaired spread of the per-prompt rewards
    assert se < np.std(ref.per_prompt_reward, ddof=1) / 2 / 10


def test_paired_gain_of_one_objective_uses_its_per_prompt_values():
    from paretoalign.eval.policy_eval import paired_gain

    ref = point("reference", "reference", 0.0, 0.0, objectives(0, 0, 0))
    pol = point("p", "policy", 0.0, 0.1, objectives(0, 0, 0))
    ref.per_prompt_reward, pol.per_prompt_reward = [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]
    ref.per_prompt_objectives = {"constraints": [0.5, 0.0, 1.0]}
    pol.per_prompt_objectives = {"constraints": [1.0, 0.5, 1.0]}
    gain, se = paired_gain(pol, ref, "constraints")
    assert gain == pytest.approx(1 / 3)
    assert se == pytest.approx(np.std([0.5, 0.5, 0.0], ddof=1) / np.sqrt(3))
    with pytest.raises(InputError, match="objective 'helpfulness'"):
        paired_gain(pol, ref, "helpfulness")


def test_report_points_keep_each_objective_per_prompt_with_nan_where_best_of_n_has_no_pick(tmp_path):
    from paretoalign.eval.policy_eval import best_of_n_points
    from tests.eval.test_policy_eval import PARAMS, PROMPTS, LengthRM
    from tests.inference.conftest import make_policy

    points = best_of_n_points(make_policy("llama"), LengthRM(), PROMPTS, (4,), params=PARAMS, samples_per_prompt=2)
    for p in points:
        assert set(p.per_prompt_objectives) == set(p.objectives)
        for name, values in p.per_prompt_objectives.items():
            assert len(values) == len(PROMPTS)
            finite = [v for v in values if np.isfinite(v)]
            assert np.mean(finite) == pytest.approx(p.objectives[name], rel=1e-12)
            nan_at = [i for i, v in enumerate(values) if not np.isfinite(v)]
            assert nan_at == [i for i, v in enumerate(p.per_prompt_reward) if not np.isfinite(v)]


def test_paired_gain_refuses_points_from_different_prompts():
    from paretoalign.eval.policy_eval import paired_gain

    ref = point("reference", "reference", 0.0, 0.0, objectives(0, 0, 0))
    pol = point("p", "policy", 0.0, 0.1, objectives(0, 0, 0))
    ref.per_prompt_reward, pol.per_prompt_reward = [1.0, 2.0], [1.0, 2.0, 3.0]
    with pytest.raises(InputError, match="same prompts"):
        paired_gain(pol, ref)


def test_table_shows_the_gain_over_the_reference():
    ref = point("reference", "reference", 1.0, 0.0, objectives(0, 0, 0))
    pol = point("p", "policy", 1.25, 0.1, objectives(0, 0, 0))
    ref.per_prompt_reward, pol.per_prompt_reward = [1.0, 1.0], [1.0, 1.5]
    table = format_front_table([ref, pol])
    assert "gain ± paired s.e." in table
    assert "0.250 ± 0.250" in table.splitlines()[2]


def test_answered_share_is_shown_beside_each_point_and_a_point_without_answers_is_on_no_front(points, tmp_path):
    points[2].answered_fraction = 0.75
    empty = point("best-of-8", "best_of_n", float("nan"), bon_kl_bound(8),
                  objectives(float("nan"), float("nan"), float("nan"), float("nan")), n=8)
    empty.answered_fraction, empty.mean_response_tokens = 0.0, float("nan")
    points.append(empty)
    table = write_front_report(points, tmp_path / "report")
    rows = {r["name"]: r for r in table["points"]}
    assert rows["best-of-4"]["answered_fraction"] == 0.75 and rows["sft"]["answered_fraction"] == 1.0
    assert rows["best-of-8"]["reward"] is None and not any(rows["best-of-8"]["on_front"].values())
    assert rows["best-of-4"]["on_front"]["reward_vs_kl"]
    lines = format_front_table(points).splitlines()
    assert "answered" in lines[0]
    cells = {line.split()[0]: line.split() for line in lines[1:]}
    assert cells["best-of-4"][cells["best-of-4"].index("±") + 2] == "75%"
    assert cells["sft"][cells["sft"].index("±") + 2] == "100%"
    assert cells["best-of-8"][2:4] == ["–", "0%"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<th>answered</th>" in page and "<td>75%</td>" in page


def test_report_best_of_n_point_is_the_bon_pick_even_when_an_unfinished_draw_scores_best(tmp_path):
    from paretoalign.eval.policy_eval import best_of_n_points
    from paretoalign.inference.best_of_n import best_of_n
    from tests.eval.test_policy_eval import PARAMS, PROMPTS, LengthRM
    from tests.inference.conftest import make_policy

    reference = make_policy("llama")
    table = write_front_report(best_of_n_points(reference, LengthRM(), PROMPTS, (4,), params=PARAMS), tmp_path)
    picked = best_of_n(reference, LengthRM(), PROMPTS, n=4, params=PARAMS)
    assert any(not max(r.candidates, key=lambda c: c.score).candidate.finished for r in picked)
    row = next(r for r in table["points"] if r["name"] == "best-of-4")
    assert row["per_prompt_reward"] == [None if r.pick is None else r.pick.score for r in picked]
    answered = [r.pick.score for r in picked if r.pick is not None]
    assert row["reward"] == pytest.approx(np.mean(answered), rel=1e-12)
    assert row["answered_fraction"] == len(answered) / len(picked)
