"""Helpers for the data-layer tests: write rows in every supported file format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_jsonl(path: Path, rows: list, *, raw_lines: list[str] | None = None) -> Path:
    """Rows as JSON lines (or the given raw lines verbatim); .gz paths are gzipped."""
    text = "".join(line + "\n" for line in (raw_lines or [json.dumps(r) for r in rows]))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


HH_PROMPT = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant:"
HH_MESSAGES = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
]
