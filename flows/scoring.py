"""The batch-scoring flow: a published model's predictions for a data set larger than memory.

    load-model (sha256 verified) -> plan-scoring (inputs and kept columns checked) ->
    score-batches (Parquet shards, on Dask for large data)

See :mod:`linreg.scoring`; ``python main.py --mode predict`` runs the same domain calls
without Prefect.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from linreg.config import DataConfig, Settings
from linreg.scoring import ScoringSummary
from tasks.runtime import (
    UNPERSISTED_RESULTS,
    RuntimeConfig,
    dask_task_runner,
    heartbeats_unless_prefect_sends_them,
)
from tasks.score import load_model, plan, score_batches

DEFAULTS = Settings()


@flow(
    name="score",
    task_runner=dask_task_runner(),
    flow_run_name="score-{predictions}",
    **UNPERSISTED_RESULTS,
)
def score(
    data: DataConfig,
    predictions: str,
    out_dir: str = DEFAULTS.out_dir,
    version: int | None = Field(
        None, ge=1, description="Kept version to score with; default: the live model."
    ),
    keep_columns: list[str] | None = Field(  # noqa: B008 - a pydantic field default
        None, description="Columns of the data copied beside each prediction (e.g. an id)."
    ),
    runtime: RuntimeConfig = RuntimeConfig(),  # noqa: B008 - an immutable pydantic default
) -> ScoringSummary:
    """Score data with a published model into Parquet shards (file, row, prediction, kept
    columns); rows with a missing input get a null prediction and are counted."""
    keep_columns = keep_columns or []
    with heartbeats_unless_prefect_sends_them():
        scorer = load_model(out_dir, version, data.storage_options)
        scoring_plan = plan(data, scorer, keep_columns, runtime)
        return score_batches(scoring_plan, scorer, predictions, data.storage_options, runtime)
