"""Finding files, reading schemas and row ranges; every error names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linreg.errors import DataError
from linreg.sources import discover_files, inspect_file, read_rows
from tests.conftest import write_csv


def _parquet(path: Path, frame: pd.DataFrame, row_group_size: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size
    )
    return path


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.arange(10.0),
            "b": np.arange(10) * 2,
            "target": np.ones(10),
            "name": list("abcdefghij"),
        }
    )


def test_directory_is_searched_recursively_in_sorted_order_skipping_markers(tmp_path, frame):
    _parquet(tmp_path / "d" / "b.parquet", frame)
    _parquet(tmp_path / "d" / "sub" / "a.parquet", frame)
    write_csv(tmp_path / "d" / "c.csv", frame)
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "notes.txt").write_text("not data")
    _parquet(tmp_path / "d" / ".hidden" / "x.parquet", frame)
    found = discover_files(str(tmp_path / "d"))
    assert [file_id for file_id, _ in found] == ["b.parquet", "c.csv", "sub/a.parquet"]
    assert all(url.startswith("file://") for _, url in found)


@pytest.mark.parametrize("pattern", ["d/*.parquet", "d/[ab].parquet"])
def test_glob_selects_matching_files(tmp_path, frame, pattern):
    _parquet(tmp_path / "d" / "a.parquet", frame)
    _parquet(tmp_path / "d" / "b.parquet", frame)
    write_csv(tmp_path / "d" / "c.csv", frame)
    assert [f for f, _ in discover_files(str(tmp_path / pattern))] == ["a.parquet", "b.parquet"]


def test_single_file_and_fsspec_url(tmp_path, frame):
    path = _parquet(tmp_path / "one.parquet", frame)
    assert [f for f, _ in discover_files(str(path))] == ["one.parquet"]
    assert [f for f, _ in discover_files(f"file://{path}")] == ["one.parquet"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such file or directory"),
        (lambda d: d.mkdir(), "no CSV or Parquet files found"),
        (lambda d: d.with_suffix(".txt").write_text("x"), "not a CSV or Parquet file"),
    ],
    ids=["missing", "empty-dir", "wrong-extension"],
)
def test_unusable_sources_are_named(tmp_path, setup, message):
    target = tmp_path / "src"
    setup(target)
    source = target.with_suffix(".txt") if message.startswith("not a") else target
    with pytest.raises(DataError, match=message) as error:
        discover_files(str(source))
    assert str(source) in str(error.value)


def test_inspect_reports_rows_and_numeric_columns(tmp_path, frame):
    parquet = inspect_file("x.parquet", f"file://{_parquet(tmp_path / 'x.parquet', frame)}")
    csv = inspect_file("x.csv", f"file://{write_csv(tmp_path / 'x.csv', frame)}")
    for data_file in (parquet, csv):
        assert data_file.n_rows == 10
        assert data_file.columns == ("a", "b", "target", "name")
        assert data_file.numeric_columns == {"a", "b", "target"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.parquet", b"PAR1 this is not parquet", "bad.parquet: not a readable Parquet file"),
        ("empty.csv", b"", "empty.csv: empty file"),
        ("ragged.csv", b"a,b,target\n1,2,3\n4,5\n", "ragged.csv: not a readable CSV file"),
    ],
)
def test_unreadable_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        inspect_file(name, f"file://{path}")


def test_truncated_parquet_is_named(tmp_path, frame):
    path = _parquet(tmp_path / "t.parquet", frame)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="t.parquet: not a readable Parquet file"):
        inspect_file("t.parquet", f"file://{path}")


@pytest.mark.parametrize(("start", "stop"), [(0, 10), (0, 3), (2, 7), (3, 6), (9, 10), (5, 5)])
@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_read_rows_returns_exactly_the_range(tmp_path, frame, start, stop, kind):
    path = (
        _parquet(tmp_path / "x.parquet", frame)
        if kind == "parquet"
        else write_csv(tmp_path / "x.csv", frame)
    )
    data_file = inspect_file(path.name, f"file://{path}")
    block = read_rows(data_file, ["b", "a"], start, stop)
    expected = frame[["b", "a"]].to_numpy(dtype=float)[start:stop]
    np.testing.assert_array_equal(block, expected)


def test_missing_values_become_nan(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,target\n1,2\n,3\nNaN,4\n5,\n")
    block = read_rows(inspect_file("gaps.csv", f"file://{path}"), ["a", "target"], 0, 4)
    assert np.isnan(block).sum() == 3


def test_non_numeric_csv_value_names_file_and_column(tmp_path):
    rows = "\n".join(f"{i},{i}" for i in range(50))
    path = tmp_path / "late.csv"
    path.write_text(f"a,target\n{rows}\noops,1\n")
    data_file = inspect_file("late.csv", f"file://{path}")
    with pytest.raises(
        DataError, match=r"late.csv line 52: column 'a' has a non-numeric value 'oops'"
    ):
        read_rows(data_file, ["a", "target"], 0, 51)
