"""The preprocess task: plan the next batches and define their Dask preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import dask
from dask.delayed import Delayed
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from linreg.batches import BatchSpec, plan_batches
from linreg.preprocess import prepare_batch
from linreg.state import TrainingState
from linreg.training import summarize_batch
from linreg.validation import SourcePlan


@dataclass(frozen=True)
class PreparedRound:
    """The batches of a round and, per batch, the lazy Dask graphs that prepare it: whole
    (``prepared``: train and held-out arrays, for sgd) or streamed a row group at a time into
    QR statistics (``summarized``, for ols)."""

    batches: list[BatchSpec]
    prepared: list[Delayed]
    summarized: list[Delayed]

    @property
    def empty(self) -> bool:
        return not self.batches


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess(
    plan: SourcePlan,
    state: TrainingState,
    batch_rows: int,
    test_fraction: float,
    max_batches: int | None = None,
) -> PreparedRound:
    """Take the next batches after the cursor; each is read in row groups, cleaned of rows
    with missing or non-finite values and split train/test by row identity, on Dask.

    The graph is lazy: ``partial_fit`` runs it a few batches ahead of the model, so memory
    stays bounded by the batch size however many batches a round has.
    """
    batches = plan_batches(plan.files, state.cursor, batch_rows, max_batches)
    logger = get_run_logger()
    if not batches:
        logger.info("no new rows after the cursor: every batch of %s is trained", plan.source)
        return PreparedRound([], [], [])
    logger.info(
        "%d batch(es) of up to %d rows, %d rows in all",
        len(batches),
        batch_rows,
        sum(batch.n_rows for batch in batches),
    )
    last = len(batches) - 1
    prepared = [
        dask.delayed(prepare_batch)(batch, plan.columns, test_fraction) for batch in batches
    ]
    summarized = [
        dask.delayed(summarize_batch)(batch, plan.columns, test_fraction, index == last)
        for index, batch in enumerate(batches)
    ]
    return PreparedRound(batches, prepared, summarized)
