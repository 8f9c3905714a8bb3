"""Deployments on a real server and worker: `prefect deployment run`, concurrency, SIGKILL,
cron, and what the server read back from prefect.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from linreg.synthetic import write_dataset
from tasks.state import PrefectBlockStateStore
from tests.integration.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _params(stack, data_dir: Path, batch_rows: int, model: str = "ols") -> tuple[dict, str, Path]:
    block = f"it-{uuid.uuid4().hex[:8]}"
    out = stack.logs / f"out-{block}"
    return (
        {
            "data": {"source": str(data_dir), "batch_rows": batch_rows},
            "hyperparams": {"model": model},
            "out_dir": str(out),
            "state_block": block,
            # One batch a run (the deployment's catch-up budget would take all at once).
            "max_batches": 1,
        },
        block,
        out,
    )


def _load_state(stack, block: str):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        return PrefectBlockStateStore(block).load()


def _run(
    stack, params: dict, watch: bool = True, deployment: str = "train-step/scheduled"
) -> subprocess.CompletedProcess:
    args = ["deployment", "run", deployment, "--params", json.dumps(params)]
    return stack.prefect(*args, *(["--watch"] if watch else []))


def _flow_run_id(output: str) -> str:
    return re.search(r"UUID:\s*([0-9a-f-]{36})", output).group(1)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_three_runs_give_version_3_and_advance_three_batches(prefect_stack):
    params, block, out = _params(prefect_stack, prefect_stack.data_dir, 1_000)
    for _ in range(3):
        result = _run(prefect_stack, params)
        assert result.returncode == 0, result.stdout[-3000:]
    state = _load_state(prefect_stack, block)
    assert state.version == 3
    assert sum(state.cursor.values()) == 3_000
    assert json.loads((out / "model.json").read_text())["version"] == 3


def test_two_simultaneous_runs_are_serialised_and_both_count(prefect_stack):
    params, block, out = _params(prefect_stack, prefect_stack.data_dir, 1_000)
    assert _run(prefect_stack, params).returncode == 0
    results: list[subprocess.CompletedProcess] = []
    threads = [
        threading.Thread(target=lambda: results.append(_run(prefect_stack, params)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stdout[-2000:] for r in results]
    state = _load_state(prefect_stack, block)
    assert state.version == 3
    assert sum(state.cursor.values()) == 3_000  # no batch skipped, none trained twice
    assert [entry["version"] for entry in state.metrics_history] == [1, 2, 3]
    rows = [entry["rows_trained"] for entry in state.metrics_history]
    assert rows == sorted(rows) and len(set(rows)) == 3


def _flow_run_process(worker_pid: int, flow_run_id: str) -> psutil.Process | None:
    for child in psutil.Process(worker_pid).children(recursive=True):
        try:
            if child.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _task_running(stack, flow_run_id: str, name: str) -> bool:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    return any(run.name.startswith(name) and run.state and run.state.is_running() for run in runs)


def _flow_run_state(stack, flow_run_id: str):
    with (
        temporary_settings(updates={PREFECT_API_URL: stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_run(uuid.UUID(flow_run_id)).state


def _partial_fit_started(worker_log: Path, offset: int) -> bool:
    """Whether the partial-fit task's first line reached the worker's log after ``offset``:
    the flow-run process's console, relayed as it is written (the server hears of task
    states through batched events, often after a short fold has ended)."""
    with worker_log.open("rb") as log:
        log.seek(offset)
        return re.search(rb"Task run 'partial-fit-[^']*' - \w+: \d+ batch", log.read()) is not None


def _frozen(process: psutil.Process) -> list[psutil.Process]:
    """SIGSTOPs ``process`` and its children; returns once every one of them is stopped."""
    tree = [process, *process.children(recursive=True)]
    for member in tree:
        member.suspend()
    wait_until(
        lambda: all(member.status() == psutil.STATUS_STOPPED for member in tree),
        10,
        "the flow-run process to stop",
        interval=0.01,
    )
    return tree


def _final_state(stack, flow_run_id: str):
    return wait_until(
        lambda: (s := _flow_run_state(stack, flow_run_id)) and s.is_final() and s,
        60,
        f"flow run {flow_run_id}'s final state",
    )


def _kill_during_partial_fit(
    stack, flow_run_id: str, log_offset: int, out: Path, files_before: dict[str, bytes]
) -> bool:
    """SIGKILLs the run's process while its partial-fit task runs, before anything in
    ``out`` changed; False if the run got past that first (then it is let run to its end)."""
    deadline = time.monotonic() + 120
    while not _partial_fit_started(stack.logs / "worker.log", log_offset):
        state = _flow_run_state(stack, flow_run_id)
        if state and state.is_final():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {flow_run_id} neither ran partial-fit nor ended in 120 s")
        time.sleep(0.02)
    victim = wait_until(
        lambda: _flow_run_process(stack.worker.pid, flow_run_id),
        10,
        "the flow-run process",
        interval=0.01,
    )
    frozen = _frozen(victim)
    if _snapshot(out) != files_before:  # the fold had ended and publishing begun
        for member in frozen:
            member.resume()
        _final_state(stack, flow_run_id)
        return False
    for member in frozen:
        member.kill()
    return True


def test_a_run_killed_mid_step_changes_nothing_and_the_next_recovers(prefect_stack):
    batch_rows = 1_500_000  # a fold of 0.5-2 s, so the poll sees partial-fit running
    big = prefect_stack.logs / "big-data"
    if not big.exists():
        write_dataset(
            big,
            n_rows=4 * batch_rows,
            n_features=8,
            shard_rows=batch_rows,
            row_group_rows=250_000,
            seed=5,
        )
    params, block, out = _params(prefect_stack, big, batch_rows, model="sgd")
    assert _run(prefect_stack, params).returncode == 0
    for _attempt in range(2):  # a missed task leaves a completed run: the next batch tries again
        state_before = _load_state(prefect_stack, block)
        files_before = _snapshot(out)
        log_offset = (prefect_stack.logs / "worker.log").stat().st_size
        flow_run_id = _flow_run_id(_run(prefect_stack, params, watch=False).stdout)
        killed = _kill_during_partial_fit(prefect_stack, flow_run_id, log_offset, out, files_before)
        if killed:
            break
    assert killed, "partial-fit ended before the poll saw it start, twice"
    final = _final_state(prefect_stack, flow_run_id)
    assert final.is_crashed() or final.is_failed(), final
    assert _load_state(prefect_stack, block).model_dump_json() == state_before.model_dump_json()
    assert _snapshot(out) == files_before

    # The lock's lease of the dead run expires (60 s); then the next run trains the next batch.
    recovered = _run(prefect_stack, params)
    assert recovered.returncode == 0, recovered.stdout[-3000:]
    state = _load_state(prefect_stack, block)
    assert state.version == state_before.version + 1
    assert sum(state.cursor.values()) == sum(state_before.cursor.values()) + batch_rows


def test_train_all_deployment_completes_and_publishes(prefect_stack):
    params, block, out = _params(prefect_stack, prefect_stack.data_dir, 1_000)
    del params["max_batches"]  # a train-step parameter
    result = _run(prefect_stack, {**params, "n_iter": 4}, deployment="train-all/full")
    assert result.returncode == 0, result.stdout[-3000:]
    metadata = json.loads((out / "model.json").read_text())
    assert metadata["version"] == 1 and metadata["data"]["batches_trained"] == 4


def test_deployments_carry_what_prefect_yaml_declares(prefect_stack):
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}),
        get_client(sync_client=True) as client,
    ):
        step = client.read_deployment_by_name("train-step/scheduled")
        full = client.read_deployment_by_name("train-all/full")
    for deployment in (step, full):
        assert deployment.work_pool_name == "it-process-pool"
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.parameters["data"]["source"] == str(prefect_stack.data_dir)
        assert deployment.parameters["data"]["batch_rows"] == 100_000
        assert deployment.parameters["hyperparams"] == {"model": "sgd", "alpha": 0.0}
        assert deployment.parameters["state_block"] == "it-default"
        assert deployment.pull_steps == [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": str(Path(__file__).resolve().parents[2])
                }
            }
        ]
    assert full.parameters["n_iter"] is None and full.parameters["delay"] == 0.0
    assert (step.parameters["max_batches"], step.parameters["max_seconds"]) == (1000, 300)
    assert full.schedules == []
    (schedule,) = step.schedules
    assert schedule.schedule.cron == "0 0 1 1 *"
    assert schedule.schedule.timezone == "UTC"
    assert schedule.active
    schema = step.parameter_openapi_schema
    assert {"data", "hyperparams", "out_dir", "state_block", "reset"} <= set(schema["properties"])


def test_a_cron_schedule_produces_runs_that_the_worker_executes(prefect_stack):
    cron_out = prefect_stack.logs / "cron-out"
    prefect_stack.deploy(
        cron="* * * * *", LINREG_STATE_BLOCK="it-cron", LINREG_OUT_DIR=str(cron_out)
    )
    try:

        def completed_scheduled_run():
            with (
                temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}),
                get_client(sync_client=True) as client,
            ):
                deployment = client.read_deployment_by_name("train-step/scheduled")
                from prefect.client.schemas.filters import (
                    DeploymentFilter,
                    DeploymentFilterId,
                )

                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
                )
            # Only this deployment's runs for this test's state block: other tests (catch-up)
            # leave completed scheduled runs of the same deployment behind.
            return [
                r
                for r in runs
                if r.auto_scheduled
                and r.parameters.get("state_block") == "it-cron"
                and r.state
                and r.state.is_completed()
            ]

        runs = wait_until(
            completed_scheduled_run, 150, "a cron-scheduled run to complete", interval=2
        )
        assert runs
        metadata = json.loads((cron_out / "model.json").read_text())
        assert metadata["version"] >= 1
    finally:
        prefect_stack.deploy()  # back to a schedule that never fires during the tests


def test_serve_mode_runs_both_flows_without_a_worker(prefect_stack):
    """The background workflow: one long-lived `main.py --mode serve` process."""
    from tests.integration.processes import start, stop

    env = {**prefect_stack.env, "LINREG_WORK_POOL": "none"}
    served = start(
        [
            sys.executable,
            "main.py",
            "--mode",
            "serve",
            "--cron",
            "0 0 1 1 *",
            "--data",
            str(prefect_stack.data_dir),
            "--model",
            "ols",
        ],
        env,
        prefect_stack.logs / "serve.log",
    )
    try:

        def deployed() -> bool:
            with (
                temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}),
                get_client(sync_client=True) as client,
            ):
                try:
                    client.read_deployment_by_name("train-step/served")
                    client.read_deployment_by_name("train-all/served")
                except Exception:  # noqa: BLE001 - not registered yet
                    return False
            return True

        wait_until(deployed, 90, "the served deployments")
        params, block, out = _params(prefect_stack, prefect_stack.data_dir, 2_000)
        result = _run(prefect_stack, params, deployment="train-step/served")
        assert result.returncode == 0, result.stdout[-3000:]
        assert json.loads((out / "model.json").read_text())["version"] == 1
        assert _load_state(prefect_stack, block).version == 1
    finally:
        stop(served)


def test_the_server_keeps_its_runs_and_blocks_in_postgresql(prefect_stack, postgres):
    """The stack's server really is on PostgreSQL: the runs and blocks the API reports are
    the rows of its tables there."""
    import asyncio

    import asyncpg

    params, block, _ = _params(prefect_stack, prefect_stack.data_dir, 1_000)
    assert _run(prefect_stack, params).returncode == 0

    async def count() -> tuple[int, int]:
        connection = await asyncpg.connect(postgres.url(driver="postgresql"))
        try:
            runs = await connection.fetchval(
                "SELECT count(*) FROM flow_run WHERE parameters->>'state_block' = $1", block
            )
            blocks = await connection.fetchval(
                "SELECT count(*) FROM block_document WHERE name = $1", block
            )
            return runs, blocks
        finally:
            await connection.close()

    assert asyncio.run(count()) == (1, 1)
