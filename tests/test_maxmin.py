"""MaxMin-RLHF group reward models: hard EM over users recovers a planted two-group partition, H=1 is the pooled BT
fit, the group heads serve their own (minority) group where the pooled head fails, bad input names its field, and
the `maxmin-rm` command writes a reloadable reward model with assignments.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paretoalign.data.schema import PreferencePair
from paretoalign.embed.backbone import Features
from paretoalign.errors import InputError
from paretoalign.rewards.bradley_terry import MIN_PAIRS, fit_bt_weights
from paretoalign.rewards.maxmin import (
    ASSIGNMENTS_FILE,
    UserPairs,
    _pair_loglik,
    _reseed,
    _user_loglik,
    fit_maxmin_heads,
    load_user_pairs,
    train_maxmin_rm,
)
from paretoalign.rewards.maxmin_config import MaxMinRMConfig

DIM = 6
MAJORITY = [f"a{i}" for i in range(8)]
MINORITY = [f"b{i}" for i in range(3)]


class TableBackbone:
    """Precomputed features: response "v<k>" -> row k of a fixed random table; the prompt feature is constant."""

    fingerprint = "table-backbone-v1"
    feature_dim = DIM
    prompt_feature_dim = 3

    def __init__(self, table: np.ndarray) -> None:
        self.table = table.astype(np.float32)

    def embed(self, prompts, responses, *, batch_size=None, progress=False) -> Features:
        rows = np.stack([self.table[int(r[1:])] for r in responses])
        return Features(rows, np.ones((len(responses), self.prompt_feature_dim), dtype=np.float32))

    def spec(self):
        raise NotImplementedError("in memory only")


def planted(pairs_per_user: int = 20, seed: int = 0):
    """Pairs of random responses: the majority prefers the larger first feature (direction u = e0), the minority
    the smaller (-u)."""
    rng = np.random.default_rng(seed)
    n = (len(MAJORITY) + len(MINORITY)) * pairs_per_user
    table = rng.normal(size=(2 * n, DIM))
    pairs, users, k = [], [], 0
    for user in MAJORITY + MINORITY:
        sign = 1.0 if user in MAJORITY else -1.0
        for _ in range(pairs_per_user):
            a, b = k, k + 1
            k += 2
            if sign * (table[a, 0] - table[b, 0]) < 0:
                a, b = b, a
            pairs.append(PreferencePair(prompt=[{"role": "user", "content": "q"}], chosen=f"v{a}", rejected=f"v{b}"))
            users.append(user)
    return table, pairs, users


def diffs(table: np.ndarray, pairs) -> np.ndarray:
    return np.stack([table[int(p.chosen[1:])] - table[int(p.rejected[1:])] for p in pairs])


def truth(users_sorted):
    return np.array([0 if u in MAJORITY else 1 for u in users_sorted])


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b) or np.array_equal(a, 1 - b))


# ---------------------------------------------------------------- the EM itself
def test_pair_and_user_loglik_by_hand():
    D = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    W = np.array([[2.0, 0.0], [-1.0, 0.5]])
    ll = _pair_loglik(D, np.zeros(3), W)
    log_sigmoid = lambda z: -np.log1p(np.exp(-z))  # noqa: E731
    expected = np.array([[log_sigmoid(2.0), log_sigmoid(-1.0)], [log_sigmoid(0.0), log_sigmoid(1.0)],
                         [log_sigmoid(2.0), log_sigmoid(-0.5)]])
    np.testing.assert_allclose(ll, expected, rtol=1e-12)
    per_user = _user_loglik(ll, np.array([1, 0, 1]), 2)
    np.testing.assert_allclose(per_user, [expected[1], expected[0] + expected[2]], rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_em_recovers_the_planted_partition_from_a_random_start(seed):
    table, pairs, users = planted(seed=seed)
    fit = fit_maxmin_heads(diffs(table, pairs), users, 2, C=1.0, init="random", seed=seed)
    want = truth(fit.users)
    assert not same_partition(fit.initial_assignment, want)  # the EM had work to do
    assert fit.converged and fit.iterations >= 2
    assert np.array_equal(fit.assignment, want)  # group0 = the majority (relabelled by size)
    assert fit.group_users == [8, 3] and fit.group_pairs == [160, 60]
    assert fit.assignments()["b2"] == "group1" and fit.assignments()["a0"] == "group0"
    # each head points along its group's direction: +u for the majority, -u for the minority
    assert fit.W[0, 0] > 0 > fit.W[1, 0]
    assert np.argmax(np.abs(fit.W[0])) == 0 and np.argmax(np.abs(fit.W[1])) == 0
    assert len(fit.log_likelihood) == fit.iterations
    assert fit.log_likelihood[-1] > fit.log_likelihood[0]


@pytest.mark.parametrize("seed", [0, 5])
def test_em_recovers_the_partition_from_kmeanspp_seeding(seed):
    table, pairs, users = planted(seed=seed + 10)
    fit = fit_maxmin_heads(diffs(table, pairs), users, 2, C=1.0, init="kmeans++", seed=seed)
    assert fit.converged and np.array_equal(fit.assignment, truth(fit.users))


def test_one_group_is_the_pooled_bradley_terry_fit():
    table, pairs, users = planted()
    D = diffs(table, pairs)
    fit = fit_maxmin_heads(D, users, 1, C=0.3)
    np.testing.assert_allclose(fit.W[0], fit_bt_weights(D, 0.3), atol=1e-6)
    assert fit.converged and fit.iterations == 1 and fit.group_users == [11]


def test_group_heads_serve_their_own_held_out_pairs_where_the_pooled_head_fails_the_minority():
    table, pairs, users = planted(pairs_per_user=40, seed=3)
    train = [j for j in range(len(pairs)) if j % 40 < 20]
    held = [j for j in range(len(pairs)) if j % 40 >= 20]
    config = MaxMinRMConfig(n_groups=2, embedding_cache=None, features=None, progress=False, init="random")
    data = UserPairs([pairs[j] for j in train], [users[j] for j in train], "user")
    model, fit, _ = train_maxmin_rm(config, data, backbone=TableBackbone(table))
    assert np.array_equal(fit.assignment, truth(fit.users))
    D_held = diffs(table, [pairs[j] for j in held])
    held_users = np.array([users[j] for j in held])
    minority = np.isin(held_users, MINORITY)
    W = model.W.astype(np.float64)
    pooled = model.baseline_w.astype(np.float64)
    majority_acc = np.mean(D_held[~minority] @ W[0] > 0)
    minority_acc = np.mean(D_held[minority] @ W[1] > 0)
    assert majority_acc > 0.9 and minority_acc > 0.9
    assert np.mean(D_held[minority] @ pooled > 0) < 0.5
    assert np.mean(D_held[~minority] @ pooled > 0) > 0.7  # the pooled head follows the majority
    assert model.metadata["maxmin"]["pooled_accuracy"]["group1"] < 0.5


def test_an_empty_group_takes_the_worst_explained_user():
    log: list = []
    user_ll = np.array([[-1.0, 0.0], [-20.0, 0.0], [-6.0, 0.0]])  # mean per pair: -0.2, -4, -1.2
    out = _reseed(np.array([0, 0, 0]), user_ll, np.array([5, 5, 5]), 2, 3, ["x", "y", "z"], log)
    assert out.tolist() == [0, 1, 0]
    assert log == [{"iteration": 3, "group": 1, "user": "y"}]


def test_a_group_below_the_minimum_of_pairs_is_refilled_until_it_has_enough():
    log: list = []
    user_ll = np.array([[-1.0, 0.0], [-2.0, 0.0], [-9.0, 0.0], [0.0, -1.0]])
    sizes = np.array([4, 4, 4, 2])  # group 1 holds only user 3 with 2 pairs
    out = _reseed(np.array([0, 0, 0, 1]), user_ll, sizes, 2, 1, ["p", "q", "r", "s"], log)
    assert out.tolist() == [0, 0, 1, 1]  # r (mean -2.25) moved: group 1 now has 6 >= MIN_PAIRS pairs
    assert sizes[out == 1].sum() >= MIN_PAIRS and [e["user"] for e in log] == ["r"]


def test_em_with_identical_users_reseeds_and_keeps_every_group_filled():
    table, pairs, users = planted(seed=7)
    keep = [j for j, u in enumerate(users) if u in MAJORITY]  # one true group, asked for two
    fit = fit_maxmin_heads(diffs(table, [pairs[j] for j in keep]), [users[j] for j in keep], 2, C=1.0,
                           init="random", seed=0, max_iterations=10)
    assert min(fit.group_pairs) >= MIN_PAIRS and sorted(fit.group_users, reverse=True) == fit.group_users


# ---------------------------------------------------------------- the reward model
def test_the_model_scores_each_group_with_one_hot_weights_and_the_mean_by_default():
    table, pairs, users = planted()
    config = MaxMinRMConfig(n_groups=2, embedding_cache=None, features=None, progress=False)
    model, fit, _ = train_maxmin_rm(config, UserPairs(pairs, users, "user"), backbone=TableBackbone(table))
    assert model.objective_names == ["group0", "group1"]
    assert model.objective_kinds == {"group0": "bradley_terry", "group1": "bradley_terry"}
    np.testing.assert_array_equal(model.T, np.eye(2))
    feats = Features(table[:5].astype(np.float32), np.ones((5, 3), dtype=np.float32))
    r = table[:5].astype(np.float32).astype(np.float64) @ model.W.astype(np.float64).T
    np.testing.assert_allclose(model.score_features(feats, {"group1": 1.0}).score, r[:, 1], rtol=1e-10)
    np.testing.assert_allclose(model.score_features(feats, {"group0": 1.0}).score, r[:, 0], rtol=1e-10)
    np.testing.assert_allclose(model.score_features(feats).score, r.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(model.W[:, :].astype(np.float64), fit.W, atol=1e-6)


# ---------------------------------------------------------------- bad input
def test_bad_group_counts_name_n_groups():
    with pytest.raises(InputError) as exc:
        MaxMinRMConfig(n_groups=0)
    assert exc.value.field == "n_groups"
    table, pairs, users = planted()
    with pytest.raises(InputError, match="12 is more than the 11 user") as exc:
        train_maxmin_rm(MaxMinRMConfig(n_groups=12, progress=False), UserPairs(pairs, users, "user"),
                        backbone=TableBackbone(table))
    assert exc.value.field == "n_groups"
    with pytest.raises(InputError) as exc:
        fit_maxmin_heads(diffs(table, pairs), users, 0, C=1.0)
    assert exc.value.field == "n_groups"


def test_other_bad_settings_name_their_field():
    for kwargs, name in (({"init": "spectral"}, "init"), ({"max_iterations": 0}, "max_iterations"),
                         ({"user_field": ""}, "user_field"), ({"bt_cs": []}, "bt_cs")):
        with pytest.raises(InputError) as exc:
            MaxMinRMConfig(**kwargs)
        assert exc.value.field == name


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_tag_column_is_user_else_subset_and_a_missing_one_names_the_file(tmp_path):
    base = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    both = _write(tmp_path / "both.jsonl", [{**base, "user": "u1", "subset": "s"}, {**base, "user": 7, "subset": "s"}])
    loaded = load_user_pairs(str(both))
    assert (loaded.tag_field, loaded.users) == ("user", ["u1", "7"])
    subset = _write(tmp_path / "subset.jsonl", [{**base, "subset": "s1"}, {**base, "subset": "s2"}])
    assert load_user_pairs(str(subset)).users == ["s1", "s2"]
    neither = _write(tmp_path / "neither.jsonl", [base, base])
    with pytest.raises(InputError) as exc:
        load_user_pairs(str(neither))
    assert exc.value.field == "user_field" and exc.value.path == str(neither)
    with pytest.raises(InputError) as exc:
        load_user_pairs(str(subset), user_field="annotator")
    assert exc.value.field == "user_field" and "annotator" in exc.value.reason
    gap = _write(tmp_path / "gap.jsonl", [{**base, "user": "u1"}, base])
    with pytest.raises(InputError) as exc:
        load_user_pairs(str(gap))
    assert (exc.value.field, exc.value.line) == ("user", 2)


# ---------------------------------------------------------------- the command
def test_the_command_writes_a_reloadable_model_and_its_assignments(tmp_path, tiny_llama_dir, capsys):
    from paretoalign.cli import main
    from paretoalign.rewards.loading import load_reward_model
    from paretoalign.rewards.reward_model import RewardModel

    words = ["clear", "steps", "example", "bread", "flour", "water", "capital", "paris", "sorry", "help"]
    rows = []
    for i in range(40):
        good, bad = " ".join(words[: 3 + i % 5]), " ".join(words[5 + i % 3: 7 + i % 3])
        if i % 8 >= 6:  # users u6, u7 prefer the other reply
            good, bad = bad, good
        rows.append({"prompt": f"question {i % 7} about bread", "chosen": good, "rejected": bad,
                     "user": f"u{i % 8}"})
    data = _write(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "rm"
    rc = main(["maxmin-rm", "--output-dir", str(out), f"data={data}", f"backbone={tiny_llama_dir}",
               "backbone_kind=causal_lm", f"embedding_cache={tmp_path / 'emb.sqlite'}", "n_groups=2",
               "progress=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2 group(s) over 8 users from 40 pairs" in printed and "group0:" in printed and "group1:" in printed
    record = json.loads((out / ASSIGNMENTS_FILE).read_text())
    assert set(record["assignments"]) == {f"u{i}" for i in range(8)}
    assert set(record["assignments"].values()) == {"group0", "group1"}
    assert sum(record["group_sizes"].values()) == 8 and sum(record["group_pairs"].values()) == 40
    assert record["user_field"] == "user" and record["iterations"] == len(record["log_likelihood"])
    assert isinstance(record["converged"], bool)
    model = load_reward_model(str(out))
    assert isinstance(model, RewardModel) and model.objective_names == ["group0", "group1"]
    scored = model.score(["question 1 about bread"], ["clear steps"], weights={"group1": 1.0})
    linear = model.score(["question 1 about bread"], ["clear steps"], weights={"group0": 0.0, "group1": 1.0})
    assert np.isfinite(scored.score).all() and scored.score[0] == linear.objectives[0, 1]
    # a second run replaces its own previous output (a reward model folder) without --overwrite
    rc = main(["maxmin-rm", "--output-dir", str(out), f"data={data}", f"backbone={tiny_llama_dir}",
               "backbone_kind=causal_lm", f"embedding_cache={tmp_path / 'emb.sqlite'}", "n_groups=1",
               "progress=false"])
    assert rc == 0 and json.loads((out / ASSIGNMENTS_FILE).read_text())["n_groups"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["assignments.json", "config.json", "model.safetensors"]


def test_the_command_names_the_file_without_a_tag_column(tmp_path, capsys):
    from paretoalign.cli import main

    data = _write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 6)
    rc = main(["maxmin-rm", "--output-dir", str(tmp_path / "rm"), f"data={data}", "embedding_cache=none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl" in err and "user_field" in err
    assert not (tmp_path / "rm").exists()


def test_the_groups_are_rm_components_of_a_reward_set():
    from paretoalign.rewards.reward_set import RewardSet

    table, pairs, users = planted()
    config = MaxMinRMConfig(n_groups=2, embedding_cache=None, features=None, progress=False)
    model, _, _ = train_maxmin_rm(config, UserPairs(pairs, users, "user"), backbone=TableBackbone(table))
    rewards = RewardSet.from_spec({"rewards": [{"rm": "group0", "weight": 0.25}, {"rm": "group1", "weight": 0.75}]},
                                  reward_model=model)
    out = rewards.score(["q", "q", "q"], ["v0", "v1", "v2"])
    r = table[:3].astype(np.float32).astype(np.float64) @ model.W.astype(np.float64).T
    np.testing.assert_allclose(out.objectives, r, rtol=1e-6)
    np.testing.assert_allclose(out.score, r @ [0.25, 0.75], rtol=1e-6)


def test_a_folder_holding_other_files_is_refused_before_the_data_is_read(tmp_path, capsys):
    from paretoalign.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = main(["maxmin-rm", "--output-dir", str(out), f"data={tmp_path / 'absent.jsonl'}"])
    assert rc == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
