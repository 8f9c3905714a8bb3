"""Run one measurement in a fresh process and take its time and memory from the OS.

Two peak-memory figures, both from the operating system, never estimated:

- ``tree_peak_mib``: the largest sum of RSS over the process and all its descendants (Dask
  workers, the embedded Prefect server, Spark's JVM, ...) plus any ``extra_pids`` (an external Dask
  cluster), sampled with psutil every 50 ms. Short spikes between samples can be missed.
- ``wait4_max_mib``: ``ru_maxrss`` from ``os.wait4`` on the measured process: the largest peak
  of any *single* process among it and the descendants it reaped (Linux keeps the maximum,
  not the sum). Exact, but blind to a tree of processes that peak together.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

RESULT_PREFIX = "BENCH-RESULT "
SAMPLE_SECONDS = 0.05


@dataclass
class Measurement:
    returncode: int
    wall_seconds: float
    tree_peak_mib: float
    wait4_max_mib: float
    result: dict[str, Any] | None
    stdout: str
    stderr: str
    samples: int = 0
    peak_breakdown_mib: dict[str, int] = field(default_factory=dict)


def run_record(measurement: Measurement, approach: str, size: int, repeat: int) -> dict[str, Any]:
    """The fields every measured run records: what ran, and its exit code, wall and memory."""
    return {
        "approach": approach,
        "size": size,
        "repeat": repeat,
        "returncode": measurement.returncode,
        "wall_seconds": measurement.wall_seconds,
        "tree_peak_mib": measurement.tree_peak_mib,
        "wait4_max_mib": measurement.wait4_max_mib,
    }


def _label(process: psutil.Process, root: psutil.Process) -> str:
    """What a process of the tree is, for the breakdown at the peak."""
    if process.pid == root.pid:
        return "main"
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    if "uvicorn" in command or "prefect" in command and "server" in command:
        return "prefect-server"
    if "org.apache.spark" in command:
        return "spark-jvm"
    if "resource_tracker" in command:
        return "other"
    if "multiprocessing" in command or "dask worker" in command or "dask-worker" in command:
        return "dask-worker"
    if "dask scheduler" in command or "dask-scheduler" in command:
        return "dask-scheduler"
    return "other"


def _tree_rss(
    root: psutil.Process, extra: Sequence[psutil.Process], labels: dict[int, str]
) -> tuple[int, dict[str, int]]:
    """Summed RSS of ``root``'s tree and ``extra``'s trees, and its split by process kind."""
    processes = []
    for top in (root, *extra):
        processes.append(top)
        try:
            processes += top.children(recursive=True)
        except psutil.Error:
            pass
    total, breakdown, seen = 0, {}, set()
    for process in processes:
        if process.pid in seen:
            continue
        seen.add(process.pid)
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            continue
        if process.pid not in labels:
            labels[process.pid] = _label(process, root)
        total += rss
        label = labels[process.pid]
        breakdown[label] = breakdown.get(label, 0) + rss
    return total, breakdown


def run_measured(
    command: Sequence[str],
    env: dict[str, str],
    cwd: str,
    timeout: float,
    extra_pids: Sequence[int] = (),
) -> Measurement:
    """Run ``command``; its last stdout line starting with ``RESULT_PREFIX`` is its result."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    root = psutil.Process(process.pid)
    extra = [psutil.Process(pid) for pid in extra_pids]
    peak, samples, at_peak, labels = 0, 0, {}, {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, samples, at_peak
        while not done.is_set():
            total, breakdown = _tree_rss(root, extra, labels)
            if total > peak:
                peak, at_peak = total, breakdown
            samples += 1
            done.wait(SAMPLE_SECONDS)

    outputs: dict[str, str] = {}

    def drain(name: str, stream) -> None:
        outputs[name] = stream.read()

    threads = [
        threading.Thread(target=sample, daemon=True),
        threading.Thread(target=drain, args=("stdout", process.stdout), daemon=True),
        threading.Thread(target=drain, args=("stderr", process.stderr), daemon=True),
    ]
    for thread in threads:
        thread.start()
    timer = threading.Timer(timeout, _kill_group, args=(process.pid,))
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for thread in threads:
        thread.join()
    _kill_group(process.pid)  # leftovers of a crashed run, in its own process group only
    stdout = outputs.get("stdout", "")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            break
    return Measurement(
        returncode=process.returncode,
        wall_seconds=wall,
        tree_peak_mib=peak / 2**20,
        wait4_max_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        result=result,
        stdout=stdout,
        stderr=outputs.get("stderr", ""),
        samples=samples,
        peak_breakdown_mib={label: round(rss / 2**20) for label, rss in at_peak.items()},
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def emit(result: dict[str, Any]) -> None:
    """Print the child's result line (the parent reads the last one)."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)
