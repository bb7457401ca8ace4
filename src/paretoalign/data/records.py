"""Read rows from JSON lines, JSON, Parquet files or Hugging Face datasets, each with its location.

Every reader yields ``(location, row)``: ``location`` names where the row came from, for error messages and for
``PreferencePair.source`` / ``RatedResponse.source``:

- ``"path:N"`` for files, N 1-based: the line number for ``.jsonl`` / ``.jsonl.gz`` (blank lines are skipped but
  still counted), the row number for ``.json`` and ``.parquet``;
- ``"dataset[i]"`` for a ``datasets.Dataset`` (``"dataset['split'][i]"`` for a split of a ``DatasetDict``;
  ``"path[i]"`` / ``"path['split'][i]"`` for one loaded from a ``save_to_disk`` folder);
- ``"rows[i]"`` for an in-memory list of dicts.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from paretoalign.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
JSON_SUFFIXES = (".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
_SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")  # what save_to_disk writes


def read_records(source: Any, *, split: str | None = None) -> Iterator[tuple[str, dict]]:
    """Yield ``(location, row)`` for every row of `source`.

    `source` is a path (``str`` / ``os.PathLike``) to a ``.jsonl``, ``.jsonl.gz``, ``.ndjson``, ``.json``,
    ``.json.gz`` (a list of objects, or an object with exactly one list field) or ``.parquet`` file, or to a
    folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``; a
    ``datasets.Dataset`` / ``IterableDataset``; a ``datasets.DatasetDict`` (`split` picks one; it may be omitted
    when the dict holds a single split); or a list of dicts. Raises ``InputError`` for a missing file, an unknown
    extension, a malformed line, or a row that is not an object.
    """
    if isinstance(source, (str, os.PathLike)):
        yield from _read_file(Path(source), split)
        return
    module = type(source).__module__ or ""
    if module.split(".")[0] == "datasets":
        yield from _read_hf(source, split)
        return
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if split is not None:
            raise InputError(f"split={split!r} only applies to a datasets.DatasetDict, not to a list of rows")
        for i, row in enumerate(source):
            location = f"rows[{i}]"
            yield location, _check_object(row, location)
        return
    raise InputError(f"cannot read records from a {type(source).__name__}: expected a file path, a "
                     "datasets.Dataset / DatasetDict or a list of dicts")


def split_location(location: str) -> tuple[str | None, int | None]:
    """``"path:N"`` -> ``(path, N)``; other locations -> ``(location, None)``; for building ``InputError``s."""
    path, sep, tail = location.rpartition(":")
    if sep and tail.isdigit():
        return path, int(tail)
    return location, None


def location_error(message: str, location: str, field: str | None = None) -> InputError:
    """An ``InputError`` located at `location` (as yielded by ``read_records``)."""
    path, line = split_location(location)
    return InputError(message, path=path, line=line, field=field)


def data_suffix(path: Path) -> str:
    """The data-file extension of `path` (``".jsonl.gz"`` for ``x.jsonl.gz``), lower case."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _read_file(path: Path, split: str | None) -> Iterator[tuple[str, dict]]:
    if path.is_dir() and any((path / name).is_file() for name in _SAVED_DATASET_FILES):
        import datasets

        yield from _read_hf(datasets.load_from_disk(str(path)), split, name=str(path))
        return
    if split is not None:
        raise InputError(f"split={split!r} only applies to a datasets.DatasetDict, not to a file", path=str(path))
    suffix = data_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unknown file type {suffix or '(no extension)'!r}; expected one of "
                         f"{', '.join(SUPPORTED_SUFFIXES)}", path=str(path))
    if not path.exists():
        raise InputError("file not found", path=str(path))
    if path.is_dir():
        raise InputError("is a folder but not one written by datasets' save_to_disk; expected a data file",
                         path=str(path))
    if suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(path, compressed=suffix.endswith(".gz"))
    elif suffix in JSON_SUFFIXES:
        yield from _read_json(path, compressed=suffix.endswith(".gz"))
    else:
        yield from _read_parquet(path)


def _open_binary(path: Path, compressed: bool):
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _read_jsonl(path: Path, *, compressed: bool) -> Iterator[tuple[str, dict]]:
    try:
        with _open_binary(path, compressed) as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=str(path),
                                     line=line_no) from None
                if line_no == 1:
                    text = text.lstrip("\ufeff")
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    raise InputError(f"malformed JSON: {e.msg} at column {e.colno}", path=str(path),
                                     line=line_no) from None
                location = f"{path}:{line_no}"
                yield location, _check_object(row, location)
    except (gzip.BadGzipFile, EOFError) as e:
        raise InputError(f"cannot read gzip data: {e}", path=str(path)) from None


def _read_json(path: Path, *, compressed: bool) -> Iterator[tuple[str, dict]]:
    try:
        with _open_binary(path, compressed) as f:
            data = json.loads(f.read().decode("utf-8-sig"))
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} at column {e.colno}", path=str(path), line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path=str(path)) from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise InputError(f"cannot read gzip data: {e}", path=str(path)) from None
    if isinstance(data, dict):
        list_fields = [key for key, value in data.items() if isinstance(value, list)]
        if len(list_fields) != 1:
            raise InputError("expected a JSON list of objects, or an object with exactly one list field; found "
                             f"an object with {len(list_fields)} list fields {list_fields}", path=str(path))
        data = data[list_fields[0]]
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of objects, got {_type_name(data)}", path=str(path))
    for i, row in enumerate(data, start=1):
        location = f"{path}:{i}"
        yield location, _check_object(row, location)


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise InputError(f"cannot read Parquet file: {e}", path=str(path)) from None
    row_no = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            row_no += 1
            yield f"{path}:{row_no}", row


def _read_hf(source: Any, split: str | None, name: str = "dataset") -> Iterator[tuple[str, dict]]:
    import datasets

    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        names = list(source.keys())
        if split is None:
            if len(names) != 1:
                raise InputError(f"the DatasetDict has splits {names}; pass split= to pick one")
            split = names[0]
        if split not in source:
            raise InputError(f"split {split!r} not in the DatasetDict (it has {names})")
        prefix = f"{name}[{split!r}]"
        rows = source[split]
    elif isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        if split is not None and str(getattr(source, "split", None)) != split:
            raise InputError(f"split={split!r} only applies to a datasets.DatasetDict; this Dataset is split "
                             f"{getattr(source, 'split', None)!r}")
        prefix = name
        rows = source
    else:
        raise InputError(f"cannot read records from a {type(source).__name__}")
    for i, row in enumerate(rows):
        location = f"{prefix}[{i}]"
        yield location, _check_object(row, location)


def _check_object(row: Any, location: str) -> dict:
    if isinstance(row, Mapping):
        return dict(row)
    raise location_error(f"expected a JSON object (a row with named fields), got {_type_name(row)}", location)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
