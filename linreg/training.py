"""One training round, free of any orchestrator: the pieces the Prefect tasks run on Dask
workers, and the same round run sequentially in-process (tests, benchmarks' bare baseline).

A round takes the next batches after the state's cursor, updates the estimator on their
training rows, merges their held-out statistics, evaluates, and yields the next state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from linreg.batches import BatchSpec, advance_cursor
from linreg.config import HyperParams
from linreg.errors import DataError
from linreg.estimators import estimator_from_state, make_estimator
from linreg.evaluation import regression_metrics
from linreg.preprocess import BatchChunks, BatchReport, PreparedBatch, prepare_batch
from linreg.state import TrainingState
from linreg.stats import LeastSquaresStats, SingularSystemError, solve_least_squares
from linreg.validation import SourcePlan

Estimator = Any  # IncrementalLinearRegression | StandardizedSGDRegressor


@dataclass
class BatchSummary:
    """What a worker sends back about one batch: small, whatever the batch size."""

    report: BatchReport
    holdout: LeastSquaresStats
    train: LeastSquaresStats | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def summarize_prepared(prepared: PreparedBatch, keep_test_rows: bool) -> BatchSummary:
    """sgd: QR statistics of a prepared batch's held-out rows (what evaluation needs)."""
    return BatchSummary(
        report=prepared.report,
        holdout=LeastSquaresStats.from_arrays(prepared.x_test, prepared.y_test),
        x_test=prepared.x_test if keep_test_rows else None,
        y_test=prepared.y_test if keep_test_rows else None,
    )


def summarize_batch(
    batch: BatchSpec, columns: Sequence[str], test_fraction: float, keep_test_rows: bool
) -> BatchSummary:
    """ols: read, clean and split ``batch`` a row group at a time, as :func:`prepare_batch`
    does, reducing each chunk to QR statistics at once: a worker holds one chunk, never the
    batch, so memory does not depend on the batch size."""
    chunks = BatchChunks(batch, columns, test_fraction)
    train_parts, test_parts, kept = [], [], []
    for train_rows, test_rows in chunks:
        train_parts.append(LeastSquaresStats.from_arrays(train_rows[:, :-1], train_rows[:, -1]))
        test_parts.append(LeastSquaresStats.from_arrays(test_rows[:, :-1], test_rows[:, -1]))
        if keep_test_rows:
            kept.append(test_rows)
    width = len(columns)
    test_rows = np.concatenate(kept) if kept else np.empty((0, width))
    return BatchSummary(
        report=chunks.report,
        holdout=_merged(test_parts, width - 1),
        train=_merged(train_parts, width - 1),
        x_test=test_rows[:, :-1] if keep_test_rows else None,
        y_test=test_rows[:, -1] if keep_test_rows else None,
    )


def _merged(parts: Sequence[LeastSquaresStats], n_features: int) -> LeastSquaresStats:
    if parts:
        return LeastSquaresStats.merge_all(parts)
    return LeastSquaresStats.from_arrays(np.empty((0, n_features)), np.empty(0))


def sgd_fit_prepared(
    estimator: Estimator, prepared: PreparedBatch, feature_names: Sequence[str]
) -> Estimator:
    """One ``partial_fit`` of an SGD estimator on a prepared batch's training rows."""
    if len(prepared.y_train):
        frame = pd.DataFrame(prepared.x_train, columns=list(feature_names), copy=False)
        estimator.partial_fit(frame, prepared.y_train)
    return estimator


def start_estimator(state: TrainingState, hyperparams: HyperParams) -> Estimator:
    """The state's estimator with the run's hyper-parameters, or a new one."""
    params = hyperparams.model_dump(exclude={"model"})
    if state.estimator is None:
        return make_estimator(hyperparams.model, **params)
    return estimator_from_state(state.estimator, **params)


def finish_ols(
    estimator: Estimator, train_parts: Sequence[LeastSquaresStats], features: Sequence[str]
) -> Estimator:
    """Merge per-batch training statistics (in batch order) into the ols estimator."""
    merged = LeastSquaresStats.merge_all(train_parts)
    if hasattr(estimator, "stats_"):
        merged = estimator.stats_.merge(merged)
    try:
        # The estimator would return a minimum-norm solution; a product refuses one.
        solve_least_squares(merged, estimator.alpha, list(features), strict=True)
    except SingularSystemError as error:
        raise DataError(f"cannot fit ols on {merged.n} training rows: {error}") from None
    return estimator.merge_stats(
        LeastSquaresStats.merge_all(train_parts), feature_names=list(features)
    )


@dataclass
class TrainedRound:
    """The outcome of a round: the updated estimator, its evaluation, and the next state."""

    estimator: Estimator
    state: TrainingState
    metrics: dict[str, Any]
    report: BatchReport
    batches: int
    extra: dict[str, Any] = field(default_factory=dict)


def complete_round(
    state: TrainingState,
    estimator: Estimator,
    batches: Sequence[BatchSpec],
    summaries: Sequence[BatchSummary],
) -> TrainedRound:
    """Evaluate the updated estimator and build the state that records this round."""
    if not hasattr(estimator, "coef_"):
        raise DataError(
            "no training rows in "
            + "; ".join(batch.describe() for batch in batches)
            + " (every complete row was held out; lower --test-fraction or raise --batch-rows)"
        )
    report = BatchReport()
    for summary in summaries:
        report = report.add(summary.report)
    holdout_parts = [summary.holdout for summary in summaries]
    if state.holdout is not None:
        holdout_parts.insert(0, LeastSquaresStats.from_dict(state.holdout))
    holdout = LeastSquaresStats.merge_all(holdout_parts)
    latest = summaries[-1]
    metrics = regression_metrics(
        holdout, estimator.coef_, estimator.intercept_, latest.x_test, latest.y_test
    )
    version = state.version + 1
    metrics_entry = {
        "version": version,
        "rows_trained": state.rows_trained + report.rows_train,
        **metrics,
    }
    next_state = state.model_copy(
        update={
            "version": version,
            "cursor": advance_cursor(state.cursor, batches),
            "estimator": estimator.get_state(),
            "holdout": holdout.to_dict(),
            "rows_trained": state.rows_trained + report.rows_train,
            "rows_held_out": state.rows_held_out + report.rows_test,
            "rows_dropped": state.rows_dropped + report.rows_dropped,
            "batches_trained": state.batches_trained + len(batches),
            "metrics_history": [*state.metrics_history, metrics_entry],
        }
    ).stamped()
    return TrainedRound(estimator, next_state, metrics, report, len(batches))


def run_round_locally(
    state: TrainingState,
    plan: SourcePlan,
    batches: Iterable[BatchSpec],
    hyperparams: HyperParams,
    test_fraction: float,
) -> TrainedRound:
    """The whole round in this process, batch after batch: no Prefect, no Dask."""
    batches = list(batches)
    estimator = start_estimator(state, hyperparams)
    summaries, train_parts = [], []
    for position, batch in enumerate(batches):
        is_last = position == len(batches) - 1
        if hyperparams.model == "ols":
            summary = summarize_batch(batch, plan.columns, test_fraction, is_last)
            train_parts.append(summary.train)
        else:
            prepared = prepare_batch(batch, plan.columns, test_fraction)
            summary = summarize_prepared(prepared, is_last)
            estimator = sgd_fit_prepared(estimator, prepared, plan.features)
        summaries.append(summary)
    if hyperparams.model == "ols":
        estimator = finish_ols(estimator, train_parts, plan.features)
    return complete_round(state, estimator, batches, summaries)


def model_metadata(
    trained: TrainedRound, plan: SourcePlan, hyperparams: HyperParams
) -> dict[str, Any]:
    """The fields of ``model.json`` other than the checksum and timestamp."""
    state = trained.state
    return {
        "version": state.version,
        "model": hyperparams.model,
        "features": list(plan.features),
        "target": plan.target,
        "coef": [float(value) for value in trained.estimator.coef_],
        "intercept": float(trained.estimator.intercept_),
        "metrics": trained.metrics,
        "rows_trained": state.rows_trained,
        "hyperparameters": hyperparams.model_dump(),
        "data": {
            "source": plan.source,
            "files": len(plan.files),
            "rows_in_source": plan.n_rows,
            "batches_trained": state.batches_trained,
            "rows_read": sum(state.cursor.values()),
            "rows_held_out": state.rows_held_out,
            "rows_dropped": state.rows_dropped,
            "last_batches": trained.report.segments,
        },
    }
