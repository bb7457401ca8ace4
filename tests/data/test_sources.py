import math
from pathlib import Path

import pytest
import yaml

from paretoalign.data import (
    SourcesConfig,
    TrainingData,
    load_sources_config,
    load_training_data,
    split_of,
)
from paretoalign.errors import InputError
from tests.data.helpers import write_jsonl

PAIRS = [
    {"id": f"p{i}", "prompt": f"question {i}", "chosen": "good", "rejected": "bad", "subset": s}
    for i, s in enumerate(["a", "b", "a", "c"] * 10)
]
RATED = [{"prompt": f"q{i}", "response": "r", "score": i % 5, "other": 1.0} for i in range(20)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    write_jsonl(tmp_path / "rated.jsonl", RATED)
    return tmp_path


def _write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_subset_mapping_and_relative_paths(data_dir):
    config_path = _write_yaml(data_dir / "sources.yaml", {"sources": [
        {"name": "toy", "path": "pairs.jsonl", "subsets": {"a": "helpfulness", "b": "harmlessness"},
         "other_subsets": "skip"},
    ]})
    config = load_sources_config(config_path)
    assert config.sources[0].path == str(data_dir / "pairs.jsonl")
    with pytest.warns(UserWarning, match=r"skipped 10 rows .*c: 10"):
        data = load_training_data(config)
    assert data.summary() == {"harmlessness": {"pairs": 10, "ratings": 0}, "helpfulness": {"pairs": 20, "ratings": 0}}
    assert {p.subset for p in data.pairs} == {"toy/a", "toy/b"}
    assert data.objectives() == ["harmlessness", "helpfulness"]


def test_unmapped_subset_is_an_error_naming_the_row(data_dir):
    config = load_sources_config({"sources": [{"path": "pairs.jsonl", "subsets": {"a": "x", "b": "y"}}]},
                                 base_dir=data_dir)
    with pytest.raises(InputError, match="subset 'c' is not mapped") as err:
        load_training_data(config)
    assert err.value.line == 4 and err.value.field == "subset"


def test_shared_variable(data_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cfg")
    path = _write_yaml(elsewhere / "s.yaml", {"sources": [{"path": "${shared}/pairs.jsonl", "objective": "o"}]})
    config = load_sources_config(path, shared_dir=data_dir)
    assert config.sources[0].path == str(data_dir / "pairs.jsonl") and config.sources[0].name == "pairs"
    assert len(load_training_data(config).pairs) == 40
    with pytest.raises(InputError, match="shared_dir") as err:
        load_sources_config(path)
    assert err.value.path == str(path) and err.value.field == "sources[0].path" and err.value.line == 2


def test_unknown_key_names_file_line_and_key(data_dir):
    path = data_dir / "bad.yaml"
    path.write_text("seed: 1\nsources:\n  - path: pairs.jsonl\n    objective: o\n    formt: pairs\n")
    with pytest.raises(InputError, match="did you mean 'format'") as err:
        load_sources_config(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 5, "sources[0].formt")
    path.write_text("sources: []\nheldout: 0.2\n")
    with pytest.raises(InputError, match="unknown key 'heldout'"):
        load_sources_config(path)


@pytest.mark.parametrize("source, match", [
    ({"path": "pairs.jsonl", "format": "triples"}, "format must be"),
    ({"path": "missing.jsonl"}, "not found"),
    ({"path": "pairs.jsonl", "split": "dev"}, "split must be"),
    ({"path": "pairs.jsonl", "limit": -2}, "non-negative"),
    ({"path": "pairs.jsonl", "drop_empty": "yes"}, "true or false"),
    ({"path": "pairs.jsonl", "objective": "o", "subsets": {"a": "x"}}, "not both"),
    ({"path": "pairs.jsonl", "attributes": {"a": "x"}}, "'ratings' only"),
    ({"path": "rated.jsonl", "format": "ratings", "objective": "o"}, "does not apply"),
    ({"path": "pairs.jsonl", "other_subsets": "skip"}, "needs 'subsets'"),
    ({"path": "pairs.jsonl", "subsets": {"a": 3}}, "non-empty string"),
    ({"format": "pairs"}, "missing required key 'path'"),
])
def test_bad_values(data_dir, source, match):
    with pytest.raises(InputError, match=match):
        load_sources_config({"sources": [source]}, base_dir=data_dir)


def test_bad_top_level(data_dir):
    with pytest.raises(InputError, match="held-out fraction"):
        load_sources_config({"sources": [{"path": "pairs.jsonl"}], "heldout_fraction": 2}, base_dir=data_dir)
    with pytest.raises(InputError, match="two sources are named"):
        load_sources_config({"sources": [{"path": "pairs.jsonl"}, {"path": "pairs.jsonl"}]}, base_dir=data_dir)
    bad = data_dir / "broken.yaml"
    bad.write_text("sources: [\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_sources_config(bad)


def test_split_and_limit(data_dir):
    config = load_sources_config({"heldout_fraction": 0.5, "seed": 3, "sources": [
        {"name": "tr", "path": "pairs.jsonl", "objective": "o", "split": "train"},
        {"name": "te", "path": "pairs.jsonl", "objective": "o", "split": "test", "limit": 5},
    ]}, base_dir=data_dir)
    data = load_training_data(config)
    train = [p for p in data.pairs if p.subset.startswith("tr/")]
    test = [p for p in data.pairs if p.subset.startswith("te/")]
    assert len(test) == 5 and 0 < len(train) < 40
    assert all(split_of(p.prompt, fraction=0.5, seed=3) == "train" for p in train)
    assert all(split_of(p.prompt, fraction=0.5, seed=3) == "test" for p in test)


def test_ratings_keyed_by_objective(data_dir):
    config = load_sources_config({"sources": [
        {"name": "r", "path": "rated.jsonl", "format": "ratings", "attributes": {"score": "quality"}},
    ]}, base_dir=data_dir)
    data = load_training_data(config)
    assert [r.ratings for r in data.ratings[:2]] == [{"quality": 0.0}, {"quality": 1.0}]
    assert data.summary() == {"quality": {"pairs": 0, "ratings": 20}}
    assert {r.subset for r in data.ratings} == {"r"}


def test_rankings_source(tmp_path):
    rows = [{"prompt": "q", "response": t, "rank": r} for t, r in [("x", 0), ("y", 1), ("z", 2)]]
    write_jsonl(tmp_path / "ranks.jsonl", rows)
    config = load_sources_config({"sources": [{"path": "ranks.jsonl", "format": "rankings", "objective": "o"}]},
                                 base_dir=tmp_path)
    data = load_training_data(config)
    assert [(p.chosen, p.rejected, p.objective) for p in data.pairs] == [("x", "y", "o"), ("x", "z", "o"),
                                                                       ("y", "z", "o")]


def test_rows_without_objective_need_one(data_dir):
    config = load_sources_config({"sources": [{"path": "pairs.jsonl"}]}, base_dir=data_dir)
    with pytest.raises(InputError, match="no objective"):
        load_training_data(config)


def test_training_data_helpers():
    data = TrainingData()
    assert data.objectives() == [] and data.summary() == {}
    assert isinstance(SourcesConfig(), SourcesConfig) and SourcesConfig().heldout_fraction == 0.3
    assert math.isclose(SourcesConfig().heldout_fraction, 0.3)


def test_relative_shared_dir_is_relative_to_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "s.yaml").write_text("sources:\n  - path: ${shared}/p.jsonl\n    format: pairs\n"
                                             "    objective: helpfulness\n")
    monkeypatch.chdir(tmp_path)
    config = load_sources_config(tmp_path / "cfg" / "s.yaml", shared_dir="data")
    assert config.sources[0].path == str((tmp_path / "data" / "p.jsonl").resolve())
