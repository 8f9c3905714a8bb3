"""Prefect's cost per run: ``train-step`` on one small batch, called N times in one process,
against the same domain step called bare. ``python -m bench.prefect_overhead --data DIR``.

Measured, each N times after one unmeasured warm-up call:

- ``flow_default``: ``flows.train_step`` as the CLI runs it (default runtime: a batch this
  small runs in the flow's process, no cluster; Prefect's heartbeat thread off, as ``main.py``
  sets, so the flow sends its heartbeats itself: ``heartbeats_unless_prefect_sends_them``);
- ``flow_heartbeat``: the same with Prefect's default heartbeat (what deployment runs keep);
- ``flow_cluster``: the same flow on a cluster of worker processes that outlives the runs
  (by address), so what remains over the bare step is Prefect's own work;
- ``cluster``: starting and closing the flows' own local cluster (in-process workers) alone;
- ``bare_round``: ``train_batches`` (serial executor) on the same batch (no Prefect, no Dask);
- ``bare_step``: validate + the round + writing model.pkl/model.json + the state as JSON,
  i.e. everything ``train-step`` does but orchestration.

The flows run against the local server of ``--mode server-start`` (its own Prefect home and
free port here), as CLI calls and deployment runs on one machine do. One run of each flow kind
is then profiled with pyinstrument; the text profiles go to ``--profile-dir``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench.measure import emit


def _timed(function, runs: int) -> list[float]:
    function()  # warm-up: imports, first connections, block registration
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def _profile(function, path: Path) -> dict[str, float]:
    """Profile one call; write the text tree; return seconds spent under a few frames."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    function()
    profiler.stop()
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    totals: dict[str, float] = {}
    watch = {
        "DaskTaskRunner.client": "start or connect Dask cluster",
        "DaskTaskRunner.__exit__": "close Dask cluster",
        "_send_heartbeats": "flow heartbeat thread",
        "prepare_batch": "read + clean batch (domain)",
        "summarize_prepared": "QR statistics (domain)",
        "summarize_batch": "read + QR statistics (domain)",
        "publish_model": "write model files (domain)",
        "validate_source": "validate (domain)",
        "create_table_artifact": "Prefect artifacts",
        "create_markdown_artifact": "Prefect artifacts",
        "create_progress_artifact": "Prefect artifacts",
        "update_progress_artifact": "Prefect artifacts",
        "PrefectBlockStateStore.load": "state block load",
        "PrefectBlockStateStore.save": "state block save",
        "training_lock": "training lock",
    }

    def walk(frame, inside: set[str]) -> None:
        qualified = f"{frame.class_name}.{frame.function}" if frame.class_name else None
        label = watch.get(qualified) or watch.get(frame.function)
        if label and label not in inside:
            totals[label] = totals.get(label, 0.0) + frame.time
            inside = inside | {label}
        for child in frame.children:
            walk(child, inside)

    session = profiler.last_session
    if session and session.root_frame():
        root = session.root_frame()
        walk(root, set())
        totals["total"] = root.time
    return {label: round(seconds, 3) for label, seconds in totals.items()}


def _bare_steps(data_dir: str, batch_rows: int, model: str, out: Path):
    """The domain work of one ``train-step`` without Prefect or Dask: the round alone, and
    the whole step (validate, round, model files, state JSON)."""
    from linreg.batches import plan_batches
    from linreg.config import DataConfig, HyperParams
    from linreg.executors import SerialExecutor
    from linreg.model_files import publish_model
    from linreg.state import TrainingState
    from linreg.training import RoundSpec, model_metadata, train_batches
    from linreg.validation import validate_source

    data = DataConfig(source=data_dir, batch_rows=batch_rows)
    hyperparams = HyperParams(model=model)
    plan = validate_source(data)

    def bare_round():
        state = TrainingState.fresh(data_dir, list(plan.features), plan.target, model)
        batches = plan_batches(plan.files, state.cursor, data.batch_rows, 1)
        return train_batches(
            state,
            plan,
            batches,
            RoundSpec(hyperparams, data.batch_rows, data.test_fraction),
            SerialExecutor(),
        )

    def bare_step():
        step_plan = validate_source(data)
        state = TrainingState.fresh(data_dir, list(step_plan.features), step_plan.target, model)
        batches = plan_batches(step_plan.files, state.cursor, data.batch_rows, 1)
        trained = train_batches(
            state,
            step_plan,
            batches,
            RoundSpec(hyperparams, data.batch_rows, data.test_fraction),
            SerialExecutor(),
        )
        metadata = model_metadata(trained, step_plan, hyperparams)
        publish_model(out / "bare", trained.estimator, metadata)
        (out / "bare" / "state.json").write_text(trained.state.model_dump_json())

    return plan.n_rows, bare_round, bare_step


def _flow_call(flow, data_dir: str, batch_rows: int, model: str, out: Path, runtime=None):
    from linreg.config import DataConfig, HyperParams
    from tasks.runtime import RuntimeConfig

    data = DataConfig(source=data_dir, batch_rows=batch_rows)
    hyperparams = HyperParams(model=model)

    def call():
        summary = flow(
            data=data,
            hyperparams=hyperparams,
            out_dir=str(out / "flow"),
            state_block="bench-overhead",
            reset=True,
            runtime=runtime or RuntimeConfig(),
        )
        assert summary.trained, summary

    return call


def _measure_flows(args, where, timings, profiles) -> None:
    """The flow timings and profiles, against the server the settings point to."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows import train_step
    from tasks.runtime import LOCAL_CLUSTER, RuntimeConfig

    # A long-lived cluster of worker processes, found by address (as on Kubernetes).
    remote = {**LOCAL_CLUSTER, "processes": True, "host": "127.0.0.1"}
    timings["flow_heartbeat"] = _timed(_flow_call(train_step, *where), args.runs)
    # As main.py runs flows: no heartbeat thread to join at exit.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        timings["flow_default"] = _timed(_flow_call(train_step, *where), args.runs)
        with LocalCluster(**remote) as cluster:
            on_cluster = _flow_call(
                train_step, *where, RuntimeConfig(dask_address=cluster.scheduler_address)
            )
            timings["flow_cluster"] = _timed(on_cluster, args.runs)
            if args.profile_dir:
                args.profile_dir.mkdir(parents=True, exist_ok=True)
                profiles["flow_cluster"] = _profile(
                    on_cluster,
                    args.profile_dir / "prefect-overhead-flow-cluster.txt",
                )
        if args.profile_dir:
            profiles["flow_default"] = _profile(
                _flow_call(train_step, *where),
                args.profile_dir / "prefect-overhead-flow-default.txt",
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="one batch of data")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--model", choices=["ols", "sgd"], default="ols")
    parser.add_argument("--profile-dir", type=Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from bench.cluster import free_port
    from cli import local_server
    from tasks.runtime import LOCAL_CLUSTER

    # The flow logs every task to the console; here only the timings are output.
    for name in ("prefect", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    where = (str(args.data), args.batch_rows, args.model, out)
    n_rows, bare_round, bare_step = _bare_steps(*where)
    kwargs = dict(LOCAL_CLUSTER)

    def cluster_lifecycle():
        with LocalCluster(**kwargs):
            pass

    timings: dict[str, list[float]] = {}
    profiles: dict[str, dict[str, float]] = {}
    timings["bare_round"] = _timed(bare_round, args.runs)
    timings["bare_step"] = _timed(bare_step, args.runs)
    timings["cluster"] = _timed(cluster_lifecycle, args.runs)
    home = out / "prefect-home"
    api_url, _ = local_server.start(home, free_port())
    try:
        with temporary_settings({PREFECT_HOME: str(home), PREFECT_API_URL: api_url}):
            _measure_flows(args, where, timings, profiles)
    finally:
        local_server.stop(home)
    medians: dict[str, Any] = {name: statistics.median(ts) for name, ts in timings.items()}
    emit(
        {
            "rows": n_rows,
            "model": args.model,
            "runs": args.runs,
            "timings": timings,
            "medians": medians,
            "profiles": profiles,
        }
    )


if __name__ == "__main__":
    main()
