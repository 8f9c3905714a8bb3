"""The validate task: schema, types and readability of every file of the source."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from linreg.config import DataConfig
from linreg.validation import SourcePlan, validate_source
from tasks.runtime import cluster_client


@task(name="validate", cache_policy=NO_CACHE)
def validate(data: DataConfig) -> SourcePlan:
    """Check that every file is readable, shares one schema, and has numeric columns
    (files inspected in parallel on the Dask cluster)."""
    with cluster_client() as client:
        plan = validate_source(
            data, lambda function, *items: client.gather(client.map(function, *items))
        )
    get_run_logger().info(
        "validated %s: %d file(s), %d rows, features %s, target '%s'",
        data.source,
        len(plan.files),
        plan.n_rows,
        list(plan.features),
        plan.target,
    )
    return plan
