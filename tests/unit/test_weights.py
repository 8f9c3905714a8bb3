"""Sample weights (``--weight COL``): weighted least squares against statsmodels-style
explicit √w scaling, sgd's sample_weight, and bad weights refused with nothing changed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from linreg.config import DataConfig, HyperParams
from linreg.errors import DataError
from linreg.executors import SerialExecutor
from linreg.state import InMemoryStateStore
from linreg.training import FilePublisher, RoundSpec, run_round
from linreg.validation import validate_source


def _frame(n: int = 6_000, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * [3.0, 0.2] + [10.0, -1.0]
    w = rng.choice([0.0, 0.5, 1.0, 4.0], size=n)
    noise = rng.normal(size=n) / np.sqrt(np.where(w > 0, w, 1.0))
    y = x @ [1.5, -7.0] + 2.0 + noise
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "w": w, "y": y})


def _train(directory, out, model="ols", batch_rows=1_000):
    data = DataConfig(source=str(directory), target="y", weight="w", batch_rows=batch_rows)
    plan = validate_source(data)
    store = InMemoryStateStore()
    run_round(
        plan,
        RoundSpec(HyperParams(model=model), data.batch_rows, 0.0),
        executor=SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(out)),
    )
    return plan, json.loads((out / "model.json").read_text()), store


def test_weighted_ols_equals_lstsq_on_sqrt_w_scaled_rows(tmp_path):
    frame = _frame()
    (tmp_path / "d").mkdir()
    frame.iloc[:2_500].to_parquet(tmp_path / "d" / "p1.parquet")
    frame.iloc[2_500:].to_csv(tmp_path / "d" / "p2.csv", index=False)
    plan, metadata, _ = _train(tmp_path / "d", tmp_path / "out")
    assert plan.features == ("a", "b") and metadata["weight"] == "w"
    root = np.sqrt(frame["w"].to_numpy())
    design = np.column_stack([np.ones(len(frame)), frame[["a", "b"]].to_numpy()]) * root[:, None]
    expected = np.linalg.lstsq(design, frame["y"].to_numpy() * root, rcond=None)[0]
    np.testing.assert_allclose(metadata["coef"], expected[1:], rtol=1e-10)
    assert metadata["intercept"] == pytest.approx(expected[0], rel=1e-10)
    # Zero weights are allowed and counted as rows; they change nothing.
    assert metadata["rows_trained"] == len(frame)


def test_weighted_sgd_learns_the_weighted_fit(tmp_path):
    frame = _frame(60_000)
    (tmp_path / "d").mkdir()
    frame.to_parquet(tmp_path / "d" / "p.parquet")
    _, metadata, _ = _train(tmp_path / "d", tmp_path / "out", model="sgd", batch_rows=10_000)
    # In target units (coefficient times the feature's spread), as the benchmarks score sgd.
    error = (np.asarray(metadata["coef"]) - [1.5, -7.0]) * frame[["a", "b"]].std().to_numpy()
    assert np.abs(error).max() < 0.05, error


@pytest.mark.parametrize(("bad", "shown"), [(-1.0, "-1.0"), (np.inf, "inf"), (np.nan, "nan")])
def test_a_bad_weight_names_file_row_and_column_and_changes_nothing(tmp_path, bad, shown):
    frame = _frame(3_000)
    (tmp_path / "d").mkdir()
    frame.to_parquet(tmp_path / "d" / "p.parquet")
    plan, before, store = _train(tmp_path / "d", tmp_path / "out")
    state = store.load().model_dump_json()
    frame.loc[1_234, "w"] = bad
    frame.to_parquet(tmp_path / "d" / "q.parquet")
    data = DataConfig(source=str(tmp_path / "d"), target="y", weight="w", batch_rows=1_000)
    with pytest.raises(DataError, match=rf"q.parquet row 1235: weight column 'w' has {shown}"):
        run_round(
            validate_source(data),
            RoundSpec(HyperParams(model="ols"), data.batch_rows, 0.0),
            executor=SerialExecutor(),
            store=store,
            publisher=FilePublisher(str(tmp_path / "out")),
        )
    assert json.loads((tmp_path / "out" / "model.json").read_text()) == before
    assert store.load().model_dump_json() == state


def test_the_weight_column_is_never_a_feature_and_must_exist(tmp_path):
    frame = _frame(100)
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="weight column 'v' not found"):
        validate_source(DataConfig(source=str(tmp_path / "d.csv"), target="y", weight="v"))
    with pytest.raises(DataError, match="cannot also be a feature"):
        validate_source(
            DataConfig(source=str(tmp_path / "d.csv"), target="y", weight="w", features=["w"])
        )
