"""A real multi-process Dask cluster on this machine: ``dask scheduler`` and N ``dask worker``
processes, each in its own session, stopped by process group in teardown (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ProcessCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]

    @property
    def pids(self) -> list[int]:
        return [self.scheduler.pid, *(worker.pid for worker in self.workers)]


def _stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@contextmanager
def process_cluster(
    workers: int, env: dict[str, str], cwd: Path, log_dir: Path, timeout: float = 120
) -> Iterator[ProcessCluster]:
    """Scheduler on 127.0.0.1 and ``workers`` single-threaded workers, ready when yielded."""
    from distributed import Client

    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []

    def start(name: str, command: list[str]) -> subprocess.Popen:
        log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        processes.append(process)
        return process

    try:
        scheduler = start(
            "scheduler",
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
        )
        worker_processes = [
            start(
                f"worker-{index}",
                [
                    str(BIN / "dask"),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--local-directory",
                    str(log_dir / f"worker-{index}"),
                ],
            )
            for index in range(workers)
        ]
        deadline = time.monotonic() + timeout
        while True:
            if any(process.poll() is not None for process in processes):
                raise RuntimeError(f"a Dask cluster process exited; see the logs in {log_dir}")
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(workers, timeout=max(1, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the Dask cluster at {address} did not start") from None
                time.sleep(0.5)
        yield ProcessCluster(address, scheduler, worker_processes)
    finally:
        for process in reversed(processes):
            _stop(process)
