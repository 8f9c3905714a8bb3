"""``make bench`` / ``make bench-quick``: ``python -m bench.run --profile full|quick``.

Builds the data once, runs every (size, approach) measurement in a fresh process, then the
Prefect-overhead, scale-out and learning-curve measurements; appends every run to
``bench/results/<profile>-<time>.jsonl`` (machine info first), prints the markdown report to
stdout and writes it to ``bench/results/latest.md`` (full) or ``latest-quick.md``; plots go
where the profile says. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq

from bench import datasets
from bench.cluster import free_port, process_cluster
from bench.measure import run_measured, run_record
from bench.report import render_report, write_plots
from bench.scoring import measure_scoring

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
CONFIG = PROJECT / "bench" / "config.json"
TRAINING_APPROACHES = ("ols", "sgd")
# Bytes held at once, as multiples of the data set's float64 size, by approaches that load
# everything: the array, the complete-rows copy, and the solver's own copy and workspace.
IN_MEMORY_FACTOR = {"sklearn": 4.0, "dask-ml-linreg": 3.0, "lstsq-reference": 4.0}
PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "dask",
    "distributed",
    "prefect",
    "prefect-dask",
    "scikit-learn",
    "dask-ml",
    "matplotlib",
    "psutil",
    "pyspark",
)


@dataclass
class Bench:
    config: dict[str, Any]
    profile_name: str
    profile: dict[str, Any]
    root: Path
    results_path: Path
    env: dict[str, str]
    holdout: tuple[np.ndarray, np.ndarray, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.0f}s] {message}", file=sys.stderr, flush=True)

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"kind": kind, "profile": self.profile_name, **fields}
        self.records.append(entry)
        with self.results_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        return entry


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "java": java_version(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def java_version() -> str | None:
    """The first line of ``java -version`` (the JRE Spark runs on), or None without Java."""
    if shutil.which("java") is None:
        return None
    shown = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    lines = (shown.stderr or shown.stdout).strip().splitlines()
    return lines[0] if lines else None


def data_layout(pool: Path) -> dict[str, Any]:
    """Rows and row groups per file, read from the shards' own metadata (what was written)."""
    rows, groups = set(), set()
    for path in sorted(pool.glob("part-*.parquet")):
        meta = pq.ParquetFile(path).metadata
        rows.add(meta.num_rows)
        groups.add(meta.num_row_groups)
    return {"rows_per_file": sorted(rows), "row_groups_per_file": sorted(groups)}


def child_env(prefect_home: Path, workers: int) -> dict[str, str]:
    """This environment without Prefect/linreg settings: embedded Prefect in ``prefect_home``,
    telemetry off, the project's default worker count made explicit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LINREG_"))}
    env.update(
        {
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "DASK_LOGGING__DISTRIBUTED": "error",
            "LINREG_DASK_WORKERS": str(workers),
            # Spark's driver and block manager on loopback, whatever the host name resolves to.
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONPATH": str(PROJECT),
        }
    )
    return env


def score(bench: Bench, coef: list[float], intercept: float) -> dict[str, float]:
    """Error against the true model and fit on the separate holdout."""
    x, y, truth = bench.holdout
    beta = np.asarray(coef)
    residual = y - (x @ beta + intercept)
    sse = float(residual @ residual)
    error = np.abs(beta - np.asarray(truth.coef)) * np.asarray(truth.scales)
    return {
        "coef_error": float(error.max()),
        "r2_holdout": 1.0 - sse / float(np.sum((y - y.mean()) ** 2)),
        "rmse_holdout": float(np.sqrt(sse / len(y))),
    }


def command_for(bench: Bench, approach: str, data_dir: Path, label: str, **options: Any):
    command = [sys.executable, "-m", "bench.approaches"]
    training = bench.config["training"]
    if approach.startswith(TRAINING_APPROACHES):
        model = approach.split("-", maxsplit=1)[0]
        out = bench.root / "out" / f"{approach}-{label}"
        command += [
            "project",
            "--data",
            str(data_dir),
            "--model",
            model,
            "--batch-rows",
            str(training["batch_rows"]),
            "--test-fraction",
            str(training["test_fraction"]),
            "--out",
            str(out),
            "--state-block",
            f"bench-{approach}-{label}".lower(),
        ]
        if options.get("dask_address"):
            command += ["--dask-address", options["dask_address"]]
        return command
    command += [approach, "--data", str(data_dir)]
    if approach == "spark-mllib":
        command += ["--spark-cores", str(training["dask_workers"])]
    if approach == "lstsq-reference":
        command += ["--test-fraction", str(training["test_fraction"])]
    return command


def measure(
    bench: Bench,
    approach: str,
    n_rows: int,
    data_dir: Path,
    repeat: int,
    extra_pids: tuple[int, ...] = (),
    **options: Any,
) -> dict[str, Any]:
    label = datasets.size_label(n_rows)
    command = command_for(bench, approach, data_dir, label, **options)
    timeout = bench.config["training"]["timeout_seconds"]
    run = run_measured(command, bench.env, str(PROJECT), timeout, extra_pids=extra_pids)
    fields: dict[str, Any] = {
        **run_record(run, approach, n_rows, repeat),
        "peak_breakdown_mib": run.peak_breakdown_mib,
        "rss_samples": run.samples,
    }
    if run.returncode != 0 or run.result is None:
        tail = (run.stderr.strip() or run.stdout.strip()).splitlines()[-5:]
        fields["error"] = " | ".join(tail)
        bench.log(f"{approach} {label} #{repeat}: FAILED ({fields['error'][:300]})")
        return bench.record("run", **fields)
    result = run.result
    fields.update({k: v for k, v in result.items() if k not in ("coef", "intercept")})
    if "seconds" in result and result.get("rows"):
        fields["rows_per_second"] = result["rows"] / result["seconds"]
    if "coef" in result:
        fields["coef"] = result["coef"]
        fields["intercept"] = result["intercept"]
        fields.update(score(bench, result["coef"], result["intercept"]))
    bench.log(
        f"{approach} {label} #{repeat}: {fields.get('seconds', 0):.1f} s "
        f"(wall {run.wall_seconds:.1f} s), tree peak {run.tree_peak_mib:.0f} MiB, "
        f"largest process {run.wait4_max_mib:.0f} MiB"
    )
    return bench.record("run", **fields)


def skip_reason(bench: Bench, approach: str, n_rows: int) -> str | None:
    largest = bench.profile.get("max_rows_by_approach", {}).get(approach)
    if largest is not None and n_rows > largest:
        return (
            f"not run above {datasets.size_label(largest)} rows in this profile, to keep "
            "`make bench` short (no target compares it at a larger size)"
        )
    factor = IN_MEMORY_FACTOR.get(approach)
    if factor:
        p = bench.config["data"]["n_features"] + 1
        needed = factor * n_rows * p * 8
        fraction = bench.config["training"]["in_memory_budget_fraction"]
        budget = fraction * psutil.virtual_memory().total
        if needed > budget:
            return (
                f"does not fit: needs ~{needed / 2**30:.0f} GiB in memory, over the "
                f"{budget / 2**30:.0f} GiB allowed ({fraction:.0%} of RAM)"
            )
    return None


def training_grid(bench: Bench) -> None:
    profile = bench.profile
    for n_rows in profile["sizes"]:
        label = datasets.size_label(n_rows)
        data_dir = datasets.ensure_size(bench.root, bench.config["data"], n_rows)
        for approach in profile["approaches"]:
            reason = skip_reason(bench, approach, n_rows)
            if reason:
                bench.log(f"{approach} {label}: skipped ({reason})")
                bench.record("skip", approach=approach, size=n_rows, reason=reason)
                continue
            repeats = profile["repeats_by_approach"].get(approach, profile["repeats"])
            for repeat in range(repeats):
                measure(bench, approach, n_rows, data_dir, repeat)
        if "ols" in profile["approaches"]:
            reference(bench, n_rows, data_dir)  # the answer ols must reproduce


def reference(bench: Bench, n_rows: int, data_dir: Path) -> None:
    """The lstsq answer ``ols`` must reproduce (asv's ``track_same_prediction``)."""
    reason = skip_reason(bench, "lstsq-reference", n_rows)
    if reason:
        bench.record("skip", approach="lstsq-reference", size=n_rows, reason=reason)
        return
    measure(bench, "lstsq-reference", n_rows, data_dir, 0)


@contextmanager
def local_prefect_server(bench: Bench) -> Iterator[None]:
    main_py = [sys.executable, str(PROJECT / "main.py")]
    env = {**bench.env, "PREFECT_PORT": str(free_port())}
    started = subprocess.run(
        [*main_py, "--mode", "server-start"], env=env, capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise SystemExit(f"the local Prefect server did not start:\n{started.stderr[-2000:]}")
    bench.log(started.stdout.strip())
    try:
        yield
    finally:
        subprocess.run(
            [*main_py, "--mode", "server-stop"], env=env, capture_output=True, check=False
        )


def warm_up(bench: Bench) -> None:
    """One unrecorded CLI run, so the embedded Prefect database exists before timing."""
    small = datasets.ensure_small(
        bench.root, bench.config["data"], bench.config["data"]["overhead_rows"]
    )
    bench.log("warm-up: one unrecorded train-all run (creates the embedded Prefect database)")
    command = command_for(bench, "ols", small, "warm-up")
    run = run_measured(
        command, bench.env, str(PROJECT), bench.config["training"]["timeout_seconds"]
    )
    if run.returncode != 0:
        raise SystemExit(f"warm-up run failed:\n{run.stderr[-2000:]}")


def scale_out(bench: Bench) -> None:
    """The same ``train-all --model ols`` against a real multi-process Dask cluster."""
    n_rows = bench.profile["scale_out_size"]
    workers = bench.config["training"]["dask_workers"]
    data_dir = datasets.ensure_size(bench.root, bench.config["data"], n_rows)
    if not any(
        r["kind"] == "run" and r["approach"] == "ols" and r["size"] == n_rows and "coef" in r
        for r in bench.records
    ):
        measure(bench, "ols", n_rows, data_dir, 0)
    log_dir = bench.root / "cluster-logs"
    shutil.rmtree(log_dir, ignore_errors=True)
    bench.log(f"scale out: dask scheduler + {workers} dask worker processes on 127.0.0.1")
    with process_cluster(workers, bench.env, PROJECT, log_dir) as cluster:
        for repeat in range(bench.profile["scale_out_repeats"]):
            measure(
                bench,
                "ols-cluster",
                n_rows,
                data_dir,
                repeat,
                extra_pids=tuple(cluster.pids),
                dask_address=cluster.address,
            )


def prefect_overhead(bench: Bench) -> None:
    spec = bench.config["data"]
    runs = bench.profile["overhead_runs"]
    if runs < 1:
        bench.log("Prefect overhead: not run in this profile (overhead_runs is 0)")
        bench.record("overhead", not_run="overhead_runs is 0")
        return
    small = datasets.ensure_small(bench.root, spec, spec["overhead_rows"])
    bench.log(f"Prefect overhead: train-step x{runs} in one process vs the bare domain step")
    profiles = bench.root / "profiles"
    command = [
        sys.executable,
        "-m",
        "bench.prefect_overhead",
        "--data",
        str(small),
        "--runs",
        str(runs),
        "--batch-rows",
        str(spec["overhead_rows"]),
        "--profile-dir",
        str(profiles),
    ]
    run = run_measured(
        command, bench.env, str(PROJECT), bench.config["training"]["timeout_seconds"]
    )
    if run.returncode != 0 or run.result is None:
        bench.record("overhead", error=run.stderr[-2000:])
        bench.log("Prefect overhead: FAILED")
        return
    bench.record(
        "overhead", **run.result, tree_peak_mib=run.tree_peak_mib, profiles_dir=str(profiles)
    )


def cli_step(bench: Bench) -> None:
    spec = bench.config["data"]
    rows = spec["overhead_rows"]
    # One batch each: the call before, then runs x 2 (warm runner and own process, alternating).
    data = datasets.ensure_small(bench.root, spec, 8 * rows)
    bench.log(
        "CLI step: python main.py --mode single (local / temporary server) vs the seed's step"
    )
    command = [sys.executable, "-m", "bench.cli_step", "--data", str(data)]
    command += ["--batch-rows", str(rows), "--runs", "3"]
    run = run_measured(
        command, bench.env, str(PROJECT), bench.config["training"]["timeout_seconds"]
    )
    if run.returncode != 0 or run.result is None:
        bench.record("cli-step", error=run.stderr[-2000:])
        bench.log("CLI step: FAILED")
        return
    bench.record("cli-step", **run.result)


def learning_curve(bench: Bench) -> None:
    spec = bench.profile["learning_curve"]
    data_dir = datasets.ensure_size(bench.root, bench.config["data"], spec["rows"])
    holdout = datasets.ensure_holdout(bench.root, bench.config["data"])
    bench.log(f"learning curve: {spec['batch_rows']:,}-row batches, both models, bare rounds")
    command = [
        sys.executable,
        "-m",
        "bench.approaches",
        "learning-curve",
        "--data",
        str(data_dir),
        "--holdout",
        str(holdout),
        "--batch-rows",
        str(spec["batch_rows"]),
        "--test-fraction",
        str(bench.config["training"]["test_fraction"]),
    ]
    run = run_measured(
        command, bench.env, str(PROJECT), bench.config["training"]["timeout_seconds"]
    )
    if run.returncode != 0 or run.result is None:
        bench.record("learning_curve", error=run.stderr[-2000:])
        return
    bench.record("learning_curve", rows=spec["rows"], **run.result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the benchmark and print its report.")
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument(
        "--only",
        help="comma-separated parts to run: training,scale-out,overhead,cli,learning-curve,scoring",
    )
    parser.add_argument(
        "--sizes", help="comma-separated row counts, a subset of the profile's (e.g. 1M,10M)"
    )
    parser.add_argument(
        "--approaches", help="comma-separated approaches, a subset of the profile's (e.g. ols)"
    )
    parser.add_argument(
        "--repeats", type=int, help="at most this many runs of each approach (a quick look)"
    )
    parser.add_argument(
        "--report-from", type=Path, help="only re-render the report and charts of a .jsonl file"
    )
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text())
    profile = restrict(config["profiles"][args.profile], args.sizes, args.approaches, args.repeats)
    config["profiles"][args.profile] = profile
    parts = set(args.only.split(",") if args.only else profile["parts"])
    if args.report_from:
        records = [json.loads(line) for line in args.report_from.read_text().splitlines()]
        return _report(records, records[0], config, args.profile, parts, args.report_from, 0.0)
    # A run narrowed by an option is a look, not the profile's report: it goes beside its raw
    # runs (git-ignored) and leaves latest*.md and the committed charts alone.
    partial = any(v is not None for v in (args.only, args.sizes, args.approaches, args.repeats))
    root = PROJECT / config["data"]["root"]
    root.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_path = RESULTS / f"{args.profile}-{stamp}.jsonl"
    env = child_env(root / "prefect-home", config["training"]["dask_workers"])
    holdout_dir = datasets.ensure_holdout(root, config["data"])
    bench = Bench(
        config=config,
        profile_name=args.profile,
        profile=profile,
        root=root,
        results_path=results_path,
        env=env,
        holdout=datasets.load_holdout(holdout_dir),
    )
    machine = bench.record("machine", **machine_info())
    bench.log(f"profile {args.profile}: sizes {profile['sizes']}; raw runs -> {results_path}")
    pool = datasets.ensure_pool(root, config["data"], max(profile["sizes"]))
    bench.record("data", **data_layout(pool))
    for n_rows in profile["sizes"]:
        datasets.ensure_size(root, config["data"], n_rows)
    project_runs = "scale-out" in parts or (
        "training" in parts
        and any(a.startswith(TRAINING_APPROACHES) for a in profile["approaches"])
    )
    if project_runs:
        # The training runs use the local Prefect server as `make run` leaves it (started
        # once, reused by every call); the CLI part times the calls with no server running.
        with local_prefect_server(bench):
            warm_up(bench)
            if "training" in parts:
                training_grid(bench)
            if "scale-out" in parts:
                scale_out(bench)
    elif "training" in parts:
        training_grid(bench)  # baselines only (--approaches): no Prefect server to start
    if "overhead" in parts:
        prefect_overhead(bench)
    if "cli" in parts:
        cli_step(bench)
    if "learning-curve" in parts:
        learning_curve(bench)
    if "scoring" in parts:
        measure_scoring(bench)
    elapsed = time.monotonic() - bench.started
    return _report(
        bench.records, machine, config, args.profile, parts, results_path, elapsed, partial
    )


def restrict(
    profile: dict[str, Any], sizes: str | None, approaches: str | None, repeats: int | None
) -> dict[str, Any]:
    """The profile limited to the given sizes and approaches (which must be among its own)
    and to at most ``repeats`` runs of each."""
    restricted = dict(profile)
    if repeats is not None:
        if repeats < 1:
            raise SystemExit(f"--repeats {repeats}: must be at least 1")
        restricted["repeats"] = min(profile["repeats"], repeats)
        restricted["repeats_by_approach"] = {
            name: min(n, repeats) for name, n in profile["repeats_by_approach"].items()
        }
    for key, given, parse in (("sizes", sizes, _rows), ("approaches", approaches, str.strip)):
        if given is None:
            continue
        chosen = [parse(item) for item in given.split(",") if item.strip()]
        unknown = [item for item in chosen if item not in profile[key]]
        if unknown or not chosen:
            raise SystemExit(
                f"--{key} {given}: not in the profile's {key} {profile[key]}: {unknown or given}"
            )
        restricted[key] = chosen
    return restricted


def _rows(text: str) -> int:
    """A row count as written on the command line: 1000000, 1_000_000, 1M or 100k."""
    cleaned = text.strip().replace("_", "")
    scale = {"k": 1_000, "M": 1_000_000}.get(cleaned[-1:], 1)
    try:
        return int(cleaned[:-1] if scale > 1 else cleaned) * scale
    except ValueError:
        raise SystemExit(f"--sizes: {text!r} is not a row count (e.g. 1000000 or 10M)") from None


def _report(
    records, machine, config, profile_name, parts, results_path, elapsed, partial=False
) -> int:
    plots_dir = PROJECT / config["profiles"][profile_name]["plots_dir"]
    if partial:
        plots_dir = results_path.with_suffix("")
    plots = write_plots(records, plots_dir, profile_name)
    report = render_report(
        records,
        machine,
        config,
        profile_name,
        plots={name: os.path.relpath(path, RESULTS) for name, path in plots.items()},
        parts=parts,
        results_file=results_path.name,
        elapsed=elapsed,
    )
    latest = RESULTS / ("latest.md" if profile_name == "full" else f"latest-{profile_name}.md")
    if partial:
        latest = results_path.with_suffix(".md")
    latest.write_text(report)
    print(report)
    print(f"report: {latest}; charts: {plots_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
