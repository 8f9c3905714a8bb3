"""Runtime plumbing shared by tasks and flows: the Dask task runner, the training lock,
and the retry policy of I/O tasks."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import distributed
from distributed import Client
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner, get_dask_client

from linreg.config import Settings
from linreg.errors import DataError, ModelFileError, StateError

# Errors that another attempt cannot fix: bad data, an incompatible state, a lost race.
PERMANENT_ERRORS = (DataError, StateError, ModelFileError, ValueError, TypeError)
IO_RETRY_DELAYS = [2, 5, 15]


def retry_unless_permanent(task, task_run, state) -> bool:  # noqa: ARG001 (Prefect's signature)
    """Prefect ``retry_condition_fn``: retry transient I/O failures, not bad input."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


def dask_task_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    """A runner on an existing Dask scheduler (``address``) or a temporary LocalCluster."""
    settings = Settings.from_env()
    address = address or settings.dask_address
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            # The scheduler's HTTP endpoint (health, metrics) on a free port, not the fixed
            # 8787 that a second cluster on the machine would collide with; no dashboard.
            "dashboard_address": "127.0.0.1:0",
            "scheduler_kwargs": {"dashboard": False},
            # A task's exception reaches the flow (and its logs) with its message; the
            # worker's own "Compute Failed" report would repeat it on stderr.
            "silence_logs": logging.CRITICAL,
        }
    )


@contextmanager
def cluster_client() -> Iterator[Client]:
    """A client of this flow run's Dask cluster, wherever the calling task runs.

    In the flow process that is the task runner's own client; on a Dask worker (a submitted
    task) it is ``prefect_dask.get_dask_client()``, which connects to the same scheduler.
    """
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if isinstance(runner, DaskTaskRunner) and not _on_dask_worker():
        yield runner.client
    else:
        with get_dask_client() as client:
            yield client


def _on_dask_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def lock_name(state_block: str) -> str:
    return "linreg-train-" + re.sub(r"[^a-z0-9-]+", "-", state_block.lower())


@contextmanager
def training_lock(state_block: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the one lock that serialises load-train-save on ``state_block``.

    ``prefect`` (the default with a Prefect server): a global concurrency limit of 1, strict
    and leased, so it holds across machines; a killed holder's slot is reclaimed when its 60 s
    lease expires. ``file`` (the default with the embedded server, which runs no lease reaper):
    an OS file lock in ``LINREG_LOCK_DIR``, released by the kernel the moment its holder dies,
    for runs that all share one host. ``LINREG_LOCK_BACKEND`` chooses explicitly.
    """
    settings = Settings.from_env()
    timeout = settings.lock_timeout_seconds if timeout_seconds is None else timeout_seconds
    name = lock_name(state_block)
    backend = settings.lock_backend
    if backend == "auto":
        backend = "prefect" if get_current_settings().api.url else "file"
    if backend == "prefect":
        _ensure_global_limit(name)
        with concurrency(name, occupy=1, timeout_seconds=timeout, lease_duration=60, strict=True):
            yield
    else:
        directory = Path(settings.lock_dir or Path(get_current_settings().home) / "locks")
        with _file_lock(directory / f"{name}.lock", timeout):
            yield


def _ensure_global_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
            except ObjectAlreadyExists:
                pass  # another run created it first


@contextmanager
def _file_lock(path: Path, timeout_seconds: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another training run holds {path} for over {timeout_seconds:.0f} s"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(descriptor)
