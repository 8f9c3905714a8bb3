"""Faults and concurrency lose nothing: random SIGKILLs, a concurrency storm through the real
server (Prefect on PostgreSQL), a disk that fills during publish, a server restart (Prefect on
SQLite, the embedded default). Each prints its figures."""

from __future__ import annotations

import itertools
import json
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings

from linreg.batches import plan_batches
from linreg.config import DataConfig
from linreg.model_files import sha256_file
from linreg.preprocess import prepare_batch
from linreg.synthetic import write_dataset
from linreg.validation import validate_source
from tasks.state import PrefectBlockStateStore
from tests.integration.processes import (
    BIN,
    PROJECT,
    clean_env,
    free_port,
    healthy,
    run_main,
    start,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _files(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (versions/ included), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _cli(stack, args: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROJECT / "main.py"), *args],
        env={**stack.env, **env},
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _state(stack, block: str):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        return PrefectBlockStateStore(block).load()


def _training_rows(source: Path, batch_rows: int, cursor: dict[str, int]) -> int:
    """Training rows in the rows the cursor covers, recomputed without the pipeline."""
    plan = validate_source(DataConfig(source=str(source), batch_rows=batch_rows))
    covered = [
        b
        for b in plan_batches(plan.files, {}, batch_rows)
        if all(s.stop <= cursor.get(s.data_file.file_id, 0) for s in b.segments)
    ]
    return sum(len(prepare_batch(b, plan.columns, 0.2).y_train) for b in covered)


def test_kill_anywhere_loses_and_doubles_nothing(prefect_stack, tmp_path, figures):
    data = tmp_path / "data"
    write_dataset(data, n_rows=60_000, n_features=6, shard_rows=6_000, seed=21)
    block, out = f"kill-{uuid.uuid4().hex[:6]}", tmp_path / "out"
    args = [
        "--mode",
        "single",
        "--data",
        str(data),
        "--batch-rows",
        "2000",
        "--model",
        "sgd",
        "--out",
        str(out),
        "--state-block",
        block,
    ]
    env = {"LINREG_LOCK_BACKEND": "file", "LINREG_LOCK_DIR": str(tmp_path / "locks")}
    rng = random.Random(7)
    kills = completed = 0
    runs = 24
    duration = None  # of the first run, which always finishes: kills land within a run
    for attempt in range(runs):
        started = time.monotonic()
        process = _cli(prefect_stack, args, env)
        # The first and the last run always finish; the others are killed with p = 0.8 at a
        # point anywhere in a run's span (imports, load, train, publish, save).
        kill = 0 < attempt < runs - 1 and rng.random() < 0.8
        if kill:
            try:
                process.wait(timeout=rng.uniform(0.1, 1.0) * duration)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
        if duration is None:
            duration = time.monotonic() - started
        if process.returncode == -signal.SIGKILL:
            kills += 1
        else:
            assert process.returncode == 0, stderr
            completed += 1
    state = _state(prefect_stack, block)
    metadata = json.loads((out / "model.json").read_text())
    expected_rows = _training_rows(data, 2_000, state.cursor)
    lost_or_doubled = state.rows_trained - expected_rows
    figures.append(
        f"kill anywhere: {runs} runs, {kills} SIGKILLed, {completed} completed, "
        f"{state.version} versions saved, rows trained {state.rows_trained} vs "
        f"{expected_rows} recomputed ({lost_or_doubled:+d}): 0 lost, 0 doubled"
        if lost_or_doubled == 0
        else f"kill anywhere: MISMATCH {lost_or_doubled}"
    )
    assert kills >= 10
    assert lost_or_doubled == 0
    assert state.batches_trained == state.version == len(state.metrics_history)
    assert sum(state.cursor.values()) == 2_000 * state.batches_trained
    assert metadata["version"] == state.version
    assert metadata["sha256"] == sha256_file(out / "model.pkl")


def test_concurrency_storm_through_the_server(prefect_stack, figures):
    block = f"storm-{uuid.uuid4().hex[:6]}"
    out = prefect_stack.logs / f"out-{block}"
    params = json.dumps(
        {
            "data": {"source": str(prefect_stack.data_dir), "batch_rows": 500},
            "hyperparams": {"model": "ols"},
            "out_dir": str(out),
            "state_block": block,
            "max_batches": 1,  # one batch a run: ten runs, ten versions
        }
    )
    results: list[subprocess.CompletedProcess] = []
    lock = threading.Lock()

    def trigger() -> None:
        result = prefect_stack.prefect(
            "deployment", "run", "train-step/scheduled", "--params", params, "--watch", timeout=600
        )
        with lock:
            results.append(result)

    started = time.monotonic()
    threads = [threading.Thread(target=trigger) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    state = _state(prefect_stack, block)
    runs = sorted(_runs_of(prefect_stack, block), key=lambda run: run.start_time)
    completed = sum(1 for run in runs if run.state and run.state.is_completed())
    overlaps = sum(
        1 for before, after in itertools.pairwise(runs) if after.start_time < before.end_time
    )
    figures.append(
        f"concurrency storm (Prefect on PostgreSQL): 10 triggers at once, "
        f"{sum(r.returncode == 0 for r in results)} succeeded, {len(runs)} runs created, "
        f"{completed} completed, {overlaps} overlapping; version {state.version}, cursor "
        f"{sum(state.cursor.values())} rows = {sum(state.cursor.values()) // 500} batches of "
        f"500; {elapsed:.0f} s in all"
    )
    failed = [r.stdout[-1500:] + r.stderr[-3000:] for r in results if r.returncode]
    assert not failed
    assert len(runs) == completed == 10, [(run.name, run.state_name) for run in runs]
    assert overlaps == 0, [(run.name, run.start_time, run.end_time) for run in runs]
    assert state.version == 10
    assert sum(state.cursor.values()) == 500 * 10
    assert [m["version"] for m in state.metrics_history] == list(range(1, 11))


def _runs_of(stack, block: str) -> list:
    """The server's flow runs of train-step/scheduled on state block ``block``."""
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("train-step/scheduled")
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                limit=200,
            )
    return [run for run in runs if run.parameters.get("state_block") == block]


def _limit_file_size() -> None:
    # A file-size limit makes writes past 64 KiB fail with EFBIG, as a full disk fails them
    # with ENOSPC: the model write breaks midway.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_disk_that_fills_during_publish_keeps_the_previous_model(
    prefect_stack, tmp_path, figures
):
    data = tmp_path / "data"
    write_dataset(data, n_rows=4_000, n_features=400, shard_rows=2_000, seed=3)
    block, out = f"disk-{uuid.uuid4().hex[:6]}", tmp_path / "out"
    args = [
        "--mode",
        "single",
        "--data",
        str(data),
        "--batch-rows",
        "2000",
        "--model",
        "ols",
        "--alpha",
        "1",
        "--out",
        str(out),
        "--state-block",
        block,
    ]
    first = _cli(prefect_stack, args, {})
    assert first.wait(300) == 0, first.stderr.read()
    files = _files(out)
    state = _state(prefect_stack, block).model_dump_json()
    assert len(files["model.pkl"]) > 64 * 1024  # the next publish cannot fit under the limit
    full = _cli(
        prefect_stack,
        args,
        {"LINREG_LOCK_BACKEND": "file", "LINREG_LOCK_DIR": str(tmp_path / "locks")},
        preexec_fn=_limit_file_size,
    )
    _, stderr = full.communicate(timeout=300)
    figures.append(
        f"disk full during publish: exit {full.returncode}, model and state "
        f"byte-identical: {(_files(out) == files)}"
    )
    assert full.returncode == 1
    assert "File too large" in stderr or "No space" in stderr
    assert _files(out) == files
    assert _state(prefect_stack, block).model_dump_json() == state


def test_a_prefect_server_restart_between_runs(tmp_path, figures):
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = clean_env(
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path}/prefect.db",
    )
    command = [
        str(BIN / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-ui",
        "--analytics-off",
    ]
    data = tmp_path / "data"
    write_dataset(data, n_rows=6_000, n_features=4, shard_rows=2_000, seed=9)
    args = [
        "--mode",
        "single",
        "--data",
        str(data),
        "--batch-rows",
        "1000",
        "--model",
        "ols",
        "--out",
        str(tmp_path / "out"),
        "--state-block",
        "restart",
    ]
    env = clean_env(PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "client"))
    versions = []
    for _ in range(2):
        server = start(command, server_env, tmp_path / "server.log")
        try:
            wait_until(lambda: healthy(f"{api_url}/health"), 120, "the Prefect server")
            run = run_main(*args, env=env)
            assert run.returncode == 0, run.stderr
            versions.append(json.loads((tmp_path / "out" / "model.json").read_text())["version"])
        finally:
            stop(server)
    figures.append(f"server restart between runs: versions {versions}, cursor continued")
    assert versions == [1, 2]


def test_a_killed_call_is_marked_crashed_by_the_heartbeat_automation(prefect_stack, tmp_path):
    """A SIGKILLed CLI call cannot report its end; its heartbeats stop, and the automation of
    deployments/crash-detection.yaml (its wait shortened to 40 s) marks the run Crashed."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from tasks.crash_detection import crash_detection

    with temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}):
        with get_client(sync_client=True) as client:
            automation_id = client.create_automation(crash_detection(within_seconds=40))
    block, out = f"zombie-{uuid.uuid4().hex[:6]}", tmp_path / "out"
    # A real-time train-all: it publishes a batch, then sleeps before the next one.
    process = _cli(
        prefect_stack,
        ["--mode", "all", "--data", str(prefect_stack.data_dir), "--batch-rows", "1000"]
        + ["--delay", "600", "--out", str(out), "--state-block", block],
        {},
    )
    try:
        wait_until((out / "model.json").exists, 120, "the first published version")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        runs = FlowRunFilter(name=FlowRunFilterName(any_=[f"all-sgd-{block}"]))
        with temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}):
            with get_client(sync_client=True) as client:
                (run,) = client.read_flow_runs(flow_run_filter=runs)
                assert run.state.is_running()  # nobody told the server the call died
                deadline = time.monotonic() + 180
                while not run.state.is_crashed() and time.monotonic() < deadline:
                    time.sleep(2)
                    run = client.read_flow_run(run.id)
                assert run.state.is_crashed(), run.state
                assert "heartbeat" in (run.state.message or "")
    finally:
        if process.poll() is None:
            process.kill()
        with temporary_settings(updates={PREFECT_API_URL: prefect_stack.api_url}):
            with get_client(sync_client=True) as client:
                client.delete_automation(automation_id)
