"""A persistent embedding cache: one SQLite file (WAL) of float32 features keyed by backbone and row."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from paretoalign.data.schema import Message
from paretoalign.errors import InputError

SCHEMA_VERSION = "1"
_QUERY_CHUNK = 500
"""Keys per SELECT (below every SQLite build's limit on bound variables)."""


def cache_key(fingerprint: str, prompt: Sequence[Message], response: str) -> str:
    """sha256 of the backbone fingerprint and the canonical JSON of [prompt messages, response]."""
    row = json.dumps([[dict(m) for m in prompt], response], sort_keys=True, ensure_ascii=False,
                     separators=(",", ":"))
    return hashlib.sha256(f"{fingerprint}\0{row}".encode()).hexdigest()


class EmbeddingCache:
    """Features of one backbone, stored by `cache_key`.

    The meta table records the backbone fingerprint and the two feature dimensions the first time they are
    known (from the constructor or the first `put_many`); opening or writing with other ones is an error,
    so one file never mixes backbones. Values come back as read-only float32 arrays.
    """

    def __init__(self, path: str | Path, *, fingerprint: str | None = None, feature_dim: int | None = None,
                 prompt_feature_dim: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(str(self.path))
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._conn:
                self._conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._conn.execute("CREATE TABLE IF NOT EXISTS embeddings "
                                   "(key TEXT PRIMARY KEY, response BLOB NOT NULL, prompt BLOB NOT NULL)")
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            meta = self.meta()
        except sqlite3.DatabaseError as exc:  # a file that is not an SQLite database (or a damaged one)
            raise InputError(f"not a readable embedding cache ({exc}): delete the file to rebuild it, or give "
                             "another cache path", path=str(self.path), field="embedding_cache") from None
        if meta["schema_version"] != SCHEMA_VERSION:
            raise InputError(f"embedding cache schema {meta['schema_version']}, this version reads "
                             f"{SCHEMA_VERSION}: delete the file to rebuild it", path=str(self.path))
        self._bind(fingerprint=fingerprint, feature_dim=feature_dim, prompt_feature_dim=prompt_feature_dim)

    def meta(self) -> dict[str, str]:
        """The meta table: schema_version, and fingerprint / feature_dim / prompt_feature_dim once known."""
        return dict(self._conn.execute("SELECT name, value FROM meta").fetchall())

    def _bind(self, **values: str | int | None) -> None:
        """Record each given value in meta, or check it against the recorded one."""
        meta = self.meta()
        new = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in meta and meta[name] != str(value):
                raise InputError(f"this embedding cache holds {name}={meta[name]}, not {value}: it was written "
                                 "by another backbone; use another cache file", path=str(self.path), field=name)
            new[name] = str(value)
        if new:
            with self._conn:
                self._conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", list(new.items()))

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The cached (response, prompt) feature vectors of the keys present."""
        keys = list(keys)
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for lo in range(0, len(keys), _QUERY_CHUNK):
            part = keys[lo:lo + _QUERY_CHUNK]
            marks = ",".join("?" * len(part))
            rows = self._conn.execute(f"SELECT key, response, prompt FROM embeddings WHERE key IN ({marks})", part)
            for key, response, prompt in rows:
                found[key] = (np.frombuffer(response, dtype=np.float32), np.frombuffer(prompt, dtype=np.float32))
        return found

    def put_many(self, items: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Store (key, response vector, prompt vector) items in one transaction (replacing existing keys)."""
        rows = []
        for key, response, prompt in items:
            r = np.ascontiguousarray(response, dtype=np.float32).ravel()
            p = np.ascontiguousarray(prompt, dtype=np.float32).ravel()
            if not rows:
                self._bind(feature_dim=r.size, prompt_feature_dim=p.size)
                dims = (r.size, p.size)
            if (r.size, p.size) != dims:
                raise InputError(f"feature sizes {(r.size, p.size)} differ from {dims} in one put_many",
                                 path=str(self.path))
            rows.append((key, r.tobytes(), p.tobytes()))
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
