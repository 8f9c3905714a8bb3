"""Schema validation: one clear error per problem, naming the file and the column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linreg.config import DataConfig
from linreg.errors import DataError
from linreg.validation import validate_source
from tests.conftest import write_csv


def _frame(n: int = 5, **extra) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "x1": np.arange(n, dtype=float),
            "x2": np.arange(n) * 3,
            "target": np.arange(n, dtype=float),
        }
    )
    for name, values in extra.items():
        frame[name] = values
    return frame


def test_default_features_are_numeric_columns_but_target(tmp_path):
    frame = _frame(name=list("abcde"), when=pd.date_range("2024-01-01", periods=5))
    write_csv(tmp_path / "d" / "a.csv", frame)
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "d" / "b.parquet")
    plan = validate_source(DataConfig(source=str(tmp_path / "d")))
    assert plan.features == ("x1", "x2")
    assert plan.columns == ("x1", "x2", "target")
    assert plan.n_rows == 10


@pytest.mark.parametrize(
    ("files", "config", "message"),
    [
        ({"a.csv": _frame().drop(columns="target")}, {}, "a.csv: target column 'target' not found"),
        (
            {"a.csv": _frame(name=list("abcde"))},
            {"features": ["x1", "name"]},
            "a.csv: feature column 'name' is not numeric",
        ),
        (
            {"a.csv": _frame()},
            {"features": ["x1", "nope"]},
            "a.csv: feature column 'nope' not found",
        ),
        (
            {"a.csv": _frame(), "b.csv": _frame().rename(columns={"x2": "x3"})},
            {},
            r"b.csv: columns differ from a.csv \(missing \['x2'\], extra \['x3'\]\)",
        ),
        (
            {"a.csv": _frame(), "b.csv": _frame().assign(x2=list("vwxyz"))},
            {},
            "b.csv: feature column 'x2' is not numeric",
        ),
        (
            {"a.csv": _frame().assign(target=list("vwxyz"))},
            {},
            "a.csv: target column 'target' is not numeric",
        ),
        ({"a.csv": _frame(0)}, {}, "no data rows"),
        ({"a.csv": _frame()[["target"]]}, {}, "no numeric feature columns"),
        ({"a.csv": _frame()}, {"features": ["x1", "target"]}, "cannot also be a feature"),
        ({"a.csv": _frame()}, {"features": ["x1", "x1"]}, "duplicate feature names"),
    ],
    ids=[
        "missing-target",
        "text-feature",
        "unknown-feature",
        "schema-differs",
        "type-differs",
        "text-target",
        "header-only",
        "no-features",
        "target-as-feature",
        "duplicate-feature",
    ],
)
def test_bad_schemas_fail_with_one_clear_message(tmp_path, files, config, message):
    for name, frame in files.items():
        write_csv(tmp_path / "d" / name, frame)
    with pytest.raises(DataError, match=message):
        validate_source(DataConfig(source=str(tmp_path / "d"), **config))


def test_parallel_mapper_gives_the_same_plan(tmp_path):
    write_csv(tmp_path / "d" / "a.csv", _frame())
    write_csv(tmp_path / "d" / "b.csv", _frame())
    calls = []

    def mapper(function, *items):
        calls.append(len(items[0]))
        return list(map(function, *items))

    config = DataConfig(source=str(tmp_path / "d"))
    assert validate_source(config, mapper) == validate_source(config)
    assert calls == [2]
