import gzip

import pytest

from paretoalign.data import read_records
from paretoalign.errors import InputError
from tests.data.helpers import write_json, write_jsonl, write_parquet

ROWS = [{"a": 1}, {"a": 2}]


def test_jsonl_locations_count_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [], raw_lines=['{"a": 1}', "", "   ", '{"a": 2}'])
    assert list(read_records(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:4", {"a": 2})]


def test_jsonl_gz_and_str_path(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl.gz", ROWS)
    assert [row for _, row in read_records(str(path))] == ROWS


def test_json_list_and_single_list_field(tmp_path):
    a = write_json(tmp_path / "a.json", ROWS)
    b = write_json(tmp_path / "b.json", {"version": 2, "data": ROWS})
    assert list(read_records(a)) == [(f"{a}:1", ROWS[0]), (f"{a}:2", ROWS[1])]
    assert [row for _, row in read_records(b)] == ROWS
    c = write_json(tmp_path / "c.json", {"x": ROWS, "y": ROWS})
    with pytest.raises(InputError, match="one list field"):
        list(read_records(c))


def test_parquet(tmp_path):
    path = write_parquet(tmp_path / "x.parquet", ROWS)
    assert list(read_records(path)) == [(f"{path}:1", ROWS[0]), (f"{path}:2", ROWS[1])]


def test_datasets_dataset_and_dict():
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    assert list(read_records(ds)) == [("dataset[0]", ROWS[0]), ("dataset[1]", ROWS[1])]
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([1])})
    assert list(read_records(dd, split="test")) == [("dataset['test'][0]", ROWS[1])]
    with pytest.raises(InputError, match="validation"):
        list(read_records(dd, split="validation"))
    with pytest.raises(InputError, match="split="):
        list(read_records(dd))
    assert len(list(read_records(datasets.DatasetDict({"train": ds})))) == 2


def test_list_of_dicts():
    assert list(read_records(ROWS)) == [("rows[0]", ROWS[0]), ("rows[1]", ROWS[1])]


def test_malformed_line_names_path_and_line(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [], raw_lines=['{"a": 1}', '{"a": ', '{"a": 3}'])
    with pytest.raises(InputError) as err:
        list(read_records(path))
    assert err.value.path == str(path) and err.value.line == 2
    assert "malformed JSON" in str(err.value) and f"{path}:2" in str(err.value)


def test_row_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [], raw_lines=['{"a": 1}', "[1, 2]"])
    with pytest.raises(InputError, match="expected a JSON object") as err:
        list(read_records(path))
    assert err.value.line == 2
    with pytest.raises(InputError, match="expected a JSON object"):
        list(read_records(write_json(tmp_path / "y.json", [1, 2])))


def test_missing_file_unknown_extension_bad_gzip_bad_utf8(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        list(read_records(tmp_path / "nope.jsonl"))
    assert err.value.path == str(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(InputError, match="unknown file type"):
        list(read_records(tmp_path / "x.csv"))
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="gzip"):
        list(read_records(tmp_path / "bad.jsonl.gz"))
    (tmp_path / "bad.jsonl").write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(InputError, match="UTF-8") as err:
        list(read_records(tmp_path / "bad.jsonl"))
    assert err.value.line == 2


def test_split_on_a_file_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    with pytest.raises(InputError, match="DatasetDict"):
        list(read_records(path, split="train"))


def test_gzip_json(tmp_path):
    path = tmp_path / "x.json.gz"
    with gzip.open(path, "wt") as f:
        f.write('[{"a": 1}]')
    assert [row for _, row in read_records(path)] == [{"a": 1}]


def test_save_to_disk_folders(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "ds"))
    folder = tmp_path / "ds"
    assert list(read_records(folder)) == [(f"{folder}[0]", ROWS[0]), (f"{folder}[1]", ROWS[1])]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    assert [row for _, row in read_records(tmp_path / "dd", split="test")] == ROWS
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="save_to_disk"):
        list(read_records(tmp_path / "plain"))
