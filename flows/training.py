"""The training flows. ``train-step`` is one training round of the pipeline story;
``train-all`` repeats it over the data set:

    validate -> [lock] load-state -> partial-fit (preprocess on Dask, fold) -> publish
             -> save-state [unlock]

The round itself is :func:`linreg.training.run_round`; a flow gives it the task-backed
store, executor and publisher, so every step is a Prefect task with its own retries.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from pydantic import Field

from linreg.config import DataConfig, HyperParams, Settings
from linreg.lifecycle import DriftMonitor, LifecycleConfig, QualityGate
from linreg.model_files import ModelDirectory
from linreg.training import RoundResult, RoundSpec, run_round
from linreg.validation import SourcePlan
from tasks import ArtifactPublisher, RuntimeConfig, TaskExecutor, TaskStateStore, validate
from tasks.publish import artifact_key, current_run_id
from tasks.runtime import (
    UNPERSISTED_RESULTS,
    dask_task_runner,
    heartbeats_unless_prefect_sends_them,
    training_lock,
)

DEFAULTS = Settings()


def _round(
    plan: SourcePlan,
    spec: RoundSpec,
    runtime: RuntimeConfig,
    out_dir: str,
    state_block: str,
    lifecycle: LifecycleConfig,
    on_batch=None,
) -> RoundResult:
    gate = None
    if lifecycle.gate_rmse_increase is not None:
        gate = QualityGate(
            lifecycle.gate_rmse_increase,
            ModelDirectory(out_dir, plan.storage_options),
            force=lifecycle.force,
            run_id=current_run_id(),
        )
    return run_round(
        plan,
        spec,
        executor=TaskExecutor(runtime),
        store=TaskStateStore(state_block),
        publisher=ArtifactPublisher(out_dir, state_block, lifecycle.keep_versions),
        lock=training_lock,
        on_batch=on_batch,
        log=get_run_logger(),
        gate=gate,
        monitor=DriftMonitor(ModelDirectory(out_dir, plan.storage_options)),
    )


@flow(
    name="train-step",
    task_runner=dask_task_runner(),
    flow_run_name="step-{hyperparams.model}-{state_block}",
    **UNPERSISTED_RESULTS,
)
def train_step(
    data: DataConfig,
    hyperparams: HyperParams = HyperParams(),  # noqa: B008 - an immutable pydantic default
    out_dir: str = DEFAULTS.out_dir,
    state_block: str = DEFAULTS.state_block,
    reset: bool = False,
    max_batches: int = Field(
        1, ge=1, description="Batches to train in this round at most (a backlog catches up)."
    ),
    max_seconds: float | None = Field(
        None,
        gt=0,
        description="Start no new batch after this many seconds of the round (the first "
        "always runs, batches started finish); none: no limit.",
    ),
    runtime: RuntimeConfig = RuntimeConfig(),  # noqa: B008 - an immutable pydantic default
    lifecycle: LifecycleConfig = LifecycleConfig(),  # noqa: B008 - an immutable pydantic default
) -> RoundResult:
    """Train the model on the next batch of data and publish the new version."""
    with heartbeats_unless_prefect_sends_them():
        plan = validate(data, runtime)
        spec = RoundSpec(
            hyperparams, data.batch_rows, data.test_fraction, max_batches, reset, max_seconds
        )
        result = _round(plan, spec, runtime, out_dir, state_block, lifecycle)
        if not result.trained:
            get_run_logger().info("nothing new to train: version %d stays current", result.version)
        return result


@flow(
    name="train-all",
    task_runner=dask_task_runner(),
    flow_run_name="all-{hyperparams.model}-{state_block}",
    **UNPERSISTED_RESULTS,
)
def train_all(
    data: DataConfig,
    hyperparams: HyperParams = HyperParams(),  # noqa: B008 - an immutable pydantic default
    out_dir: str = DEFAULTS.out_dir,
    state_block: str = DEFAULTS.state_block,
    reset: bool = False,
    n_iter: int | None = Field(None, ge=1, description="Batches to train; default: all."),
    delay: float = Field(0.0, ge=0.0, description="Seconds between batches (real-time demo)."),
    runtime: RuntimeConfig = RuntimeConfig(),  # noqa: B008 - an immutable pydantic default
    lifecycle: LifecycleConfig = LifecycleConfig(),  # noqa: B008 - an immutable pydantic default
) -> RoundResult:
    """Train the model over every remaining batch (or n_iter of them), publishing as it goes.

    With no delay the batches form one round, prepared in parallel on Dask; with a delay each
    batch is its own round, published before the pause, as if data arrived in real time.
    """
    with heartbeats_unless_prefect_sends_them():
        plan = validate(data, runtime)
        total = n_iter or -(-plan.n_rows // data.batch_rows)
        progress_id = create_progress_artifact(
            progress=0.0,
            key=artifact_key(state_block, "training-progress"),
            description=f"Batches trained by this train-all run of '{state_block}'.",
        )
        done, rounds, last = 0, 0, None
        while n_iter is None or done < n_iter:
            budget = 1 if delay > 0 else n_iter
            if n_iter is not None:
                budget = min(budget or n_iter, n_iter - done)
            spec = RoundSpec(
                hyperparams, data.batch_rows, data.test_fraction, budget, reset and not rounds
            )
            start = done

            def on_batch(index: int, count: int, summary, start: int = start) -> None:  # noqa: ARG001
                update_progress_artifact(
                    progress_id, progress=100.0 * (start + index + 1) / max(total, start + count)
                )

            result = _round(plan, spec, runtime, out_dir, state_block, lifecycle, on_batch)
            if not result.trained:
                last = last or result
                break
            done += result.batches
            rounds += 1
            last = result
            if delay == 0:
                break
            if n_iter is None or done < n_iter:
                time.sleep(delay)
        if rounds:
            update_progress_artifact(progress_id, progress=100.0)
        else:
            get_run_logger().info(
                "nothing new to train in %s: version %d stays current", data.source, last.version
            )
        return RoundResult(
            trained=rounds > 0,
            version=last.version,
            batches=done,
            rows_trained=last.rows_trained,
            metrics=last.metrics,
            sha256=last.sha256,
            rounds=rounds,
        )
