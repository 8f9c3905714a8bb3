"""The partial_fit task: update the model on a round's batches on the Dask cluster."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from distributed import Client, Future
from prefect import get_run_logger, task
from prefect.artifacts import update_progress_artifact
from prefect.cache_policies import NO_CACHE

from linreg.config import HyperParams
from linreg.state import TrainingState
from linreg.training import (
    BatchSummary,
    TrainedRound,
    complete_round,
    finish_ols,
    sgd_fit_prepared,
    start_estimator,
    summarize_prepared,
)
from linreg.validation import SourcePlan
from tasks.preprocess import PreparedRound
from tasks.runtime import cluster_client


@task(name="partial-fit", cache_policy=NO_CACHE)
def partial_fit(
    prepared_round: PreparedRound,
    state: TrainingState,
    plan: SourcePlan,
    hyperparams: HyperParams,
    progress_id: UUID | None = None,
    progress_start: int = 0,
    progress_total: int | None = None,
) -> TrainedRound:
    """Update the model on each batch in order and evaluate it on the held-out rows.

    ols: each worker reads its batch a row group at a time and reduces it to QR statistics,
    merged here in batch order (exact, parallel, a chunk in memory per worker). sgd:
    ``partial_fit`` steps run where each batch was prepared, the small model travelling from
    batch to batch. A few batches are prepared ahead, no more.
    """
    logger = get_run_logger()
    estimator = start_estimator(state, hyperparams)
    batches = prepared_round.batches
    total = progress_total or len(batches)
    summaries: list[BatchSummary] = []
    with cluster_client() as client:
        threads = max(1, sum(client.nthreads().values()))
        # ols holds a chunk per batch in flight: keep every thread busy with one queued.
        # sgd's steps run one after another, so a prepared batch (the whole batch in
        # memory) per thread is enough to keep reading ahead of them.
        window = 2 * threads if hyperparams.model == "ols" else threads
        if hyperparams.model == "ols":
            submit = _ols_submitter(client, prepared_round)
        else:
            submit, final_model = _sgd_submitter(client, prepared_round, estimator, plan)
        for index, summary in enumerate(_in_order(submit, len(batches), window)):
            summaries.append(summary)
            report = summary.report
            logger.info(
                "batch %d/%d: %d rows read, %d dropped, %d train, %d held out (%s)",
                progress_start + index + 1,
                total,
                report.rows_read,
                report.rows_dropped,
                report.rows_train,
                report.rows_test,
                "; ".join(report.segments),
            )
            if progress_id is not None:
                update_progress_artifact(
                    progress_id, progress=100.0 * (progress_start + index + 1) / total
                )
        if hyperparams.model == "ols":
            estimator = finish_ols(estimator, [s.train for s in summaries], plan.features)
        else:
            estimator = final_model()
    trained = complete_round(state, estimator, batches, summaries)
    logger.info("model version %d: %s", trained.state.version, _format(trained.metrics))
    return trained


def _ols_submitter(client: Client, prepared_round: PreparedRound) -> Callable[[int], list]:
    def submit(index: int) -> list[Future]:
        return [client.compute(prepared_round.summarized[index])]

    return submit


def _sgd_submitter(client: Client, prepared_round: PreparedRound, estimator, plan: SourcePlan):
    last = len(prepared_round.batches) - 1
    model: list = [estimator]

    def submit(index: int) -> list[Future]:
        prepared = client.compute(prepared_round.prepared[index])
        # The model (a few numbers) moves to the batch, not the batch to the model.
        model[0] = client.submit(
            sgd_fit_prepared, model[0], prepared, list(plan.features), pure=False
        )
        summary = client.submit(summarize_prepared, prepared, index == last, pure=False)
        return [summary, model[0]]

    def final_model():
        return model[0].result() if isinstance(model[0], Future) else model[0]

    return submit, final_model


def _in_order(submit: Callable[[int], list[Future]], count: int, window: int):
    """Yield each item's first result in order, keeping at most ``window`` items in flight."""
    pending: list[list[Future]] = []
    submitted = 0
    for index in range(count):
        while submitted < count and submitted < index + window:
            pending.append(submit(submitted))
            submitted += 1
        futures = pending.pop(0)
        results = [future.result() for future in futures]
        yield results[0]


def _format(metrics: dict) -> str:
    return ", ".join(
        f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in metrics.items()
    )
