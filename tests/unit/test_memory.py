"""Peak memory of training is bounded by the batch size, not by the number of rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from linreg.synthetic import write_dataset

# The child's own peak is VmHWM: its address space is new at exec. ru_maxrss would start at
# this test process's RSS when it forked, which grows with the data it writes.
MEASURE = """
import json, sys
from linreg.batches import plan_batches
from linreg.config import DataConfig, HyperParams
from linreg.state import TrainingState
from linreg.executors import SerialExecutor
from linreg.training import RoundSpec, train_batches
from linreg.validation import validate_source

data = DataConfig(source=sys.argv[1], batch_rows=50_000)
plan = validate_source(data)
hyper = HyperParams(model=sys.argv[2])
state = TrainingState.fresh(data.source, list(plan.features), plan.target, hyper.model)
spec = RoundSpec(hyper, data.batch_rows, data.test_fraction)
trained = train_batches(state, plan, plan_batches(plan.files, {}, data.batch_rows), spec,
                        SerialExecutor())
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
print(json.dumps({"peak_kib": peak_kib,
                  "rows": trained.state.rows_trained}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ols", "sgd"])
def test_peak_rss_does_not_grow_with_rows(tmp_path: Path, model: str):
    # From 600k rows: sgd's peak steps up once between 300k and 600k rows (281 -> 311 MiB,
    # the allocators' pools settling), then stays flat to 3M rows (311 MiB).
    small, large = 600_000, 1_800_000
    peaks = {}
    for n_rows in (small, large):
        directory = tmp_path / f"rows-{n_rows}"
        write_dataset(
            directory, n_rows=n_rows, n_features=16, shard_rows=150_000, row_group_rows=50_000
        )
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, str(directory), model],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[n_rows] = json.loads(out.stdout)["peak_kib"] / 1024
    # 1.2M more rows of 17 float64 columns would be 163 MiB if the data were held.
    growth = peaks[large] - peaks[small]
    print(
        f"{model}: peak RSS {peaks[small]:.0f} MiB at {small:,} rows, "
        f"{peaks[large]:.0f} MiB at {large:,} rows (batches of 50k)"
    )
    assert growth < 25, f"peak RSS grew by {growth:.0f} MiB: {peaks}"


ARENAS = """
import ctypes, ctypes.util, sys, threading
import main
if sys.argv[1] == "one":
    assert main.share_one_malloc_arena()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
started, release = threading.Barrier(5), threading.Event()

def allocate():
    libc.malloc(1 << 16)  # each thread's first allocation picks its arena
    started.wait()
    release.wait()

threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
started.wait()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
release.set()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
@pytest.mark.parametrize("arenas", ["default", "one"])
def test_threads_share_one_malloc_arena(arenas: str) -> None:
    project = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", ARENAS, arenas],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    count = sum(line.startswith("Arena ") for line in run.stderr.splitlines())
    # Threads that allocate at once get arenas of their own unless the process shares one.
    assert count == 1 if arenas == "one" else count > 1
