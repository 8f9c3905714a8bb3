"""A ``train-step``'s cost against the model's age: the same step on a young model and on one
with thousands of versions behind it. ``python -m bench.step_age --data DIR``.

For each age N: one step trains a new state block, which is then given N versions of
metrics history (as N earlier steps would have left it) and its ``history.jsonl`` N more
records; then ``--runs`` steps are timed (median; the first, which finds the aged state, is
reported on its own). The ratio to age 0 in the same run is the figure: 1.0 means a step costs
the same however long the model has been trained. Against the local server of
``--mode server-start`` (its own Prefect home and free port here), as CLI calls use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def _age(block: str, out: Path, age: int) -> None:
    """Give the state block and the history ``age`` versions more."""
    from tasks.state import PrefectBlockStateStore

    store = PrefectBlockStateStore(block)
    state = store.load()
    last = state.metrics_history[-1]
    earlier = [{**last, "version": v} for v in range(1, age + 1)]
    store.save(state.model_copy(update={"metrics_history": earlier + [last]}), state.version)
    history = out / "history.jsonl"
    record = history.read_text().splitlines()[-1]
    with history.open("a") as handle:
        handle.writelines(record + "\n" for _ in range(age))


def _measure(data: Path, ages: list[int], runs: int, batch_rows: int, home: Path) -> list[dict]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows import train_step
    from linreg.config import DataConfig
    from tasks.state import PrefectBlockStateStore

    config = DataConfig(source=str(data), batch_rows=batch_rows)
    rows = []
    # As main.py runs flows: no heartbeat thread to join at exit.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for age in ages:
            block, out = f"bench-age-{age}", home / f"out-{age}"

            def step(block: str = block, out: Path = out) -> float:
                started = time.perf_counter()
                result = train_step(data=config, out_dir=str(out), state_block=block)
                assert result.trained, "the data ran out: use more rows or fewer runs"
                return time.perf_counter() - started

            step()
            _age(block, out, age)
            first = step()
            times = [step() for _ in range(runs)]
            state = PrefectBlockStateStore(block).load()
            rows.append(
                {
                    "age": age,
                    "first": first,
                    "median": statistics.median(times),
                    "times": times,
                    "state_bytes": len(state.model_dump_json()),
                    "history_bytes": (out / "history.jsonl").stat().st_size,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="at least (runs + 2) batches")
    parser.add_argument("--ages", type=int, nargs="+", default=[0, 10_000, 50_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=1_000)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from bench.cluster import free_port
    from cli import local_server

    for name in ("prefect", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    home = Path(tempfile.mkdtemp(prefix="bench-step-age-")) / "prefect-home"
    api_url, _ = local_server.start(home, free_port())
    try:
        with temporary_settings({PREFECT_HOME: str(home), PREFECT_API_URL: api_url}):
            rows = _measure(args.data, sorted(set(args.ages)), args.runs, args.batch_rows, home)
    finally:
        local_server.stop(home)
    young = rows[0]["median"]
    print("| versions before | step, median (s) | / youngest | first step (s) | state | history |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['age']:,} | {row['median']:.3f} | {row['median'] / young:.2f}× "
            f"| {row['first']:.3f} | {row['state_bytes'] / 1e3:,.0f} kB "
            f"| {row['history_bytes'] / 1e6:,.1f} MB |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
