"""The default training data shipped inside the package (see ``bundled/README.md``)."""

from __future__ import annotations

import os
from pathlib import Path

from paretoalign.data.sources import SourcesConfig, load_sources_config, restrict_to_split
from paretoalign.errors import InputError

DEFAULT_PAIRS_FILE = "default_pairs.jsonl.gz"
DEFAULT_SOURCES_FILE = "default_sources.yaml"
SHARED_SOURCES_FILE = "shared_sources.yaml"


def bundled_data_dir() -> Path:
    """The folder of the bundled data files (package data)."""
    return Path(__file__).resolve().parent / "bundled"


def default_sources_config() -> SourcesConfig:
    """The sources config of the bundled default pairs: only the "train" side of the held-out split of
    HH-RLHF, HHH, LLMBar and OASST (MIT / Apache-2.0), with each row's own objective."""
    return load_sources_config(bundled_data_dir() / DEFAULT_SOURCES_FILE)


def shared_data_config(shared_dir: str | os.PathLike, *, split: str | None = None) -> SourcesConfig:
    """The config of ALL the shared data (``../shared/data``), with the project's objective mapping.

    `split` ("train" / "test") keeps one side of the held-out split in every source; evaluation uses "test".
    The config itself is ``paretoalign/data/bundled/shared_sources.yaml``.
    """
    folder = Path(shared_dir)
    if not folder.is_dir():
        raise InputError("no such folder: expected the shared data folder (e.g. ../shared/data)" if not folder.exists()
                         else "is a file: expected the shared data folder (e.g. ../shared/data)", path=str(shared_dir))
    try:
        config = load_sources_config(bundled_data_dir() / SHARED_SOURCES_FILE, shared_dir=shared_dir)
    except InputError as exc:  # name the user's folder, not our internal YAML
        if "not found" not in exc.reason:
            raise
        raise InputError(f"not the shared data folder (e.g. ../shared/data): {exc.reason}",
                         path=str(shared_dir)) from exc
    return restrict_to_split(config, split)
