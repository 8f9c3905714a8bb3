"""The validate task: schema, types and readability of every file of the source."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings

from linreg.config import DataConfig
from linreg.inspection_cache import InspectionCache
from linreg.validation import SourcePlan, csv_format, validate_source
from tasks.runtime import RuntimeConfig, dask_client

# Fewer files are inspected faster here than a cluster starts (each is one metadata read).
PARALLEL_MIN_FILES = 64


def file_mapper(runtime: RuntimeConfig) -> Callable[..., list]:
    """``mapper(inspect_file, file_ids, urls)``: in this process for a few files, on the
    run's Dask cluster for many (or whenever a cluster is named)."""

    def inspect_all(function, file_ids, urls):
        file_ids, urls = list(file_ids), list(urls)
        few = len(file_ids) < PARALLEL_MIN_FILES and runtime.executor == "auto"
        # With a cluster named, it inspects: the data may be visible from its workers only.
        if runtime.executor == "serial" or (few and not runtime.scheduler()):
            return list(map(function, file_ids, urls))
        client = dask_client(runtime)
        return client.gather(client.map(function, file_ids, urls))

    return inspect_all


def inspection_cache(data: DataConfig) -> InspectionCache | None:
    """Where validation keeps what it learnt about unchanged files: ``LINREG_INSPECTION_CACHE``
    (a directory; ``off``: nowhere), by default ``inspections/`` in the Prefect home."""
    setting = os.environ.get("LINREG_INSPECTION_CACHE", "")
    if setting.lower() == "off":
        return None
    directory = Path(setting) if setting else Path(get_current_settings().home) / "inspections"
    return InspectionCache(directory, data.source, csv_format(data))


@task(name="validate", cache_policy=NO_CACHE)
def validate(data: DataConfig, runtime: RuntimeConfig) -> SourcePlan:
    """Check that every file is readable, shares one schema, and has numeric columns
    (many files are inspected in parallel on the Dask cluster)."""
    cache = inspection_cache(data)
    plan = validate_source(data, file_mapper(runtime), cache)
    logger = get_run_logger()
    logger.info(
        "validated %s: %d file(s)%s, %d rows, features %s, target '%s'",
        data.source,
        len(plan.files),
        f" ({cache.reused} unchanged since the last run)" if cache and cache.reused else "",
        plan.n_rows,
        list(plan.features),
        plan.target,
    )
    for name, reason in plan.excluded_columns.items():
        logger.info("column '%s' is not a feature: %s", name, reason)
    return plan
