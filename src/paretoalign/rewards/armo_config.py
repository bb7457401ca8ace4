"""Configuration of the ArmoRM-style multi-objective reward model trainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paretoalign.errors import InputError

BACKBONE_KINDS = ("auto", "causal_lm", "sentence_encoder")
SPLITS = ("train", "test")
EMBED_ENGINES = ("local", "ray")


@dataclass
class ArmoRMConfig:
    """Every setting of `train_reward_model`; YAML files and `key=value` overrides fill these fields."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the trained reward model directory is written (None: not saved)."})
    sources: str | None = field(
        default=None,
        metadata={"help": "YAML sources config mapping dataset files/subsets to objectives; 'shared': all of "
                          "the shared data (needs shared_dir); None: the bundled default."})
    shared_dir: str | None = field(
        default=None, metadata={"help": "Folder that '${shared}' in the sources config stands for (with "
                                        "sources=shared: the shared data folder, e.g. ../shared/data)."})
    split: str | None = field(
        default=None,
        metadata={"help": "Keep only one side ('train' or 'test') of the seeded held-out split in every source; "
                          "None: all rows. `eval-rm --shared-heldout` evaluates on the 'test' side."})
    backbone: str = field(
        default="minilm",
        metadata={"help": "Embedding backbone: 'minilm', 'smollm2', 'gemma3-270m', a local directory, a .gguf file "
                          "or a hub id."})
    backbone_kind: str = field(
        default="auto",
        metadata={"help": "'causal_lm', 'sentence_encoder', or 'auto' (sentence encoder for 'minilm' and "
                          "sentence-transformers directories, causal LM otherwise)."})
    gguf_file: str | None = field(
        default=None, metadata={"help": "GGUF file name inside `backbone` when it is a directory holding GGUFs."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Token budget per (prompt, response); the prompt is cut from the left. None: 512 for causal "
                          "LMs, the encoder's own limit for sentence encoders."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Embedding batch size (None: the backbone's measured default)."})
    embed_engine: str = field(
        default="local",
        metadata={"help": "Where the rows missing from the embedding cache are embedded: 'local' (this process) or "
                          "'ray' (embed_workers Ray actors, each loading the backbone; needs the ray extra). The "
                          "features and the cache are the same either way."})
    embed_workers: int = field(
        default=2, metadata={"help": "Ray actors embedding in parallel with embed_engine=ray (one CPU each; one GPU "
                                     "each on a cluster with a GPU per worker)."})
    embed_ray_address: str | None = field(
        default=None,
        metadata={"help": "Ray cluster to join with embed_engine=ray ('auto' after `ray start`, or HEAD:6379); "
                          "None: start a local Ray for the run."})
    embedding_cache: str | None = field(
        default="auto",
        metadata={"help": "Embedding cache: 'auto' = one SQLite file per backbone under <cache dir>/embeddings/, a "
                          "directory = the same inside it, a file path = that file, None = no cache."})
    features: list[str] | str | None = field(
        default="auto",
        metadata={"help": "Which named parts of h(x, y) the data objectives' heads and the BT baseline see (the "
                          "backbone's feature_layout; sentence encoders: response, product, length). 'auto': the "
                          "backbone's default_head_features (sentence encoders: response, product — the heads do "
                          "not see the length column, measured best in benchmarks/rm_quality.py), else all; None: "
                          "all. The length-derived verbosity head always sees every part; unused columns get zero "
                          "weights, so the saved model reads the backbone's full features."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the backbone's repository."})
    objectives: list[str] | None = field(
        default=None, metadata={"help": "Objective order in the model; None: sorted objectives of the data, then "
                                        "verbosity last."})
    verbosity_objective: str = field(
        default="verbosity",
        metadata={"help": "Name of the length-derived objective the others are de-correlated from."})
    decorrelate: bool = field(
        default=False,
        metadata={"help": "Apply ArmoRM's verbosity de-correlation (Spearman threshold below). Off by default: with "
                          "heads that do not see the length column it measured no better out of distribution "
                          "(benchmarks/rm_quality.py)."})
    decorrelation_threshold: float = field(
        default=0.03, metadata={"help": "Largest Spearman(r'_i, r_verbosity) allowed on the reference set."})
    decorrelation_max_lambda: float = field(
        default=3.0,
        metadata={"help": "Largest lambda on the grid {0, 0.01, ...}. The paper stops at 0.95, which leaves heads that "
                          "are mostly length detectors (LLMBar's instruction following: Spearman 0.40 at 0.95) "
                          "above the threshold; 0.95 reproduces the paper."})
    ridge_alphas: list[float] = field(
        default_factory=lambda: [10.0 ** e for e in range(-4, 5)],
        metadata={"help": "Ridge alpha grid for rated objectives (chosen on a validation split)."})
    bt_cs: list[float] = field(
        default_factory=lambda: [10.0 ** (e / 2) for e in range(-6, 7)],
        metadata={"help": "Inverse L2 strengths tried for the Bradley-Terry heads (chosen on a validation split)."})
    head_val_fraction: float = field(
        default=0.2, metadata={"help": "Validation fraction used to choose ridge alpha and BT C."})
    gating_crossfit_folds: int = field(
        default=5,
        metadata={"help": "Folds for the out-of-fold BT-head rewards the gating trains on (< 2: in-sample rewards)."})
    gating_method: str = field(
        default="bt",
        metadata={"help": "How the gating is fitted: 'bt' (ArmoRM: Bradley-Terry loss on pairs), 'pro' (regress "
                          "g(x) onto softmax of the preferred reply's objective rewards, then fit the scale), "
                          "'pro_margin' (the same onto softmax of the chosen-minus-rejected rewards), 'none' (one "
                          "weight vector for every prompt, BT loss)."})
    gating_hidden: list[int] = field(
        default_factory=lambda: [64],
        metadata={"help": "Gating MLP hidden sizes (the paper: three layers of 1024, for ~1M pairs; one layer of 64 "
                          "had the best validation accuracy on our 1k-10k pairs)."})
    gating_dropout: float = field(default=0.2, metadata={"help": "Gating MLP dropout."})
    gating_temperature: float = field(default=10.0, metadata={"help": "Softmax temperature tau of the gating."})
    gating_steps: int = field(default=1000, metadata={"help": "AdamW steps for the gating network."})
    gating_batch_size: int = field(default=512, metadata={"help": "Pairs per gating step."})
    gating_lr: float = field(default=1e-3, metadata={"help": "Gating learning rate."})
    gating_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the gating network."})
    seed: int = field(default=0, metadata={"help": "Seed of every split and initialisation."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        """Check every setting here, before any data is read or a backbone loads (InputError naming the field)."""
        if not isinstance(self.backbone, str) or not self.backbone:
            raise InputError(f"backbone must be a non-empty model reference, got {self.backbone!r}", field="backbone")
        if self.backbone_kind not in BACKBONE_KINDS:
            raise InputError(f"backbone_kind must be one of {', '.join(BACKBONE_KINDS)}, got {self.backbone_kind!r}",
                             field="backbone_kind")
        if self.split is not None and self.split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS} or None, got {self.split!r}", field="split")
        if self.max_length is not None:
            _int_at_least(self.max_length, 2, "max_length")
        if self.batch_size is not None:
            _int_at_least(self.batch_size, 1, "batch_size")
        if self.embed_engine not in EMBED_ENGINES:
            raise InputError(f"embed_engine must be one of {', '.join(EMBED_ENGINES)}, got {self.embed_engine!r}",
                             field="embed_engine")
        _int_at_least(self.embed_workers, 1, "embed_workers")
        if self.embed_engine == "ray":
            import importlib.util

            from paretoalign.embed.ray_embed import RAY_HINT

            if importlib.util.find_spec("ray") is None:
                raise InputError(f"embed_engine=ray needs Ray: {RAY_HINT}", field="embed_engine")
        if self.embed_ray_address is not None and (not isinstance(self.embed_ray_address, str)
                                                   or not self.embed_ray_address.strip()):
            raise InputError(f"embed_ray_address must be a non-empty address or null, got "
                             f"{self.embed_ray_address!r}", field="embed_ray_address")
        if self.features not in (None, "auto") and (not isinstance(self.features, list) or not self.features
                                                    or len(set(self.features)) != len(self.features)):
            raise InputError(f"features must be 'auto', null or a non-empty list of distinct names, got "
                             f"{self.features!r}", field="features")
        if self.objectives is not None and len(set(self.objectives)) != len(self.objectives):
            raise InputError(f"objectives lists a name twice: {self.objectives}", field="objectives")
        if not self.verbosity_objective:
            raise InputError("verbosity_objective must be a non-empty name", field="verbosity_objective")
        _number_at_least(self.decorrelation_threshold, 0.0, "decorrelation_threshold")
        _number_at_least(self.decorrelation_max_lambda, 0.0, "decorrelation_max_lambda")
        for name in ("ridge_alphas", "bt_cs"):
            grid = getattr(self, name)
            if not grid:
                raise InputError("needs at least one value", field=name)
            for value in grid:
                _number_above(value, 0.0, name)
        if not (isinstance(self.head_val_fraction, (int, float)) and 0 < self.head_val_fraction < 1):
            raise InputError(f"head_val_fraction must be in (0, 1), got {self.head_val_fraction!r}",
                             field="head_val_fraction")
        from paretoalign.rewards.gating import GATING_METHODS

        if self.gating_method not in GATING_METHODS:
            raise InputError(f"gating_method must be one of {', '.join(GATING_METHODS)}, got {self.gating_method!r}",
                             field="gating_method")
        _int_at_least(self.gating_crossfit_folds, 0, "gating_crossfit_folds")
        for size in self.gating_hidden:
            _int_at_least(size, 1, "gating_hidden")
        if not (isinstance(self.gating_dropout, (int, float)) and 0 <= self.gating_dropout < 1):
            raise InputError(f"gating_dropout must be in [0, 1), got {self.gating_dropout!r}", field="gating_dropout")
        _number_above(self.gating_temperature, 0.0, "gating_temperature")
        _int_at_least(self.gating_steps, 1, "gating_steps")
        _int_at_least(self.gating_batch_size, 1, "gating_batch_size")
        _number_above(self.gating_lr, 0.0, "gating_lr")
        _number_at_least(self.gating_weight_decay, 0.0, "gating_weight_decay")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_at_least(value, low: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}", field=name)


def _number_at_least(value, low: float, name: str) -> None:
    if not (_is_number(value) and value >= low):
        raise InputError(f"{name} must be a finite number >= {low:g}, got {value!r}", field=name)


def _number_above(value, low: float, name: str) -> None:
    if not (_is_number(value) and value > low):
        raise InputError(f"{name} must be a finite number > {low:g}, got {value!r}", field=name)
