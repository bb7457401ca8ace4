"""The default training data shipped inside the package (see ``bundled/README.md``)."""

from __future__ import annotations

from pathlib import Path

from paretoalign.data.sources import SourcesConfig, load_sources_config

DEFAULT_PAIRS_FILE = "default_pairs.jsonl.gz"
DEFAULT_SOURCES_FILE = "default_sources.yaml"


def bundled_data_dir() -> Path:
    """The folder of the bundled data files (package data)."""
    return Path(__file__).resolve().parent / "bundled"


def default_sources_config() -> SourcesConfig:
    """The sources config of the bundled default pairs: only the "train" side of the held-out split of
    HH-RLHF, HHH, LLMBar and OASST (MIT / Apache-2.0), with each row's own objective."""
    return load_sources_config(bundled_data_dir() / DEFAULT_SOURCES_FILE)
