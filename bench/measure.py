"""Run one measurement in a fresh process and take its time and memory from the OS.

Two peak-memory figures, both from the operating system, never estimated:

- ``tree_peak_mib``: the largest sum of RSS over the process and all its descendants (Dask
  workers, the embedded Prefect server, Spark's JVM, ...) plus any ``extra_pids`` (an external Dask
  cluster), sampled with psutil every 50 ms. Short spikes between samples can be missed.
- ``wait4_max_mib``: ``ru_maxrss`` from ``os.wait4`` on the measured process: the largest peak
  of any *single* process among it and the descendants it reaped (Linux keeps the maximum,
  not the sum). Exact, but blind to a tree of processes that peak together.

Linux starts a forked child's ``ru_maxrss`` at its parent's RSS at the fork and keeps it across
``exec``: spawned from the bench process (852 MiB once it had generated the data), every run's
figure read 852 MiB. So measured commands are spawned by :class:`_Launcher`, a bare Python
process of ~10 MiB that only forks them and waits for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


# The launcher's whole program: for each JSON request on stdin, spawn the command (its output
# to the given files, in its own session), answer its PID, wait for it, answer its rusage.
_LAUNCHER_CODE = """
import json, os, subprocess, sys
for line in sys.stdin:
    request = json.loads(line)
    with open(request["stdout"], "wb") as out, open(request["stderr"], "wb") as err:
        try:
            child = subprocess.Popen(request["command"], env=request["env"], cwd=request["cwd"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     start_new_session=True)
        except OSError as error:
            print(json.dumps({"error": str(error)}), flush=True)
            continue
    print(json.dumps({"pid": child.pid}), flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    print(json.dumps({"status": status, "maxrss_kib": usage.ru_maxrss}), flush=True)
"""


class _Launcher:
    """A small process that spawns and reaps measured commands, so their ``ru_maxrss`` starts
    at its RSS (~10 MiB), not the bench's. One request at a time."""

    _process: subprocess.Popen | None = None
    _lock = threading.Lock()

    @classmethod
    def _running(cls) -> subprocess.Popen:
        if cls._process is None or cls._process.poll() is not None:
            cls._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return cls._process

    @classmethod
    def start(cls, request: dict[str, Any]) -> tuple[subprocess.Popen, int]:
        """Spawn ``request``'s command; the launcher and the command's PID."""
        cls._lock.acquire()
        try:
            launcher = cls._running()
            try:
                launcher.stdin.write(json.dumps(request) + "\n")
                launcher.stdin.flush()
            except BrokenPipeError:
                raise OSError(_exited(launcher)) from None
            answer = _answer(launcher)
            if "error" in answer:
                raise OSError(answer["error"])
        except BaseException:
            cls._lock.release()  # a launcher that died must not block every later start
            raise
        return launcher, answer["pid"]

    @classmethod
    def wait(cls, launcher: subprocess.Popen) -> tuple[int, int]:
        """The exit status and ``ru_maxrss`` (KiB) of the command :meth:`start` spawned."""
        try:
            answer = _answer(launcher)
            return answer["status"], answer["maxrss_kib"]
        finally:
            cls._lock.release()


def _answer(launcher: subprocess.Popen) -> dict[str, Any]:
    line = launcher.stdout.readline()
    if not line:
        raise OSError(_exited(launcher))
    return json.loads(line)


def _exited(launcher: subprocess.Popen) -> str:
    return f"the bench's launcher process exited (status {launcher.poll()})"


def run_measured(
    command: Sequence[str],
    env: dict[str, str],
    cwd: str,
    timeout: float,
    extra_pids: Sequence[int] = (),
) -> Measurement:
    """Run ``command``; its last stdout line starting with ``RESULT_PREFIX`` is its result."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        started = time.perf_counter()
        launcher, pid = _Launcher.start(
            {
                "command": list(command),
                "env": env,
                "cwd": cwd,
                "stdout": out_path,
                "stderr": err_path,
            }
        )
        try:
            root: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            root = None  # already gone: nothing to sample
        extra = [psutil.Process(extra_pid) for extra_pid in extra_pids]
        peak, samples, at_peak, labels = 0, 0, {}, {}
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, samples, at_peak
            while root is not None and not done.is_set():
                total, breakdown = _tree_rss(root, extra, labels)
                if total > peak:
                    peak, at_peak = total, breakdown
                samples += 1
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, _kill_group, args=(pid,))
        timer.start()
        try:
            status, maxrss_kib = _Launcher.wait(launcher)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        _kill_group(pid)  # leftovers of a crashed run, in its own process group only
        stdout = Path(out_path).read_text(errors="replace")
        stderr = Path(err_path).read_text(errors="replace")
    result = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            break
    return Measurement(
        returncode=os.waitstatus_to_exitcode(status),
        wall_seconds=wall,
        tree_peak_mib=peak / 2**20,
        wait4_max_mib=maxrss_kib / 1024,  # KiB on Linux
        result=result,
        stdout=stdout,
        stderr=stderr,
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
