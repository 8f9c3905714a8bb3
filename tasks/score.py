"""The batch-scoring tasks: load the published model, check the data against it, score it
(on the flow run's Dask cluster for large data). Domain code: :mod:`linreg.scoring`."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from linreg.config import DataConfig
from linreg.scoring import (
    Scorer,
    ScoringPlan,
    ScoringSummary,
    load_scorer,
    plan_scoring,
    run_scoring,
)
from linreg.validation import csv_format
from tasks.runtime import (
    IO_RETRY_DELAYS,
    RuntimeConfig,
    dask_client,
    retry_unless_permanent,
)
from tasks.validate import file_mapper


@task(
    name="load-model",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def load_model(out_dir: str, version: int | None, storage_options: dict[str, Any]) -> Scorer:
    """The live model of ``out_dir`` or its kept ``version``, its sha256 verified."""
    scorer = load_scorer(out_dir, version, storage_options)
    get_run_logger().info(
        "scoring with model version %d from %s (%d inputs)",
        scorer.version,
        out_dir,
        len(scorer.inputs),
    )
    return scorer


@task(name="plan-scoring", cache_policy=NO_CACHE)
def plan(
    data: DataConfig, scorer: Scorer, keep_columns: list[str], runtime: RuntimeConfig
) -> ScoringPlan:
    """Every file read and checked to hold the model's inputs and the kept columns."""
    csv = csv_format(data)
    scoring_plan = plan_scoring(
        data.source,
        scorer,
        keep_columns,
        data.batch_rows,
        csv,
        data.storage_options,
        file_mapper(runtime),
    )
    get_run_logger().info(
        "%s: %d file(s), %d rows in %d batch(es)",
        data.source,
        len(scoring_plan.files),
        scoring_plan.n_rows,
        len(scoring_plan.batches),
    )
    return scoring_plan


@task(name="score-batches", cache_policy=NO_CACHE)
def score_batches(
    scoring_plan: ScoringPlan,
    scorer: Scorer,
    predictions: str,
    storage_options: dict[str, Any],
    runtime: RuntimeConfig,
) -> ScoringSummary:
    """Each batch scored into its Parquet shard (on Dask for a large source), then the
    summary: rows, nulls per column, shards; also a table artifact in the UI."""
    logger = get_run_logger()
    client = dask_client(runtime) if runtime.use_dask(scoring_plan.n_rows) else None
    where = "in this process" if client is None else f"on Dask ({len(client.nthreads())} workers)"
    logger.info("scoring %d batch(es) %s into %s", len(scoring_plan.batches), where, predictions)
    summary = run_scoring(scoring_plan, scorer, predictions, storage_options, client)
    logger.info(
        "scored %d rows: %d predictions, %d null (missing: %s)",
        summary.rows,
        summary.rows_scored,
        summary.rows_null,
        summary.missing_by_column or "none",
    )
    create_table_artifact(
        [
            {"measure": name, "value": str(value)}
            for name, value in summary.to_dict().items()
            if name != "shards"
        ]
        + [{"measure": "shards", "value": str(len(summary.shards))}],
        key="scoring-summary",
        description=f"Batch scoring of {scoring_plan.source} into {predictions}.",
    )
    return summary
