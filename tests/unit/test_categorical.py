"""Categorical columns (``--categorical COL``): treatment coding against numpy lstsq with
explicit dummies, levels fixed at the first step and kept in the state, an unseen level
later encoded as all zeros and counted, and a missing category dropping its row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from linreg.config import DataConfig, HyperParams
from linreg.errors import DataError
from linreg.executors import SerialExecutor
from linreg.preprocess import holdout_mask
from linreg.state import InMemoryStateStore, TrainingState, fingerprint
from linreg.training import FilePublisher, RoundSpec, run_round
from linreg.validation import validate_source


def _frame(n: int = 3_000, seed: int = 3, colours=("red", "green", "blue")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(list(colours), size=n)
    size = rng.choice([1, 2, 3], size=n)  # an integer column taken as categorical
    x = rng.normal(size=n) * 2.0 + 5.0
    effect = {"blue": 0.0, "green": 3.0, "red": -2.0, "teal": 40.0}
    y = (
        1.5 * x
        + np.array([effect[c] for c in colour])
        + np.where(size == 2, 1.0, 0.0)
        + np.where(size == 3, -4.0, 0.0)
        + 0.7
        + rng.normal(size=n) * 0.1
    )
    return pd.DataFrame({"x": x, "colour": colour, "size": size, "y": y})


def _dummies(frame: pd.DataFrame) -> np.ndarray:
    """The treatment-coded design written out by hand: blue and size 1 are the references."""
    colour, size = frame["colour"].to_numpy(), frame["size"].astype(str).to_numpy()
    return np.column_stack(
        [
            np.ones(len(frame)),
            frame["x"].to_numpy(),
            colour == "green",
            colour == "red",
            size == "2",
            size == "3",
        ]
    ).astype(float)


def _train(source, out, store=None, model="ols", features=None, batch_rows=700, **round_args):
    data = DataConfig(
        source=str(source),
        target="y",
        features=features,
        categorical=["colour", "size"],
        batch_rows=batch_rows,
    )
    plan = validate_source(data)
    store = store or InMemoryStateStore()
    result = run_round(
        plan,
        RoundSpec(HyperParams(model=model), data.batch_rows, 0.0, **round_args),
        executor=SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(out)),
    )
    return result, json.loads((out / "model.json").read_text()), store


FEATURES = ["x", "colour=green", "colour=red", "size=2", "size=3"]


def test_ols_equals_lstsq_with_explicit_dummies(tmp_path):
    frame = _frame()
    (tmp_path / "d").mkdir()
    frame.iloc[:1_200].to_parquet(tmp_path / "d" / "a.parquet")
    frame.iloc[1_200:].to_csv(tmp_path / "d" / "b.csv", index=False)
    _, metadata, store = _train(tmp_path / "d", tmp_path / "out")
    assert metadata["features"] == FEATURES
    assert metadata["inputs"] == [
        {"name": "x", "kind": "numeric"},
        {"name": "colour", "kind": "categorical", "levels": ["blue", "green", "red"]},
        {"name": "size", "kind": "categorical", "levels": ["1", "2", "3"]},
    ]
    expected = np.linalg.lstsq(_dummies(frame), frame["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(metadata["coef"], expected[1:], rtol=0, atol=1e-9)
    assert metadata["intercept"] == pytest.approx(expected[0], abs=1e-9)
    assert store.load().categories == {"colour": ["blue", "green", "red"], "size": ["1", "2", "3"]}
    # Plain JSON, and a state saved before categorical columns existed still loads.
    state = store.load()
    TrainingState.model_validate(json.loads(state.model_dump_json()))
    old = state.model_dump(exclude={"categories"})
    assert TrainingState.model_validate(old).categories == {}


def test_categorical_columns_are_features_even_when_features_omit_them(tmp_path):
    frame = _frame(1_000)
    frame.to_parquet(tmp_path / "a.parquet")
    _, metadata, _ = _train(tmp_path / "a.parquet", tmp_path / "out", features=["x"])
    assert metadata["features"] == FEATURES


def test_sgd_reads_the_same_encoding(tmp_path):
    frame = _frame(20_000)
    frame.to_parquet(tmp_path / "a.parquet")
    _, metadata, _ = _train(tmp_path / "a.parquet", tmp_path / "out", model="sgd", batch_rows=5_000)
    assert metadata["features"] == FEATURES
    expected = np.linalg.lstsq(_dummies(frame), frame["y"].to_numpy(), rcond=None)[0]
    # SGD approximates the same fit: the dummies' signs and sizes are learnt.
    np.testing.assert_allclose(metadata["coef"], expected[1:], atol=0.3)


def test_levels_stay_those_of_the_first_step_and_an_unseen_level_is_zeros(tmp_path):
    source = tmp_path / "d"
    source.mkdir()
    first = _frame(1_500, seed=1)
    first.to_csv(source / "a.csv", index=False)
    store = InMemoryStateStore()
    _, step1, _ = _train(source, tmp_path / "o1", store, max_batches=1)
    levels = store.load().categories
    _, step2, _ = _train(source, tmp_path / "o2", store, max_batches=1)
    assert store.load().categories == levels and step2["features"] == step1["features"]
    # A later file brings a new colour: the model keeps its levels, and the new one's rows
    # are encoded as all zeros (the reference), counted in the log and model.json.
    later = _frame(600, seed=2, colours=("teal", "red"))
    later.to_csv(source / "b.csv", index=False)
    scanned = DataConfig(source=str(source), target="y", categorical=["colour", "size"])
    assert "colour=teal" in validate_source(scanned).features
    result, step3, _ = _train(source, tmp_path / "o3", store)
    assert store.load().categories == levels
    assert step3["features"] == FEATURES
    n_teal = int((later["colour"] == "teal").sum())
    assert n_teal > 0
    assert step3["data"]["quality"]["rows_with_unknown_level"] == {"colour": n_teal}
    assert result.report.unknown_levels == {"colour": n_teal}
    # The fit is that of lstsq on the same rows with teal as all-zero dummies.
    rows = pd.concat([first, later], ignore_index=True)
    expected = np.linalg.lstsq(_dummies(rows), rows["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(step3["coef"], expected[1:], rtol=0, atol=1e-9)


def test_a_missing_category_drops_the_row(tmp_path):
    frame = _frame(2_000)
    frame["colour"] = frame["colour"].astype(object)
    gaps = [3, 50, 51, 999]
    frame.loc[gaps, "colour"] = None
    frame.loc[[7], "size"] = np.nan
    frame.to_parquet(tmp_path / "a.parquet")
    result, metadata, _ = _train(tmp_path / "a.parquet", tmp_path / "out")
    assert metadata["data"]["quality"]["rows_dropped_by_column"] == {"colour": 4, "size": 1}
    assert result.rows_trained == len(frame) - 5
    kept = frame.drop(index=[*gaps, 7])
    kept = kept.assign(size=kept["size"].astype(int))
    expected = np.linalg.lstsq(_dummies(kept), kept["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(metadata["coef"], expected[1:], rtol=0, atol=1e-9)


def test_bad_categorical_options_name_the_column(tmp_path):
    frame = _frame(200)
    frame.to_parquet(tmp_path / "a.parquet")
    for categorical, message in [
        (["nope"], "categorical column 'nope' not found"),
        (["y"], "the target column 'y' cannot be categorical"),
        (["colour", "colour"], "duplicate column names ['colour']"),
    ]:
        config = DataConfig(source=str(tmp_path / "a.parquet"), target="y", categorical=categorical)
        with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate_source(config)


def test_fingerprint_unchanged_without_categorical_columns():
    plain = fingerprint("data", ["a"], "y", "ols")
    assert fingerprint("data", ["a"], "y", "ols", None, []) == plain
    assert fingerprint("data", ["a"], "y", "ols", None, ["a"]) != plain


def test_levels_are_those_of_the_first_steps_training_rows(tmp_path):
    # 'teal' is in the source from the start, but only after the first step's rows: the
    # first step's levels leave it out (a dummy without training rows would be a constant
    # zero column, singular for ols), and the next step encodes it as all zeros.
    rows = pd.concat(
        [_frame(1_400, seed=4), _frame(300, seed=6, colours=("teal",))], ignore_index=True
    )
    rows.to_csv(tmp_path / "a.csv", index=False)
    store = InMemoryStateStore()
    _, step1, _ = _train(tmp_path / "a.csv", tmp_path / "o1", store, max_batches=2)
    assert step1["features"] == FEATURES
    result, step2, _ = _train(tmp_path / "a.csv", tmp_path / "o2", store)
    assert store.load().categories["colour"] == ["blue", "green", "red"]
    assert result.report.unknown_levels == {"colour": 300}
    expected = np.linalg.lstsq(_dummies(rows), rows["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(step2["coef"], expected[1:], rtol=0, atol=1e-9)


def test_a_level_only_in_held_out_rows_gets_no_column(tmp_path):
    # The first step (one batch) reads violet, but only in held-out rows: no column for it.
    frame = _frame(2_000)
    data = DataConfig(source=str(tmp_path / "a.parquet"), target="y", categorical=["colour"])
    frame.to_parquet(tmp_path / "a.parquet")
    plan = validate_source(data)
    held_out = holdout_mask(plan.files[0].file_id, np.arange(len(frame)), 0.2)
    frame.loc[np.flatnonzero(held_out)[:5], "colour"] = "violet"
    frame.to_parquet(tmp_path / "a.parquet")
    store = InMemoryStateStore()
    result = run_round(
        validate_source(data),
        RoundSpec(HyperParams(model="ols"), 5_000, 0.2),
        executor=SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(tmp_path / "out")),
    )
    assert store.load().categories["colour"] == ["blue", "green", "red"]
    assert result.report.unknown_levels == {"colour": 5}


def test_a_parquet_dictionary_column_is_read_by_its_values(tmp_path):
    frame = _frame(1_500)
    encoded = frame.assign(colour=frame["colour"].astype("category"))
    encoded.to_parquet(tmp_path / "a.parquet")
    _, metadata, _ = _train(tmp_path / "a.parquet", tmp_path / "out")
    assert metadata["features"] == FEATURES
    expected = np.linalg.lstsq(_dummies(frame), frame["y"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(metadata["coef"], expected[1:], rtol=0, atol=1e-9)
