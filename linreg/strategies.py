"""Model strategies: what each estimator does with a batch, written once for every executor.

``learn`` takes one batch into the accumulator and returns the batch's
:class:`BatchSummary` (report, held-out statistics); ``finish`` turns the accumulator into the
round's estimator. A strategy whose batches reduce to small summaries (ols) also splits
``learn`` into ``summarise`` (on any worker, batches in parallel) and ``fold`` (in batch
order, on the driver); one that must see every row in order (sgd, ``fold_where_summarised``)
runs ``learn`` on a worker, the accumulator travelling to the data. A new estimator is one
more class and an entry in :data:`STRATEGIES`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

import numpy as np

from linreg.batches import BatchSpec, split_batch
from linreg.categorical import InputColumn
from linreg.config import HyperParams
from linreg.errors import DataError
from linreg.estimators import (
    IncrementalLinearRegression,
    StandardizedSGDRegressor,
    estimator_from_state,
    make_estimator,
)
from linreg.prefetch import prefetched
from linreg.preprocess import BatchReader, BatchReport, Design, check_usable_rows
from linreg.stats import LeastSquaresStats, SingularSystemError, solve_least_squares

Estimator = IncrementalLinearRegression | StandardizedSGDRegressor


@dataclass
class BatchSummary:
    """What one batch yields: small, whatever the batch size (``train``: the statistics a
    parallel strategy folds; ``x_test``/``y_test``: the held-out rows when asked for)."""

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
    # True: batches are learnt one after another where they are read (``learn`` only);
    # False: ``summarise`` runs on any worker in parallel and ``fold`` in batch order.
    fold_where_summarised: ClassVar[bool]

    def start(self, estimator_state: dict[str, Any] | None, hyperparams: HyperParams) -> Any:
        """The accumulator a round starts from: the saved estimator, or a new one."""
        ...

    def learn(
        self,
        accumulator: Any,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
    ) -> tuple[Any, BatchSummary]:
        """The accumulator with ``batch`` learnt, and the batch's summary (no ``train``)."""
        ...

    def finish(self, accumulator: Any, features: Sequence[str]) -> Estimator: ...


class ParallelStrategy(ModelStrategy, Protocol):
    """A strategy whose batches summarise independently (``fold_where_summarised`` False)."""

    def summarise(
        self,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
        readers: int = 1,
    ) -> BatchSummary:
        """The batch's summary, read by up to ``readers`` threads at once."""
        ...

    def fold(self, accumulator: Any, summary: BatchSummary, features: Sequence[str]) -> Any:
        """The accumulator with the summary folded in."""
        ...


def _empty_stats(n_features: int) -> LeastSquaresStats:
    return LeastSquaresStats.from_arrays(np.empty((0, n_features)), np.empty(0))


@dataclass
class OlsAccumulator:
    estimator: IncrementalLinearRegression
    parts: list[LeastSquaresStats] = field(default_factory=list)


# Rows below which a second reader costs more (its Arrow buffers, a thread) than it saves.
MIN_READER_ROWS = 262_144


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
        self,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
        readers: int = 1,
    ) -> BatchSummary:
        """The batch's QR statistics; with ``readers`` > 1, its pieces are read on as many
        threads at once (each piece at least :data:`MIN_READER_ROWS` rows) and merged."""
        pieces = split_batch(batch, readers, MIN_READER_ROWS)
        if len(pieces) == 1:
            return self._summarise(batch, columns, test_fraction, keep_test_rows, True)
        with ThreadPoolExecutor(len(pieces), thread_name_prefix="ols-reader") as pool:
            parts = list(
                pool.map(
                    lambda piece: self._summarise(
                        piece, columns, test_fraction, keep_test_rows, False
                    ),
                    pieces,
                )
            )
        report = parts[0].report
        for part in parts[1:]:
            report = report.add(part.report)
        report = replace(report, segments=[batch.describe()])
        check_usable_rows(report)
        n_features = len(columns) - 1
        test_rows = [(part.x_test, part.y_test) for part in parts if part.y_test is not None]
        return BatchSummary(
            report=report,
            holdout=_merged([part.holdout for part in parts], n_features),
            train=_merged([part.train for part in parts], n_features),
            **(_test_rows(test_rows, n_features) if keep_test_rows else {}),
        )

    def _summarise(
        self,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
        require_usable_rows: bool,
    ) -> BatchSummary:
        reader = BatchReader(
            batch,
            columns,
            test_fraction,
            weight=self.weight,
            inputs=self.inputs,
            require_usable_rows=require_usable_rows,
        )
        train_parts, test_parts, kept = [], [], []
        for train, test in reader:
            if keep_test_rows and test.n_valid:
                kept.append(test.rows())
            train_parts.append(_stats(train))
            test_parts.append(_stats(test))
        n_features = len(columns) - 1
        return BatchSummary(
            report=reader.report,
            holdout=_merged(test_parts, n_features),
            train=_merged(train_parts, n_features),
            **(_test_rows(kept, n_features) if keep_test_rows else {}),
        )

    def fold(
        self, accumulator: OlsAccumulator, summary: BatchSummary, features: Sequence[str]
    ) -> OlsAccumulator:
        accumulator.parts.append(summary.train)
        return accumulator

    def learn(
        self,
        accumulator: OlsAccumulator,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
    ) -> tuple[OlsAccumulator, BatchSummary]:
        summary = self.summarise(batch, columns, test_fraction, keep_test_rows)
        return self.fold(accumulator, summary, columns[:-1]), summary.without_train()

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


class SgdStrategy:
    """SGD on running-standardised data, batches in order (SGD is sequential): the small
    model travels to a worker, which reads the batch a chunk at a time and takes
    ``partial_fit`` steps over each chunk while the next one is read (:func:`prefetched`),
    so a batch is never in memory whole."""

    kind: ClassVar[str] = "sgd"
    fold_where_summarised: ClassVar[bool] = True

    def __init__(self, weight: str | None = None, inputs: Sequence[InputColumn] = ()) -> None:
        self.weight = weight
        self.inputs = tuple(inputs)  # non-empty: categorical inputs to encode

    def start(
        self, estimator_state: dict[str, Any] | None, hyperparams: HyperParams
    ) -> StandardizedSGDRegressor:
        return _estimator(estimator_state, hyperparams)

    def learn(
        self,
        accumulator: StandardizedSGDRegressor,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        keep_test_rows: bool,
    ) -> tuple[StandardizedSGDRegressor, BatchSummary]:
        reader = BatchReader(
            batch, columns, test_fraction, weight=self.weight, scale_rows=False, inputs=self.inputs
        )
        features = list(columns[:-1])
        # A copy (a few numbers): a step Dask runs again from the same input must not find
        # that input already moved by its first run.
        model = copy.deepcopy(accumulator)
        holdout, kept = [], []
        for train, test_stats, test_rows in prefetched(_with_holdout(reader, keep_test_rows)):
            model.partial_fit_design(train, features)
            holdout.append(test_stats)
            if test_rows is not None:
                kept.append(test_rows)
        summary = BatchSummary(
            report=reader.report,
            holdout=_merged(holdout, len(features)),
            **(_test_rows(kept, len(features)) if keep_test_rows else {}),
        )
        return model, summary

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


def _with_holdout(
    reader: BatchReader, keep_test_rows: bool
) -> Iterator[tuple[Design, LeastSquaresStats, tuple[np.ndarray, np.ndarray] | None]]:
    """Each chunk's training design with its held-out rows' statistics (and the rows, when
    kept), computed where the chunk is read: on the prefetching thread."""
    n_features = len(reader.columns) - 1
    for train, test in reader:
        if not test.n_valid:
            yield train, _empty_stats(n_features), None
            continue
        x_test, y_test = test.rows()
        stats = LeastSquaresStats.from_arrays(x_test, y_test, _kept_weights(test))
        yield train, stats, (x_test, y_test) if keep_test_rows else None


def _kept_weights(design: Design) -> np.ndarray | None:
    """The sample weights of a design's usable rows (kept beside them, not scaled in)."""
    if design.weights is None or design.n_valid == len(design.matrix):
        return design.weights
    return design.weights[design.valid]


def _test_rows(kept: Sequence[tuple[np.ndarray, np.ndarray]], n_features: int) -> dict:
    """``x_test`` and ``y_test`` of a summary from the held-out rows of each chunk."""
    if not kept:
        return {"x_test": np.empty((0, n_features)), "y_test": np.empty(0)}
    return {
        "x_test": np.concatenate([x for x, _ in kept]),
        "y_test": np.concatenate([y for _, y in kept]),
    }
