"""The training round, written once: a list of batches in, one new model version out.

    lock -> load state -> next batches after the cursor -> summarise + fold each (executor)
         -> finish -> evaluate -> publish -> save state (compare-and-swap) -> unlock

Everything that talks to the outside world is injected: the executor (serial or Dask), the
state store (a Prefect block, or memory in tests), the publisher (model files, plus Prefect
artifacts when a flow runs the round) and the lock. The Prefect tasks wrap these objects'
calls and nothing else, so a flow, the CLI and a unit test all run this same function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from linreg.batches import BatchSpec, advance_cursor, plan_batches
from linreg.config import HyperParams
from linreg.errors import DataError
from linreg.evaluation import regression_metrics
from linreg.executors import Executor, More
from linreg.lifecycle import (
    DEFAULT_KEEP_VERSIONS,
    REPUBLISHED,
    history_record,
    live_version,
    now,
    publish_version,
)
from linreg.model_files import HISTORY_FILE, ModelDirectory
from linreg.preprocess import BatchReport, training_levels
from linreg.state import METRICS_HISTORY_KEPT, StateStore, TrainingState, fingerprint
from linreg.stats import LeastSquaresStats
from linreg.strategies import BatchSummary, Estimator, strategy_for
from linreg.validation import SourcePlan

_log = logging.getLogger("linreg")


@dataclass(frozen=True)
class RoundSpec:
    """What a round trains: how the data is cut, the model, and how much of the backlog:
    at most ``max_batches`` batches, and no batch started once ``max_seconds`` have passed
    since the round began (the batches started are finished; the first always starts)."""

    hyperparams: HyperParams
    batch_rows: int
    test_fraction: float
    max_batches: int | None = None
    reset: bool = False
    max_seconds: float | None = None


@dataclass
class TrainedRound:
    """The outcome of a round: the updated estimator, its evaluation, and the next state."""

    estimator: Estimator
    state: TrainingState
    metrics: dict[str, Any]
    report: BatchReport
    batches: int
    gate: dict[str, Any] | None = None
    # Each batch's held-out statistics, in batch order (the drift monitor's observations).
    batch_holdouts: list[LeastSquaresStats] = field(default_factory=list)
    drift: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadedState:
    """The state a round starts from, and the stored version it must still find when saving."""

    state: TrainingState
    stored_version: int | None


@dataclass(frozen=True)
class RoundResult:
    """What a round did, for flows, the CLI and scripts."""

    trained: bool
    version: int
    batches: int
    rows_trained: int
    metrics: dict[str, Any] | None = None
    sha256: str | None = None
    report: BatchReport = field(default_factory=BatchReport)
    rounds: int = 1


class Publisher(Protocol):
    """Makes a trained round's model available (files; artifacts when run by a flow)."""

    def publish(
        self, trained: TrainedRound, plan: SourcePlan, hyperparams: HyperParams
    ) -> dict[str, Any]: ...


class Monitor(Protocol):
    """Watches each round before it is published (:class:`linreg.lifecycle.DriftMonitor`)."""

    def observe(self, previous: TrainingState, trained: TrainedRound) -> None:
        """Add what it measures to ``trained`` (its state, metrics, drift)."""
        ...


class Gate(Protocol):
    """Decides whether a trained round may be published (:class:`linreg.lifecycle.QualityGate`)."""

    def check(self, previous: TrainingState, trained: TrainedRound) -> dict[str, Any] | None:
        """The gate's figures (None: nothing to judge); raises to refuse the round."""
        ...


Lock = Callable[[str], AbstractContextManager[Any]]
Clock = Callable[[], float]
OnBatch = Callable[[int, int, BatchSummary], None]

# Who else hears of each folded batch in this context (the CLI's progress bar), whatever
# flow or task runs the round: a flow parameter cannot carry a callback.
_batch_listeners: ContextVar[tuple[OnBatch, ...]] = ContextVar("batch_listeners", default=())


@contextmanager
def batch_listener(callback: OnBatch) -> Iterator[None]:
    """Call ``callback(index, count, summary)`` for every batch folded in this context."""
    token = _batch_listeners.set((*_batch_listeners.get(), callback))
    try:
        yield
    finally:
        _batch_listeners.reset(token)


def no_lock(name: str) -> AbstractContextManager[None]:  # noqa: ARG001 - a Lock
    """For a store nobody else writes to (tests, benchmarks)."""
    return nullcontext()


def run_round(
    plan: SourcePlan,
    spec: RoundSpec,
    *,
    executor: Executor,
    store: StateStore,
    publisher: Publisher,
    lock: Lock = no_lock,
    on_batch: OnBatch | None = None,
    log: logging.Logger | logging.LoggerAdapter = _log,
    gate: Gate | None = None,
    monitor: Monitor | None = None,
    clock: Clock = time.monotonic,
) -> RoundResult:
    """Train the next batches after the saved cursor into one new, published model version.

    Bad data anywhere in the round raises before anything is published or saved, so the
    store and the published model stay as they were; so does a ``gate`` that refuses the
    trained model. ``on_batch(index, count, summary)`` reports each batch as it is folded in.
    ``spec.max_seconds`` is measured on ``clock`` from this call (waiting for the lock
    included), so a run started on a schedule ends about when its budget does.
    """
    more = time_budget(spec.max_seconds, clock)
    with lock(store.name):
        loaded = load_or_start(store, plan, spec.hyperparams, spec.reset, log)
        batches = plan_batches(plan.files, loaded.state.cursor, spec.batch_rows, spec.max_batches)
        if not batches:
            log.info("no new rows after the cursor: every batch of %s is trained", plan.source)
            state = loaded.state
            return RoundResult(False, state.version, 0, state.rows_trained)
        if plan.categorical and not loaded.state.categories:
            # The first step fixes the levels (those of its training rows); later steps and
            # runs reuse them from the state, whatever the data holds by then.
            levels = training_levels(batches, plan.categorical, spec.test_fraction)
            log.info(
                "categorical levels (the first is the reference): %s",
                "; ".join(f"{name}: {', '.join(found)}" for name, found in levels.items()),
            )
            state = loaded.state.model_copy(update={"categories": levels})
            loaded = LoadedState(state, loaded.stored_version)
        plan = plan.with_levels(loaded.state.categories)
        log.info(
            "%d batch(es) of up to %d rows, %d rows in all",
            len(batches),
            spec.batch_rows,
            sum(batch.n_rows for batch in batches),
        )
        trained = train_batches(loaded.state, plan, batches, spec, executor, on_batch, log, more)
        if monitor is not None:
            monitor.observe(loaded.state, trained)
        if gate is not None:
            trained.gate = gate.check(loaded.state, trained)
        metadata = publisher.publish(trained, plan, spec.hyperparams)
        if metadata.get("republished"):
            log.warning(REPUBLISHED.format(version=trained.state.version))
        store.save(trained.state, loaded.stored_version)
    return RoundResult(
        True,
        trained.state.version,
        trained.batches,
        trained.state.rows_trained,
        metadata["metrics"],
        metadata.get("sha256"),
        trained.report,
    )


def time_budget(max_seconds: float | None, clock: Clock = time.monotonic) -> More | None:
    """``more()`` for an executor: True until ``max_seconds`` have passed on ``clock``."""
    if max_seconds is None:
        return None
    deadline = clock() + max_seconds
    return lambda: clock() < deadline


def load_or_start(
    store: StateStore,
    plan: SourcePlan,
    hyperparams: HyperParams,
    reset: bool = False,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> LoadedState:
    """The stored state if it continues this source, columns and model; a fresh one if
    nothing is stored or ``reset`` (versions keep rising, so a new model never looks old)."""
    stored = store.load()
    features = list(plan.features)
    stored_version = None if stored is None else stored.version
    if stored is None or reset:
        log.info(
            "starting a new %s model in state '%s'%s",
            hyperparams.model,
            store.name,
            " (reset)" if stored is not None else "",
        )
        fresh = TrainingState.fresh(
            plan.source,
            features,
            plan.target,
            hyperparams.model,
            version=stored_version or 0,
            weight=plan.weight,
            inputs=list(plan.input_names),
            categorical=list(plan.categorical),
        )
        return LoadedState(fresh, stored_version)
    expected = fingerprint(
        plan.source,
        list(plan.input_names),
        plan.target,
        hyperparams.model,
        plan.weight,
        list(plan.categorical),
    )
    stored.check_compatible(expected, store.name)
    log.info(
        "resuming state '%s' at version %d (%d rows trained)",
        store.name,
        stored.version,
        stored.rows_trained,
    )
    return LoadedState(stored, stored_version)


def train_batches(
    state: TrainingState,
    plan: SourcePlan,
    batches: Sequence[BatchSpec],
    spec: RoundSpec,
    executor: Executor,
    on_batch: OnBatch | None = None,
    log: logging.Logger | logging.LoggerAdapter = _log,
    more: More | None = None,
) -> TrainedRound:
    """Summarise and fold ``batches`` with the model's strategy, finish, and evaluate; with
    ``more`` (a time budget), only the leading batches started before it said no."""
    plan = plan.with_levels(state.categories)
    strategy = strategy_for(spec.hyperparams.model, plan.weight, plan.inputs)
    summaries: list[BatchSummary] = []

    def on_summary(index: int, summary: BatchSummary) -> None:
        if summaries:
            # Only the newest batch's held-out rows are needed (its MAE); under a time
            # budget every batch brings them, since which one ends the round is not known.
            summaries[-1] = replace(summaries[-1], x_test=None, y_test=None)
        summaries.append(summary)
        report = summary.report
        dropped = ", ".join(f"'{name}' {n}" for name, n in report.dropped_by_column.items())
        log.info(
            "batch %d/%d: %d rows read, %d dropped%s, %d train, %d held out (%s)",
            index + 1,
            len(batches),
            report.rows_read,
            report.rows_dropped,
            f" (missing or non-finite: {dropped})" if dropped else "",
            report.rows_train,
            report.rows_test,
            "; ".join(report.segments),
        )
        if report.unknown_levels:
            log.warning(
                "batch %d/%d: levels not seen when the model started, encoded as all zeros: %s",
                index + 1,
                len(batches),
                ", ".join(f"'{name}' {n} rows" for name, n in report.unknown_levels.items()),
            )
        for listener in (on_batch, *_batch_listeners.get()):
            if listener is not None:
                listener(index, len(batches), summary)

    accumulator = strategy.start(state.estimator, spec.hyperparams)
    accumulator = executor.map_batches(
        strategy, accumulator, batches, plan.columns, spec.test_fraction, on_summary, more
    )
    if len(summaries) < len(batches):
        # The accumulator holds exactly the batches reported, so the cursor advances over
        # those and the rest stays for the next round.
        log.info(
            "time budget spent: %d of %d batch(es) trained, the rest is left for the next round",
            len(summaries),
            len(batches),
        )
        batches = batches[: len(summaries)]
    estimator = strategy.finish(accumulator, plan.features)
    trained = complete_round(state, estimator, batches, summaries)
    log.info("model version %d: %s", trained.state.version, _format(trained.metrics))
    return trained


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
    rows_trained = state.rows_trained + report.rows_train
    next_state = state.model_copy(
        update={
            "version": version,
            "cursor": advance_cursor(state.cursor, batches),
            "estimator": estimator.get_state(),
            "holdout": holdout.to_dict(),
            "rows_trained": rows_trained,
            "rows_held_out": state.rows_held_out + report.rows_test,
            "rows_dropped": state.rows_dropped + report.rows_dropped,
            "batches_trained": state.batches_trained + len(batches),
            "metrics_history": [
                *state.metrics_history[-(METRICS_HISTORY_KEPT - 1) :],
                {"version": version, "rows_trained": rows_trained, **metrics},
            ],
        }
    ).stamped()
    return TrainedRound(
        estimator,
        next_state,
        metrics,
        report,
        len(batches),
        batch_holdouts=[summary.holdout for summary in summaries],
    )


def model_metadata(
    trained: TrainedRound, plan: SourcePlan, hyperparams: HyperParams
) -> dict[str, Any]:
    """The fields of ``model.json`` other than the checksum and timestamp."""
    state = trained.state
    plan = plan.with_levels(state.categories)
    return {
        "version": state.version,
        "model": hyperparams.model,
        "features": list(plan.features),
        "target": plan.target,
        "weight": plan.weight,
        "inputs": [column.to_dict() for column in plan.inputs]
        or [{"name": name, "kind": "numeric"} for name in plan.features],
        "coef": [float(value) for value in trained.estimator.coef_],
        "intercept": float(trained.estimator.intercept_),
        "fit_intercept": hyperparams.fit_intercept,
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
            "excluded_columns": dict(plan.excluded_columns),
            "quality": {
                "rows_dropped_by_column": dict(trained.report.dropped_by_column),
                "rows_with_unknown_level": dict(trained.report.unknown_levels),
            },
        },
        **({} if trained.gate is None else {"gate": trained.gate}),
        **({} if trained.drift is None else {"drift": trained.drift}),
    }


def _format(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in metrics.items()
    )


class FilePublisher:
    """Publishes ``versions/<N>/`` and (unless a version is pinned) the live ``model.pkl`` and
    ``model.json`` into ``out_dir``, and records it in the history (:mod:`lifecycle`)."""

    def __init__(
        self, out_dir: str, keep_versions: int = DEFAULT_KEEP_VERSIONS, run_id: str | None = None
    ) -> None:
        self.out_dir = out_dir
        self.keep_versions = keep_versions
        self.run_id = run_id

    def publish(
        self, trained: TrainedRound, plan: SourcePlan, hyperparams: HyperParams
    ) -> dict[str, Any]:
        metadata = model_metadata(trained, plan, hyperparams)
        directory = ModelDirectory(self.out_dir, plan.storage_options)
        return publish_version(
            directory, trained.estimator, metadata, self.keep_versions, self.run_id
        )


@dataclass(frozen=True)
class SkipResult:
    """What ``--mode skip`` did: the batch passed over (None: nothing left to skip)."""

    batch: str | None
    rows: int
    version: int


def skip_round(
    plan: SourcePlan,
    spec: RoundSpec,
    *,
    store: StateStore,
    out_dir: str,
    lock: Lock = no_lock,
    run_id: str | None = None,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> SkipResult:
    """Move the cursor past the next batch without training on it (after the quality gate
    refused it, say); recorded in the state's ``skipped`` list and in the history."""
    with lock(store.name):
        loaded = load_or_start(store, plan, spec.hyperparams, False, log)
        state = loaded.state
        batches = plan_batches(plan.files, state.cursor, spec.batch_rows, 1)
        if not batches:
            log.info("nothing to skip: every batch of %s is trained", plan.source)
            return SkipResult(None, 0, state.version)
        (batch,) = batches
        entry = {"time": now(), "batch": batch.describe(), "rows": batch.n_rows}
        skipped = state.model_copy(
            update={
                "cursor": advance_cursor(state.cursor, batches),
                "skipped": [*state.skipped, {**entry, "version": state.version}],
            }
        ).stamped()
        store.save(skipped, loaded.stored_version)
        directory = ModelDirectory(out_dir, plan.storage_options)
        with directory.lock():
            live = live_version(directory)
            directory.append_line(
                history_record(
                    "skipped",
                    version=None,
                    live_version=live,
                    previous_version=live,
                    run_id=run_id,
                    **entry,
                ),
                HISTORY_FILE,
            )
    log.info(
        "skipped %s (%d rows) without training; version %d stays",
        entry["batch"],
        batch.n_rows,
        state.version,
    )
    return SkipResult(entry["batch"], batch.n_rows, state.version)
