"""Model strategies: what each estimator does with a batch, written once for every executor.

A round reduces each batch to a :class:`BatchSummary` (``summarise``, on a worker, in
parallel), folds the summaries into an accumulator in batch order (``fold``, where the
summary's training part lives: the driver for ols, the worker holding the batch for sgd), and
turns the accumulator into the round's estimator (``finish``). A new estimator is one more
class with these four methods and an entry in :data:`STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from linreg.batches import BatchSpec
from linreg.categorical import InputColumn
from linreg.config import HyperParams
from linreg.errors import DataError
from linreg.estimators import (
    IncrementalLinearRegression,
    StandardizedSGDRegressor,
    estimator_from_state,
    make_estimator,
)
from linreg.preprocess import BatchReader, BatchReport, prepare_batch
from linreg.stats import LeastSquaresStats, SingularSystemError, solve_least_squares

Estimator = IncrementalLinearRegression | StandardizedSGDRegressor


@dataclass
class BatchSummary:
    """What summarising one batch yields: small, whatever the batch size, except ``train``
    for strategies that fold raw rows (sgd), which never leaves the worker that read them."""

    report: BatchReport
    holdout: LeastSquaresStats
    train: Any = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def without_train(self) -> BatchSummary:
        return replace(self, train=None)


class ModelStrategy(Protocol):
    """How one kind of estimator learns from a round of batches."""

    kind: ClassVar[str]
    fold_where_summarised: ClassVar[bool]

    def start(self, estimator_state: dict[str, Any] | None, hyperparams: HyperParams) -> Any:
        """The accumulator a round starts from: the saved estimator, or a new one."""
        ...

    def summarise(
        self, batch: BatchSpec, columns: Sequence[str], test_fraction: float, keep_test_rows: bool
    ) -> BatchSummary: ...

    def fold(self, accumulator: Any, summary: BatchSummary, features: Sequence[str]) -> Any:
        """The accumulator with the summary folded in; may consume ``summary.train``."""
        ...

    def finish(self, accumulator: Any, features: Sequence[str]) -> Estimator: ...


def _empty_stats(n_features: int) -> LeastSquaresStats:
    return LeastSquaresStats.from_arrays(np.empty((0, n_features)), np.empty(0))


@dataclass
class OlsAccumulator:
    estimator: IncrementalLinearRegression
    parts: list[LeastSquaresStats] = field(default_factory=list)


class OlsStrategy:
    """Exact least squares: each batch becomes QR statistics where it is read (a chunk in
    memory at a time); the driver merges them in batch order and solves once per round.
    With a ``weight`` column, rows are scaled by √w: weighted least squares."""

    kind: ClassVar[str] = "ols"
    fold_where_summarised: ClassVar[bool] = False

    def __init__(self, weight: str | None = None, inputs: Sequence[InputColumn] = ()) -> None:
        self.weight = weight
        self.inputs = tuple(inputs)  # non-empty: categorical inputs to encode

    def start(
        self, estimator_state: dict[str, Any] | None, hyperparams: HyperParams
    ) -> OlsAccumulator:
        return OlsAccumulator(_estimator(estimator_state, hyperparams))

    def summarise(
        self, batch: BatchSpec, columns: Sequence[str], test_fraction: float, keep_test_rows: bool
    ) -> BatchSummary:
        reader = BatchReader(batch, columns, test_fraction, weight=self.weight, inputs=self.inputs)
        train_parts, test_parts, kept = [], [], []
        for train, test in reader:
            if keep_test_rows and test.n_valid:
                kept.append(test.rows())
            train_parts.append(_stats(train))
            test_parts.append(_stats(test))
        n_features = len(columns) - 1
        x_test = y_test = None
        if keep_test_rows:
            x_test = np.concatenate([x for x, _ in kept]) if kept else np.empty((0, n_features))
            y_test = np.concatenate([y for _, y in kept]) if kept else np.empty(0)
        return BatchSummary(
            report=reader.report,
            holdout=_merged(test_parts, n_features),
            train=_merged(train_parts, n_features),
            x_test=x_test,
            y_test=y_test,
        )

    def fold(
        self, accumulator: OlsAccumulator, summary: BatchSummary, features: Sequence[str]
    ) -> OlsAccumulator:
        accumulator.parts.append(summary.train)
        return accumulator

    def finish(
        self, accumulator: OlsAccumulator, features: Sequence[str]
    ) -> IncrementalLinearRegression:
        estimator = accumulator.estimator
        if not accumulator.parts:
            return estimator
        batch_stats = LeastSquaresStats.merge_all(accumulator.parts)
        merged = (
            estimator.stats_.merge(batch_stats) if hasattr(estimator, "stats_") else batch_stats
        )
        try:
            # The estimator would return a minimum-norm solution; a product refuses one.
            solve_least_squares(
                merged,
                estimator.alpha,
                list(features),
                strict=True,
                fit_intercept=estimator.fit_intercept,
            )
        except SingularSystemError as error:
            raise DataError(f"cannot fit ols on {merged.n} training rows: {error}") from None
        return estimator.merge_stats(batch_stats, feature_names=list(features))


SGD_FOLD_ROWS = 65_536


class SgdStrategy:
    """SGD on running-standardised data: each batch is read into arrays on a worker, and the
    small model travels to it for ``partial_fit`` steps over its rows (batches in order: SGD
    is sequential), a slice of :data:`SGD_FOLD_ROWS` rows at a time."""

    kind: ClassVar[str] = "sgd"
    fold_where_summarised: ClassVar[bool] = True

    def __init__(self, weight: str | None = None, inputs: Sequence[InputColumn] = ()) -> None:
        self.weight = weight
        self.inputs = tuple(inputs)  # non-empty: categorical inputs to encode

    def start(
        self, estimator_state: dict[str, Any] | None, hyperparams: HyperParams
    ) -> StandardizedSGDRegressor:
        return _estimator(estimator_state, hyperparams)

    def summarise(
        self, batch: BatchSpec, columns: Sequence[str], test_fraction: float, keep_test_rows: bool
    ) -> BatchSummary:
        prepared = prepare_batch(batch, columns, test_fraction, self.weight, self.inputs)
        return BatchSummary(
            report=prepared.report,
            holdout=LeastSquaresStats.from_arrays(
                prepared.x_test, prepared.y_test, prepared.w_test
            ),
            train=(prepared.x_train, prepared.y_train, prepared.w_train),
            x_test=prepared.x_test if keep_test_rows else None,
            y_test=prepared.y_test if keep_test_rows else None,
        )

    def fold(
        self, accumulator: StandardizedSGDRegressor, summary: BatchSummary, features: Sequence[str]
    ) -> StandardizedSGDRegressor:
        x_train, y_train, w_train = summary.train
        # The fold consumes the rows, so a batch is freed once learnt, whoever still holds its
        # summary: the serial loop until the next batch is read, Dask until the scheduler
        # releases it (two batches at the peak: 617 against 496 MiB for a round of 2M rows).
        summary.train = None
        # In slices: each partial_fit standardises a copy of its rows, so the copy stays
        # ~10 MiB instead of a second batch (a batch of 1M rows x 20 features is 160 MiB).
        for start in range(0, len(y_train), SGD_FOLD_ROWS):
            rows = slice(start, start + SGD_FOLD_ROWS)
            frame = pd.DataFrame(x_train[rows], columns=list(features), copy=False)
            weights = None if w_train is None else w_train[rows]
            if weights is not None and not weights.any():
                continue  # nothing to learn from rows of weight zero
            accumulator.partial_fit(frame, y_train[rows], sample_weight=weights)
        return accumulator

    def finish(
        self, accumulator: StandardizedSGDRegressor, features: Sequence[str]
    ) -> StandardizedSGDRegressor:
        return accumulator


STRATEGIES: dict[str, type[ModelStrategy]] = {"ols": OlsStrategy, "sgd": SgdStrategy}


def strategy_for(
    kind: str, weight: str | None = None, inputs: Sequence[InputColumn] = ()
) -> ModelStrategy:
    """The strategy of model ``kind``; ``weight`` names a column of sample weights;
    ``inputs`` (when some are categorical) the raw columns the features are encoded from."""
    try:
        return STRATEGIES[kind](weight, inputs)
    except KeyError:
        raise ValueError(f"unknown model '{kind}' (expected one of {sorted(STRATEGIES)})") from None


def _estimator(estimator_state: dict[str, Any] | None, hyperparams: HyperParams) -> Estimator:
    params = hyperparams.model_dump(exclude={"model"})
    if estimator_state is None:
        return make_estimator(hyperparams.model, **params)
    return estimator_from_state(estimator_state, **params)


def _stats(design) -> LeastSquaresStats:
    return LeastSquaresStats.from_matrix(
        design.matrix, design.n_valid, design.x_shift, design.y_shift
    )


def _merged(parts: Sequence[LeastSquaresStats], n_features: int) -> LeastSquaresStats:
    parts = [part for part in parts if part.n]
    return LeastSquaresStats.merge_all(parts) if parts else _empty_stats(n_features)
