"""Configuration of the ArmoRM-style multi-objective reward model trainer."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    embedding_cache: str | None = field(
        default="auto",
        metadata={"help": "Embedding cache: 'auto' = one SQLite file per backbone under <cache dir>/embeddings/, a "
                          "directory = the same inside it, a file path = that file, None = no cache."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the backbone's repository."})
    objectives: list[str] | None = field(
        default=None, metadata={"help": "Objective order in the model; None: sorted objectives of the data, then "
                                        "verbosity last."})
    verbosity_objective: str = field(
        default="verbosity",
        metadata={"help": "Name of the length-derived objective the others are de-correlated from."})
    decorrelate: bool = field(
        default=True, metadata={"help": "Apply ArmoRM's verbosity de-correlation (Spearman threshold below)."})
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
