"""The publish task: model files on disk, metrics and a summary as Prefect artifacts; and the
tasks that change the live version (rollback, promote) with the history as an artifact."""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from linreg import lifecycle
from linreg.config import HyperParams
from linreg.lifecycle import DEFAULT_KEEP_VERSIONS, history_rows, read_history
from linreg.model_files import ModelDirectory
from linreg.training import FilePublisher, TrainedRound
from linreg.validation import SourcePlan
from tasks.runtime import IO_RETRY_DELAYS, retry_unless_permanent

# Rows of the metrics and history tables: each step sends them, and the server keeps every
# version of an artifact, so a table of every version would grow each step and the server's
# database with the square of the model's age.
HISTORY_ARTIFACT_ROWS = 50


def artifact_key(state_block: str, kind: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes; one history per model."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{state_block}-{kind}".lower()).strip("-")


class ArtifactPublisher:
    """Publishes the model files in the ``publish`` task, and reports them in the UI."""

    def __init__(
        self, out_dir: str, state_block: str, keep_versions: int = DEFAULT_KEEP_VERSIONS
    ) -> None:
        self.files = FilePublisher(out_dir, keep_versions, run_id=current_run_id())
        self.state_block = state_block

    def publish(
        self, trained: TrainedRound, plan: SourcePlan, hyperparams: HyperParams
    ) -> dict[str, Any]:
        # quote(): no walk through the round's arrays and the plan's file list for futures.
        return publish(self.files, quote(trained), quote(plan), hyperparams, self.state_block)


@task(
    name="publish",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def publish(
    files: FilePublisher,
    trained: TrainedRound,
    plan: SourcePlan,
    hyperparams: HyperParams,
    state_block: str,
) -> dict[str, Any]:
    """Write model.pkl and model.json atomically, then report the version in the UI."""
    metadata = files.publish(trained, plan, hyperparams)
    get_run_logger().info(
        "published model version %d to %s (sha256 %s)%s",
        metadata["version"],
        files.out_dir,
        metadata["sha256"][:12],
        "" if metadata["live"] else "; not live: a rolled-back version is pinned",
    )
    history_artifact(ModelDirectory(files.out_dir, plan.storage_options))
    drift = metadata.get("drift") or {}
    if drift.get("detected"):
        get_run_logger().warning(
            "drift: the live model's held-out error per batch has risen since version %s "
            "(Page-Hinkley statistic %.3g > %.3g); check the data or retrain from a reset",
            drift["since_version"],
            drift["statistic"],
            drift["threshold"],
        )
        create_markdown_artifact(
            markdown=_drift_markdown(metadata, drift),
            key=artifact_key(state_block, "drift"),
            description=f"Drift detected in the data of state block '{state_block}'.",
        )
    history = trained.state.metrics_history
    create_table_artifact(
        table=[
            {
                key: entry.get(key)
                for key in ("version", "rows_trained", "r2", "rmse", "mae", "n_test")
            }
            for entry in history[-HISTORY_ARTIFACT_ROWS:]
        ],
        key=artifact_key(state_block, "metrics"),
        description=f"Held-out metrics of the newest {HISTORY_ARTIFACT_ROWS} model versions of "
        f"state block '{state_block}' (history.jsonl beside the model has every version's).",
    )
    create_markdown_artifact(
        markdown=_summary_markdown(metadata, trained, files.out_dir),
        key=artifact_key(state_block, "model"),
        description=f"The model published by state block '{state_block}'.",
    )
    return metadata


def _drift_markdown(metadata: dict[str, Any], drift: dict[str, Any]) -> str:
    errors = ", ".join(f"{value:.4g}" for value in drift["batch_rmse_live"])
    metrics = metadata["metrics"]
    return f"""# Drift detected (model version {metadata["version"]})

The live model's RMSE on each new batch's held-out rows has risen since version
{drift["since_version"]}: Page-Hinkley statistic {drift["statistic"]:.3g} over the threshold
{drift["threshold"]:.3g} ({drift["batches_observed"]} batches observed).

This round's batches, live model's RMSE: {errors or "n/a"}. RMSE over the newest
{metrics.get("window_batches")} batches: {_number(metrics.get("rmse_window"))}; over every
held-out row: {_number(metrics.get("rmse"))}.
"""


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _summary_markdown(metadata: dict[str, Any], trained: TrainedRound, out_dir: str) -> str:
    metrics = metadata["metrics"]
    report = trained.report
    rows = "\n".join(
        f"| `{_cell(name)}` | {coef:.10g} |"
        for name, coef in zip(metadata["features"], metadata["coef"], strict=True)
    )
    return f"""# Model version {metadata["version"]} ({metadata["model"]})

Target `{metadata["target"]}`, trained on {metadata["rows_trained"]:,} rows; published to
`{out_dir}` (sha256 `{metadata["sha256"][:16]}…`).

| held-out metric | value |
|---|---|
| R² (all {metrics["n_test"]:,} held-out rows) | {_number(metrics["r2"])} |
| RMSE (all held-out rows) | {_number(metrics["rmse"])} |
| MAE (newest batch, {metrics["n_test_latest"]:,} rows) | {_number(metrics["mae"])} |

This run: {trained.batches} batch(es), {report.rows_read:,} rows read, {report.rows_dropped:,}
dropped for missing or non-finite values, {report.rows_train:,} trained, {report.rows_test:,}
held out.

| feature | coefficient |
|---|---|
{rows}
| (intercept) | {metadata["intercept"]:.10g} |
{_data_quality_markdown(metadata)}"""


def _data_quality_markdown(metadata: dict[str, Any]) -> str:
    """Rows dropped per column and columns left out, in the model's card: one artifact per
    version instead of two (each artifact is a server write, 20-40 ms of a step)."""
    quality = metadata["data"]["quality"]["rows_dropped_by_column"]
    excluded = metadata["data"]["excluded_columns"]
    if not quality and not excluded:
        return ""
    rows = [f"| {_cell(name)} | {count:,} | |" for name, count in quality.items()]
    rows += [f"| {_cell(name)} | 0 | {_cell(why)} |" for name, why in excluded.items()]
    return (
        "\n## Data quality\n\n| column | rows dropped (missing or non-finite) | excluded |\n"
        "|---|---:|---|\n" + "\n".join(rows) + "\n"
    )


def _cell(text: str) -> str:
    """Text in a markdown table cell: a column name from a spreadsheet may hold '|'."""
    return text.replace("|", "\\|").replace("\n", " ")


def current_run_id() -> str | None:
    """The flow run's id, recorded in the history (None outside a flow run)."""
    run_id = flow_run.get_id()
    return None if run_id is None else str(run_id)


def history_artifact(directory: ModelDirectory) -> None:
    """The newest history records as a table, one artifact per model directory."""
    rows = history_rows(read_history(directory, newest=HISTORY_ARTIFACT_ROWS))
    create_table_artifact(
        table=rows,
        key=artifact_key("model-history", str(directory.location)[-40:]),
        description=f"Changes of the live model version in {directory.location}, newest last.",
    )


@task(
    name="change-live-version",
    retries=3,
    retry_delay_seconds=IO_RETRY_DELAYS,
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
def change_live_version(
    operation: str, out_dir: str, to: int | None, storage_options: dict[str, Any]
) -> dict[str, Any]:
    """Roll back to, or promote, a kept version; record it; show the history in the UI."""
    directory = ModelDirectory(out_dir, storage_options)
    change = {"rollback": lifecycle.rollback, "promote": lifecycle.promote}[operation]
    record = change(directory, to, current_run_id())
    get_run_logger().info(
        "%s: version %s is live in %s (was %s)%s",
        operation,
        record["live_version"],
        out_dir,
        record["previous_version"],
        "; pinned until a promote" if operation == "rollback" else "",
    )
    history_artifact(directory)
    return record
