"""Batch scoring (linreg/scoring.py): shards equal the published estimator's ``predict`` on
the same rows, identities are exact, rows with missing inputs are null and counted, bad
input is one clear error before anything is written, and a failed run leaves no half shard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from linreg.errors import DataError, ModelFileError
from linreg.scoring import load_scorer, map_in_window, plan_scoring, run_scoring
from linreg.sources import CsvFormat
from linreg.state import InMemoryStateStore
from linreg.synthetic import write_dataset
from tests.conftest import write_csv
from tests.scoring.support import estimator, read_predictions, source_rows, train


@pytest.fixture
def nan_data(tmp_path: Path) -> Path:
    """6,000 rows in 3 Parquet shards, 3 % of rows with one NaN feature."""
    directory = tmp_path / "data"
    write_dataset(
        directory, n_rows=6_000, n_features=4, shard_rows=2_000, row_group_rows=500,
        seed=11, nan_fraction=0.03,
    )  # fmt: skip
    return directory


def _score(data: Path, out: Path, predictions: Path, **options):
    scorer = load_scorer(out, options.pop("version", None))
    keep = options.pop("keep", ())
    plan = plan_scoring(str(data), scorer, keep, options.pop("batch_rows", 1_700), **options)
    return run_scoring(plan, scorer, str(predictions))


@pytest.mark.parametrize("model", ["ols", "sgd"])
def test_predictions_equal_model_predict_on_the_same_rows(nan_data, tmp_path, model):
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(nan_data, out, model=model)
    features = json.loads((out / "model.json").read_text())["features"]

    summary = _score(nan_data, out, predictions, keep=["target"])

    scored = read_predictions(predictions)
    rows = source_rows(nan_data)
    # Identity: every row of every file once, in file and row order (batches of 1,700 rows
    # span the 2,000-row files).
    assert scored["file"].tolist() == rows["file"].tolist()
    assert scored["row"].tolist() == rows["row"].tolist()
    np.testing.assert_array_equal(scored["target"], rows["target"])
    incomplete = rows[features].isna().any(axis=1).to_numpy()
    assert 0 < incomplete.sum() < len(rows)
    assert scored["prediction"].isna().to_numpy().tolist() == incomplete.tolist()
    expected = estimator(out).predict(rows.loc[~incomplete, features])
    np.testing.assert_allclose(
        scored["prediction"].to_numpy()[~incomplete], expected, rtol=1e-12, atol=1e-12
    )
    assert summary.rows == len(rows)
    assert summary.rows_null == int(incomplete.sum())
    assert summary.rows_scored == len(rows) - int(incomplete.sum())
    assert summary.missing_by_column == {
        name: int(count) for name, count in rows[features].isna().sum().items() if count
    }
    assert summary.shards == [f"part-{index:05d}.parquet" for index in range(4)]
    assert json.loads((predictions / "_scoring.json").read_text()) == summary.to_dict()


def _categorical_frame(n: int, seed: int, colours=("red", "green", "blue")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(list(colours), size=n)
    x = rng.normal(size=n) * 2.0 + 5.0
    effect = {"blue": 0.0, "green": 3.0, "red": -2.0, "teal": 40.0}
    y = 1.5 * x + np.array([effect[c] for c in colour]) + 0.7 + rng.normal(size=n) * 0.1
    return pd.DataFrame({"id": np.arange(n) + 1000 * seed, "x": x, "colour": colour, "y": y})


def test_a_categorical_model_scores_as_in_training(tmp_path):
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    write_csv(tmp_path / "train" / "data.csv", _categorical_frame(2_000, 1))
    train(tmp_path / "train", out, target="y", categorical=["colour"], features=["x"])
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["features"] == ["x", "colour=green", "colour=red"]
    new = _categorical_frame(900, 2, colours=("red", "green", "blue", "teal"))
    new.loc[[5, 17], "colour"] = None  # a missing category: a null prediction
    new.loc[[8], "x"] = np.inf  # a non-finite number: a null prediction
    write_csv(tmp_path / "new" / "new.csv", new)

    summary = _score(tmp_path / "new", out, predictions, keep=["id", "colour"])

    scored = read_predictions(predictions)
    assert scored["row"].tolist() == list(range(900))
    assert scored["id"].tolist() == [str(value) for value in new["id"]]  # CSV: kept as text
    # By hand: blue is the reference; teal, unknown to the model, is all zeros as in training.
    colour = new["colour"].to_numpy()
    dummies = np.column_stack([new["x"], colour == "green", colour == "red"]).astype(float)
    null = np.zeros(900, dtype=bool)
    null[[5, 17, 8]] = True
    assert scored["prediction"].isna().to_numpy().tolist() == null.tolist()
    expected = estimator(out).predict(pd.DataFrame(dummies[~null], columns=metadata["features"]))
    np.testing.assert_allclose(scored["prediction"].to_numpy()[~null], expected, rtol=1e-12)
    assert summary.missing_by_column == {"colour": 2, "x": 1}
    assert summary.unknown_levels == {"colour": int((colour == "teal").sum())}
    assert summary.rows_null == 3


def test_version_n_scores_with_that_kept_version(nan_data, tmp_path):
    out = tmp_path / "model"
    store = InMemoryStateStore()
    train(nan_data, out, batch_rows=3_000, store=store)  # version 1: both batches
    # New data arrives and the next round publishes version 2 (live).
    write_dataset(nan_data / "later", n_rows=2_000, n_features=4, shard_rows=2_000, seed=9)
    train(nan_data, out, batch_rows=3_000, store=store)
    assert json.loads((out / "model.json").read_text())["version"] == 2

    live = _score(nan_data, out, tmp_path / "live")
    first = _score(nan_data, out, tmp_path / "first", version=1)

    assert (live.model_version, first.model_version) == (2, 1)
    rows = source_rows(nan_data)
    features = [f"x{index:02d}" for index in range(4)]
    complete = ~rows[features].isna().any(axis=1).to_numpy()
    for name, where in (("live", ()), ("first", ("versions", "1"))):
        scored = read_predictions(tmp_path / name)
        expected = estimator(out, *where).predict(rows.loc[complete, features])
        np.testing.assert_allclose(scored["prediction"].to_numpy()[complete], expected)
    with pytest.raises(ModelFileError, match=r"--version 7: no such version .*kept: 1, 2"):
        load_scorer(out, 7)


def test_a_model_pkl_that_does_not_match_its_sha256_is_refused(nan_data, tmp_path):
    out = tmp_path / "model"
    train(nan_data, out)
    with open(out / "model.pkl", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelFileError, match="sha256 does not match model.json"):
        load_scorer(out)
    with pytest.raises(ModelFileError, match="no model published"):
        load_scorer(tmp_path / "nothing-here")


def test_bad_input_is_one_clear_error_before_anything_is_written(nan_data, tmp_path):
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(nan_data, out)
    scorer = load_scorer(out)
    lacking = tmp_path / "lacking"
    frame = source_rows(nan_data).drop(columns=["file", "row", "x02"])
    write_csv(lacking / "a.csv", frame)
    with pytest.raises(DataError, match=r"a.csv: lacks input column\(s\) \['x02'\] of model"):
        plan_scoring(str(lacking), scorer)
    with pytest.raises(DataError, match=r"--keep-columns: .* has no column\(s\) \['order_id'\]"):
        plan_scoring(str(nan_data), scorer, ["target", "order_id"])
    with pytest.raises(DataError, match=r"\['row'\] would clash with the output's own"):
        plan_scoring(str(nan_data), scorer, ["row"])
    text = tmp_path / "text"
    write_csv(text / "t.csv", frame.assign(x02="n/a here"))
    with pytest.raises(DataError, match="t.csv: input column 'x02' is not numeric"):
        plan_scoring(str(text), scorer)
    assert not predictions.exists()
    # A directory holding anything but an earlier scoring's output is refused, and kept.
    predictions.mkdir()
    (predictions / "notes.txt").write_text("mine")
    plan = plan_scoring(str(nan_data), scorer)
    with pytest.raises(ValueError, match=r"holds files that are not predictions \(notes.txt\)"):
        run_scoring(plan, scorer, str(predictions))
    assert [path.name for path in predictions.iterdir()] == ["notes.txt"]


def test_a_run_that_fails_mid_batch_leaves_whole_shards_only(tmp_path):
    """A bad value far down a CSV fails the second batch after chunks of it were scored:
    the first shard is whole, the second is not there, no temporary file is left."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40_000, 3)), columns=["x0", "x1", "x2"])
    frame["target"] = frame.to_numpy() @ [1.0, 2.0, 3.0]
    write_csv(tmp_path / "train" / "a.csv", frame.head(2_000))
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(tmp_path / "train", out)
    bad = frame.astype(object)
    bad.loc[39_900, "x1"] = "oops"  # in the second CSV block of batch 1 (rows 20,000-40,000)
    write_csv(tmp_path / "new" / "a.csv", bad)
    # Leftovers of an earlier run killed mid-shard: its hidden temporary file and shards.
    predictions.mkdir()
    (predictions / ".part-00003.parquet.tmp-0123abcd").write_bytes(b"half")
    (predictions / "part-00007.parquet").write_bytes(b"stale")
    scorer = load_scorer(out)
    plan = plan_scoring(str(tmp_path / "new"), scorer, batch_rows=20_000)
    assert len(plan.batches) == 2

    with pytest.raises(DataError, match=r"a.csv line 39902: column 'x1' has a non-numeric"):
        run_scoring(plan, scorer, str(predictions))

    assert sorted(path.name for path in predictions.iterdir()) == ["part-00000.parquet"]
    first = pq.read_table(predictions / "part-00000.parquet")
    assert first.column("row").to_pylist() == list(range(20_000))


class _FakeFuture:
    def __init__(self, client: _FakeClient, value: int) -> None:
        self.client, self.value = client, value

    def result(self) -> int:
        self.client.in_flight -= 1
        return self.value


class _FakeClient:
    """Counts futures submitted and not yet collected."""

    def __init__(self) -> None:
        self.in_flight = self.most = 0
        self.cancelled: list = []

    def submit(self, function, *args, pure: bool = True):
        assert pure is False
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        return _FakeFuture(self, function(*args))

    def cancel(self, futures) -> None:
        self.cancelled.extend(futures)


def test_map_in_window_keeps_at_most_window_items_in_flight_in_order():
    client = _FakeClient()
    results = list(map_in_window(client, lambda x: x * x, [(i,) for i in range(10)], 3))
    assert results == [i * i for i in range(10)]
    assert client.most == 3
    # A consumer that stops early cancels what is still in flight.
    client = _FakeClient()
    stream = map_in_window(client, lambda x: x, [(i,) for i in range(10)], 4)
    assert next(stream) == 0
    stream.close()
    assert len(client.cancelled) == 3


def test_dask_gives_the_serial_shards(nan_data, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "model"
    train(nan_data, out)
    scorer = load_scorer(out)
    plan = plan_scoring(str(nan_data), scorer, ["target"], 1_000)
    serial = run_scoring(plan, scorer, str(tmp_path / "serial"))
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        on_dask = run_scoring(plan, scorer, str(tmp_path / "dask"), client=client, window=2)
    assert {**on_dask.to_dict(), "predictions": None} == {
        **serial.to_dict(),
        "predictions": None,
    }
    for name in serial.shards:
        # DataFrame.equals: NaN equals NaN (the NaN target values), unlike Table.equals.
        dask_shard = pq.read_table(tmp_path / "dask" / name).to_pandas()
        assert dask_shard.equals(pq.read_table(tmp_path / "serial" / name).to_pandas())


def test_csv_formats_apply_to_the_inputs(tmp_path):
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"a": rng.normal(size=300) * 1000, "b": rng.normal(size=300)})
    frame["target"] = 2 * frame["a"] - frame["b"]
    write_csv(tmp_path / "train" / "d.csv", frame)
    train(tmp_path / "train", out)
    european = tmp_path / "eu"
    european.mkdir()
    lines = ["a;b;target"] + [
        f"{a:.6f};{b:.6f};-".replace(".", ",") for a, b in zip(frame["a"], frame["b"], strict=True)
    ]
    (european / "d.csv").write_text("\n".join(lines) + "\n")
    scorer = load_scorer(out)
    plan = plan_scoring(str(european), scorer, csv=CsvFormat(decimal=",", na_values=("-",)))
    run_scoring(plan, scorer, str(predictions))
    scored = read_predictions(predictions)
    expected = estimator(out).predict(frame[["a", "b"]].round(6))
    np.testing.assert_allclose(scored["prediction"], expected, rtol=1e-9)
