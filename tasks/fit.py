"""The partial_fit task: preprocess each batch of a round and fold it into the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from linreg.batches import BatchSpec
from linreg.executors import DaskExecutor, Executor, More, OnSummary, SerialExecutor
from linreg.strategies import ModelStrategy
from tasks.runtime import RuntimeConfig, dask_client


class TaskExecutor:
    """Runs a round's batches inside the ``partial-fit`` task, on the executor that
    ``runtime`` chooses for the round's size."""

    def __init__(self, runtime: RuntimeConfig) -> None:
        self.runtime = runtime

    def map_batches(
        self,
        strategy: ModelStrategy,
        accumulator: Any,
        batches: Sequence[BatchSpec],
        columns: Sequence[str],
        test_fraction: float,
        on_summary: OnSummary,
        more: More | None = None,
    ) -> Any:
        # quote(): Prefect would otherwise walk every batch spec and the estimator looking
        # for futures before the task starts (see tasks.state.TaskStateStore.save).
        return partial_fit(
            self.runtime,
            strategy,
            quote(accumulator),
            quote(batches),
            columns,
            test_fraction,
            on_summary,
            more,
        )


@task(name="partial-fit", cache_policy=NO_CACHE)
def partial_fit(
    runtime: RuntimeConfig,
    strategy: ModelStrategy,
    accumulator: Any,
    batches: Sequence[BatchSpec],
    columns: Sequence[str],
    test_fraction: float,
    on_summary: OnSummary,
    more: More | None = None,
) -> Any:
    """Read each batch in chunks, drop rows with missing values, split train/test by row
    identity (on Dask for a large round), and update the model on it, in batch order, until
    ``more()`` says the round's time budget is spent."""
    n_rows = sum(batch.n_rows for batch in batches)
    executor: Executor
    if runtime.use_dask(n_rows):
        client = dask_client(runtime)
        executor = DaskExecutor(client)
        address = client.scheduler.address
        workers = len(client.nthreads())
        where = (
            f"on Dask ({workers} worker thread(s) in this process)"
            if address.startswith("inproc://")
            else f"on Dask ({workers} worker(s) at {address})"
        )
    else:
        executor = SerialExecutor(readers=runtime.dask_workers)
        where = "in this process" + (
            f" ({n_rows:,} rows: no Dask cluster for a round of up to "
            f"{runtime.serial_max_rows:,} rows)"
            if runtime.executor == "auto"
            else ""
        )
    get_run_logger().info("%s: %d batch(es) %s", strategy.kind, len(batches), where)
    return executor.map_batches(
        strategy, accumulator, batches, columns, test_fraction, on_summary, more
    )
