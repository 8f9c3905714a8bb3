"""Local entry point: ``python main.py --mode all|single``.

Runs the ``train-all`` or ``train-step`` flow on the Prefect server of ``PREFECT_API_URL``,
else on the local server of ``--mode server-start`` if it runs, else on a temporary one
(SQLite in the Prefect home, ``.prefect/`` here by default). A round's batches run in this
process when it is small, else on a local Dask cluster or the scheduler of ``--dask-address``.
Bad input (options, data, ``--out``) is refused before Prefect starts: one line on stderr,
exit 2, the saved state and the published model left as they were.
"""

from __future__ import annotations

import argparse
import codecs
import ctypes
import ctypes.util
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cli.local_server import CallServer

PROJECT_DIR = Path(__file__).resolve().parent
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def share_one_malloc_arena() -> bool:
    """Make every thread that starts from now on allocate from glibc's main arena, as
    ``MALLOC_ARENA_MAX=1`` would (prefect.yaml and the image set it for deployment runs);
    False where the C library is not glibc, which is left as it is.

    Each worker thread of the in-process Dask cluster otherwise gets an arena of its own that
    keeps what its batches freed: a 10M-row sgd run peaked at 672 MiB against 558 MiB for 1M
    rows; with one arena 615 against 561 MiB, in the same time (20.6 against 21.3 s). ols
    is unchanged (its peak is two batches read at once). Arenas that exist stay, so this runs
    while the process has one thread.
    """
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    return bool(mallopt and mallopt(_M_ARENA_MAX, 1) == 1)


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's default once: from its help text if it says one, else appended."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a linear regression incrementally with Prefect on Dask.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=[
            *["all", "single", "serve", "validate", "server-start", "server-stop"],
            *LIFECYCLE_MODES,
            "predict",
        ],
        default="all",
        help="all: every remaining batch (train-all); single: one batch (train-step); "
        "serve: serve both flows from this process, train-step on --cron (needs a Prefect "
        "server); validate: only check the data (no Prefect, nothing written); "
        "server-start / server-stop: a local Prefect server (SQLite in the Prefect home, "
        "127.0.0.1:$PREFECT_PORT or 4200) that later calls use instead of starting a "
        "temporary one each; " + LIFECYCLE_HELP + "; " + PREDICT_HELP,
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
    parser.add_argument(
        "--weight",
        metavar="COL",
        help="column of sample weights (finite, >= 0): weighted least squares for ols, "
        "sample_weight for sgd; never a feature",
    )
    parser.add_argument(
        "--categorical",
        metavar="COL[,COL...]",
        help="comma-separated columns one-hot encoded as features named column=level "
        "(treatment coding: the first level in sorted order is the reference)",
    )
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME",
        help="one feature column, repeatable; for names with commas or any other character",
    )
    parser.add_argument(
        "--csv-delimiter",
        help="CSV field delimiter (default: detected from the header among , ; tab |)",
    )
    parser.add_argument("--csv-decimal", default=".", help="CSV decimal mark, e.g. ','")
    parser.add_argument("--csv-thousands", help="CSV thousands separator in numbers, e.g. '.'")
    parser.add_argument(
        "--csv-encoding",
        help="CSV text encoding, e.g. cp1252 or latin-1 (default: UTF-8, or UTF-16 when the "
        "file starts with its byte-order mark)",
    )
    parser.add_argument(
        "--na-values",
        help="comma-separated CSV tokens that mean missing, added to the usual empty, NA, "
        "N/A, NaN, null (e.g. '-,?')",
    )
    parser.add_argument(
        "--model",
        choices=["sgd", "ols"],
        default="sgd",
        help="sgd: SGDRegressor on running-standardised features; ols: exact least squares "
        "(ridge with --alpha) from mergeable QR statistics",
    )
    parser.add_argument("--alpha", type=float, default=0.0, help="L2 penalty (ridge for ols)")
    parser.add_argument(
        "--average",
        type=int,
        metavar="ROWS",
        help="sgd: average the iterates from this training row on (averaged SGD); 0 for "
        "plain SGD's last iterate, which follows drifting data faster (default 10000)",
    )
    parser.add_argument(
        "--no-intercept",
        action="store_true",
        help="fit through the origin (intercept 0), both models",
    )
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows per batch")
    parser.add_argument(
        "--n-iter", type=int, help="batches to train in --mode all (default: all remaining)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds between batches in --mode all"
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        default=1,
        help="batches one --mode single (or serve) round trains at most: a backlog is caught "
        "up in one round and one publish",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="--mode single (or serve): start no new batch after this many seconds of the "
        "round (the first always runs, batches started finish) (default: no limit)",
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
        "--quiet", action="store_true", help="print errors only: no run logs, no progress bar"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the run's summary (version, rows, metrics, paths) as one JSON object on "
        "stdout, nothing else (errors still go to stderr)",
    )
    parser.add_argument(
        "--dask-address",
        default=os.environ.get("LINREG_DASK_ADDRESS") or None,
        help="scheduler of an existing Dask cluster (default: $LINREG_DASK_ADDRESS, else a "
        "local cluster when the round needs one)",
    )
    parser.add_argument(
        "--dask-workers",
        type=int,
        default=int(os.environ.get("LINREG_DASK_WORKERS", "2")),
        help="workers of the local Dask cluster (default: $LINREG_DASK_WORKERS or 2)",
    )
    parser.add_argument(
        "--executor",
        choices=["auto", "serial", "dask"],
        default="auto",
        help="where batches run: auto picks this process for a round of up to 2,000,000 rows "
        "(faster than starting a cluster) and Dask above it",
    )
    add_lifecycle_options(parser)
    add_predict_options(parser)
    return parser.parse_args(argv)


# The model lifecycle (linreg/lifecycle.py): modes and options in one block.
LIFECYCLE_MODES = ["rollback", "promote", "history", "skip"]
LIFECYCLE_HELP = (
    "rollback: make --to N (default: the version live before the current) live and pin it; "
    "promote: make --to N (default: the newest) live and unpin; history: print what was "
    "live when; skip: move the cursor past the next batch without training it"
)


def add_lifecycle_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model lifecycle")
    group.add_argument("--to", type=int, help="--mode rollback/promote: the version to make live")
    group.add_argument(
        "--keep-versions",
        type=int,
        default=20,
        help="published versions kept under --out/versions (the live and pinned ones always)",
    )
    group.add_argument(
        "--gate-rmse-increase",
        type=float,
        default=0.10,
        help="quality gate: refuse a new version whose held-out RMSE exceeds the live "
        "model's by more than this fraction, on the rows the live model was judged on",
    )
    group.add_argument(
        "--force", action="store_true", help="publish a new version even if the gate refuses"
    )


def check_lifecycle_options(args: argparse.Namespace) -> None:
    if args.keep_versions < 1:
        raise ValueError(f"--keep-versions must be at least 1 (got {args.keep_versions})")
    if not args.gate_rmse_increase >= 0:
        raise ValueError(
            f"--gate-rmse-increase must not be negative (got {args.gate_rmse_increase})"
        )
    if args.to is not None and args.to < 1:
        raise ValueError(f"--to must be a version number, at least 1 (got {args.to})")


# Batch scoring (linreg/scoring.py): --mode predict and its options in one block.
PREDICT_HELP = (
    "predict: score --data with the model published in --out (the live one, or --version N) "
    "into Parquet shards under --predictions (no Prefect; Dask for large data)"
)


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch scoring (--mode predict)")
    group.add_argument(
        "--predictions",
        metavar="DIR",
        help="directory or object-store URL of the prediction shards (part-NNNNN.parquet: "
        "file, row, prediction and the kept columns; _scoring.json last); required by predict",
    )
    group.add_argument(
        "--version",
        type=int,
        help="score with the kept version N under --out/versions (default: the live model)",
    )
    group.add_argument(
        "--keep-columns",
        metavar="A,B",
        help="comma-separated columns of --data copied beside each prediction (e.g. an id)",
    )


def run_predict_mode(args: argparse.Namespace) -> int:
    """--mode predict: in this process for small data, on Dask above serial_max_rows (or
    with --dask-address); no Prefect, so it runs while the Prefect server is down."""
    import time

    from linreg.config import DataConfig, Settings, parse_storage_options
    from linreg.errors import ModelFileError
    from linreg.scoring import check_predictions, load_scorer, plan_scoring, run_scoring
    from linreg.validation import csv_format

    started = time.perf_counter()
    quiet = args.quiet or args.json
    try:
        if not args.predictions:
            raise ValueError("--mode predict needs --predictions DIR (where the shards go)")
        if args.version is not None and args.version < 1:
            raise ValueError(f"--version must be at least 1 (got {args.version})")
        check_options(args)
        if args.dask_address:
            check_scheduler(args.dask_address)
        options = parse_storage_options(args.storage_option)
        out_dir = args.out or Settings.from_env().out_dir
        scorer = load_scorer(out_dir, args.version, options)
        keep = [name.strip() for name in (args.keep_columns or "").split(",") if name.strip()]
        source = args.data or Settings.from_env().sample_dir
        csv = csv_format(DataConfig(source=source, **csv_options(args)))
        plan = plan_scoring(source, scorer, keep, args.batch_rows, csv, options)
        check_predictions(args.predictions, options)  # before a cluster starts
        dask = args.executor == "dask" or (
            args.executor == "auto" and (args.dask_address or plan.n_rows > SERIAL_MAX_ROWS)
        )
        if not quiet:
            where = "on Dask" if dask else "in this process"
            print(
                f"{source}: {len(plan.files)} file(s), {plan.n_rows:,} rows in "
                f"{len(plan.batches)} batch(es) {where}; model version {scorer.version} "
                f"from {out_dir}"
            )
        with _scoring_client(args, dask) as client:
            summary = run_scoring(plan, scorer, args.predictions, options, client)
    except (ValueError, ModelFileError) as error:  # DataError is a ValueError
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - one line, not a traceback
        print(f"error: scoring failed: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    result = {**summary.to_dict(), "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(result))
    elif not quiet:
        missing = ", ".join(f"{k} {v:,}" for k, v in summary.missing_by_column.items())
        print(
            f"scored {summary.rows:,} rows with model version {summary.model_version}: "
            f"{summary.rows_scored:,} predictions, {summary.rows_null:,} null"
            + (f" (missing or non-finite: {missing})" if missing else "")
        )
        if summary.unknown_levels:
            unknown = ", ".join(f"{k} {v:,}" for k, v in summary.unknown_levels.items())
            print(f"  unknown category levels (scored as the reference level): {unknown}")
        print(f"predictions: {len(summary.shards)} shard(s) in {args.predictions}")
    return 0


# As training's RuntimeConfig.serial_max_rows: below it a cluster takes longer to start.
SERIAL_MAX_ROWS = 2_000_000


@contextmanager
def _scoring_client(args: argparse.Namespace, dask: bool) -> Iterator[Any]:
    """A Dask client for --mode predict (None: score in this process): the scheduler of
    --dask-address, else a local cluster of --dask-workers worker threads in this process
    (reading, predicting and writing release the GIL), as training's."""
    if not dask:
        yield None
        return
    from distributed import Client, LocalCluster

    if args.dask_address:
        with Client(args.dask_address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=args.dask_workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_training_flow(args: argparse.Namespace, common: dict):
    """--mode all, single or skip: the flow's result."""
    from flows import skip_batch, train_all, train_step
    from linreg.lifecycle import LifecycleConfig

    if args.mode == "skip":
        return skip_batch(**{key: value for key, value in common.items() if key != "reset"})
    lifecycle = LifecycleConfig(
        keep_versions=args.keep_versions,
        gate_rmse_increase=args.gate_rmse_increase,
        force=args.force,
    )
    if args.mode == "all":
        return train_all(**common, n_iter=args.n_iter, delay=args.delay, lifecycle=lifecycle)
    return train_step(**common, lifecycle=lifecycle, **_budget(args))


def _budget(args: argparse.Namespace) -> dict:
    """train-step's catch-up budget: --max-batches, --max-seconds."""
    return {"max_batches": args.max_batches, "max_seconds": args.max_seconds}


def run_lifecycle_mode(args: argparse.Namespace) -> int:
    """--mode rollback, promote or history, after checking their options."""
    from linreg.config import Settings, parse_storage_options

    try:
        check_lifecycle_options(args)
        options = parse_storage_options(args.storage_option)
    except ValueError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_lifecycle(args, args.out or Settings.from_env().out_dir, options)


def run_lifecycle(args: argparse.Namespace, out_dir: str, storage_options: dict) -> int:
    """rollback, promote, history: the files under --out only, in this process (no Prefect:
    a rollback works while the Prefect server is down). Refusals exit 2, nothing changed."""
    from linreg import lifecycle
    from linreg.errors import ModelFileError
    from linreg.model_files import ModelDirectory

    directory = ModelDirectory(out_dir, storage_options)
    try:
        if args.mode == "history":
            records = lifecycle.read_history(directory)
            if not records:
                print(f"no history in {out_dir} yet")
                return 0
            print(lifecycle.format_table(lifecycle.history_rows(records)))
            return 0
        change = lifecycle.rollback if args.mode == "rollback" else lifecycle.promote
        record = change(directory, args.to)
    except ModelFileError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    pinned = "; pinned: new versions stay out of service until --mode promote"
    print(
        f"{args.mode}: model version {record['live_version']} is live in {out_dir} "
        f"(was {record['previous_version']}){pinned if args.mode == 'rollback' else ''}"
    )
    return 0


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or PROJECT_DIR / ".prefect")


# Nothing sent to the internet; Dask's own log lines are for errors only.
CALL_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DASK_LOGGING__DISTRIBUTED": "error",
}


def call_environment(environ: dict[str, str], home: Path, api_url: str) -> dict[str, str]:
    """The environment a call on the local server at ``api_url`` runs with (what
    :func:`configure_environment` makes of ``environ``): the warm runner compares it with
    its own."""
    configured = {**CALL_DEFAULTS, **environ, "PREFECT_HOME": str(home)}
    configured.setdefault("PREFECT_API_URL", api_url)
    return configured


def run_in_warm_runner(argv: list[str]) -> int | None:
    """A training call on the local server goes to its warm runner (``cli.warm``), which
    has Prefect, scikit-learn and Dask imported: the exit code, or None to run here (no
    runner, or one that cannot take this call)."""
    from cli import local_server, warm

    if (
        os.environ.get("PREFECT_API_URL")
        or os.environ.get(warm.CHILD_FLAG)
        or os.environ.get("LINREG_WARM_RUNNER") == "0"  # opted out: run in this process
    ):
        return None

    home = prefect_home()
    found = local_server.running_runner(home)
    if not found:
        return None
    api_url, path = found
    return warm.run_in_runner(argv, call_environment(dict(os.environ), home, api_url), path)


def configure_environment(mode: str) -> tuple[str, CallServer | None]:
    """Which Prefect server this call uses, nothing sent to the internet; a line saying so,
    and the server started for this call if there is one (wait for it before the flow runs).
    Must run before Prefect is imported, which reads its settings at import time.

    ``PREFECT_API_URL`` if set; else the local server of ``--mode server-start`` if it runs
    (no start-up cost); else a server for this call (SQLite in the Prefect home), started now
    so that it boots while this process imports the flows.
    """
    from cli.local_server import CallServer, running_server
    from cli.warm import CHILD_FLAG

    for key, value in CALL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get(CHILD_FLAG):  # forked by the local server's warm runner
        local = os.environ["PREFECT_API_URL"]
        return (
            f"Prefect server: the local one at {local}, in its warm runner (pid "
            f"{os.getppid()}) (`--mode server-stop` stops both)",
            None,
        )
    if os.environ.get("PREFECT_API_URL"):
        return f"Prefect server: {os.environ['PREFECT_API_URL']} (PREFECT_API_URL)", None
    home = prefect_home()
    os.environ["PREFECT_HOME"] = str(home)
    local = running_server(home)
    if local:
        os.environ["PREFECT_API_URL"] = local
        return f"Prefect server: the local one at {local} (`--mode server-stop` stops it)", None
    if mode == "serve":
        return "Prefect server: none", None  # --mode serve refuses to run without one
    server = CallServer(home)
    os.environ["PREFECT_API_URL"] = server.api_url
    # Every run on a server of this call's own is on this host: the OS file lock serialises
    # them (as with Prefect's temporary server), with no SQLite write-lock retries.
    os.environ.setdefault("LINREG_LOCK_BACKEND", "file")
    return (
        f"Prefect server: a temporary one for this call, runs kept in {home} "
        "(`python main.py --mode server-start` keeps one running, so calls start in seconds)",
        server,
    )


def route_console_logs_to_stdout() -> None:
    """Run logs are output, not errors: stderr is kept for the one-line error message."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setStream(sys.stdout)
                handler.console.file = sys.stdout


def check_options(args: argparse.Namespace) -> None:
    """Option ranges, each refused in one line naming the option (before anything starts)."""
    limits = [
        ("--batch-rows", args.batch_rows, args.batch_rows >= 1, "must be at least 1"),
        ("--test-fraction", args.test_fraction, 0 <= args.test_fraction < 1, "must be in [0, 1)"),
        ("--alpha", args.alpha, args.alpha >= 0, "must not be negative"),
        ("--average", args.average, args.average is None or args.average >= 0, "must be >= 0"),
        ("--n-iter", args.n_iter, args.n_iter is None or args.n_iter >= 1, "must be at least 1"),
        ("--delay", args.delay, args.delay >= 0, "must not be negative"),
        ("--max-batches", args.max_batches, args.max_batches >= 1, "must be at least 1"),
        (
            "--max-seconds",
            args.max_seconds,
            args.max_seconds is None or 0 < args.max_seconds < float("inf"),
            "must be a positive number of seconds",
        ),
        ("--dask-workers", args.dask_workers, args.dask_workers >= 1, "must be at least 1"),
    ]
    for option, value, ok, rule in limits:
        if not ok:
            raise ValueError(f"{option} {rule} (got {value})")


def _features(args: argparse.Namespace) -> list[str] | None:
    names = [name.strip() for name in args.features.split(",")] if args.features else []
    names += args.feature
    return names or None


def csv_options(args: argparse.Namespace) -> dict[str, Any]:
    """The CSV options of the command line, as :class:`DataConfig` fields (each checked)."""
    for option, value in (
        ("--csv-decimal", args.csv_decimal),
        ("--csv-thousands", args.csv_thousands),
    ):
        if value is not None and len(value) != 1:
            raise ValueError(f"{option} must be one character (got {value!r})")
    return {
        "csv_delimiter": _delimiter(args.csv_delimiter),
        "csv_decimal": args.csv_decimal,
        "csv_thousands": args.csv_thousands,
        "csv_encoding": _encoding(args.csv_encoding),
        "na_values": [token for token in (args.na_values or "").split(",") if token],
    }


def _delimiter(value: str | None) -> str | None:
    if value is None:
        return None
    value = {"tab": "\t", "\\t": "\t"}.get(value, value)
    if len(value) != 1:
        raise ValueError(f"--csv-delimiter must be one character (or 'tab'), got {value!r}")
    return value


def _encoding(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"--csv-encoding: unknown encoding {value!r}") from None
    return value


def check_scheduler(address: str, timeout: float = 3.0) -> None:
    """``--dask-address`` must accept a connection within seconds, not after Prefect and the
    flow have started and Dask's own 30-s connect timeout has run out."""
    target = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = target.port or 8786
        with socket.create_connection((target.hostname or "", port), timeout=timeout):
            pass
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ValueError(
            f"--dask-address {address}: cannot connect within {timeout:.0f} s ({reason})"
        ) from None


def check_out_dir(out_dir: str) -> None:
    """``--out`` must be a directory this process can write (made if missing)."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--out {out_dir}: not writable ({error.strerror})") from None


def run_inputs(args: argparse.Namespace) -> tuple:
    """The run's data, hyper-parameters, state block and output directory, from the
    options; a ValueError or StateError names the first bad one."""
    from linreg.config import DataConfig, HyperParams, Settings, parse_storage_options
    from linreg.state import check_state_name
    from linreg.synthetic import write_dataset

    settings = Settings.from_env()
    check_options(args)
    source = args.data or _sample_data(settings.sample_dir, write_dataset)
    data = DataConfig(
        source=source,
        target=args.target,
        features=_features(args),
        weight=args.weight,
        categorical=[name.strip() for name in (args.categorical or "").split(",") if name.strip()],
        **csv_options(args),
        batch_rows=args.batch_rows,
        test_fraction=args.test_fraction,
        storage_options=parse_storage_options(args.storage_option),
    )
    averaging = {} if args.average is None else {"average": args.average}
    hyperparams = HyperParams(
        model=args.model, alpha=args.alpha, fit_intercept=not args.no_intercept, **averaging
    )
    state_block = check_state_name(args.state_block or settings.state_block)
    out_dir = args.out or settings.out_dir
    if args.mode != "validate" and "://" not in out_dir:
        check_out_dir(out_dir)
    if args.mode in ("all", "single") and args.dask_address:
        check_scheduler(args.dask_address)
    return data, hyperparams, state_block, out_dir


def main(argv: list[str] | None = None) -> int:
    share_one_malloc_arena()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.mode in ("server-start", "server-stop"):
        return _local_server(args.mode)
    if args.mode in ("all", "single", "skip"):
        code = run_in_warm_runner(argv)
        if code is not None:
            return code

    from linreg.errors import StateError

    if args.mode in ("rollback", "promote", "history", "predict"):
        # No Prefect: these work while the Prefect server is down.
        return (run_predict_mode if args.mode == "predict" else run_lifecycle_mode)(args)
    # A server for this call (when none runs) boots on the other core from now on, while the
    # options and the data are checked (~0.4 s); bad input stops it again at once.
    server_line, call_server = (
        configure_environment(args.mode) if args.mode != "validate" else ("", None)
    )
    try:
        check_lifecycle_options(args)
        data, hyperparams, state_block, out_dir = run_inputs(args)
    except (ValueError, StateError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return _stopped(call_server, EXIT_BAD_INPUT)
    # Everything checkable without Prefect or Dask is checked first: bad input fails in the
    # time of --mode validate, not after the flow and a cluster have started.
    quiet = args.quiet or args.json
    status = _validate(data, quiet=quiet and args.mode != "validate")
    if status or args.mode == "validate":
        return _stopped(call_server, status)
    if not quiet:
        print(server_line)

    from flows import train_all, train_step
    from tasks.runtime import RuntimeConfig

    route_console_logs_to_stdout()
    # On a terminal, a progress bar instead of a log line per batch (the logs still reach
    # the Prefect UI); --quiet/--json: no console logs at all.
    bar = not quiet and sys.stdout.isatty() and args.mode != "serve"
    if quiet or bar:
        # --json's stdout is the one JSON object; --quiet's errors are this call's own line
        # on stderr: not even Prefect's warnings at exit ("Still processing items...").
        quiet_console_logs(logging.CRITICAL + 1 if quiet else logging.WARNING)
    common = {
        "data": data,
        "hyperparams": hyperparams,
        "out_dir": out_dir,
        "state_block": state_block,
        "reset": args.reset,
        "runtime": RuntimeConfig(
            executor=args.executor,
            dask_address=args.dask_address,
            dask_workers=args.dask_workers,
        ),
    }
    if args.mode == "serve":
        return _serve(train_all, train_step, common, args.cron, _budget(args))
    return _train(args, common, call_server, quiet, bar)


def _stopped(call_server: CallServer | None, code: int) -> int:
    if call_server:
        call_server.stop()
    return code


def _train(args, common: dict, call_server: CallServer | None, quiet: bool, bar: bool) -> int:
    """Run the mode's flow (once this call's own server answers); print its result; the
    exit code."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from linreg.errors import DataError, ModelFileError, StateError

    out_dir, state_block = common["out_dir"], common["state_block"]
    try:
        if call_server:
            call_server.wait_ready()
        # Prefect's own flow heartbeats off: its sync engine joins their thread at the end of
        # every run, and the thread sleeps in 1-s steps (~0.5 s a call). The flows send the
        # same events themselves then (tasks.runtime.heartbeats_unless_prefect_sends_them), so
        # the crash-detection automation still finds a killed call's run.
        with (
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
            _progress(bar),
        ):
            result = run_training_flow(args, common)
    except (DataError, StateError, ModelFileError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - the flow's logs hold the traceback
        print(
            f"error: training failed: {type(error).__name__}: {_one_line(error)}", file=sys.stderr
        )
        return EXIT_FAILED
    if args.mode == "skip":
        _print_skip(result, quiet, args.json)
    elif args.json:
        print(json.dumps(_summary(result, out_dir, state_block)))
    elif not quiet:
        _print_result(result, out_dir, ui=call_server is None)
    return 0


def _print_skip(result, quiet: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"skipped": result.batch, "rows": result.rows, "version": result.version}))
        return
    if quiet:
        return
    print(
        f"skipped {result.batch} ({result.rows:,} rows) untrained; model version "
        f"{result.version} stays"
        if result.batch
        else f"nothing to skip: every batch is trained (model version {result.version})"
    )


def _progress(enabled: bool):
    from contextlib import ExitStack

    from cli.progress import RoundProgress
    from linreg.training import batch_listener

    stack = ExitStack()
    if enabled:
        progress = stack.enter_context(RoundProgress())
        stack.enter_context(batch_listener(progress))
    return stack


def _summary(result, out_dir: str, state_block: str) -> dict:
    """What ``--json`` prints: what a script needs to know of the run."""
    out = out_dir.rstrip("/") if "://" in out_dir else str(Path(out_dir).resolve())
    return {
        "trained": result.trained,
        "version": result.version,
        "batches": result.batches,
        "rows_trained": result.rows_trained,
        "metrics": result.metrics,
        "sha256": result.sha256,
        "model": f"{out}/model.pkl",
        "metadata": f"{out}/model.json",
        "state_block": state_block,
        "prefect_api_url": os.environ.get("PREFECT_API_URL"),
    }


def quiet_console_logs(level: int) -> None:
    """Console logs below ``level`` off (the Prefect UI still gets every run log)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(level)


def _validate(data, quiet: bool = False) -> int:
    from linreg.errors import DataError
    from linreg.validation import validate_source

    try:
        plan = validate_source(data)
    except DataError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if quiet:
        return 0
    print(
        f"{data.source}: {len(plan.files)} file(s), {plan.n_rows:,} rows; features "
        f"{', '.join(plan.features)}; target {plan.target}"
    )
    for name, reason in plan.excluded_columns.items():
        print(f"  not a feature: '{name}', {reason}")
    return 0


def _serve(train_all, train_step, parameters: dict, cron: str, budget: dict) -> int:
    """Background training: this process serves both flows, train-step on a cron schedule;
    runs started from the UI or `prefect deployment run` execute here, no worker needed."""
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: --mode serve needs a Prefect server for its schedule: run "
            "`python main.py --mode server-start` (or `make server` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    import asyncio

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.runner import Runner

    class QuietlyStoppingRunner(Runner):
        """``prefect.serve``'s runner, but SIGTERM leaves through ``SystemExit``: Prefect's own
        handler calls the sync ``stop()`` inside the running loop, which only makes a coroutine
        ('Runner.astop' was never awaited); the runner's ``async with`` shuts down on exit."""

        def handle_sigterm(self, *args, **kwargs) -> None:  # noqa: ARG002 - a signal handler
            self._logger.info("SIGTERM received, shutting down...")
            sys.exit(0)

    plain = {
        **parameters,
        "data": parameters["data"].model_dump(),
        "hyperparams": parameters["hyperparams"].model_dump(),
        "runtime": parameters["runtime"].model_dump(),
    }
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    runner = QuietlyStoppingRunner()
    runner.add_deployment(
        train_step.to_deployment(
            name="served",
            cron=cron,
            parameters={**plain, **budget},
            concurrency_limit=one_at_a_time,
        )
    )
    runner.add_deployment(
        train_all.to_deployment(name="served", parameters=plain, concurrency_limit=one_at_a_time)
    )
    print("serving train-step/served (cron " + cron + ") and train-all/served; Ctrl-C stops")
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        print("stopped")
    return 0


def _local_server(mode: str) -> int:
    from cli import local_server

    home = prefect_home()
    if mode == "server-stop":
        pid = local_server.stop(home)
        print(f"stopped the local Prefect server (pid {pid})" if pid else "no local server runs")
        return 0
    try:
        api_url, started = local_server.start(home, int(os.environ.get("PREFECT_PORT", "4200")))
    except RuntimeError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    ui = api_url.removesuffix("/api")
    print(
        f"{'started' if started else 'already running'}: the local Prefect server at {ui} "
        f"(SQLite in {home}); later calls use it; `python main.py --mode server-stop` stops it"
    )
    # Once per server, so that `make run` does not pay for Prefect's client each time; a
    # server started before the automation existed gets it at its next server-start.
    if not local_server.setup_done(home, "crash-detection") and _ensure_crash_detection(api_url):
        local_server.record_setup_done(home, "crash-detection")
    return 0


def _ensure_crash_detection(api_url: str) -> bool:
    """The automation that marks runs Crashed when their heartbeats stop, unless the server
    has it; False if that failed. Without it the server still works: a warning, not a
    failure."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.crash_detection import ensure_crash_detection

    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            ensure_crash_detection()
    except Exception as error:  # noqa: BLE001 - any failure here is only a lost safety net
        print(
            f"warning: runs of a killed call will not be marked Crashed: creating the "
            f"automation failed ({_one_line(error)})",
            file=sys.stderr,
        )
        return False
    return True


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


def _print_result(result, out_dir: str, ui: bool = True) -> None:
    """The run's outcome and where its model is; where its runs can be seen (``ui``: on the
    server the call used, which outlives it)."""
    out = out_dir.rstrip("/") if "://" in out_dir else Path(out_dir).resolve()
    if result.trained:
        r2 = (result.metrics or {}).get("r2")
        print(
            f"model version {result.version}: {result.rows_trained:,} rows trained, "
            f"held-out R² {r2 if r2 is None else round(r2, 6)}"
        )
    else:
        print(f"nothing new to train: model version {result.version} stays current")
    print(f"model: {out}/model.pkl (metadata: {out}/model.json)")
    if ui and os.environ.get("PREFECT_API_URL"):
        print(f"Prefect UI: {os.environ['PREFECT_API_URL'].removesuffix('/api')}")
    else:
        print(
            "Prefect UI: run `python main.py --mode server-start` (or `make server`), then open "
            f"http://127.0.0.1:4200 (it shows these runs, kept in {prefect_home()})"
        )


def exit_without_teardown(code: int) -> NoReturn:
    """End the process as CPython's exit does (non-daemon threads joined; atexit handlers run:
    Prefect's log and event workers drain there and this call's own server stops), but skip
    the interpreter's teardown of the thousands of modules a call imports (~0.9 s of a call
    with nothing running), which nothing of ours needs: every file is closed by then."""
    from cli.warm import run_exit_handlers

    run_exit_handlers()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
