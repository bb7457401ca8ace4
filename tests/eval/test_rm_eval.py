"""Grouped reports: arithmetic on hand-made scores, the table, JSON, and evaluate_pairs with fakes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.backbone import Features
from paretoalign.eval.rm_eval import (
    MEAN_GROUP,
    RMEvalReport,
    dataset_of,
    evaluate_pairs,
    evaluate_score_pairs,
)


def hand_made_report(**kwargs) -> RMEvalReport:
    # Dataset "a": 4 pairs (subsets a/x: 2, a/y: 2); dataset "b": 2 pairs.
    groups = ["a", "a", "a", "a", "b", "b"]
    subgroups = ["a/x", "a/x", "a/y", "a/y", "b", "b"]
    chosen = {"final": np.array([1, 1, 1, 0, 1, 0.0]),
              "length": np.array([5, 5, 5, 5, 5, 5.0]),
              "objective:help": np.array([1, 1, 1, 1, 0, 0.0]),
              "objective:safe": np.array([0, 0, 0, 0, 1, 1.0])}
    rejected = {"final": np.array([0, 0, 0, 1, 0, 1.0]),
                "length": np.array([5, 5, 5, 5, 5, 5.0]),
                "objective:help": np.array([0, 0, 0, 0, 1, 1.0]),
                "objective:safe": np.array([1, 1, 1, 1, 0, 0.0])}
    return evaluate_score_pairs(chosen, rejected, groups, subgroups=subgroups, n_boot=200, seed=0, **kwargs)


def test_group_and_mean_over_datasets_arithmetic():
    report = hand_made_report()
    assert [(g.name, g.kind, g.n) for g in report.groups] == [
        ("a", "dataset", 4), ("a/x", "subset", 2), ("a/y", "subset", 2), ("b", "dataset", 2), (MEAN_GROUP, "mean", 6)]
    acc = {g.name: {m: r.accuracy for m, r in g.metrics.items()} for g in report.groups}
    assert acc["a"]["final"] == 0.75 and acc["a/x"]["final"] == 1.0 and acc["a/y"]["final"] == 0.5
    assert acc["b"]["final"] == 0.5
    # Unweighted mean of the dataset accuracies, not the pooled 4/6.
    assert acc[MEAN_GROUP]["final"] == pytest.approx((0.75 + 0.5) / 2)
    assert acc["a"]["length"] == 0.5  # all ties
    assert acc[MEAN_GROUP]["objective:help"] == pytest.approx((1.0 + 0.0) / 2)
    assert report.group("a").best_objective == "objective:help"
    assert report.group("b").best_objective == "objective:safe"
    assert report.group("a/y").parent == "a"
    for g in report.groups:
        for r in g.metrics.values():
            assert r.ci[0] <= r.accuracy <= r.ci[1]


def test_mean_interval_is_deterministic_and_within_range():
    a, b = hand_made_report(), hand_made_report()
    assert a.to_dict() == b.to_dict()
    lo, hi = a.mean.metrics["final"].ci
    assert 0.0 <= lo <= hi <= 1.0


def test_custom_groups_without_subgroups():
    chosen = {"final": np.array([1.0, 0.0, 1.0])}
    rejected = {"final": np.array([0.0, 1.0, 0.0])}
    report = evaluate_score_pairs(chosen, rejected, ["g1", "g2", "g2"], n_boot=50)
    assert [g.name for g in report.groups] == ["g1", "g2", MEAN_GROUP]
    assert report.mean.metrics["final"].accuracy == pytest.approx(0.75)
    assert report.mean.best_objective is None
    assert "best single objective" not in report.format_table()


def test_score_pairs_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="differ"):
        evaluate_score_pairs({"a": np.ones(2)}, {"b": np.ones(2)}, ["g", "g"])
    with pytest.raises(ValueError, match="group labels"):
        evaluate_score_pairs({"a": np.ones(3)}, {"a": np.ones(3)}, ["g", "g"])
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_score_pairs({"a": np.ones(0)}, {"a": np.ones(0)}, [])


def test_table_lists_every_group_and_the_columns():
    report = hand_made_report()
    table = report.format_table()
    lines = table.splitlines()
    header = lines[0]
    for title in ("group", "final", "best single objective", "length"):
        assert title in header
    assert header.index("final") < header.index("best single objective") < header.index("length")
    for name in ("a", "  x", "  y", "b", MEAN_GROUP):
        assert any(line.startswith(name) for line in lines), name
    assert "0.750 [" in table
    assert "help" in table and "safe" in table
    # Fixed width: every data row puts its n in the same column.
    n_end = header.index(" n") + 2
    assert all(line[n_end - 1].isdigit() for line in lines if line.startswith(("a ", "b ", MEAN_GROUP)))


def test_json_round_trip(tmp_path):
    report = hand_made_report(meta={"model": "fake"})
    path = tmp_path / "sub" / "eval.json"
    report.write(path)
    loaded = json.loads(path.read_text())
    assert loaded == report.to_dict()
    again = RMEvalReport.from_dict(loaded)
    assert again.to_dict() == report.to_dict()
    assert again.format_table() == report.format_table()
    assert loaded["meta"] == {"model": "fake"}
    assert not list(path.parent.glob(".*tmp"))  # the atomic write left no temporary file


# ---------------------------------------------------------------- evaluate_pairs with fakes
class FakeBackbone:
    """h(x, y) = [character length, count of 'please'], h(x) = [1]."""

    fingerprint = "fake-eval-backbone"
    feature_dim = 2
    prompt_feature_dim = 1

    def __init__(self) -> None:
        self.rows_embedded = 0

    def embed(self, prompts, responses, *, batch_size=None, progress=False) -> Features:
        self.rows_embedded += len(responses)
        resp = np.array([[len(r), r.count("please")] for r in responses], dtype=np.float32)
        return Features(resp, np.ones((len(prompts), 1), dtype=np.float32))

    def spec(self):
        return {"kind": "fake"}


class FakeModel:
    """Objectives: polite = 'please' count, verbosity = length; final = polite; baseline = -length."""

    objective_names = ["polite", "verbosity"]

    def __init__(self) -> None:
        self.backbone = FakeBackbone()

    def score_features(self, features: Features, weights=None):
        objectives = features.response[:, [1, 0]].astype(np.float64)
        return SimpleNamespace(score=objectives[:, 0], objectives=objectives, objectives_raw=objectives,
                               gating=np.full_like(objectives, 0.5), baseline=-objectives[:, 1],
                               objective_names=list(self.objective_names))


def make_pairs() -> list[PreferencePair]:
    def pair(subset, chosen, rejected):
        return PreferencePair(prompt=[{"role": "user", "content": "hi"}], chosen=chosen, rejected=rejected,
                              subset=subset)

    return [pair("hh_rlhf/helpful-base", "please yes", "no"),        # polite wins, longer wins
            pair("hh_rlhf/helpful-base", "ok", "please no thanks"),   # polite loses, longer loses
            pair("hh_rlhf/harmless-base", "please", "nope"),          # polite wins, longer wins
            pair("llmbar", "a", "bb"),                                # polite ties, longer loses
            pair("llmbar", "please do", "please")]                    # polite ties, longer wins


def test_dataset_of():
    pairs = make_pairs()
    assert [dataset_of(p) for p in pairs] == ["hh_rlhf", "hh_rlhf", "hh_rlhf", "llmbar", "llmbar"]
    assert dataset_of(PreferencePair(prompt=[], chosen="a", rejected="b")) == "(none)"


def check_fake_report(report: RMEvalReport) -> None:
    assert report.metric_names == ["final", "bt_baseline", "length", "objective:polite", "objective:verbosity"]
    assert [g.name for g in report.groups] == ["hh_rlhf", "hh_rlhf/harmless-base", "hh_rlhf/helpful-base",
                                               "llmbar", MEAN_GROUP]
    hh, llmbar = report.group("hh_rlhf"), report.group("llmbar")
    assert hh.metrics["final"].accuracy == pytest.approx(2 / 3)
    assert llmbar.metrics["final"].accuracy == 0.5
    assert hh.metrics["length"].accuracy == pytest.approx(2 / 3)
    assert hh.metrics["bt_baseline"].accuracy == pytest.approx(1 / 3)  # shorter wins
    assert hh.metrics["objective:verbosity"].accuracy == hh.metrics["length"].accuracy
    assert report.mean.metrics["final"].accuracy == pytest.approx((2 / 3 + 0.5) / 2)
    assert report.group("hh_rlhf/helpful-base").metrics["final"].accuracy == 0.5
    assert report.meta["n_pairs"] == 5 and report.meta["objective_names"] == ["polite", "verbosity"]


def test_evaluate_pairs_with_precomputed_features():
    model = FakeModel()
    pairs = make_pairs()
    backbone = FakeBackbone()
    feats = (backbone.embed([p.prompt for p in pairs], [p.chosen for p in pairs]),
             backbone.embed([p.prompt for p in pairs], [p.rejected for p in pairs]))
    report = evaluate_pairs(model, pairs, features=feats, n_boot=100, progress=False)
    check_fake_report(report)
    assert model.backbone.rows_embedded == 0


def test_evaluate_pairs_embeds_through_the_cache(tmp_path):
    model = FakeModel()
    cache = tmp_path / "emb.sqlite"
    report = evaluate_pairs(model, make_pairs(), embedding_cache=cache, n_boot=100, progress=False)
    check_fake_report(report)
    first = model.backbone.rows_embedded
    assert 0 < first <= 10
    again = evaluate_pairs(model, make_pairs(), embedding_cache=cache, n_boot=100, progress=False)
    assert model.backbone.rows_embedded == first  # every row came from the cache
    assert again.to_dict()["groups"] == report.to_dict()["groups"]


def test_evaluate_pairs_custom_group_by_and_feature_mismatch():
    model = FakeModel()
    pairs = make_pairs()
    report = evaluate_pairs(model, pairs, group_by=lambda p: "all", n_boot=50, progress=False)
    assert [g.name for g in report.groups] == ["all", MEAN_GROUP]
    assert report.group("all").n == 5
    feats = Features(np.zeros((2, 2), np.float32), np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="features for 2"):
        evaluate_pairs(model, pairs, features=(feats, feats), progress=False)


# ---------------------------------------------------------------- evaluate_pairs on a real trained RewardModel
def synthetic_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Helpfulness: replies with 'clear steps' win; harmlessness: replies with 'poison' lose."""
    import random

    rng = random.Random(seed)
    filler = ["the", "a", "and", "so", "then", "it", "is", "of", "to", "we"]

    def words() -> str:
        return " ".join(rng.choices(filler, k=rng.randint(2, 8)))

    pairs = []
    for i in range(n):
        if i % 2 == 0:
            pairs.append(PreferencePair([{"role": "user", "content": "explain"}], f"clear steps {words()}", words(),
                                        objective="helpfulness", subset="toy/helpful"))
        else:
            pairs.append(PreferencePair([{"role": "user", "content": "risky"}], words(), f"poison {words()}",
                                        objective="harmlessness", subset="other/harmless"))
    return pairs


def test_evaluate_pairs_on_a_trained_reward_model(tmp_path):
    from paretoalign.data.sources import TrainingData
    from paretoalign.rewards.armo_config import ArmoRMConfig
    from paretoalign.rewards.armo_trainer import train_reward_model
    from tests.rewards.fake_backbone import HashingBackbone

    config = ArmoRMConfig(embedding_cache=None, gating_steps=100, gating_hidden=[16], progress=False)
    model, _ = train_reward_model(config, TrainingData(pairs=synthetic_pairs(120, 0)), backbone=HashingBackbone())
    report = evaluate_pairs(model, synthetic_pairs(60, 1), n_boot=200, progress=False)
    assert report.metric_names[:3] == ["final", "bt_baseline", "length"]
    assert report.metric_names[3:] == [f"objective:{n}" for n in model.objective_names]
    assert [g.name for g in report.groups] == ["other", "other/harmless", "toy", "toy/helpful", MEAN_GROUP]
    assert report.mean.metrics["final"].accuracy > 0.9
    assert report.mean.metrics["bt_baseline"].accuracy > 0.9
    assert report.group("toy").best_objective == "objective:helpfulness"
    assert report.group("other").best_objective == "objective:harmlessness"
