"""Catch-up after an outage, on the real server and a real process worker: after version 1,
the pool's worker is stopped while five slots of the cron deployment pass and new files
arrive; restarted, it runs the late runs one after another: the first trains the whole
backlog in one round and one publish, the others find nothing new. Nothing lost, nothing
trained twice.

The schedule is prefect.yaml's cron, deployed with a six-field cron whose last field is
seconds (``*/5``: Prefect's scheduler reads crons with croniter, which takes them): the
server makes the same auto-scheduled runs, late by the same rule, as an every-10-minutes
cron would, in 25 s instead of 50 minutes. Once five slots have passed the schedule is made
inactive (Prefect then deletes only its future runs; the late ones stay), so the runs of the
outage are exactly those counted, and no new slot falls due while they drain.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from linreg.synthetic import append_rows, write_dataset
from tasks.state import PrefectBlockStateStore
from tests.integration.processes import BIN, run_main, start, stop, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POOL = "it-catchup-pool"
NEVER = "0 0 1 1 *"
EVERY_5_SECONDS = "* * * * * */5"
SLOTS = 5
BATCH_ROWS = 100_000  # prefect.yaml's data.batch_rows


@contextmanager
def _api(stack) -> Iterator[SyncPrefectClient]:
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _state(stack, block: str):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        return PrefectBlockStateStore(block).load()


def _runs(stack, block: str) -> list:
    """Runs of train-step/scheduled on ``block`` that the server's scheduler made."""
    with _api(stack) as client:
        deployment = client.read_deployment_by_name("train-step/scheduled")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            limit=200,
        )
    return [r for r in runs if r.auto_scheduled and r.parameters.get("state_block") == block]


def _past_due(stack, block: str) -> list:
    now = datetime.now(UTC)
    return [
        run
        for run in _runs(stack, block)
        if run.state and run.state.is_scheduled() and run.expected_start_time <= now
    ]


def _worker(stack, log: Path):
    command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
    return start(command, {**stack.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, log)


def _deploy(stack, cron: str, env: dict[str, str]) -> None:
    result = stack.prefect(
        "--no-prompt", "deploy", "--name", "scheduled", LINREG_STEP_CRON=cron, **env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _outage(stack, block: str, data: Path, env: dict[str, str]) -> list:
    """Five slots of the deployed cron pass with no worker while files arrive; then the
    schedule is made inactive. Returns the late runs."""
    _deploy(stack, EVERY_5_SECONDS, env)
    wait_until(lambda: len(_past_due(stack, block)) >= 1, 90, "the first missed slot")
    append_rows(data, BATCH_ROWS, shard_rows=BATCH_ROWS)  # new files arrive...
    wait_until(lambda: len(_past_due(stack, block)) >= 3, 60, "the third missed slot")
    append_rows(data, 3 * BATCH_ROWS // 2, shard_rows=3 * BATCH_ROWS // 4)  # ...and two more
    wait_until(lambda: len(_past_due(stack, block)) >= SLOTS, 60, "five missed slots")
    with _api(stack) as client:
        deployment = client.read_deployment_by_name("train-step/scheduled")
        (schedule,) = deployment.schedules
        client.update_deployment_schedule(deployment.id, schedule.id, active=False)
    late = _runs(stack, block)
    assert len(late) >= SLOTS and all(run.state.is_scheduled() for run in late)
    return late


def _logs(stack, runs: list) -> dict:
    """Each run's log messages as one string."""
    with _api(stack) as client:
        return {
            run.id: " ".join(
                log.message
                for log in client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
                )
            )
            for run in runs
        }


def _what_each_run_left(stack, runs: list) -> tuple[dict, dict]:
    """Each run's artifacts, and its log messages as one string.

    A run's process ships its logs in the background and may still be sending them after
    the server has its final state, so this waits for each run's last engine line."""
    with _api(stack) as client:
        artifacts = {
            run.id: client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            for run in runs
        }

    def all_shipped() -> dict | None:
        logs = _logs(stack, runs)
        return logs if all("Finished in state" in text for text in logs.values()) else None

    logs = wait_until(all_shipped, 60, "every run's logs to reach the server", interval=1)
    return artifacts, logs


def test_after_an_outage_one_run_drains_the_backlog_and_the_rest_are_no_ops(prefect_stack, figures):
    stack = prefect_stack
    block = f"catchup-{uuid.uuid4().hex[:6]}"
    data, out = stack.logs / f"data-{block}", stack.logs / f"out-{block}"
    write_dataset(data, n_rows=2 * BATCH_ROWS, n_features=4, shard_rows=BATCH_ROWS, seed=23)
    env = {
        "LINREG_WORK_POOL": POOL,
        "LINREG_DATA": str(data),
        "LINREG_OUT_DIR": str(out),
        "LINREG_STATE_BLOCK": block,
    }
    created = stack.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    worker = _worker(stack, stack.logs / f"worker-{block}-1.log")
    try:
        # Before the outage: version 1 from both files in one round, by the CLI with the
        # deployment's parameters (a deployment run here would cost a deploy more).
        first = run_main(
            *["--mode", "single", "--data", str(data), "--model", "sgd", "--json"],
            *["--max-batches", "1000", "--max-seconds", "300"],
            *["--out", str(out), "--state-block", block],
            env=stack.env,
        )
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert json.loads(first.stdout.splitlines()[-1])["batches"] == 2
        before = _state(stack, block)
        assert (before.version, before.batches_trained) == (1, 2)
        stop(worker)  # the outage: nothing runs this pool's flows
        late_ids = {run.id for run in _outage(stack, block, data, env)}
        worker = _worker(stack, stack.logs / f"worker-{block}-2.log")  # the restart

        def all_final() -> list | None:
            runs = [run for run in _runs(stack, block) if run.id in late_ids]
            return runs if all(run.state.is_final() for run in runs) else None

        runs = sorted(
            wait_until(all_final, 240, "the late runs to finish", interval=2),
            key=lambda run: run.start_time,
        )
        # Before the worker stops: stopping it ends its process group, and so a run's
        # process that has reported its final state but is still shipping its logs.
        artifacts, logs = _what_each_run_left(stack, runs)
    finally:
        stop(worker)
        _deploy(stack, NEVER, {})  # back on the shared pool, never firing, as the others expect

    state = _state(stack, block)
    published = [
        record
        for record in map(json.loads, (out / "history.jsonl").read_text().splitlines())
        if record["reason"] == "published"
    ]
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in data.glob("*.parquet"))
    seconds = [(run.end_time - run.start_time).total_seconds() for run in runs]
    figures.append(
        f"catch-up after an outage of {len(runs)} cron slots (Prefect on PostgreSQL, process "
        f"worker): {sum(r.state.is_completed() for r in runs)} runs completed, versions "
        f"{before.version} -> {state.version}, batches {before.batches_trained} -> "
        f"{state.batches_trained}, cursor {sum(state.cursor.values()):,} of {total:,} rows; "
        f"run seconds (the first is the catch-up): {', '.join(f'{s:.1f}' for s in seconds)}"
    )
    assert all(run.state.is_completed() for run in runs), [r.state_name for r in runs]
    drain, no_ops = runs[0], runs[1:]
    # One round, one publish: the first run trained the three new batches into version 2.
    assert state.version == 2 and [m["version"] for m in state.metrics_history] == [1, 2]
    assert state.batches_trained == 5
    assert [record["version"] for record in published] == [1, 2]
    assert published[-1]["flow_run_id"] == str(drain.id)
    assert sorted(path.name for path in (out / "versions").iterdir()) == ["1", "2"]
    assert json.loads((out / "model.json").read_text())["version"] == 2
    # Every row read exactly once: the cursor reaches the last row of every file.
    assert sum(state.cursor.values()) == total == 450_000
    assert state.rows_trained + state.rows_held_out + state.rows_dropped == total
    assert artifacts[drain.id]
    for run in no_ops:
        assert "nothing new to train" in logs[run.id]
        assert artifacts[run.id] == []  # it published nothing
