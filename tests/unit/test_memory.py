"""Peak memory of training is bounded by the batch size, not by the number of rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from linreg.synthetic import write_dataset

MEASURE = """
import json, resource, sys
from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.state import TrainingState
from linreg.executors import SerialExecutor
from linreg.training import RoundSpec, train_batches
from linreg.validation import validate_source

data = DataConfig(source=sys.argv[1], batch_rows=50_000)
plan = validate_source(data)
hyper = HyperParams(model=sys.argv[2])
state = TrainingState.fresh(data.source, list(plan.features), plan.target, hyper.model)
spec = RoundSpec(hyper, data.batch_rows, data.test_fraction)
trained = train_batches(state, plan, plan_batches(plan.files, {}, data.batch_rows), spec,
                        SerialExecutor())
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rows": trained.state.rows_trained}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ols", "sgd"])
def test_peak_rss_does_not_grow_with_rows(tmp_path: Path, model: str):
    peaks = {}
    for n_rows in (300_000, 1_500_000):
        directory = tmp_path / f"rows-{n_rows}"
        write_dataset(
            directory, n_rows=n_rows, n_features=16, shard_rows=150_000, row_group_rows=50_000
        )
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, str(directory), model],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[n_rows] = json.loads(out.stdout)["peak_kib"] / 1024
    # 1.2M more rows of 17 float64 columns would be 163 MiB if the data were held.
    growth = peaks[1_500_000] - peaks[300_000]
    print(
        f"{model}: peak RSS {peaks[300_000]:.0f} MiB at 300k rows, "
        f"{peaks[1_500_000]:.0f} MiB at 1.5M rows (batches of 50k)"
    )
    assert growth < 25, f"peak RSS grew by {growth:.0f} MiB: {peaks}"
