"""One approach on one data set, in this (fresh) process: ``python -m bench.approaches NAME ...``.

Imports happen first and are not timed; ``seconds`` covers the work a user waits for,
including starting and closing a Dask cluster where the approach uses one, and for this
project the whole CLI call (embedded Prefect server, flow, publishing). The result is the
last stdout line (``BENCH-RESULT {...}``): rows, seconds, and the coefficients found, which
the parent scores on the separate holdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if sys.argv[1:2] == ["project"]:
    import main as cli  # its imports are the standard library's

    # As main.main does first: before numpy's import starts OpenBLAS's threads.
    cli.share_one_malloc_arena()

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.measure import emit  # noqa: E402
from linreg.synthetic import read_truth  # noqa: E402

TARGET = "target"
# Spark kept on this machine: no web UI, driver bound to loopback (SPARK_LOCAL_IP in the
# environment covers the block manager), no packages to resolve (no spark.jars.packages, so
# no Ivy download). The driver's heap is set before its JVM starts; 2g holds local[2]'s
# Parquet batches with room to spare, well under what the dask baselines use.
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "2",
    "spark.ui.showConsoleProgress": "false",
}


def _shards(data: Path) -> list[Path]:
    return sorted(data.glob("*.parquet"))


def _rows(data: Path) -> int:
    return sum(pq.ParquetFile(path).metadata.num_rows for path in _shards(data))


def _features(data: Path) -> list[str]:
    return list(read_truth(data).features)


def _cluster_kwargs() -> dict[str, Any]:
    """The baselines' LocalCluster: worker processes of one thread, as Dask's own default
    cluster runs them (the project's local cluster runs its workers as threads of the flow's
    process); workers from LINREG_DASK_WORKERS."""
    return {
        "n_workers": int(os.environ.get("LINREG_DASK_WORKERS", "2")),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "silence_logs": logging.CRITICAL,
    }


def _load_in_memory(data: Path, columns: list[str]) -> np.ndarray:
    """Every row of ``columns`` as one float64 array (column-major: filled column by column)."""
    n = _rows(data)
    block = np.empty((n, len(columns)), order="F")
    start = 0
    for path in _shards(data):
        table = pq.read_table(path, columns=columns)
        stop = start + table.num_rows
        for position, name in enumerate(columns):
            block[start:stop, position] = table.column(name).to_numpy()
        start = stop
    return block


def project(args: argparse.Namespace) -> dict[str, Any]:
    """This project's CLI, ``main.py --mode all``, called in-process after its imports."""
    import main as cli

    _, server = cli.configure_environment("all")
    if server:
        server.wait_ready()
    import flows  # noqa: F401 - Prefect, Dask and the flows imported before the clock starts

    argv = [
        "--mode",
        "all",
        "--data",
        str(args.data),
        "--model",
        args.model,
        "--batch-rows",
        str(args.batch_rows),
        "--test-fraction",
        str(args.test_fraction),
        "--out",
        str(args.out),
        "--state-block",
        args.state_block,
        "--reset",
    ]
    if args.dask_address:
        argv += ["--dask-address", args.dask_address]
    started = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"main.py exited {code}")
    metadata = json.loads((Path(args.out) / "model.json").read_text())
    return _fitted(
        metadata["data"]["rows_read"],
        metadata["rows_trained"],
        seconds,
        metadata["coef"],
        metadata["intercept"],
        own_metrics=metadata["metrics"],
    )


def _fitted(
    rows: int, rows_trained: int, seconds: float, coef: Any, intercept: float, **extra: Any
) -> dict[str, Any]:
    """One training approach's record: the rows it saw and trained on, its time, its fit."""
    return {
        "rows": rows,
        "rows_trained": rows_trained,
        "seconds": seconds,
        "coef": np.asarray(coef, dtype=float).tolist(),
        "intercept": float(intercept),
        **extra,
    }


def raw_read(args: argparse.Namespace) -> dict[str, Any]:
    """The I/O limit: Dask reads the same columns and sums them, no training."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    columns = [*_features(args.data), TARGET]
    kwargs = _cluster_kwargs()
    rows = _rows(args.data)
    started = time.perf_counter()
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        frame = dd.read_parquet(str(args.data / "*.parquet"), columns=columns)
        totals = client.compute(frame.sum()).result()
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": seconds,
        "workers": kwargs["n_workers"],
        "checksum": float(np.nansum(totals.to_numpy())),
    }


def sklearn_in_memory(args: argparse.Namespace) -> dict[str, Any]:
    """scikit-learn ``LinearRegression`` on every complete row, loaded into memory."""
    from sklearn.linear_model import LinearRegression

    features = _features(args.data)
    started = time.perf_counter()
    block = _load_in_memory(args.data, [*features, TARGET])
    complete = np.isfinite(block).all(axis=1)
    x, y = block[complete, :-1], block[complete, -1]
    del block
    model = LinearRegression().fit(x, y)
    seconds = time.perf_counter() - started
    return _fitted(len(complete), int(complete.sum()), seconds, model.coef_, model.intercept_)


def _dask_xy(args: argparse.Namespace):
    import dask.dataframe as dd

    features = _features(args.data)
    frame = dd.read_parquet(str(args.data / "*.parquet"), columns=[*features, TARGET]).dropna()
    array = frame.to_dask_array(lengths=True)
    return array[:, :-1], array[:, -1]


def dask_ml_incremental(args: argparse.Namespace) -> dict[str, Any]:
    """dask-ml ``Incremental(SGDRegressor)`` on features standardised by dask-ml's scaler:
    one ``partial_fit`` per partition (1M rows), in order. The step schedule of ``sgd``
    (scikit-learn's defaults), not averaged: ``SGDRegressor``'s default, what a dask-ml user
    gets (``sgd`` averages its iterates from row 10,000 on: ``--average``)."""
    from dask_ml.preprocessing import StandardScaler
    from dask_ml.wrappers import Incremental
    from distributed import Client, LocalCluster
    from sklearn.linear_model import SGDRegressor

    rows, kwargs = _rows(args.data), _cluster_kwargs()
    started = time.perf_counter()
    with LocalCluster(**kwargs) as cluster, Client(cluster):
        x, y = _dask_xy(args)
        scaler = StandardScaler().fit(x)
        sgd = SGDRegressor(
            penalty="l2",
            alpha=0.0,
            learning_rate="invscaling",
            eta0=0.01,
            power_t=0.25,
            random_state=0,
            average=args.average or False,
        )
        model = Incremental(sgd, scoring=None, shuffle_blocks=False).fit(scaler.transform(x), y)
        weights = np.ravel(model.estimator_.coef_)
        mean, scale = np.asarray(scaler.mean_), np.asarray(scaler.scale_)
        coef = weights / scale
        intercept = float(model.estimator_.intercept_[0] - coef @ mean)
        rows_trained = int(x.shape[0])
    seconds = time.perf_counter() - started
    return _fitted(rows, rows_trained, seconds, coef, intercept)


def dask_ml_linreg(args: argparse.Namespace) -> dict[str, Any]:
    """dask-ml ``LinearRegression`` with its defaults (ADMM solver, L2 penalty C=1): an
    iterative solver, so the data is persisted in the workers' memory first."""
    from dask_ml.linear_model import LinearRegression
    from distributed import Client, LocalCluster

    rows, kwargs = _rows(args.data), _cluster_kwargs()
    started = time.perf_counter()
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        x, y = client.persist(list(_dask_xy(args)))
        model = LinearRegression().fit(x, y)
        coef, intercept = np.asarray(model.coef_), float(model.intercept_)
        rows_trained, solver = int(x.shape[0]), model.solver
    seconds = time.perf_counter() - started
    return _fitted(rows, rows_trained, seconds, coef, intercept, solver=solver)


def spark_mllib(args: argparse.Namespace) -> dict[str, Any]:
    """Spark MLlib ``LinearRegression`` (normal-equation solver, no penalty) on ``local[2]``,
    reading the same shards and dropping rows with a null or NaN. The clock includes the
    session's start (the JVM) and stop, as a user of Spark waits for them."""
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression
    from pyspark.sql import SparkSession

    features, rows = _features(args.data), _rows(args.data)
    # The shards by name: the directory also holds truth.json, which Spark would try to read.
    paths = [str(path) for path in _shards(args.data)]
    started = time.perf_counter()
    builder = SparkSession.builder.master(f"local[{args.spark_cores}]").appName("bench")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("ERROR")
        frame = spark.read.parquet(*paths).select(*features, TARGET).dropna()
        assembled = VectorAssembler(inputCols=features, outputCol="features").transform(frame)
        model = LinearRegression(
            featuresCol="features", labelCol=TARGET, solver="normal", regParam=0.0
        ).fit(assembled)
        coef, intercept = model.coefficients.toArray(), float(model.intercept)
        fitted = time.perf_counter()
        # A second pass over the data, to report the rows trained on: not timed.
        rows_trained, version = frame.count(), spark.version
        counted = time.perf_counter()
    finally:
        spark.stop()
    # The session's stop is timed, as the Dask baselines' cluster close is; the count is not.
    seconds = time.perf_counter() - started - (counted - fitted)
    return _fitted(rows, rows_trained, seconds, coef, intercept, spark=version)


def lstsq_reference(args: argparse.Namespace) -> dict[str, Any]:
    """``numpy.linalg.lstsq`` in memory on exactly the rows ``ols`` trains on: complete rows
    that the project's stable split does not hold out (not timed; the accuracy reference)."""
    from linreg.preprocess import holdout_mask

    features = _features(args.data)
    parts = []
    for path in _shards(args.data):
        block = _load_in_memory_file(path, [*features, TARGET])
        held_out = holdout_mask(path.name, np.arange(len(block)), args.test_fraction)
        parts.append(block[np.isfinite(block).all(axis=1) & ~held_out])
    block = np.concatenate(parts)
    del parts
    x_mean, y_mean = block[:, :-1].mean(axis=0), block[:, -1].mean()
    design = np.empty((len(block), len(features) + 1))
    design[:, 0] = 1.0
    np.subtract(block[:, :-1], x_mean, out=design[:, 1:])
    solution, *_ = np.linalg.lstsq(design, block[:, -1] - y_mean, rcond=None)
    coef = solution[1:]
    return {
        "rows_trained": len(block),
        "coef": coef.tolist(),
        "intercept": float(y_mean + solution[0] - x_mean @ coef),
    }


def _load_in_memory_file(path: Path, columns: list[str]) -> np.ndarray:
    table = pq.read_table(path, columns=columns)
    return np.column_stack([table.column(name).to_numpy() for name in columns])


def learning_curve(args: argparse.Namespace) -> dict[str, Any]:
    """Both models trained batch after batch with the bare domain round (one round per
    batch, as ``train-step`` does), scored on the separate holdout after every batch."""
    from bench.datasets import load_holdout
    from linreg.batches import plan_batches
    from linreg.config import DataConfig, HyperParams
    from linreg.executors import SerialExecutor
    from linreg.state import TrainingState
    from linreg.training import RoundSpec, train_batches
    from linreg.validation import validate_source

    x_hold, y_hold, _ = load_holdout(args.holdout)
    total = float(np.sum((y_hold - y_hold.mean()) ** 2))
    data = DataConfig(source=str(args.data), batch_rows=args.batch_rows)
    plan = validate_source(data)
    curves = {}
    for model in ("ols", "sgd"):
        hyperparams = HyperParams(model=model)
        state = TrainingState.fresh(data.source, list(plan.features), plan.target, model)
        points = []
        while batches := plan_batches(plan.files, state.cursor, data.batch_rows, 1):
            trained = train_batches(
                state,
                plan,
                batches,
                RoundSpec(hyperparams, data.batch_rows, args.test_fraction),
                SerialExecutor(),
            )
            state = trained.state
            residual = y_hold - (x_hold @ trained.estimator.coef_ + trained.estimator.intercept_)
            sse = float(residual @ residual)
            points.append(
                {
                    "batch": state.batches_trained,
                    "rows_trained": state.rows_trained,
                    "r2": 1.0 - sse / total,
                    "rmse": float(np.sqrt(sse / len(y_hold))),
                    "own_r2": trained.metrics["r2"],
                }
            )
        curves[model] = points
    return {"batch_rows": args.batch_rows, "curves": curves}


APPROACHES = {
    "project": project,
    "raw-read": raw_read,
    "sklearn": sklearn_in_memory,
    "dask-ml-incremental": dask_ml_incremental,
    "dask-ml-linreg": dask_ml_linreg,
    "spark-mllib": spark_mllib,
    "lstsq-reference": lstsq_reference,
    "learning-curve": learning_curve,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark approach in this process.")
    parser.add_argument("approach", choices=sorted(APPROACHES))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--holdout", type=Path)
    parser.add_argument("--model", choices=["ols", "sgd"], default="ols")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--state-block", default="bench")
    parser.add_argument("--dask-address")
    parser.add_argument("--spark-cores", type=int, default=2)
    parser.add_argument(
        "--average", type=int, default=0, help="dask-ml-incremental: SGDRegressor's average"
    )
    args = parser.parse_args(argv)
    # Third-party chatter (dask-ml's and Dask's warnings) is not the benchmark's output.
    warnings.simplefilter("ignore")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    emit(APPROACHES[args.approach](args))


if __name__ == "__main__":
    main()
