"""bench.measure: a measured run's figures are its own, not the bench process's."""

import os
import sys

import numpy as np

from bench.measure import RESULT_PREFIX, run_measured

ALLOCATE_100_MIB = (
    "import numpy as np, sys; block = np.ones(100 * 2**20 // 8); "
    f"print({RESULT_PREFIX!r} + '{{\"ok\": 1}}'); print('to stderr', file=sys.stderr)"
)


def test_largest_process_is_the_command_not_the_bench() -> None:
    held = np.ones(400 * 2**20 // 8)  # the bench after generating data: large, resident
    run = run_measured([sys.executable, "-c", ALLOCATE_100_MIB], dict(os.environ), ".", timeout=60)
    assert held.sum() > 0
    assert run.returncode == 0
    assert run.result == {"ok": 1}
    assert run.stderr.strip() == "to stderr"
    # The command holds 100 MiB and Python: well above 100, far below the bench's 400 MiB.
    assert 100 < run.wait4_max_mib < 300
    assert run.tree_peak_mib < 300


def test_exit_status_and_timeout() -> None:
    assert run_measured(["sh", "-c", "exit 3"], dict(os.environ), ".", timeout=60).returncode == 3
    killed = run_measured(["sleep", "30"], dict(os.environ), ".", timeout=0.5)
    assert killed.returncode == -9
    assert killed.wall_seconds < 20


def test_a_launcher_that_dies_mid_request_fails_that_run_only(monkeypatch) -> None:
    import subprocess

    from bench import measure

    def dead_launcher() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        process.wait()
        return process

    with monkeypatch.context() as patched:
        patched.setattr(measure._Launcher, "_running", staticmethod(dead_launcher))
        try:
            run_measured(["true"], dict(os.environ), ".", timeout=60)
        except OSError as error:
            assert "launcher" in str(error)
        else:
            raise AssertionError("a dead launcher went unnoticed")
    # The lock was released (checked with a timeout, not by hanging), and the next run gets
    # a live launcher and completes.
    assert measure._Launcher._lock.acquire(timeout=5)
    measure._Launcher._lock.release()
    assert run_measured(["sh", "-c", "exit 4"], dict(os.environ), ".", timeout=60).returncode == 4
