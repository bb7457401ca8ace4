import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import spearmanr

from paretoalign.data.schema import PreferencePair, RatedResponse
from paretoalign.rewards.armo_config import ArmoRMConfig
from paretoalign.rewards.armo_trainer import resolve_backbone_spec, response_lengths, train_reward_model
from tests.rewards.fake_backbone import HashingBackbone

HELPFUL = ["clear", "steps", "example", "because", "detail"]
HARMFUL = ["weapon", "steal", "poison", "hurt"]
FILLER = ["the", "a", "and", "so", "then", "it", "is", "of", "to", "we", "you", "this"]


def _reply(rng, good=0, bad=0, filler=6):
    words = rng.choices(HELPFUL, k=good) + rng.choices(HARMFUL, k=bad) + rng.choices(FILLER, k=filler)
    rng.shuffle(words)
    return " ".join(words)


def make_data(n=160, seed=0):
    rng = random.Random(seed)
    pairs, ratings = [], []
    for i in range(n):
        if i % 2 == 0:  # helpfulness: more helpful words win; lengths vary independently
            p = [{"role": "user", "content": "please explain how this works"}]
            pairs.append(PreferencePair(p, _reply(rng, good=3, filler=rng.randint(2, 10)),
                                        _reply(rng, good=0, filler=rng.randint(2, 10)), objective="helpfulness",
                                        source=f"synthetic:{i}"))
        else:  # harmlessness: harmful words lose
            p = [{"role": "user", "content": "tell me something risky"}]
            pairs.append(PreferencePair(p, _reply(rng, bad=0, filler=rng.randint(2, 10)),
                                        _reply(rng, bad=2, filler=rng.randint(2, 10)), objective="harmlessness",
                                        source=f"synthetic:{i}"))
    for i in range(60):
        good = rng.randint(0, 4)
        ratings.append(RatedResponse([{"role": "user", "content": "rate this"}], _reply(rng, good=good),
                                     {"clarity": float(good) if i % 5 else math.nan}, source=f"ratings:{i}"))
    return SimpleNamespace(pairs=pairs, ratings=ratings)


def config(tmp_path, **kw):
    base = dict(embedding_cache=str(tmp_path / "emb.sqlite"), gating_steps=150, gating_hidden=[16],
                progress=False, decorrelate=True)  # the paper's de-correlation, which these tests check
    base.update(kw)
    return ArmoRMConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("armo")
    model, stats = train_reward_model(config(tmp), make_data(), backbone=HashingBackbone())
    return model, stats


def test_objectives_are_data_objectives_then_verbosity(trained):
    model, _ = trained
    assert model.objective_names == ["clarity", "harmlessness", "helpfulness", "verbosity"]
    assert model.objective_kinds == {"clarity": "ridge", "harmlessness": "bradley_terry",
                                     "helpfulness": "bradley_terry", "verbosity": "length"}


def test_final_score_ranks_held_out_pairs(trained):
    model, _ = trained
    test = make_data(n=80, seed=1).pairs
    out_c = model.score([p.prompt for p in test], [p.chosen for p in test])
    out_r = model.score([p.prompt for p in test], [p.rejected for p in test])
    assert np.mean(out_c.score > out_r.score) > 0.85


def test_verbosity_decorrelation_holds_on_reference_set(trained):
    model, _ = trained
    deco = model.metadata["decorrelation"]
    assert set(deco) == {"clarity", "harmlessness", "helpfulness"}
    assert all(v["spearman_after"] <= 0.03 + 1e-9 for v in deco.values())


def test_decorrelated_scores_are_uncorrelated_with_verbosity_on_reference_rows(trained):
    model, _ = trained
    data = make_data()
    responses = [p.chosen for p in data.pairs] + [p.rejected for p in data.pairs] + [r.response for r in data.ratings]
    prompts = [p.prompt for p in data.pairs] * 2 + [r.prompt for r in data.ratings]
    uniq = dict.fromkeys(zip(map(str, prompts), responses, strict=True))
    keep = [i for i, k in enumerate(zip(map(str, prompts), responses, strict=True)) if uniq.pop(k, 0) is None]
    out = model.score([prompts[i] for i in keep], [responses[i] for i in keep])
    v = model.objective_names.index("verbosity")
    for i in range(v):
        assert spearmanr(out.objectives[:, i], out.objectives[:, v]).statistic <= 0.03 + 1e-6


def test_heads_have_unit_std_on_reference(trained):
    model, _ = trained
    assert all(h["reference_std"] > 0 for h in model.metadata["heads"].values())


def test_timings_reported(trained):
    _, stats = trained
    assert stats["total_s"] >= stats["embed_s"] + stats["fit_s"] - 1e-6
    assert stats["n_pairs"] == 160 and stats["n_ratings"] == 60


def test_embedding_cache_avoids_second_embedding(tmp_path):
    backbone = HashingBackbone()
    cfg = config(tmp_path, gating_steps=5)
    train_reward_model(cfg, make_data(n=40), backbone=backbone)
    calls = backbone.calls
    train_reward_model(cfg, make_data(n=40), backbone=backbone)
    assert backbone.calls == calls


def test_pairs_without_objective_are_refused(tmp_path):
    data = make_data(n=10)
    data.pairs[3].objective = None
    with pytest.raises(ValueError, match="no objective"):
        train_reward_model(config(tmp_path), data, backbone=HashingBackbone())


def test_reserved_verbosity_name_is_refused(tmp_path):
    data = make_data(n=10)
    for p in data.pairs:
        p.objective = "verbosity"
    with pytest.raises(ValueError, match="reserved"):
        train_reward_model(config(tmp_path), data, backbone=HashingBackbone())


def test_response_lengths_are_log_word_counts():
    assert np.allclose(response_lengths(["a b c", ""]), [math.log(4), 0.0])


def test_backbone_spec_auto_kind():
    assert resolve_backbone_spec(ArmoRMConfig(backbone="minilm"))["kind"] == "sentence_encoder"
    spec = resolve_backbone_spec(ArmoRMConfig(backbone="smollm2", max_length=256))
    assert spec == {"kind": "causal_lm", "model": "smollm2", "gguf_file": None, "max_length": 256, "dtype": "float32"}


def test_crossfit_rewards_remove_in_sample_optimism(tmp_path):
    from paretoalign.embed.backbone import Features
    from paretoalign.rewards.armo_trainer import crossfit_pair_rewards

    rng = np.random.default_rng(0)
    n, d = 300, 250
    chosen, rejected = rng.standard_normal((n, d)), rng.standard_normal((n, d))  # labels carry no signal
    pairs = [PreferencePair([{"role": "user", "content": "q"}], "a", "b", objective="noise") for _ in range(n)]
    feats = (Features(chosen, chosen[:, :4]), Features(rejected, rejected[:, :4]))
    w = np.linalg.lstsq(chosen - rejected, np.ones(n), rcond=None)[0]  # an in-sample fit that memorises the pairs
    W = w[None, :] / (np.vstack([chosen, rejected]) @ w).std()
    report = {"noise": {"C": 100.0}}
    reference = np.vstack([chosen, rejected])
    in_w, in_l = crossfit_pair_rewards(config(tmp_path, gating_crossfit_folds=1), ["noise"], {"noise": "bradley_terry"},
                                       W, report, pairs, feats, reference)
    oof_w, oof_l = crossfit_pair_rewards(config(tmp_path), ["noise"], {"noise": "bradley_terry"}, W, report, pairs,
                                         feats, reference)
    assert np.mean(in_w[:, 0] > in_l[:, 0]) > 0.9
    assert abs(np.mean(oof_w[:, 0] > oof_l[:, 0]) - 0.5) < 0.1


def test_cache_path_is_per_backbone_for_auto_and_directories(tmp_path, monkeypatch):
    from paretoalign.rewards.armo_trainer import embedding_cache_path

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "c"))
    assert embedding_cache_path("auto", "ab" * 40) == tmp_path / "c" / "embeddings" / f"{'ab' * 16}.sqlite"
    assert embedding_cache_path(str(tmp_path), "cd" * 40) == tmp_path / f"{'cd' * 16}.sqlite"
    assert embedding_cache_path(str(tmp_path / "e.sqlite"), "cd" * 40) == tmp_path / "e.sqlite"
    assert embedding_cache_path("none", "x") is None and embedding_cache_path(None, "x") is None


def _write_sources(tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": "good answer", "rejected": "bad"} for i in range(60)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sources.yaml").write_text(
        "heldout_fraction: 0.3\nsources:\n  - name: toy\n    path: ${shared}/pairs.jsonl\n    format: pairs\n"
        "    objective: helpfulness\n")
    return tmp_path / "sources.yaml"


def test_config_split_keeps_one_side_of_every_source(tmp_path):
    from paretoalign.rewards.armo_trainer import load_config_data

    sources = str(_write_sources(tmp_path))
    sides = {split: load_config_data(ArmoRMConfig(sources=sources, shared_dir=str(tmp_path), split=split)).pairs
             for split in (None, "train", "test")}
    prompts = {k: {p.prompt[-1]["content"] for p in v} for k, v in sides.items()}
    assert len(sides[None]) == 60 and len(sides["train"]) + len(sides["test"]) == 60
    assert sides["test"] and not prompts["train"] & prompts["test"]


def test_config_split_and_shared_sources_errors(tmp_path):
    from paretoalign.errors import InputError
    from paretoalign.rewards.armo_trainer import load_config_data

    with pytest.raises(InputError, match="split must be one of"):
        load_config_data(ArmoRMConfig(sources=str(_write_sources(tmp_path)), shared_dir=str(tmp_path), split="dev"))
    with pytest.raises(InputError, match="sources=shared needs shared_dir"):
        load_config_data(ArmoRMConfig(sources="shared"))


def test_decorrelation_grid_stops_at_max_lambda_and_warns_by_name(tmp_path):
    with pytest.warns(UserWarning, match=r"objective '(clarity|harmlessness|helpfulness)' still has Spearman"):
        model, _ = train_reward_model(config(tmp_path, decorrelation_max_lambda=0.0), make_data(),
                                      backbone=HashingBackbone())
    deco = model.metadata["decorrelation"]
    assert all(v["lambda"] == 0.0 for v in deco.values())
    assert not all(v["satisfied"] for v in deco.values())
    with pytest.raises(ValueError, match="decorrelation_max_lambda"):
        train_reward_model(config(tmp_path, decorrelation_max_lambda=-1.0), make_data(), backbone=HashingBackbone())


class _LayoutBackbone(HashingBackbone):
    """The hashing backbone with named column ranges, like SentenceEncoderBackbone.feature_layout."""

    fingerprint = "hashing-backbone-layout"
    feature_layout = {"first": (0, 20), "rest": (20, 48)}


def test_features_pick_columns_and_the_model_reads_full_features(tmp_path):
    data = make_data(seed=3)
    model, _ = train_reward_model(config(tmp_path, features=["rest"], embedding_cache=None), data,
                                  backbone=_LayoutBackbone())
    assert model.feature_dim == 48
    v = model.objective_names.index("verbosity")
    data_rows = [i for i in range(len(model.objective_names)) if i != v]
    assert np.all(model.W[data_rows, :20] == 0) and np.all(model.baseline_w[:20] == 0)
    assert np.any(model.W[v, :20] != 0)  # the length-derived head sees every column
    assert np.any(model.W[data_rows][:, 20:] != 0)
    full, _ = train_reward_model(config(tmp_path, embedding_cache=None), data, backbone=_LayoutBackbone())
    assert np.any(full.W[:, :20] != 0)
    # The data heads and the baseline read the picked columns only: changing the others changes only verbosity.
    p = [x.prompt for x in data.pairs[:10]]
    feats = _LayoutBackbone().embed(p, [x.chosen for x in data.pairs[:10]])
    shifted = type(feats)(feats.response.copy(), feats.prompt)
    shifted.response[:, :20] += 5.0
    a, b = model.score_features(feats), model.score_features(shifted)
    np.testing.assert_array_equal(a.objectives_raw[:, data_rows], b.objectives_raw[:, data_rows])
    np.testing.assert_array_equal(a.baseline, b.baseline)
    assert np.any(a.objectives_raw[:, v] != b.objectives_raw[:, v])


def test_unknown_feature_part_is_refused_before_embedding(tmp_path):
    from paretoalign.errors import InputError

    backbone = _LayoutBackbone()
    with pytest.raises(InputError, match="not parts of this backbone") as info:
        train_reward_model(config(tmp_path, features=["length"], embedding_cache=None), make_data(),
                           backbone=backbone)
    assert info.value.field == "features" and backbone.calls == 0
