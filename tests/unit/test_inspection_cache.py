"""Validation keeps what it learnt about unchanged files: later runs read only new or changed
ones, and validate to the same plan as a run without the cache."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import linreg.validation
from linreg.config import DataConfig
from linreg.inspection_cache import InspectionCache
from linreg.validation import csv_format, validate_source
from tests.conftest import write_csv


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "name": ["a"] * n, "target": rng.normal(size=n)})


@pytest.fixture
def inspected(monkeypatch) -> list[str]:
    """The file ids validation reads, in order."""
    seen: list[str] = []
    real = linreg.validation.inspect_file

    def counting(file_id, url, **options):
        seen.append(file_id)
        return real(file_id, url, **options)

    monkeypatch.setattr(linreg.validation, "inspect_file", counting)
    return seen


def _validate(data: DataConfig, directory) -> tuple[linreg.validation.SourcePlan, InspectionCache]:
    cache = InspectionCache(directory, data.source, csv_format(data))
    return validate_source(data, cache=cache), cache


def _same(plan, reference) -> None:
    assert plan == reference
    assert [(f.file_id, f.n_rows, f.excluded, f.csv) for f in plan.files] == [
        (f.file_id, f.n_rows, f.excluded, f.csv) for f in reference.files
    ]


def test_unchanged_files_are_not_read_again_and_validate_the_same(tmp_path, inspected):
    source = tmp_path / "data"
    write_csv(source / "a.csv", _frame(50))
    pq.write_table(pa.Table.from_pandas(_frame(30, 1)), source / "b.parquet")
    data = DataConfig(source=str(source), csv_delimiter=None)
    reference = validate_source(data)
    inspected.clear()
    first, cache = _validate(data, tmp_path / "cache")
    assert (inspected, cache.reused) == (["a.csv", "b.parquet"], 0)
    written = cache.path.stat().st_mtime_ns
    inspected.clear()
    second, cache = _validate(data, tmp_path / "cache")
    assert (inspected, cache.reused) == ([], 2)
    assert cache.path.stat().st_mtime_ns == written  # nothing new: not written again
    _same(first, reference)
    _same(second, reference)


def test_new_changed_and_removed_files(tmp_path, inspected):
    source = tmp_path / "data"
    for name in ("a", "b", "c"):
        write_csv(source / f"{name}.csv", _frame(20))
    data = DataConfig(source=str(source))
    _validate(data, tmp_path / "cache")
    # b rewritten with the same size (other values, same text length: the modification time
    # tells), c removed, d added.
    frame = _frame(20)
    frame.loc[0, "x"], frame.loc[1, "x"] = frame.loc[1, "x"], frame.loc[0, "x"]
    write_csv(source / "b.csv", frame)
    stat = (source / "b.csv").stat()
    os.utime(source / "b.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    (source / "c.csv").unlink()
    write_csv(source / "d.csv", _frame(7))
    inspected.clear()
    plan, cache = _validate(data, tmp_path / "cache")
    assert inspected == ["b.csv", "d.csv"]
    assert [(f.file_id, f.n_rows) for f in plan.files] == [
        ("a.csv", 20), ("b.csv", 20), ("d.csv", 7)
    ]  # fmt: skip
    kept = json.loads(cache.path.read_text())
    assert sorted(entry["file_id"] for entry in kept.values()) == ["a.csv", "b.csv", "d.csv"]


def test_other_csv_options_are_another_cache(tmp_path, inspected):
    source = tmp_path / "data"
    write_csv(source / "a.csv", _frame(10))
    _validate(DataConfig(source=str(source)), tmp_path / "cache")
    inspected.clear()
    _validate(DataConfig(source=str(source), na_values=["-"]), tmp_path / "cache")
    assert inspected == ["a.csv"]


def test_a_broken_or_unwritable_cache_costs_only_time(tmp_path, inspected, caplog):
    source = tmp_path / "data"
    write_csv(source / "a.csv", _frame(10))
    data = DataConfig(source=str(source))
    reference = validate_source(data)
    plan, cache = _validate(data, tmp_path / "cache")
    cache.path.write_text('{"torn": ')
    inspected.clear()
    with caplog.at_level(logging.WARNING, logger="linreg"):
        plan, cache = _validate(data, tmp_path / "cache")
    assert inspected == ["a.csv"] and "ignoring the inspection cache" in caplog.text
    _same(plan, reference)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    with caplog.at_level(logging.WARNING, logger="linreg"):
        plan, _ = _validate(data, blocked / "cache")
    assert "cannot keep the inspection cache" in caplog.text
    _same(plan, reference)


def test_files_without_a_stamp_are_always_read_and_no_credentials_are_kept(tmp_path, inspected):
    # fsspec's memory file system lists no modification time: nothing tells a rewritten
    # file from the one before, so it is never taken from the cache.
    import fsspec

    memory = fsspec.filesystem("memory")
    with memory.open("/cache-test/a.csv", "wb") as handle:
        handle.write(_frame(10).to_csv(index=False).encode())
    data = DataConfig(source="memory://cache-test", storage_options={"token": "s3cr3t"})
    for _ in range(2):
        inspected.clear()
        _, cache = _validate(data, tmp_path / "cache")
        assert inspected == ["a.csv"]
    memory.rm("/cache-test", recursive=True)
    # A local file's entry holds what validation learnt, not the options it was read with.
    source = tmp_path / "data"
    write_csv(source / "a.csv", _frame(10))
    local = DataConfig(source=str(source), storage_options={"auto_mkdir": False})
    plan, cache = _validate(local, tmp_path / "cache")
    (entry,) = json.loads(cache.path.read_text()).values()
    assert "auto_mkdir" not in cache.path.read_text()
    assert (entry["file_id"], entry["n_rows"], entry["csv"]["delimiter"]) == ("a.csv", 10, ",")
    again, _ = _validate(local, tmp_path / "cache")
    assert again.files[0].storage_options == {"auto_mkdir": False}
