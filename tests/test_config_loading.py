from dataclasses import dataclass, field

import pytest

from paretoalign.config_loading import load_config, parse_override
from paretoalign.errors import InputError
from paretoalign.rewards.armo_config import ArmoRMConfig


@dataclass
class Toy:
    name: str = "a"
    steps: int = 10
    lr: float = 0.1
    hidden: list[int] = field(default_factory=lambda: [4])
    path: str | None = None


def test_yaml_then_overrides_then_explicit(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: b\nsteps: 20\n")
    toy = load_config(Toy, cfg, ["steps=30", "hidden=[8, 8]"], name="c")
    assert (toy.name, toy.steps, toy.hidden) == ("c", 30, [8, 8])


def test_int_given_for_float_is_coerced():
    assert load_config(Toy, None, ["lr=1"]).lr == 1.0
    assert isinstance(load_config(Toy, None, ["lr=1"]).lr, float)


def test_unknown_key_in_yaml_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: b\nstesp: 20\n")
    with pytest.raises(InputError) as err:
        load_config(Toy, cfg)
    assert err.value.path == str(cfg) and err.value.line == 2 and err.value.field == "stesp"


def test_wrong_type_override_is_rejected():
    with pytest.raises(InputError, match="steps"):
        load_config(Toy, None, ["steps=many"])


def test_override_without_equals_is_rejected():
    with pytest.raises(InputError, match="key=value"):
        parse_override("steps")


def test_null_override_sets_optional_to_none():
    assert load_config(Toy, None, ["path=null"]).path is None


def test_every_armo_field_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(ArmoRMConfig))
