"""Whole-process cost of one training step from the command line, beside the seed's step.

- ``seed_step``: what the original script did per step: load a pickled data cursor and
  model, read the next batch, one ``SGDRegressor.partial_fit``, pickle both back.
- ``cli_local_server``: ``python main.py --mode single`` right after another one, with the
  local Prefect server of ``--mode server-start`` running (the call runs in its warm runner,
  ``cli.warm``).
- ``cli_local_own_process``: the same call in its own process (``LINREG_WARM_RUNNER=0``),
  alternating with the previous one: what the warm runner saves.
- ``cli_temporary_server``: the same call with nothing running (Prefect starts a temporary
  server for the call and stops it at exit).
- ``cli_validate``: ``--mode validate`` on the same data (no Prefect): the imports and a
  metadata read, the floor of any call.

Each is a fresh process timed from outside (wall seconds); medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import emit

PROJECT = Path(__file__).resolve().parents[1]

SEED_STEP = r"""
import pickle, sys
from pathlib import Path
import pyarrow.parquet as pq
from sklearn.linear_model import SGDRegressor
from sklearn.preprocessing import StandardScaler
state_path, data, rows = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if state_path.exists():
    state = pickle.loads(state_path.read_bytes())
else:
    state = {"cursor": 0, "model": SGDRegressor(), "scaler": StandardScaler()}
files = sorted(Path(data).glob("*.parquet"))
table = pq.read_table(files[0]).slice(state["cursor"], rows).to_pandas().dropna()
x, y = table.drop(columns="target").to_numpy(), table["target"].to_numpy()
state["scaler"].partial_fit(x)
state["model"].partial_fit(state["scaler"].transform(x), y)
state["cursor"] += rows
state_path.write_bytes(pickle.dumps(state))
"""


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, cwd=PROJECT, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {result.stderr[-1500:]}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="one shard of at least 2 x runs + 1 batches"
    )
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=4399)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LINREG_"))}
    env.update(
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_PORT=str(args.port),
    )
    main_py = [sys.executable, str(PROJECT / "main.py")]
    step = [
        *main_py,
        "--mode",
        "single",
        "--data",
        str(args.data),
        "--batch-rows",
        str(args.batch_rows),
        "--out",
        str(work / "out"),
        "--quiet",
    ]
    timings: dict[str, list[float]] = {name: [] for name in ("seed_step", "cli_validate")}
    seed = [sys.executable, "-c", SEED_STEP, str(work / "seed.pkl"), str(args.data)]
    for _ in range(args.runs):
        timings["seed_step"].append(_timed([*seed, str(args.batch_rows)], env))
        timings["cli_validate"].append(
            _timed([*main_py, "--mode", "validate", "--data", str(args.data)], env)
        )
    timings["cli_temporary_server"] = [
        _timed([*step, "--state-block", "bench-temporary"], env) for _ in range(args.runs)
    ]
    started = time.perf_counter()
    _timed([*main_py, "--mode", "server-start"], env)
    server_start = time.perf_counter() - started
    try:
        _timed([*step, "--state-block", "bench-local"], env)  # the call before
        own_process = {**env, "LINREG_WARM_RUNNER": "0"}
        timings["cli_local_server"], timings["cli_local_own_process"] = [], []
        for _ in range(args.runs):
            step_local = [*step, "--state-block", "bench-local"]
            timings["cli_local_server"].append(_timed(step_local, env))
            timings["cli_local_own_process"].append(_timed(step_local, own_process))
    finally:
        _timed([*main_py, "--mode", "server-stop"], env)
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    emit(
        {
            "rows": args.batch_rows,
            "runs": args.runs,
            "timings": timings,
            "medians": medians,
            "server_start": server_start,
        }
    )


if __name__ == "__main__":
    main()
