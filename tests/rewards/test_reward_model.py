import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from paretoalign.errors import InputError, ModelFormatError
from paretoalign.rewards.decorrelation import apply_transform
from paretoalign.rewards.reward_model import RewardModel
from tests.rewards.model_factory import NAMES, RecordingBackbone, random_features, random_model


def test_score_features_composes_heads_transform_and_gating():
    model = random_model()
    feats = random_features(40)
    out = model.score_features(feats)
    H = feats.response.astype(np.float64)
    raw = H @ model.W.astype(np.float64).T
    np.testing.assert_allclose(out.objectives_raw, raw, rtol=1e-10, atol=1e-10)
    # The de-correlation T is applied exactly as `apply_transform` does in training.
    np.testing.assert_allclose(out.objectives, apply_transform(raw, model.T.astype(np.float64)), rtol=1e-10,
                               atol=1e-10)
    with torch.no_grad():
        g = model.gating(torch.from_numpy(feats.prompt)).double().numpy()
    np.testing.assert_allclose(out.gating, g, atol=1e-6)
    np.testing.assert_allclose(out.gating.sum(axis=1), 1.0)
    np.testing.assert_allclose(out.score, model.scale * (out.gating * out.objectives).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(out.baseline, H @ model.baseline_w.astype(np.float64), rtol=1e-10)
    assert out.score.dtype == np.float64 and out.objective_names == NAMES


def test_scores_do_not_depend_on_batch_composition():
    model = random_model()
    feats = random_features(150)
    full = model.score_features(feats)
    weighted = model.score_features(feats, weights={"helpfulness": 1.0, "verbosity": -0.5})
    rng = np.random.default_rng(0)
    for index in [np.arange(1), np.array([77]), np.arange(5, 71), rng.permutation(150)[:97]]:
        part = model.score_features(feats.take(index))
        np.testing.assert_array_equal(part.score, full.score[index])
        np.testing.assert_array_equal(part.objectives, full.objectives[index])
        np.testing.assert_array_equal(part.gating, full.gating[index])
        part_w = model.score_features(feats.take(index), weights={"helpfulness": 1.0, "verbosity": -0.5})
        np.testing.assert_array_equal(part_w.score, weighted.score[index])


def test_user_weights_dict_and_vector():
    model = random_model()
    feats = random_features(10)
    out = model.score_features(feats, weights={"helpfulness": 2.0, "verbosity": -0.5})
    w = np.array([2.0, 0.0, 0.0, -0.5])
    np.testing.assert_allclose(out.score, out.objectives @ w, rtol=1e-12)  # no scale s, no gating
    np.testing.assert_array_equal(out.gating, np.tile(w, (10, 1)))
    vec = model.score_features(feats, weights=[2.0, 0.0, 0.0, -0.5])
    np.testing.assert_array_equal(vec.score, out.score)
    np.testing.assert_array_equal(model.score_features(feats, weights=np.array(w)).score, out.score)


@pytest.mark.parametrize("weights, message", [
    ({"helpfullness": 1.0}, "unknown objective.*'helpfullness'.*helpfulness, harmlessness, honesty, verbosity"),
    ([1.0, 2.0], "needs 4 values"),
    ({"helpfulness": 0.0}, "all weights are zero"),
    ([0, 0, 0, 0], "all weights are zero"),
    ({"helpfulness": float("nan")}, "finite"),
    ("helpfulness=1", "not a string"),
    ({"helpfulness": "much"}, "numbers"),
])
def test_bad_weights_raise_input_error(weights, message):
    model = random_model()
    with pytest.raises(InputError, match=message) as info:
        model.score_features(random_features(2), weights=weights)
    assert info.value.field == "weights"


def test_linear_score_vector_reproduces_weighted_scores():
    model = random_model()
    feats = random_features(25)
    weights = {"helpfulness": 1.0, "harmlessness": 0.5, "verbosity": -0.3}
    u = model.linear_score_vector(weights)
    assert u.shape == (16,)
    np.testing.assert_allclose(feats.response.astype(np.float64) @ u,
                               model.score_features(feats, weights).score, rtol=1e-10, atol=1e-10)
    with pytest.raises(InputError, match="give weights"):
        model.linear_score_vector(None)


def test_rows_are_json_ready():
    model = random_model()
    rows = model.score_features(random_features(3)).rows()
    assert len(rows) == 3 and set(rows[0]) == {"score", "objectives", "gating", "verbosity_contribution"}
    assert list(rows[0]["objectives"]) == NAMES and isinstance(rows[0]["score"], float)
    assert isinstance(rows[0]["verbosity_contribution"], float)
    json.dumps(rows)


def test_verbosity_contribution_is_its_term_of_the_score():
    model = random_model()
    assert model.verbosity_objective == "verbosity"
    out = model.score_features(random_features(20))
    v = NAMES.index("verbosity")
    # gated: s * g_v(x) * r'_v, by hand from the output arrays; the k terms add up to the score
    np.testing.assert_allclose(out.verbosity_contribution, 1.7 * out.gating[:, v] * out.objectives[:, v],
                               rtol=1e-6, atol=1e-12)
    terms = model.scale * out.gating * out.objectives
    np.testing.assert_allclose(terms.sum(axis=1), out.score, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(terms[:, v], out.verbosity_contribution, rtol=1e-12, atol=1e-15)
    assert np.all(out.verbosity_contribution != 0)
    rows = out.rows()
    assert [r["verbosity_contribution"] for r in rows] == out.verbosity_contribution.tolist()
    # user weights: w_v * r'_v, no scale
    weighted = model.score_features(random_features(20), weights={"helpfulness": 1.0, "verbosity": -0.3})
    np.testing.assert_allclose(weighted.verbosity_contribution, -0.3 * weighted.objectives[:, v], rtol=1e-12)
    assert np.all(model.score_features(random_features(5), weights={"helpfulness": 1.0}).verbosity_contribution
                  == 0.0)


def test_verbosity_objective_follows_the_training_config_else_the_length_kind():
    model = random_model()
    renamed = ["helpfulness", "harmlessness", "honesty", "wordiness"]
    kinds = {**{n: model.objective_kinds[n] for n in NAMES[:3]}, "wordiness": "length"}
    by_kind = RewardModel(renamed, kinds, model.W, model.T, model.gating, model.baseline_w, model.backbone_spec)
    assert by_kind.verbosity_objective == "wordiness"
    by_config = RewardModel(renamed, {**kinds, "wordiness": "ridge"}, model.W, model.T, model.gating,
                            model.baseline_w, model.backbone_spec,
                            metadata={"config": {"verbosity_objective": "honesty"}})
    assert by_config.verbosity_objective == "honesty"
    out = by_config.score_features(random_features(4))
    np.testing.assert_allclose(out.verbosity_contribution, by_config.scale * out.gating[:, 2] * out.objectives[:, 2])
    none = RewardModel(renamed, {**kinds, "wordiness": "ridge"}, model.W, model.T, model.gating, model.baseline_w,
                       model.backbone_spec)
    assert none.verbosity_objective is None
    out = none.score_features(random_features(4))
    assert out.verbosity_contribution is None
    assert all(r["verbosity_contribution"] is None for r in out.rows())


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    model = random_model()
    feats = random_features(30)
    path = model.save_pretrained(tmp_path / "rm")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "paretoalign-reward-model" and config["format_version"] == 1
    assert config["objective_names"] == NAMES and config["objective_kinds"]["honesty"] == "ridge"
    assert config["feature_dim"] == 16 and config["prompt_feature_dim"] == 8
    assert config["gating"] == {"hidden": [8], "dropout": 0.1, "temperature": 2.0}
    assert config["metadata"] == {"note": "random", "value": 0.5}
    loaded = RewardModel.from_pretrained(path)
    assert loaded.scale == pytest.approx(1.7) and loaded.backbone_spec == model.backbone_spec
    for weights in (None, {"honesty": 1.0, "verbosity": -1.0}):
        a, b = model.score_features(feats, weights), loaded.score_features(feats, weights)
        for field in ("score", "objectives", "objectives_raw", "gating", "baseline"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # Saving again replaces the directory atomically.
    model.save_pretrained(path)
    assert RewardModel.from_pretrained(path).objective_names == NAMES


def test_from_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such reward model directory"):
        RewardModel.from_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match=r"empty/config\.json is missing"):
        RewardModel.from_pretrained(tmp_path / "empty")
    path = random_model().save_pretrained(tmp_path / "rm")
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match=r"model\.safetensors is missing"):
        RewardModel.from_pretrained(path)


def test_from_pretrained_refuses_other_format_versions(tmp_path):
    path = random_model().save_pretrained(tmp_path / "rm")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "format_version": 2, "paretoalign_version": "9.0"}))
    with pytest.raises(ModelFormatError, match=r"format_version 2 by paretoalign 9\.0.*reads format_version 1"):
        RewardModel.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({**config, "format": "something-else"}))
    with pytest.raises(ModelFormatError, match="not a paretoalign reward model"):
        RewardModel.from_pretrained(path)


def test_from_pretrained_refuses_mismatched_tensors(tmp_path):
    path = random_model().save_pretrained(tmp_path / "rm")
    tensors = load_file(path / "model.safetensors")
    save_file({**tensors, "W": torch.zeros(4, 15)}, path / "model.safetensors")
    with pytest.raises(ModelFormatError, match=r"'W' has shape \(4, 15\), expected \(4, 16\)"):
        RewardModel.from_pretrained(path)
    save_file({k: v for k, v in tensors.items() if k != "baseline_w"}, path / "model.safetensors")
    with pytest.raises(ModelFormatError, match="missing.*baseline_w"):
        RewardModel.from_pretrained(path)


def test_score_embeds_with_the_backbone():
    backbone = RecordingBackbone()
    model = random_model(backbone=backbone)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = model.score(["How do I boil an egg?", conversation], ["Boil it.", "Hello."])
    assert backbone.prompts == [[{"role": "user", "content": "How do I boil an egg?"}], conversation]
    expected = model.score_features(backbone.embed([[{"role": "user", "content": "How do I boil an egg?"}],
                                                    conversation], ["Boil it.", "Hello."]))
    np.testing.assert_array_equal(out.score, expected.score)


def test_score_input_errors():
    backbone = RecordingBackbone()
    model = random_model(backbone=backbone)
    with pytest.raises(InputError, match="2 prompts but 1 responses"):
        model.score(["a", "b"], ["x"])
    with pytest.raises(InputError, match="unknown objective"):
        model.score(["a"], ["x"], weights={"nope": 1})
    with pytest.raises(InputError, match="a prompt is a string"):
        model.score([{"role": "user"}], ["x"])
    assert backbone.prompts == []  # nothing was embedded


def test_backbone_loads_lazily_from_the_spec(tmp_path, monkeypatch):
    calls = []

    def fake_load(spec, *, trust_remote_code=False):
        assert trust_remote_code is False  # never turned on by a saved model: only by the caller
        calls.append(spec)
        return RecordingBackbone()

    monkeypatch.setattr("paretoalign.embed.registry.load_backbone", fake_load)
    model = random_model(spec={"kind": "recording", "x": 1})
    assert calls == []
    model.score(["a"], ["b"])
    model.score(["c"], ["d"])
    assert calls == [{"kind": "recording", "x": 1}]


def test_constructor_checks_shapes():
    model = random_model()
    with pytest.raises(ValueError, match="T must be"):
        RewardModel(model.objective_names, model.objective_kinds, model.W, np.eye(3), model.gating,
                    model.baseline_w, {})
    with pytest.raises(ValueError, match="objective_kinds"):
        RewardModel(model.objective_names, {**model.objective_kinds, "honesty": "magic"}, model.W, model.T,
                    model.gating, model.baseline_w, {})
