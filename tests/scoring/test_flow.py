"""The ``score`` flow on a throwaway Prefect server: shards on the run's Dask cluster equal
the model's predict; bad input fails the run with the one clear error, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flows import score
from linreg.config import DataConfig
from linreg.errors import DataError
from tasks.runtime import RuntimeConfig
from tests.scoring.support import estimator, read_predictions, source_rows, train


@pytest.fixture(autouse=True)
def _server(prefect_api):
    return prefect_api


def test_score_flow_on_dask_equals_model_predict(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(directory, out)

    state = score(
        data=DataConfig(source=str(directory), batch_rows=1_500),
        predictions=str(predictions),
        out_dir=str(out),
        keep_columns=["target"],
        runtime=RuntimeConfig(executor="dask", dask_workers=2),
        return_state=True,
    )

    assert state.is_completed()
    summary = state.result()
    rows = source_rows(directory)
    features = json.loads((out / "model.json").read_text())["features"]
    complete = ~rows[features].isna().any(axis=1).to_numpy()
    assert (summary.rows, summary.rows_null) == (6_000, int((~complete).sum()))
    assert len(summary.shards) == 4
    scored = read_predictions(predictions)
    assert scored[["file", "row"]].equals(rows[["file", "row"]])
    expected = estimator(out).predict(rows.loc[complete, features])
    np.testing.assert_allclose(scored["prediction"].to_numpy()[complete], expected, rtol=1e-12)


def test_score_flow_fails_on_a_missing_keep_column_and_writes_nothing(synthetic_dir, tmp_path):
    directory, _ = synthetic_dir
    out, predictions = tmp_path / "model", tmp_path / "predictions"
    train(directory, out)

    state = score(
        data=DataConfig(source=str(directory)),
        predictions=str(predictions),
        out_dir=str(out),
        keep_columns=["customer"],
        runtime=RuntimeConfig(executor="serial"),
        return_state=True,
    )

    assert state.is_failed()
    with pytest.raises(DataError, match=r"--keep-columns: .* has no column\(s\) \['customer'\]"):
        state.result()
    assert not predictions.exists()
