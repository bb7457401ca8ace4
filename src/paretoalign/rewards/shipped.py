"""The trained default reward model shipped inside the package (see ``default_rm/MODEL_CARD.md``)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_RM_ALIAS = "default"
"""What `--model` / `--rm` accept for the shipped default reward model."""


def default_rm_dir() -> Path:
    """The folder of the shipped default reward model (package data)."""
    return Path(__file__).resolve().parent / "default_rm"


def resolve_rm_reference(reference: str) -> str:
    """`reference` with the alias ``"default"`` replaced by the shipped model's folder."""
    return str(default_rm_dir()) if str(reference) == DEFAULT_RM_ALIAS else str(reference)
