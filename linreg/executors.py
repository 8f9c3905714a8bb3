"""Executors: where a round's batches are summarised and folded.

Both run the same :class:`~linreg.strategies.ModelStrategy` calls in the same order, so they
give the same model: :class:`SerialExecutor` in this process (tests, data a single process
handles faster than a cluster starts), :class:`DaskExecutor` on a Dask cluster with at most a
window of batches in flight (backpressure: memory stays bounded by the batch size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from linreg.batches import BatchSpec
from linreg.strategies import BatchSummary, ModelStrategy

OnSummary = Callable[[int, BatchSummary], None]


class Executor(Protocol):
    """Summarises each batch and folds it into the accumulator, in batch order."""

    def map_batches(
        self,
        strategy: ModelStrategy,
        accumulator: Any,
        batches: Sequence[BatchSpec],
        columns: Sequence[str],
        test_fraction: float,
        on_summary: OnSummary,
    ) -> Any:
        """Return the accumulator after every batch; ``on_summary(index, summary)`` is called
        in batch order as each batch is done (its ``train`` part removed)."""
        ...


class SerialExecutor:
    """Every batch in this process, one after another."""

    def map_batches(
        self,
        strategy: ModelStrategy,
        accumulator: Any,
        batches: Sequence[BatchSpec],
        columns: Sequence[str],
        test_fraction: float,
        on_summary: OnSummary,
    ) -> Any:
        features = columns[:-1]
        last = len(batches) - 1
        # The QR blocks are small: BLAS threads would only contend (measured 20x slower on a
        # busy two-core machine); Dask workers get one thread each from their nanny.
        with threadpool_limits(limits=1, user_api="blas"):
            for index, batch in enumerate(batches):
                summary = strategy.summarise(batch, columns, test_fraction, index == last)
                accumulator = strategy.fold(accumulator, summary, features)
                on_summary(index, summary.without_train())
        return accumulator


class DaskExecutor:
    """Batches summarised in parallel on a Dask cluster, folded in batch order.

    ``window`` bounds the batches in flight; by default two per worker thread for a strategy
    whose summaries are small (ols: one being read, one queued, so no thread idles), one per
    thread for one that folds where it summarised (sgd: each holds a whole batch, and its
    folds run one after another anyway).
    """

    def __init__(self, client: Any, window: int | None = None) -> None:
        self.client = client
        self.window = window

    def map_batches(
        self,
        strategy: ModelStrategy,
        accumulator: Any,
        batches: Sequence[BatchSpec],
        columns: Sequence[str],
        test_fraction: float,
        on_summary: OnSummary,
    ) -> Any:
        client = self.client
        features = list(columns[:-1])
        last = len(batches) - 1
        threads = max(1, sum(client.nthreads().values()))
        remote = strategy.fold_where_summarised
        window = self.window or (threads if remote else 2 * threads)
        state = {"accumulator": accumulator}

        def submit(index: int) -> list[Any]:
            summary = client.submit(
                strategy.summarise,
                batches[index],
                list(columns),
                test_fraction,
                index == last,
                pure=False,
            )
            if not remote:
                return [summary]
            # The model (a few numbers) moves to the batch, not the batch to the model.
            state["accumulator"] = client.submit(
                strategy.fold, state["accumulator"], summary, features, pure=False
            )
            return [
                client.submit(BatchSummary.without_train, summary, pure=False),
                state["accumulator"],
            ]

        for index, results in enumerate(_in_order(submit, len(batches), window)):
            summary = results[0]
            if not remote:
                state["accumulator"] = strategy.fold(state["accumulator"], summary, features)
                summary = summary.without_train()
            on_summary(index, summary)
        from distributed import Future  # the Dask executor is the only one that needs it

        result = state["accumulator"]
        return result.result() if isinstance(result, Future) else result


def _in_order(submit: Callable[[int], list[Any]], count: int, window: int) -> Iterator[list[Any]]:
    """Each item's results in order, with at most ``window`` items in flight."""
    pending: list[list[Any]] = []
    submitted = 0
    for index in range(count):
        while submitted < count and submitted < index + window:
            pending.append(submit(submitted))
            submitted += 1
        yield [future.result() for future in pending.pop(0)]
