"""The benchmark's report: medians, ratios and targets as markdown, and the PNG charts."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import size_label

ORDER = (
    "ols",
    "sgd",
    "raw-read",
    "sklearn",
    "dask-ml-incremental",
    "dask-ml-linreg",
    "ols-cluster",
)
NAMES = {
    "ols": "**ols**: `train-all --model ols` (CLI: Prefect + Dask)",
    "sgd": "**sgd**: `train-all --model sgd` (CLI: Prefect + Dask)",
    "raw-read": "raw read: Dask `read_parquet` + sum, no training",
    "sklearn": "scikit-learn `LinearRegression`, in memory",
    "dask-ml-incremental": "dask-ml `Incremental(SGDRegressor)` + `StandardScaler`",
    "dask-ml-linreg": "dask-ml `LinearRegression` (ADMM; data persisted)",
    "ols-cluster": "ols on `dask scheduler` + 2 `dask worker` processes",
    "lstsq-reference": "numpy `lstsq` on ols's training rows (reference)",
}
SHORT = {
    "ols": "ols",
    "sgd": "sgd",
    "raw-read": "raw read",
    "sklearn": "sklearn (memory)",
    "dask-ml-incremental": "dask-ml Incremental",
    "dask-ml-linreg": "dask-ml LinearRegression",
    "ols-cluster": "ols, Dask cluster",
}
RSS_LIMIT_MIB = 1.5e9 / 2**20  # 1.5 GB
TARGETS = {
    "ols_vs_raw": 0.65,
    "ols_vs_incremental": 5.0,
    "ols_vs_sklearn": 3.0,
    "ols_lstsq": 1e-9,
    "sgd_vs_incremental": 2.0,
    "rss_spread": 0.15,
    "overhead": 0.5,
}


def max_relative_difference(a: list[float], b: list[float]) -> float:
    x, ref = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(x - ref) / np.abs(ref)))


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Medians per (approach, size) over the successful runs; skips and failures kept."""
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for record in records:
        if record["kind"] == "run" and record["approach"] != "lstsq-reference":
            groups[(record["approach"], record["size"])].append(record)
        elif record["kind"] == "skip" and record["approach"] != "lstsq-reference":
            out[(record["approach"], record["size"])] = {"skip": record["reason"]}
    for key, runs in groups.items():
        good = [r for r in runs if r["returncode"] == 0 and "seconds" in r]
        if not good:
            out[key] = {"error": runs[-1].get("error", "failed"), "runs": 0}
            continue

        def median(name: str, pool: list[dict] = good) -> float | None:
            values = [r[name] for r in pool if r.get(name) is not None]
            return statistics.median(values) if values else None

        seconds = median("seconds")
        rows = good[0]["rows"]
        out[key] = {
            "runs": len(good),
            "failed": len(runs) - len(good),
            "rows": rows,
            "seconds": seconds,
            "rows_per_second": rows / seconds,
            "wall_seconds": median("wall_seconds"),
            "tree_peak_mib": median("tree_peak_mib"),
            "wait4_max_mib": median("wait4_max_mib"),
            "coef_error": median("coef_error"),
            "r2_holdout": median("r2_holdout"),
            "rmse_holdout": median("rmse_holdout"),
            "coef": next((r["coef"] for r in good if "coef" in r), None),
            "breakdown": max(good, key=lambda r: r["tree_peak_mib"]).get("peak_breakdown_mib"),
            "solver": good[0].get("solver"),
        }
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.{max(digits - 1, 1)}e}"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value / 1e3:.0f} k"


def _references(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        r["size"]: r
        for r in records
        if r["kind"] == "run" and r["approach"] == "lstsq-reference" and "coef" in r
    }


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def render_report(
    records: list[dict[str, Any]],
    machine: dict[str, Any],
    config: dict[str, Any],
    profile_name: str,
    plots: dict[str, str],
    results_file: str,
    elapsed: float,
    parts: set[str],
) -> str:
    summary = summarize(records)
    profile = config["profiles"][profile_name]
    sizes = sorted({size for _, size in summary})
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    data = config["data"]
    training = config["training"]
    lines = [
        f"# Benchmark: `{profile_name}` profile",
        "",
        f"{machine['date']}, commit `{machine['commit']}`; {machine['cores']} cores "
        f"({machine['cpu']}), {machine['ram_gib']} GiB RAM, Python {machine['python']}; "
        f"{versions}. Whole run: {elapsed / 60:.1f} min. Raw runs: `bench/results/{results_file}` "
        "(git-ignored).",
        "",
        f"Data: {data['n_features']} float64 features of scales 1e-2 to 1e3, "
        f"{data['nan_fraction']:.1%} rows with a NaN, Parquet shards of "
        f"{data['shard_rows']:,} rows (row groups of {data['row_group_rows']:,}); the holdout is "
        f"{data['holdout_rows']:,} separate rows of the same true model. The project trains "
        f"with `--batch-rows {training['batch_rows']}` and holds out "
        f"{training['test_fraction']:.0%} of the rows (its stable split); the baselines train on "
        f"every complete row. {training['dask_workers']} Dask workers of 1 thread everywhere.",
        "",
        "Every figure is the median of the runs shown, each in a fresh process. **rows/s** = "
        "rows in the data set / **time**, the work a user waits for after the imports: for the "
        "project the whole `main.py` call against the local Prefect server that `make run` "
        "leaves running (started once before the runs; the CLI section times calls with none), "
        "Dask cluster start when the round needs one, flow, publishing; for the Dask baselines "
        "their cluster start and close included. **wall** is the whole process, imports "
        "included. **peak RSS, tree**: the largest sum of RSS over the process and all its "
        "descendants (Dask workers; not the long-lived Prefect server), "
        "sampled with psutil every 50 ms; **largest process**: `ru_maxrss` of `os.wait4`, the "
        "peak of the largest single process (kernel-exact). **coef error** = max_j "
        "|β̂_j − β_j|·σ_j (true β, feature scale σ, so in target units); **R²** on the holdout.",
        "",
        "## Training",
        "",
        "| rows | approach | runs | rows/s | time (s) | wall (s) | peak RSS, tree (MiB) "
        "| largest process (MiB) | coef error | R² holdout |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for size in sizes:
        for approach in ORDER:
            entry = summary.get((approach, size))
            if entry is None or approach == "ols-cluster":
                continue
            name = SHORT[approach]
            if "skip" in entry:
                notes.append(f"{SHORT[approach]} at {size_label(size)}: {entry['skip']}.")
                lines.append(
                    f"| {size_label(size)} | {name} | 0 | skipped ({entry['skip']}) | | | | | | |"
                )
                continue
            if "error" in entry:
                lines.append(
                    f"| {size_label(size)} | {name} | 0 | failed: {entry['error'][:160]} "
                    "| | | | | | |"
                )
                continue
            runs = f"{entry['runs']}" + (f" ({entry['failed']} failed)" if entry["failed"] else "")
            lines.append(
                f"| {size_label(size)} | {name} | {runs} | {_rate(entry['rows_per_second'])} "
                f"| {entry['seconds']:.1f} | {entry['wall_seconds']:.1f} "
                f"| {entry['tree_peak_mib']:,.0f} | {entry['wait4_max_mib']:,.0f} "
                f"| {_fmt(entry['coef_error'])} | {_fmt(entry['r2_holdout'], 6)} |"
            )
    lines += ["", "Approaches: " + "; ".join(f"{SHORT[a]} = {NAMES[a]}" for a in ORDER[:6]) + "."]
    reduced = {a: n for a, n in profile.get("repeats_by_approach", {}).items()}
    if reduced:
        lines.append(
            "Fewer runs in this profile for the slow baselines: "
            + ", ".join(f"{SHORT[a]} {n}" for a, n in reduced.items())
            + f" (the others {profile['repeats']})."
        )
    not_run = [
        label
        for part, label in (
            ("scale-out", "the scale-out run on a Dask cluster"),
            ("overhead", "the Prefect-overhead measurement"),
            ("learning-curve", "the learning curve"),
        )
        if part not in parts
    ]
    skipped = [SHORT[a] for a in ORDER[:6] if a not in profile["approaches"]]
    if not_run or skipped:
        lines.append(
            "Not run in this profile (see `make bench`): " + ", ".join(skipped + not_run) + "."
        )
    lines += _ratios_section(summary, sizes, records)
    lines += _memory_section(summary, sizes)
    lines += _steady_section(summary, sizes)
    lines += _scale_out_section(summary, records)
    lines += _overhead_section(records)
    lines += _cli_section(records)
    lines += _learning_section(records)
    if plots:
        lines += ["", "## Charts", ""]
        lines += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _ratio(summary, a: str, b: str, size: int) -> float | None:
    first, second = summary.get((a, size)), summary.get((b, size))
    if not first or not second or "rows_per_second" not in first or "rows_per_second" not in second:
        return None
    return first["rows_per_second"] / second["rows_per_second"]


def _ratios_section(summary, sizes: list[int], records) -> list[str]:
    references = _references(records)
    lines = [
        "",
        "## Ratios and targets",
        "",
        "| rows | ols / raw read (≥ 0.65) | ols / dask-ml Incremental (≥ 5) "
        "| ols / sklearn (≥ 3) | sgd / dask-ml Incremental (≥ 2) "
        "| sgd coef error vs dask-ml's (≤) | ols vs lstsq, max rel. diff (≤ 1e-9) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        cells = []
        for a, b, target in (
            ("ols", "raw-read", TARGETS["ols_vs_raw"]),
            ("ols", "dask-ml-incremental", TARGETS["ols_vs_incremental"]),
            ("ols", "sklearn", TARGETS["ols_vs_sklearn"]),
            ("sgd", "dask-ml-incremental", TARGETS["sgd_vs_incremental"]),
        ):
            ratio = _ratio(summary, a, b, size)
            cells.append("–" if ratio is None else f"{ratio:.2f}× {_check(ratio >= target)}")
        sgd, inc = summary.get(("sgd", size), {}), summary.get(("dask-ml-incremental", size), {})
        if sgd.get("coef_error") is not None and inc.get("coef_error") is not None:
            cells.append(
                f"{_fmt(sgd['coef_error'])} vs {_fmt(inc['coef_error'])} "
                f"{_check(sgd['coef_error'] <= inc['coef_error'])}"
            )
        else:
            cells.append("–")
        ols, ref = summary.get(("ols", size), {}), references.get(size)
        if ols.get("coef") and ref:
            diff = max_relative_difference(ols["coef"], ref["coef"])
            cells.append(f"{diff:.1e} {_check(diff <= TARGETS['ols_lstsq'])}")
        else:
            cells.append("– (no in-memory reference at this size)")
        lines.append(f"| {size_label(size)} | " + " | ".join(cells) + " |")
    return lines


def _memory_section(summary, sizes: list[int]) -> list[str]:
    lines = [
        "",
        "## Memory: flat in data size? (target: within 15 % across sizes, ≤ 1.5 GB)",
        "",
        "| approach | "
        + " | ".join(f"tree peak at {size_label(s)} (MiB)" for s in sizes)
        + " | spread | ≤ 1.5 GB | at the peak (MiB, largest run) |",
        "|---|" + "---:|" * len(sizes) + "---:|---|---|",
    ]
    for approach in ("ols", "sgd"):
        peaks = [summary.get((approach, s), {}).get("tree_peak_mib") for s in sizes]
        known = [p for p in peaks if p is not None]
        if not known:
            continue
        spread = (max(known) - min(known)) / min(known) if len(known) > 1 else None
        spread_cell = "–" if spread is None else f"{spread:.0%} {_check(spread <= 0.15)}"
        largest = max(
            (
                summary[(approach, s)]
                for s in sizes
                if (approach, s) in summary and "breakdown" in summary[(approach, s)]
            ),
            key=lambda entry: entry["tree_peak_mib"],
        )
        breakdown = ", ".join(f"{k} {v:,}" for k, v in sorted((largest["breakdown"] or {}).items()))
        lines.append(
            f"| {SHORT[approach]} | "
            + " | ".join("–" if p is None else f"{p:,.0f}" for p in peaks)
            + f" | {spread_cell} | {_check(max(known) <= RSS_LIMIT_MIB)} | {breakdown} |"
        )
    return lines


def _steady_section(summary, sizes: list[int]) -> list[str]:
    if len(sizes) < 2:
        return []
    small, large = sizes[0], sizes[-1]
    lines = [
        "",
        f"## Fixed cost and steady state ({size_label(small)} → {size_label(large)})",
        "",
        "Marginal rows/s = (rows at the largest size − rows at the smallest) / (time difference): "
        "the pace once start-up costs (Prefect server, Dask cluster, imports on the workers) are "
        "paid; fixed cost = time at the smallest size − its rows at that pace.",
        "",
        "| approach | marginal rows/s | fixed cost (s) |",
        "|---|---:|---:|",
    ]
    marginal = {}
    for approach in ORDER:
        a, b = summary.get((approach, small), {}), summary.get((approach, large), {})
        if "seconds" not in a or "seconds" not in b or b["seconds"] <= a["seconds"]:
            continue
        rate = (b["rows"] - a["rows"]) / (b["seconds"] - a["seconds"])
        marginal[approach] = rate
        lines.append(
            f"| {SHORT[approach]} | {_rate(rate)} | {a['seconds'] - a['rows'] / rate:.1f} |"
        )
    if "ols" in marginal and "raw-read" in marginal:
        ratio = marginal["ols"] / marginal["raw-read"]
        lines += [
            "",
            f"Steady state, ols / raw read = {ratio:.2f}× ({_check(ratio >= 0.65)} against 0.65).",
        ]
    return lines


def _scale_out_section(summary, records) -> list[str]:
    cluster = [(size, e) for (a, size), e in summary.items() if a == "ols-cluster"]
    if not cluster:
        return []
    lines = [
        "",
        "## Scale out: `--dask-address` to a real multi-process Dask cluster",
        "",
        "`dask scheduler --host 127.0.0.1` and 2 `dask worker --nthreads 1` processes, started "
        "by the benchmark (own sessions, stopped by process group); the peak RSS includes them.",
        "",
        "| rows | runs | rows/s | time (s) | peak RSS, tree + cluster (MiB) | local ols rows/s "
        "| coefficients vs local run, max rel. diff (≤ 1e-9) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, entry in sorted(cluster):
        if "seconds" not in entry:
            lines.append(
                f"| {size_label(size)} | 0 | failed: {entry.get('error', '')[:160]} | | | | |"
            )
            continue
        local = summary.get(("ols", size), {})
        if entry.get("coef") and local.get("coef"):
            diff = max_relative_difference(entry["coef"], local["coef"])
            same = f"{diff:.1e} {_check(diff <= 1e-9)}"
        else:
            same = "–"
        lines.append(
            f"| {size_label(size)} | {entry['runs']} | {_rate(entry['rows_per_second'])} "
            f"| {entry['seconds']:.1f} | {entry['tree_peak_mib']:,.0f} "
            f"| {_rate(local.get('rows_per_second'))} | {same} |"
        )
    return lines


def _overhead_section(records) -> list[str]:
    found = [r for r in records if r["kind"] == "overhead"]
    if not found:
        return []
    entry = found[-1]
    if "medians" not in entry:
        return ["", "## Prefect overhead", "", f"Failed: {entry.get('error', '')[-400:]}"]
    m = entry["medians"]
    bare = m["bare_step"]
    over_default = m["flow_default"] - bare
    over_cluster = m["flow_cluster"] - bare
    lines = [
        "",
        f"## Prefect overhead: `train-step` on one {entry['rows']:,}-row batch "
        f"({entry['model']}), {entry['runs']} runs in one process",
        "",
        "Flows against `prefect_test_harness` (a server subprocess); medians after one warm-up "
        "call each. Overhead = flow − bare step (validate + `train_batches`, serial + model files "
        "+ state JSON, no Prefect, no Dask).",
        "",
        "| measurement | median (s) | overhead per run (s) | target ≤ 0.5 s |",
        "|---|---:|---:|---|",
        f"| bare round (`train_batches`, serial) | {m['bare_round']:.3f} | | |",
        f"| bare step | {bare:.3f} | | |",
        f"| `train_step`, default runtime (this batch runs in-process: no cluster) "
        f"| {m['flow_default']:.3f} "
        f"| {over_default:.3f} | {_check(over_default <= TARGETS['overhead'])} |",
        f"| `train_step` on a LocalCluster that outlives the runs (`dask_address`) "
        f"| {m['flow_cluster']:.3f} "
        f"| {over_cluster:.3f} | {_check(over_cluster <= TARGETS['overhead'])} |",
        f"| LocalCluster start + close alone | {m['cluster']:.3f} | | |",
        *(
            [
                f"| `train_step` with Prefect's flow heartbeat (deployment runs) "
                f"| {m['flow_heartbeat']:.3f} | {m['flow_heartbeat'] - bare:.3f} | |"
            ]
            if "flow_heartbeat" in m
            else []
        ),
    ]
    for name, profile in (entry.get("profiles") or {}).items():
        if not profile:
            continue
        parts = ", ".join(
            f"{label} {seconds:.3f}" for label, seconds in profile.items() if label != "total"
        )
        total = profile.get("total", 0)
        lines.append(
            f"\nWhere one `{name}` run goes (pyinstrument, s; total {total:.3f}): {parts}. "
            f"Full profile: `{_project_relative(entry.get('profiles_dir', ''))}`."
        )
    return lines


def _cli_section(records) -> list[str]:
    found = [r for r in records if r["kind"] == "cli-step"]
    if not found:
        return []
    entry = found[-1]
    if "medians" not in entry:
        return ["", "## CLI step", "", f"Failed: {entry.get('error', '')[-400:]}"]
    m = entry["medians"]
    seed = m["seed_step"]
    local, temporary = m["cli_local_server"], m["cli_temporary_server"]
    # The domain work of one such step is ~0.1 s (the bare step above): the rest is fixed.
    return [
        "",
        f"## CLI step: `python main.py --mode single` on {entry['rows']:,}-row batches",
        "",
        f"Whole processes timed from outside, medians of {entry['runs']} (each right after "
        "another call). The seed's step: load a pickled cursor and model, read the batch, one "
        "`SGDRegressor.partial_fit`, pickle both back. Local server start (once): "
        f"{entry['server_start']:.1f} s.",
        "",
        "| call | wall (s) | vs the seed's step | target |",
        "|---|---:|---:|---|",
        f"| the seed's pickle step | {seed:.2f} | 1.00× | |",
        f"| `--mode validate` (no Prefect) | {m['cli_validate']:.2f} | "
        f"{m['cli_validate'] / seed:.2f}× | |",
        f"| `--mode single`, local server running | {local:.2f} | {local / seed:.2f}× "
        f"| ≤ 2.5× {_check(local / seed <= 2.5)}; ≤ 3 s {_check(local <= 3.0)} |",
        f"| `--mode single`, nothing running (temporary server) | {temporary:.2f} | "
        f"{temporary / seed:.2f}× | ≤ 6 s {_check(temporary <= 6.0)} |",
    ]


def _project_relative(path: str) -> str:
    """A path inside the project as the reader's checkout would name it (no local prefix)."""
    project = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(project))
    except ValueError:
        return path


def _learning_section(records) -> list[str]:
    found = [r for r in records if r["kind"] == "learning_curve" and "curves" in r]
    if not found:
        return []
    entry = found[-1]
    lines = [
        "",
        f"## Learning curve: {entry['rows']:,} rows in {entry['batch_rows']:,}-row batches, "
        "holdout after each",
        "",
        "| model | after batch 1: R² / RMSE | after the last: R² / RMSE |",
        "|---|---|---|",
    ]
    for model, points in entry["curves"].items():
        first, last = points[0], points[-1]
        lines.append(
            f"| {model} | {first['r2']:.6f} / {first['rmse']:.4f} "
            f"| {last['r2']:.6f} / {last['rmse']:.4f} |"
        )
    return lines


def write_plots(records: list[dict[str, Any]], out_dir: Path, profile_name: str) -> dict[str, Path]:
    """rows/s and peak RSS versus size per approach, and the learning curves, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    written: dict[str, Path] = {}
    for key, field_name, ylabel, title in (
        ("throughput", "rows_per_second", "rows per second", "Training throughput"),
        ("peak-rss", "tree_peak_mib", "peak RSS of the process tree (MiB)", "Peak memory"),
    ):
        figure, axes = plt.subplots(figsize=(7.5, 4.5))
        for approach in ORDER:
            points = sorted(
                (size, entry[field_name])
                for (a, size), entry in summary.items()
                if a == approach and field_name in entry
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=SHORT[approach])
        if key == "peak-rss":
            axes.axhline(RSS_LIMIT_MIB, color="grey", linestyle="--", linewidth=1)
            axes.text(axes.get_xlim()[0], RSS_LIMIT_MIB, " 1.5 GB target", va="bottom", fontsize=8)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("rows in the data set")
        axes.set_ylabel(ylabel)
        axes.set_title(f"{title} ({profile_name} profile, medians)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / f"bench-{key}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written[key] = path
    curves = [r for r in records if r["kind"] == "learning_curve" and "curves" in r]
    if curves:
        entry = curves[-1]
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for model, points in entry["curves"].items():
            rows = [p["rows_trained"] for p in points]
            left.plot(rows, [1 - p["r2"] for p in points], marker=".", label=model)
            right.plot(rows, [p["rmse"] for p in points], marker=".", label=model)
        left.set_ylabel("1 − R² on the holdout")
        right.set_ylabel("RMSE on the holdout")
        for axes in (left, right):
            axes.set_yscale("log")
            axes.set_xlabel("rows trained")
            axes.grid(True, which="both", alpha=0.3)
            axes.legend()
        figure.suptitle(f"Learning curve: {entry['batch_rows']:,}-row batches", fontsize=11)
        figure.tight_layout()
        path = out_dir / "bench-learning-curve.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written["learning-curve"] = path
    return written
