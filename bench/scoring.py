"""The benchmark's batch-scoring part: ``python main.py --mode predict`` against the raw read
of the same data, in the same run (goal: at least 0.7x the raw read's rows/s).

The parent (:func:`measure_scoring`, from ``bench.run``) trains an ols model on the small
set, then alternates one raw read (``bench.approaches raw-read``: Dask ``read_parquet`` and a
sum of the columns, cluster start included) and one scoring call per repeat, each in a fresh
process. The child (``python -m bench.scoring``) imports the CLI first and times the whole
``main.py --mode predict`` call: the model loaded and verified, every file inspected, the
Dask cluster started when the data needs one, every shard written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import datasets
from bench.measure import emit, run_measured, run_record

GOAL = 0.7
PROJECT = Path(__file__).resolve().parents[1]


def _train_model(bench: Any, out: Path) -> None:
    """An ols model of the bench's features, published into ``out`` by the real round."""
    from linreg.config import DataConfig, HyperParams
    from linreg.executors import SerialExecutor
    from linreg.state import InMemoryStateStore
    from linreg.training import FilePublisher, RoundSpec, run_round
    from linreg.validation import validate_source

    spec = bench.config["data"]
    small = datasets.ensure_small(bench.root, spec, spec["overhead_rows"])
    shutil.rmtree(out, ignore_errors=True)
    data = DataConfig(source=str(small), batch_rows=spec["overhead_rows"])
    run_round(
        validate_source(data),
        RoundSpec(HyperParams(model="ols"), data.batch_rows, data.test_fraction),
        executor=SerialExecutor(),
        store=InMemoryStateStore(),
        publisher=FilePublisher(str(out)),
    )


def measure_scoring(bench: Any) -> None:
    """Raw read and ``--mode predict`` on the profile's scoring size, alternating."""
    spec = bench.profile["scoring"]
    n_rows = spec["rows"]
    data_dir = datasets.ensure_size(bench.root, bench.config["data"], n_rows)
    model, predictions = bench.root / "scoring-model", bench.root / "scoring-predictions"
    _train_model(bench, model)
    timeout = bench.config["training"]["timeout_seconds"]
    bench.log(f"scoring: --mode predict vs the raw read at {datasets.size_label(n_rows)} rows")
    for repeat in range(spec["repeats"]):
        commands = {
            "raw-read": [sys.executable, "-m", "bench.approaches", "raw-read"],
            "predict": [sys.executable, "-m", "bench.scoring", "--out", str(model)],
        }
        commands["raw-read"] += ["--data", str(data_dir)]
        commands["predict"] += ["--data", str(data_dir), "--predictions", str(predictions)]
        commands["predict"] += ["--batch-rows", str(spec["batch_rows"])]
        for name, command in commands.items():
            run = run_measured(command, bench.env, str(PROJECT), timeout)
            fields: dict[str, Any] = run_record(run, name, n_rows, repeat)
            if run.returncode != 0 or run.result is None:
                fields["error"] = " | ".join(
                    (run.stderr.strip() or run.stdout.strip()).splitlines()[-3:]
                )
                bench.log(f"scoring {name} #{repeat}: FAILED ({fields['error'][:300]})")
            else:
                fields.update(run.result)
                fields["rows_per_second"] = run.result["rows"] / run.result["seconds"]
                bench.log(
                    f"scoring {name} #{repeat}: {run.result['seconds']:.1f} s, "
                    f"{fields['rows_per_second']:,.0f} rows/s, tree peak "
                    f"{run.tree_peak_mib:,.0f} MiB"
                )
            bench.record("scoring", **fields)
    shutil.rmtree(predictions, ignore_errors=True)


def scoring_section(records: list[dict[str, Any]]) -> list[str]:
    """The report's batch-scoring table: medians of each side, their ratio, the goal."""
    found = [r for r in records if r["kind"] == "scoring"]
    if not found:
        return []
    lines = [
        "",
        "## Batch scoring: `python main.py --mode predict`",
        "",
        "Medians of the runs, alternating, in fresh processes. **predict** times the whole "
        "call after its imports: model loaded (sha256 checked), files inspected, Dask cluster "
        "started when the data needs one, one Parquet shard per batch (file, row, prediction) "
        "written; **raw read** is Dask `read_parquet` + a sum of the same features and the "
        "target, cluster start included.",
        "",
        "| rows | approach | runs | rows/s | time (s) | peak RSS, tree (MiB) | vs raw read "
        f"| goal ≥ {GOAL}× |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for size in sorted({r["size"] for r in found}):
        medians = {}
        for name in ("raw-read", "predict"):
            runs = [r for r in found if r["size"] == size and r["approach"] == name]
            good = [r for r in runs if "error" not in r]
            if not good:
                error = runs[-1].get("error", "") if runs else "not run"
                lines.append(f"| {datasets.size_label(size)} | {name} | 0 | failed: "
                             f"{error[:160]} | | | | |")  # fmt: skip
                continue
            medians[name] = {
                key: statistics.median(r[key] for r in good)
                for key in ("rows_per_second", "seconds", "tree_peak_mib")
            }
            m = medians[name]
            ratio = ""
            check = ""
            if name == "predict" and "raw-read" in medians:
                value = m["rows_per_second"] / medians["raw-read"]["rows_per_second"]
                ratio = f"{value:.2f}×"
                check = "met" if value >= GOAL else "missed"
            lines.append(
                f"| {datasets.size_label(size)} | {name} | {len(good)} "
                f"| {m['rows_per_second']:,.0f} | {m['seconds']:.1f} "
                f"| {m['tree_peak_mib']:,.0f} | {ratio} | {check} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time one `main.py --mode predict` call.")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    import main as cli

    # Imported before the clock starts, as the training runs are: the scoring code, and
    # scikit-learn (under the estimator that model.pkl unpickles to).
    from linreg import estimators, scoring  # noqa: F401

    argv = ["--mode", "predict", "--data", str(args.data), "--out", str(args.out)]
    argv += ["--predictions", str(args.predictions), "--batch-rows", str(args.batch_rows)]
    started = time.perf_counter()
    code = cli.main([*argv, "--quiet"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"main.py --mode predict exited {code}")
    document = json.loads((args.predictions / "_scoring.json").read_text())
    emit(
        {
            "rows": document["rows"],
            "rows_null": document["rows_null"],
            "shards": len(document["shards"]),
            "seconds": seconds,
        }
    )


if __name__ == "__main__":
    main()
