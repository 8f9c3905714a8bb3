"""The flows that operate the published model without training it:

    rollback      make an older kept version live and pin it (later rounds stay out of service)
    promote       make a kept version (default: the newest) live and unpin
    skip-batch    move the training cursor past the next batch without training on it

Each runs from the UI, ``prefect deployment run`` and CI; see :mod:`linreg.lifecycle`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from linreg.config import DataConfig, HyperParams, Settings
from linreg.model_files import ModelDirectory
from linreg.training import RoundSpec, SkipResult, skip_round
from tasks import RuntimeConfig, TaskStateStore, validate
from tasks.publish import change_live_version, current_run_id, history_artifact
from tasks.runtime import UNPERSISTED_RESULTS, heartbeats_unless_prefect_sends_them, training_lock

DEFAULTS = Settings()


@flow(name="rollback", flow_run_name="rollback-{to}", **UNPERSISTED_RESULTS)
def rollback(
    out_dir: str = DEFAULTS.out_dir,
    to: int | None = Field(
        None, ge=1, description="Version to make live; default: the one live before the current."
    ),
    storage_options: dict[str, Any] | None = Field(  # noqa: B008 - a pydantic field default
        None, description="fsspec storage_options of an object-store out_dir."
    ),
) -> dict[str, Any]:
    """Make an older kept model version live and pin it; training continues into versions/."""
    with heartbeats_unless_prefect_sends_them():
        return change_live_version("rollback", out_dir, to, storage_options or {})


@flow(name="promote", flow_run_name="promote-{to}", **UNPERSISTED_RESULTS)
def promote(
    out_dir: str = DEFAULTS.out_dir,
    to: int | None = Field(None, ge=1, description="Version to make live; default: the newest."),
    storage_options: dict[str, Any] | None = Field(  # noqa: B008 - a pydantic field default
        None, description="fsspec storage_options of an object-store out_dir."
    ),
) -> dict[str, Any]:
    """Make a kept model version (default: the newest) live and unpin, so new ones go live."""
    with heartbeats_unless_prefect_sends_them():
        return change_live_version("promote", out_dir, to, storage_options or {})


@flow(name="skip-batch", flow_run_name="skip-{state_block}", **UNPERSISTED_RESULTS)
def skip_batch(
    data: DataConfig,
    hyperparams: HyperParams = HyperParams(),  # noqa: B008 - an immutable pydantic default
    out_dir: str = DEFAULTS.out_dir,
    state_block: str = DEFAULTS.state_block,
    runtime: RuntimeConfig = RuntimeConfig(),  # noqa: B008 - an immutable pydantic default
) -> SkipResult:
    """Move the training cursor past the next batch without training on it (a refused batch)."""
    with heartbeats_unless_prefect_sends_them():
        plan = validate(data, runtime)
        result = skip_round(
            plan,
            RoundSpec(hyperparams, data.batch_rows, data.test_fraction, 1),
            store=TaskStateStore(state_block),
            out_dir=out_dir,
            lock=training_lock,
            run_id=current_run_id(),
            log=get_run_logger(),
        )
        if result.batch is not None:
            history_artifact(ModelDirectory(out_dir, plan.storage_options))
        return result
