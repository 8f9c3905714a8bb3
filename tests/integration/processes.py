"""Start real servers as subprocesses on free loopback ports; stop them by PID."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without its Prefect settings, telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LINREG_"))}
    env.update(
        {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "DASK_LOGGING__DISTRIBUTED": "error",
        }
    )
    env.update(extra)
    return env


def run_main(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python main.py *args`` as users run it, to completion, output captured."""
    return subprocess.run(
        [sys.executable, str(PROJECT / "main.py"), *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    command: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path = PROJECT,
    user: str | None = None,
) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        user=user,
    )


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process we started, and its children, by its PID (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Postgres:
    """A private PostgreSQL cluster: its server process (stopped by PID) and its URLs."""

    process: subprocess.Popen
    port: int
    directory: Path

    def url(self, database: str = "prefect", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.port}/{database}"


PG_USER = "linreg"


def postgres_bin() -> Path:
    """The newest PostgreSQL server of Debian's packages (make postgres installs one)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    assert found, "PostgreSQL is missing: make postgres (Debian's postgresql package)"
    return found[-1].parent


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise AssertionError("running as root needs the `postgres` user (make postgres)") from None
    return "postgres"


def start_postgres(databases: tuple[str, ...] = ("prefect",)) -> Postgres:
    """initdb in a fresh temp dir, then `postgres` in the foreground on a free loopback port
    (trust auth: the cluster listens on 127.0.0.1 only and lives as long as the tests)."""
    user = _pg_user()
    directory = Path(tempfile.mkdtemp(prefix="linreg-pg-"))
    if user:
        shutil.chown(directory, user)
    bindir = postgres_bin()
    env = clean_env(LC_ALL="C.UTF-8")
    data = directory / "data"
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
        env=env,
        cwd=directory,
        user=user,
        capture_output=True,
        check=True,
        timeout=120,
    )
    port = free_port()
    process = start(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(directory),  # the Unix socket stays in the temp dir, not /var/run
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",  # a throwaway cluster: durability across a power cut is not tested
        ],
        env,
        directory / "postgres.log",
        cwd=directory,
        user=user,
    )
    cluster = Postgres(process, port, directory)
    try:
        wait_until(lambda: _pg_ready(bindir, port, env, user), 60, "PostgreSQL")
        for database in databases:
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER]
                + [database],
                env=env,
                user=user,
                capture_output=True,
                check=True,
                timeout=60,
            )
    except BaseException:
        stop_postgres(cluster)
        raise
    return cluster


def _pg_ready(bindir: Path, port: int, env: dict[str, str], user: str | None) -> bool:
    probe = subprocess.run(
        [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER],
        env=env,
        user=user,
        capture_output=True,
        check=False,
        timeout=10,
    )
    return probe.returncode == 0


def stop_postgres(cluster: Postgres) -> None:
    stop(cluster.process, timeout=60)
    shutil.rmtree(cluster.directory, ignore_errors=True)
