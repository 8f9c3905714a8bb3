"""`train-all` on a real multi-process Dask cluster (`dask scheduler` + 2 `dask worker`
processes) by `--dask-address`: the same ols coefficients as a run on the local cluster."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from linreg.synthetic import write_dataset
from tests.integration.processes import (
    BIN,
    clean_env,
    free_port,
    run_main,
    start,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2


def _cluster_ready(address: str) -> bool:
    try:
        with Client(address, timeout=5) as client:
            return len(client.scheduler_info()["workers"]) >= WORKERS
    except OSError:
        return False


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A scheduler on 127.0.0.1 and two single-threaded workers, each in its own session,
    stopped by process group at the end."""
    root = tmp_path_factory.mktemp("dask-cluster")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = clean_env()
    processes = [
        start(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-dashboard"],
            env,
            root / "scheduler.log",
        )
    ]
    try:
        for index in range(WORKERS):
            processes.append(
                start(
                    [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--host"]
                    + ["127.0.0.1", "--no-dashboard", "--local-directory", str(root / f"w{index}")],
                    env,
                    root / f"worker-{index}.log",
                )
            )
        wait_until(lambda: _cluster_ready(address), 120, "the Dask scheduler and its workers")
        yield address, processes
    finally:
        for process in reversed(processes):
            stop(process)


def _train_all(data: Path, out: Path, home: Path, *extra: str) -> dict:
    result = run_main(
        *["--mode", "all", "--data", str(data), "--model", "ols", "--batch-rows", "5000"],
        *["--out", str(out), "--reset", *extra],
        env=clean_env(PREFECT_HOME=str(home)),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stderr == ""
    return json.loads((out / "model.json").read_text())


def _scheduler_saw_tasks(address: str) -> set[str]:
    """Prefixes of every task the scheduler has run (kept after the tasks are released)."""
    with Client(address, timeout=10) as client:
        return set(
            client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
        )


def test_train_all_on_a_dask_cluster_matches_the_local_run(dask_cluster, tmp_path):
    address, processes = dask_cluster
    data = tmp_path / "data"
    write_dataset(data, n_rows=20_000, n_features=6, shard_rows=5_000, row_group_rows=1_000)
    home = tmp_path / "prefect-home"

    # The cluster's run first: the local run then finds the files' inspections in the home's
    # cache (unchanged files are not inspected again) and must train the same model.
    remote = _train_all(data, tmp_path / "remote", home, "--dask-address", address)
    local = _train_all(data, tmp_path / "local", home)

    assert all(process.poll() is None for process in processes), "a cluster process died"
    # The files were inspected, and the batches read and reduced, on the external workers.
    prefixes = _scheduler_saw_tasks(address)
    assert {"inspect_file", "summarise"} <= prefixes, prefixes
    assert remote["rows_trained"] == local["rows_trained"] > 15_000
    assert remote["data"]["batches_trained"] == local["data"]["batches_trained"] == 4
    np.testing.assert_allclose(remote["coef"], local["coef"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(remote["intercept"], local["intercept"], rtol=1e-9, atol=0)
    assert remote["metrics"]["r2"] == pytest.approx(local["metrics"]["r2"], rel=1e-12)
    assert os.path.exists(tmp_path / "remote" / "model.pkl")
