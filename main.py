"""Local entry point: ``python main.py --mode all|single``.

Runs the ``train-all`` or ``train-step`` flow on an embedded Prefect server (SQLite under
``.prefect/`` in this directory) unless ``PREFECT_API_URL`` points at a real one, with tasks on
a local Dask cluster unless ``--dask-address`` names a scheduler. Bad input prints one line on
stderr and exits 2; the saved state and the published model are left as they were.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a linear regression incrementally with Prefect on Dask.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=["all", "single", "serve", "validate"],
        default="all",
        help="all: every remaining batch (train-all); single: one batch (train-step); "
        "serve: serve both flows from this process, train-step on --cron (needs a Prefect "
        "server); validate: only check the data (no Prefect, nothing written)",
    )
    parser.add_argument(
        "--data",
        help="CSV/Parquet file, directory, glob or fsspec URL "
        "(default: the sample data set, made if missing)",
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option of s3://, gs://, az:// --data and --out, repeatable "
        "(e.g. endpoint_url=http://127.0.0.1:9000); credentials: the standard variables",
    )
    parser.add_argument("--target", default="target", help="column to predict")
    parser.add_argument(
        "--features",
        help="comma-separated feature columns (default: every numeric column but the target)",
    )
    parser.add_argument("--model", choices=["sgd", "ols"], default="sgd")
    parser.add_argument("--alpha", type=float, default=0.0, help="L2 penalty (ridge for ols)")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows per batch")
    parser.add_argument(
        "--n-iter", type=int, help="batches to train in --mode all (default: all remaining)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds between batches in --mode all"
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of rows held out for evaluation"
    )
    parser.add_argument(
        "--out",
        help="output directory of model.pkl and model.json "
        "(default: $LINREG_OUT_DIR or ./artifacts)",
    )
    parser.add_argument(
        "--state-block",
        help="name of the Prefect block holding the state "
        "(default: $LINREG_STATE_BLOCK or linreg-state)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="start a new model instead of resuming the saved state"
    )
    parser.add_argument(
        "--cron", default="*/10 * * * *", help="--mode serve: cron schedule (UTC) of train-step"
    )
    parser.add_argument(
        "--dask-address",
        help="scheduler of an existing Dask cluster (default: $LINREG_DASK_ADDRESS or a local one)",
    )
    return parser.parse_args(argv)


def configure_environment() -> None:
    """Embedded Prefect under the project, nothing sent to the internet. Must run before
    Prefect is imported, which reads its settings at import time."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(PROJECT_DIR / ".prefect"))
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def route_console_logs_to_stdout() -> None:
    """Run logs are output, not errors: stderr is kept for the one-line error message."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setStream(sys.stdout)
                handler.console.file = sys.stdout


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment()

    from linreg.config import DataConfig, HyperParams, Settings, parse_storage_options
    from linreg.errors import DataError, ModelFileError, StateError
    from linreg.state import check_state_name
    from linreg.synthetic import write_dataset

    settings = Settings.from_env()
    try:
        source = args.data or _sample_data(settings.sample_dir, write_dataset)
        data = DataConfig(
            source=source,
            target=args.target,
            features=[name.strip() for name in args.features.split(",")] if args.features else None,
            batch_rows=args.batch_rows,
            test_fraction=args.test_fraction,
            storage_options=parse_storage_options(args.storage_option),
        )
        hyperparams = HyperParams(model=args.model, alpha=args.alpha)
        if args.n_iter is not None and args.n_iter < 1:
            raise ValueError("--n-iter must be at least 1")
        if args.delay < 0:
            raise ValueError("--delay must not be negative")
        state_block = check_state_name(args.state_block or settings.state_block)
    except (ValueError, StateError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.mode == "validate":
        return _validate(data)

    if args.dask_address:
        os.environ["LINREG_DASK_ADDRESS"] = args.dask_address  # also for --mode serve
    from flows import train_all, train_step
    from tasks.runtime import dask_task_runner

    route_console_logs_to_stdout()
    out_dir = args.out or settings.out_dir
    runner = dask_task_runner(args.dask_address)
    common = {
        "data": data,
        "hyperparams": hyperparams,
        "out_dir": out_dir,
        "state_block": state_block,
        "reset": args.reset,
    }
    if args.mode == "serve":
        return _serve(train_all, train_step, common, args.cron)
    try:
        if args.mode == "all":
            result = train_all.with_options(task_runner=runner)(
                **common, n_iter=args.n_iter, delay=args.delay
            )
        else:
            result = train_step.with_options(task_runner=runner)(**common)
    except (DataError, StateError, ModelFileError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - the flow's logs hold the traceback
        print(
            f"error: training failed: {type(error).__name__}: {_one_line(error)}", file=sys.stderr
        )
        return EXIT_FAILED
    _print_result(result, out_dir)
    return 0


def _validate(data) -> int:
    from linreg.errors import DataError
    from linreg.validation import validate_source

    try:
        plan = validate_source(data)
    except DataError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{data.source}: {len(plan.files)} file(s), {plan.n_rows:,} rows; features "
        f"{', '.join(plan.features)}; target {plan.target}"
    )
    return 0


def _serve(train_all, train_step, parameters: dict, cron: str) -> int:
    """Background training: this process serves both flows, train-step on a cron schedule;
    runs started from the UI or `prefect deployment run` execute here, no worker needed."""
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: --mode serve needs a Prefect server for its schedule: run `make server` "
            "and set PREFECT_API_URL=http://127.0.0.1:4200/api",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from prefect import serve
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    plain = {
        **parameters,
        "data": parameters["data"].model_dump(),
        "hyperparams": parameters["hyperparams"].model_dump(),
    }
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    serve(
        train_step.to_deployment(
            name="served", cron=cron, parameters=plain, concurrency_limit=one_at_a_time
        ),
        train_all.to_deployment(name="served", parameters=plain, concurrency_limit=one_at_a_time),
    )
    return 0


def _sample_data(sample_dir: str, write_dataset) -> str:
    path = Path(sample_dir)
    if not path.is_absolute():
        path = PROJECT_DIR / path
    if not any(path.glob("*.parquet")):
        write_dataset(path, n_rows=200_000, n_features=8, shard_rows=20_000)
        print(f"wrote the sample data set: 200,000 rows in 10 Parquet shards under {path}")
    return str(path)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _print_result(result: dict, out_dir: str) -> None:
    out = out_dir.rstrip("/") if "://" in out_dir else Path(out_dir).resolve()
    if result.get("trained"):
        metrics = result.get("metrics") or {}
        r2 = metrics.get("r2")
        print(
            f"model version {result['version']}: {result['rows_trained']:,} rows trained, "
            f"held-out R² {r2 if r2 is None else round(r2, 6)}"
        )
    else:
        print(f"nothing new to train: model version {result['version']} stays current")
    print(f"model: {out}/model.pkl (metadata: {out}/model.json)")
    if os.environ.get("PREFECT_API_URL"):
        print(f"Prefect UI: {os.environ['PREFECT_API_URL'].removesuffix('/api')}")
    else:
        print(
            "Prefect UI: run `make server`, then open http://127.0.0.1:4200 "
            "(it shows these runs, kept in .prefect/)"
        )


if __name__ == "__main__":
    sys.exit(main())
