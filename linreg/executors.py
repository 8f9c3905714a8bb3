"""Executors: where a round's batches are summarised and folded.

Both run the same :class:`~linreg.strategies.ModelStrategy` calls in the same order, so they
give the same model: :class:`SerialExecutor` in this process (tests, data a single process
handles faster than a cluster starts), :class:`DaskExecutor` on a Dask cluster with at most a
window of batches in flight (backpressure: memory stays bounded by the batch size).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from linreg.batches import BatchSpec
from linreg.strategies import BatchSummary, ModelStrategy

OnSummary = Callable[[int, BatchSummary], None]
# Asked before each batch after the first starts: False stops the round there (a time budget).
More = Callable[[], bool]


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
        more: More | None = None,
    ) -> Any:
        """Return the accumulator after every batch; ``on_summary(index, summary)`` is called
        in batch order as each batch is done (its ``train`` part removed).

        With ``more``, it is asked before each batch but the first starts; once it says no,
        no further batch starts, every batch started is still finished, and the accumulator
        covers exactly the batches passed to ``on_summary``. As the last batch is then not
        known in advance, every batch keeps its held-out rows in its summary.
        """
        ...


class SerialExecutor:
    """Every batch in this process, one after another; a strategy whose batches summarise
    independently (ols) reads each batch as up to ``readers`` pieces on as many threads, so
    both cores work from the first batch, as a local Dask cluster's two workers would."""

    def __init__(self, readers: int = 1) -> None:
        self.readers = readers

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
        features = columns[:-1]
        last = len(batches) - 1
        # The QR blocks are small: BLAS threads would only contend (measured 20x slower on a
        # busy two-core machine); Dask workers get one thread each from their nanny.
        with threadpool_limits(limits=1, user_api="blas"):
            for index, batch in enumerate(batches):
                if index and more is not None and not more():
                    break
                keep_test_rows = more is not None or index == last
                if strategy.fold_where_summarised:
                    accumulator, summary = strategy.learn(
                        accumulator, batch, columns, test_fraction, keep_test_rows
                    )
                else:
                    summary = strategy.summarise(
                        batch, columns, test_fraction, keep_test_rows, self.readers
                    )
                    accumulator = strategy.fold(accumulator, summary, features)
                    summary = summary.without_train()
                on_summary(index, summary)
        return accumulator


class DaskExecutor:
    """Batches summarised in parallel on a Dask cluster, folded in batch order.

    ``window`` bounds the batches in flight; by default two per worker thread for ols (one
    being read, one queued, so no thread idles) and two for sgd, whose batches are learnt one
    after another anyway (each holds a few chunks): the next one waits on the worker behind
    the model it needs, so it starts at once.
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
        more: More | None = None,
    ) -> Any:
        client = self.client
        features = list(columns[:-1])
        last = len(batches) - 1
        threads = max(1, sum(client.nthreads().values()))
        remote = strategy.fold_where_summarised
        window = self.window or (2 if remote else 2 * threads)
        state = {"accumulator": accumulator}

        def submit(index: int) -> list[Any]:
            keep_test_rows = more is not None or index == last
            if remote:
                # The model (a few numbers) moves to a worker, which reads the batch there.
                learnt = client.submit(
                    strategy.learn,
                    state["accumulator"],
                    batches[index],
                    list(columns),
                    test_fraction,
                    keep_test_rows,
                    pure=False,
                )
                # Only the summary is fetched: the model goes to the next batch, already
                # queued behind it (each step learns on a copy, so a step run again starts
                # from the same model), and is fetched once at the end.
                state["accumulator"] = client.submit(itemgetter(0), learnt, pure=False)
                return [client.submit(itemgetter(1), learnt, pure=False)]
            summary = client.submit(
                strategy.summarise,
                batches[index],
                list(columns),
                test_fraction,
                keep_test_rows,
                pure=False,
            )
            return [summary]

        # Worker threads of a local cluster share this process's BLAS: one thread each, as
        # a remote worker's nanny sets for its own process (unlimited, two OpenBLAS threads
        # per QR on two cores made a 10M-row round 1.4-1.9 times slower).
        with threadpool_limits(limits=1, user_api="blas"):
            for index, results in enumerate(_in_order(submit, len(batches), window, more)):
                summary = results[0]
                if not remote:
                    state["accumulator"] = strategy.fold(state["accumulator"], summary, features)
                    summary = summary.without_train()
                on_summary(index, summary)
        from distributed import Future  # the Dask executor is the only one that needs it

        result = state["accumulator"]
        return result.result() if isinstance(result, Future) else result


def _in_order(
    submit: Callable[[int], list[Any]], count: int, window: int, more: More | None = None
) -> Iterator[list[Any]]:
    """Each item's results in order, with at most ``window`` items in flight. Once ``more()``
    says no, nothing more is submitted, and the items in flight are still waited for and
    yielded: for sgd each one is already chained into the accumulator's fold."""
    pending: deque[list[Any]] = deque()
    submitted, taking = 0, True
    while True:
        while taking and submitted < count and len(pending) < window:
            if submitted and more is not None and not more():
                taking = False
                break
            pending.append(submit(submitted))
            submitted += 1
        if not pending:
            return
        yield [future.result() for future in pending.popleft()]
