"""Configuration of `paretoalign maxmin-rm`: H Bradley-Terry reward models fitted by EM over users (MaxMin-RLHF).

Supports: one preference-pair file (JSONL/JSON/Parquet or a `datasets` folder) whose rows are tagged by user (or by a
proxy column such as `subset`), the same embedding backbones and cache as `train-rm`, seeded k-means++-like or
random initial assignments. Assumes: every setting is checked here, before any data is read or a backbone loads;
the checks that need the data (number of users, the tag column) run in `rewards.maxmin`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paretoalign.errors import InputError
from paretoalign.rewards.armo_config import BACKBONE_KINDS, _int_at_least, _number_above

INITS = ("kmeans++", "random")


@dataclass
class MaxMinRMConfig:
    """Every setting of `train_maxmin_rm`; YAML files and `key=value` overrides fill these fields."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the reward model folder (with assignments.json) is written (None: "
                                        "not saved)."})
    data: str | None = field(
        default=None,
        metadata={"help": "Preference-pair file (prompt, chosen, rejected, and a user tag column); required."})
    user_field: str | None = field(
        default=None,
        metadata={"help": "Column naming each pair's user/annotator. None: 'user' when the file has it, else "
                          "'subset' (a proxy tag); a name: that column, required on every row."})
    n_groups: int = field(default=2, metadata={"help": "H, the number of user groups and reward heads (1 <= H <= "
                                                       "number of users)."})
    max_iterations: int = field(default=50, metadata={"help": "Most EM iterations (M-step then E-step each)."})
    init: str = field(
        default="kmeans++",
        metadata={"help": "Initial assignment of users: 'kmeans++' (k-means++ seeding on the direction of each user's "
                          "mean chosen-minus-rejected feature difference, then nearest seed by cosine) or 'random' "
                          "(each group gets one random user, the rest uniformly at random)."})
    backbone: str = field(
        default="minilm",
        metadata={"help": "Embedding backbone: 'minilm', 'smollm2', 'gemma3-270m', a local directory, a .gguf file "
                          "or a hub id (as train-rm)."})
    backbone_kind: str = field(
        default="auto", metadata={"help": "'causal_lm', 'sentence_encoder', or 'auto' (as train-rm)."})
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file name inside `backbone` when it is a directory holding GGUFs."})
    max_length: int | None = field(
        default=None, metadata={"help": "Token budget per (prompt, response); None: the backbone's default."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Embedding batch size (None: the backbone's measured default)."})
    embedding_cache: str | None = field(
        default="auto",
        metadata={"help": "Embedding cache: 'auto', a directory, a file path or None (as train-rm)."})
    features: list[str] | str | None = field(
        default="auto",
        metadata={"help": "Named parts of h(x, y) the heads see ('auto': the backbone's default head features; None: "
                          "all), as train-rm."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the backbone's repository."})
    bt_cs: list[float] = field(
        default_factory=lambda: [10.0 ** (e / 2) for e in range(-6, 7)],
        metadata={"help": "Inverse L2 strengths tried for the pooled Bradley-Terry fit; the chosen C is used for "
                          "every group head in the M-steps."})
    head_val_fraction: float = field(
        default=0.2, metadata={"help": "Validation fraction used to choose C on the pooled pairs."})
    seed: int = field(default=0, metadata={"help": "Seed of the initial assignment and of the C validation split."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        """Check every setting here, before any data is read or a backbone loads (InputError naming the field)."""
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            raise InputError(f"data must be a preference-pair file path, got {self.data!r}", field="data")
        if self.user_field is not None and (not isinstance(self.user_field, str) or not self.user_field.strip()):
            raise InputError(f"user_field must be a column name or null, got {self.user_field!r}", field="user_field")
        _int_at_least(self.n_groups, 1, "n_groups")
        _int_at_least(self.max_iterations, 1, "max_iterations")
        if self.init not in INITS:
            raise InputError(f"init must be one of {', '.join(INITS)}, got {self.init!r}", field="init")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise InputError(f"backbone must be a non-empty model reference, got {self.backbone!r}", field="backbone")
        if self.backbone_kind not in BACKBONE_KINDS:
            raise InputError(f"backbone_kind must be one of {', '.join(BACKBONE_KINDS)}, got {self.backbone_kind!r}",
                             field="backbone_kind")
        if self.max_length is not None:
            _int_at_least(self.max_length, 2, "max_length")
        if self.batch_size is not None:
            _int_at_least(self.batch_size, 1, "batch_size")
        if self.features not in (None, "auto") and (not isinstance(self.features, list) or not self.features
                                                    or len(set(self.features)) != len(self.features)):
            raise InputError(f"features must be 'auto', null or a non-empty list of distinct names, got "
                             f"{self.features!r}", field="features")
        if not self.bt_cs:
            raise InputError("needs at least one value", field="bt_cs")
        for value in self.bt_cs:
            _number_above(value, 0.0, "bt_cs")
        if not (isinstance(self.head_val_fraction, (int, float)) and 0 < self.head_val_fraction < 1):
            raise InputError(f"head_val_fraction must be in (0, 1), got {self.head_val_fraction!r}",
                             field="head_val_fraction")
        _int_at_least(self.seed, 0, "seed")
