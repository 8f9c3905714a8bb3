"""A real Prefect server on a private PostgreSQL (as Prefect advises for a shared server) and
a real process worker, with both flows deployed from the repository's prefect.yaml; all
stopped by PID at the end. SQLite, the embedded default, keeps its own smoke test
(test_reliability's server restart) and the CLI and flow tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from linreg.synthetic import write_dataset
from tests.integration.processes import (
    BIN,
    PROJECT,
    Postgres,
    clean_env,
    free_port,
    healthy,
    start,
    start_postgres,
    stop,
    stop_postgres,
    wait_until,
)

POOL = "it-process-pool"


@dataclass
class PrefectStack:
    api_url: str
    env: dict[str, str]
    data_dir: Path
    out_dir: Path
    state_block: str
    logs: Path
    worker: subprocess.Popen

    def prefect(
        self, *args: str, timeout: float = 300, **extra_env: str
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "prefect"), *args],
            env={**self.env, **extra_env},
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def deploy(self, cron: str = "0 0 1 1 *", **env: str) -> subprocess.CompletedProcess:
        result = self.prefect("--no-prompt", "deploy", "--all", LINREG_STEP_CRON=cron, **env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL 15 cluster (Debian's packages) in a temp dir on a free port."""
    cluster = start_postgres()
    try:
        yield cluster
    finally:
        stop_postgres(cluster)


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory, postgres: Postgres) -> Iterator[PrefectStack]:
    root = tmp_path_factory.mktemp("prefect-stack")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = clean_env(
        PREFECT_HOME=str(root / "home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres.url(),
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2",
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
        PREFECT_UI_API_URL=api_url,
    )
    server = start(
        [
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--analytics-off",
        ],
        server_env,
        root / "server.log",
    )
    worker = None
    try:
        wait_until(lambda: healthy(f"{api_url}/health"), 120, "the Prefect server")
        data_dir = root / "data"
        write_dataset(data_dir, n_rows=6_000, n_features=4, shard_rows=2_000, seed=11)
        env = clean_env(
            PREFECT_HOME=str(root / "client-home"),
            PREFECT_API_URL=api_url,
            LINREG_WORK_POOL=POOL,
            LINREG_DATA=str(data_dir),
            LINREG_OUT_DIR=str(root / "out"),
            LINREG_STATE_BLOCK="it-default",
            LINREG_PROJECT_DIR=str(PROJECT),
            LINREG_STEP_CRON="0 0 1 1 *",
            LINREG_DASK_WORKERS="1",
        )
        stack = PrefectStack(api_url, env, data_dir, root / "out", "it-default", root, None)
        created = stack.prefect("work-pool", "create", POOL, "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        worker = start(
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--type",
                "process",
                "--limit",
                "4",
            ],
            {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
            root / "worker.log",
        )
        stack.worker = worker
        stack.deploy()
        yield stack
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
