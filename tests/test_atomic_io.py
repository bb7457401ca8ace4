import os

import pytest

from paretoalign.atomic_io import atomic_directory, write_jsonl_atomic, write_text_atomic


def test_failed_write_leaves_no_file(tmp_path):
    def rows():
        yield {"a": 1}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(tmp_path / "out.jsonl", rows())
    assert list(tmp_path.iterdir()) == []


def test_failed_directory_leaves_nothing_and_keeps_neighbours(tmp_path):
    write_text_atomic(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "d"):
        raise RuntimeError("boom")
    assert (tmp_path / "f.txt").read_text() == "old" and not (tmp_path / "d").exists()


def test_directory_replaced_whole(tmp_path):
    with atomic_directory(tmp_path / "d") as d:
        (d / "a").write_text("1")
    with atomic_directory(tmp_path / "d") as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["b"]


def test_written_files_follow_umask(tmp_path):
    write_text_atomic(tmp_path / "f.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
