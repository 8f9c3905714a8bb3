"""Runtime plumbing shared by tasks and flows: where batches run (the Dask task runner, the
run's RuntimeConfig), the training lock, and the retry policy of I/O tasks."""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dask
import distributed
import prefect
from distributed import Client
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.events import RelatedResource, emit_event
from prefect.events.related import tags_as_related_resources
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings
from prefect_dask import DaskTaskRunner
from pydantic import BaseModel, ConfigDict, Field

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


class RuntimeConfig(BaseModel):
    """Where a run's batches are computed. A flow parameter, so the CLI, the UI and each
    deployment choose it per run; nothing is read from the environment at import."""

    model_config = ConfigDict(extra="forbid")

    executor: Literal["auto", "serial", "dask"] = Field(
        "auto",
        description="auto: this process for a round of at most serial_max_rows rows (a Dask "
        "cluster would take longer to start than the round to run), Dask above it.",
    )
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster; default: $LINREG_DASK_ADDRESS of "
        "the process running the flow (a worker's environment), else a local cluster.",
    )
    dask_workers: int = Field(2, ge=1, description="Workers of the local Dask cluster.")
    serial_max_rows: int = Field(
        2_000_000, ge=0, description="auto: the largest round run without Dask."
    )

    def scheduler(self) -> str | None:
        """The scheduler to use: the parameter, else the environment of the process that runs
        the flow, read now (at run time, where the worker's environment says where Dask is)."""
        return self.dask_address or os.environ.get("LINREG_DASK_ADDRESS") or None

    def use_dask(self, n_rows: int) -> bool:
        if self.executor == "auto":
            return self.scheduler() is not None or n_rows > self.serial_max_rows
        return self.executor == "dask"


LOCAL_CLUSTER = {
    # Worker threads in the flow's own process: reading (Arrow), gathering (numpy) and LAPACK
    # release the GIL, so two threads keep two cores busy (10M rows, ols: a round of 2.7-3.8 s
    # against 3.8 s on two worker processes plus their 2.2-s start and imports; peak RSS
    # 544-591 MiB against 993) and the batches never cross a process boundary.
    "n_workers": 2,
    "threads_per_worker": 1,
    "processes": False,
    "dashboard_address": None,
    # A task's exception reaches the flow (and its logs) with its message; the worker's own
    # "Compute Failed" report would repeat it on stderr.
    "silence_logs": logging.CRITICAL,
}


HEARTBEAT_SECONDS = 180  # Prefect's default PREFECT_FLOWS_HEARTBEAT_FREQUENCY


def _heartbeat_resources(run: FlowRunContext) -> tuple[dict[str, str], list[RelatedResource]]:
    """The event's resource and related resources as Prefect's own heartbeat gives them
    (``prefect.flow_engine``: the run; its flow, deployment and tags)."""
    flow_run = run.flow_run
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
        "prefect.version": prefect.__version__,
    }
    related = [
        RelatedResource.model_validate(
            {
                "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": run.flow.name if run.flow else "",
            }
        )
    ]
    if flow_run.deployment_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        )
    return resource, related + tags_as_related_resources(set(flow_run.tags or []))


@contextmanager
def heartbeats_unless_prefect_sends_them() -> Iterator[None]:
    """The flow run's heartbeat events (what a zombie-detection automation watches) when
    Prefect sends none: CLI calls switch Prefect's own off, because its sync engine joins its
    heartbeat thread at the end of every run and that thread sleeps in 1-s steps (~0.5 s a
    run). The same event, ``prefect.flow-run.heartbeat`` on the run, at Prefect's default
    interval, from a thread that ends the moment the flow's body does."""
    run = FlowRunContext.get()
    if run is None or run.flow_run is None or get_current_settings().flows.heartbeat_frequency:
        yield
        return
    resource, related = _heartbeat_resources(run)
    stop = threading.Event()

    def beat() -> None:
        while True:
            emit_event("prefect.flow-run.heartbeat", resource=resource, related=related)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    # The run's context (settings: which server) goes with the thread, as Prefect's does.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(beat,), daemon=True, name="heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # at once: its wait ends with the event (an emit only queues)


# Flow results are not persisted (a run's outcome is its model files, state block and
# artifacts, and Prefect persists none by default). Saying so, with the local storage Prefect
# falls back to, spares each run three reads of the server's default result storage.
UNPERSISTED_RESULTS = {
    "persist_result": False,
    "result_storage": Path(get_current_settings().results.local_storage_path),
}


def dask_task_runner() -> DaskTaskRunner:
    """The flows' task runner: a local cluster unless :func:`dask_client` is pointed at a
    scheduler first. prefect-dask starts its cluster on first use only, so a round that runs
    serially never starts one."""
    return DaskTaskRunner(cluster_kwargs=dict(LOCAL_CLUSTER))


def dask_client(runtime: RuntimeConfig) -> Client:
    """A client of this flow run's Dask cluster (started now if need be), wherever the
    calling task runs.

    In the flow process that is the task runner's own client, pointed at
    ``runtime.dask_address`` or sized to ``runtime.dask_workers`` before its first use; on a
    Dask worker (a submitted task) it is the worker's client of the same scheduler.
    """
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    address = runtime.scheduler()
    if _on_dask_worker() or not isinstance(runner, DaskTaskRunner):
        return distributed.get_client() if _on_dask_worker() else Client(address)
    if address and not runner.address and runner._cluster is None:
        runner.address = address
    elif not runner.address and runner._cluster is None:
        runner.cluster_kwargs["n_workers"] = runtime.dask_workers
        # The in-process cluster serves no dashboard; without a link template prefect-dask
        # does not log one that would point nowhere.
        with dask.config.set({"distributed.dashboard.link": ""}):
            return runner.client
    return runner.client


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

    ``prefect`` (the default with a Prefect server elsewhere): a global concurrency limit of
    1, strict and leased, so it holds across machines; a killed holder's slot is reclaimed when
    its 60 s lease expires. ``file`` (the default with the embedded server, which runs no lease
    reaper, and with the local server of ``--mode server-start``): an OS file lock in
    ``LINREG_LOCK_DIR``, released by the kernel the moment its holder dies, for runs that all
    share one host. ``LINREG_LOCK_BACKEND`` chooses explicitly.
    """
    timeout = float(os.environ.get("LINREG_LOCK_TIMEOUT_SECONDS", "600"))
    timeout = timeout if timeout_seconds is None else timeout_seconds
    name = lock_name(state_block)
    backend = os.environ.get("LINREG_LOCK_BACKEND", "auto")
    if backend not in ("auto", "prefect", "file"):
        raise ValueError(f"LINREG_LOCK_BACKEND must be auto, prefect or file, not {backend!r}")
    settings = get_current_settings()
    if backend == "auto":
        backend = "file" if _host_local_server(settings.api.url, settings.home) else "prefect"
    if backend == "prefect":
        _ensure_global_limit(name)
        with concurrency(name, occupy=1, timeout_seconds=timeout, lease_duration=60, strict=True):
            yield
    else:
        directory = Path(os.environ.get("LINREG_LOCK_DIR") or Path(settings.home) / "locks")
        with _file_lock(directory / f"{name}.lock", timeout):
            yield


LOCAL_SERVER_RECORD = "linreg-server.json"  # written by cli.local_server


def _host_local_server(api_url: str | None, home: Path) -> bool:
    """True for the embedded server (no URL) and for the local server recorded under ``home``:
    SQLite servers on this host, whose runs all share it.

    On SQLite the concurrency-limit increment often loses the database's write lock to the
    server's own event writers; the server answers 503 and Prefect's client waits 2 s before
    it retries (measured: 3 of 5 back-to-back train-steps took 2.3-2.8 s instead of 0.5 s).
    """
    if not api_url:
        return True
    try:
        record = json.loads((Path(home) / LOCAL_SERVER_RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("api_url", "").rstrip("/") == api_url.rstrip("/")


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
