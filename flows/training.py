"""The training flows. ``train-step`` is one step of the pipeline story; ``train-all``
repeats it over the data set:

    validate -> [lock] load state -> preprocess (Dask) -> partial_fit -> publish -> save [unlock]
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import Field

from linreg.config import DataConfig, HyperParams, Settings
from linreg.validation import SourcePlan
from tasks import load_state, partial_fit, preprocess, publish, save_state, validate
from tasks.runtime import dask_task_runner, training_lock

DEFAULTS = Settings()


def _train_round(
    plan: SourcePlan,
    data: DataConfig,
    hyperparams: HyperParams,
    out_dir: str,
    state_block: str,
    reset: bool,
    max_batches: int | None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One locked load -> preprocess -> partial_fit -> publish -> save; a summary back."""
    progress = progress or {}
    with training_lock(state_block):
        loaded = load_state(state_block, plan, hyperparams, reset)
        batches = preprocess(plan, loaded.state, data.batch_rows, data.test_fraction, max_batches)
        if batches.empty:
            return {
                "trained": False,
                "version": loaded.state.version,
                "batches": 0,
                "rows_trained": loaded.state.rows_trained,
            }
        trained = partial_fit(batches, loaded.state, plan, hyperparams, **progress)
        metadata = publish(trained, plan, hyperparams, out_dir, state_block)
        save_state(state_block, trained.state, loaded.stored_version)
    return {
        "trained": True,
        "version": trained.state.version,
        "batches": trained.batches,
        "rows_trained": trained.state.rows_trained,
        "metrics": metadata["metrics"],
        "sha256": metadata["sha256"],
    }


@flow(
    name="train-step",
    task_runner=dask_task_runner(),
    flow_run_name="step-{hyperparams.model}-{state_block}",
)
def train_step(
    data: DataConfig,
    hyperparams: HyperParams = HyperParams(),  # noqa: B008 - an immutable pydantic default
    out_dir: str = DEFAULTS.out_dir,
    state_block: str = DEFAULTS.state_block,
    reset: bool = False,
) -> dict[str, Any]:
    """Train the model on the next batch of data and publish the new version."""
    plan = validate(data)
    summary = _train_round(plan, data, hyperparams, out_dir, state_block, reset, 1)
    if not summary["trained"]:
        get_run_logger().info("nothing new to train: version %d stays current", summary["version"])
    return summary


@flow(
    name="train-all",
    task_runner=dask_task_runner(),
    flow_run_name="all-{hyperparams.model}-{state_block}",
)
def train_all(
    data: DataConfig,
    hyperparams: HyperParams = HyperParams(),  # noqa: B008 - an immutable pydantic default
    out_dir: str = DEFAULTS.out_dir,
    state_block: str = DEFAULTS.state_block,
    reset: bool = False,
    n_iter: int | None = Field(None, ge=1, description="Batches to train; default: all."),
    delay: float = Field(0.0, ge=0.0, description="Seconds between batches (real-time demo)."),
) -> dict[str, Any]:
    """Train the model over every remaining batch (or n_iter of them), publishing as it goes.

    With no delay the batches form one round, prepared in parallel on Dask; with a delay each
    batch is its own step, published before the pause, as if data arrived in real time.
    """
    logger = get_run_logger()
    plan = validate(data)
    per_round = 1 if delay > 0 else n_iter
    total = n_iter or -(-plan.n_rows // data.batch_rows)
    progress_id = create_progress_artifact(
        progress=0.0,
        key=f"{state_block}-training-progress".lower().replace("_", "-"),
        description=f"Batches trained by this train-all run of '{state_block}'.",
    )
    done, rounds, last = 0, [], None
    while n_iter is None or done < n_iter:
        budget = per_round if n_iter is None else min(per_round or n_iter, n_iter - done)
        last = _train_round(
            plan,
            data,
            hyperparams,
            out_dir,
            state_block,
            reset and not rounds,
            budget,
            {
                "progress_id": progress_id,
                "progress_start": done,
                "progress_total": max(total, done + 1),
            },
        )
        if not last["trained"]:
            break
        done += last["batches"]
        rounds.append(last)
        if delay > 0 and (n_iter is None or done < n_iter):
            time.sleep(delay)
        elif delay == 0:
            break
    if rounds:
        update_progress_artifact(progress_id, progress=100.0)
    else:
        logger.info(
            "nothing new to train in %s: version %d stays current",
            data.source,
            last["version"] if last else 0,
        )
    return {
        "trained": bool(rounds),
        "batches": done,
        "rounds": len(rounds),
        "version": (last or {}).get("version", 0),
        "rows_trained": (last or {}).get("rows_trained", 0),
        "metrics": rounds[-1]["metrics"] if rounds else None,
    }
