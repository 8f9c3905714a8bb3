"""The benchmark's report: medians, ratios and targets as markdown, and the PNG charts."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import size_label
from bench.scoring import scoring_section

ORDER = (
    "ols",
    "sgd",
    "raw-read",
    "sklearn",
    "dask-ml-incremental",
    "dask-ml-linreg",
    "spark-mllib",
    "ols-cluster",
)
# Every approach of the training table (the cluster run has a section of its own).
TABLE = tuple(a for a in ORDER if a != "ols-cluster")
NAMES = {
    "ols": "**ols**: `train-all --model ols` (CLI: Prefect + Dask)",
    "sgd": "**sgd**: `train-all --model sgd` (CLI: Prefect + Dask)",
    "raw-read": "raw read: Dask `read_parquet` + sum, no training",
    "sklearn": "scikit-learn `LinearRegression`, in memory",
    "dask-ml-incremental": "dask-ml `Incremental(SGDRegressor)` + `StandardScaler`",
    "dask-ml-linreg": "dask-ml `LinearRegression` (ADMM; data persisted)",
    "spark-mllib": "Spark MLlib `LinearRegression` (normal solver, `local[2]`; session start "
    "and stop included)",
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
    "spark-mllib": "Spark MLlib",
    "ols-cluster": "ols, Dask cluster",
}
RSS_LIMIT_MIB = 1.5e9 / 2**20  # 1.5 GB
# Issue 14's "Done when", as it states them. End-to-end ratios are defined at END_TO_END_ROWS;
# the memory spread from RSS_SIZES[0] to RSS_SIZES[1].
TARGETS = {
    "steady_vs_raw": 0.8,
    "ols_vs_sklearn": 1.5,
    "ols_vs_spark": 1.5,
    "ols_vs_incremental": 3.0,
    "sgd_vs_incremental": 2.0,
    "ols_lstsq": 1e-9,
    "rss_spread": 0.15,
    "overhead": 0.5,
    "cli_vs_seed": 2.5,
    "cli_local_seconds": 3.0,
    "cli_temporary_seconds": 6.0,
}
END_TO_END_ROWS = 10_000_000
RSS_SIZES = (1_000_000, 30_000_000)


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
    if machine.get("java"):
        versions += f"; Java: {machine['java']}"
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
        f"{data['nan_fraction']:.1%} rows with a NaN, {_layout(records, data)}; the holdout is "
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
        "their cluster start and close included, for Spark MLlib its session's start (the JVM) "
        "and stop. **wall** is the whole process, imports "
        "included. **peak RSS, tree**: the largest sum of RSS over the process and all its "
        "descendants (Dask workers, Spark's JVM; not the long-lived Prefect server), "
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
    lines += ["", "Approaches: " + "; ".join(f"{SHORT[a]} = {NAMES[a]}" for a in TABLE) + "."]
    reduced = {
        a: n
        for a, n in profile.get("repeats_by_approach", {}).items()
        if n < profile["repeats"] and a in profile["approaches"]
    }
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
    skipped = [SHORT[a] for a in TABLE if a not in profile["approaches"]]
    if not_run or skipped:
        lines.append(
            "Not run in this profile (see `make bench`): " + ", ".join(skipped + not_run) + "."
        )
    lines += _targets_section(summary, sizes, records)
    lines += _ratios_section(summary, sizes, records)
    lines += _memory_section(summary, sizes)
    lines += _steady_section(summary, sizes)
    lines += _scale_out_section(summary, records)
    lines += _overhead_section(records)
    lines += _cli_section(records)
    lines += _learning_section(records)
    lines += scoring_section(records)
    if plots:
        lines += ["", "## Charts", ""]
        lines += [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _ratio(summary, a: str, b: str, size: int) -> float | None:
    first, second = summary.get((a, size)), summary.get((b, size))
    if not first or not second or "rows_per_second" not in first or "rows_per_second" not in second:
        return None
    return first["rows_per_second"] / second["rows_per_second"]


def _layout(records, data: dict[str, Any]) -> str:
    """The shards' layout as read from their metadata in this run, else as configured."""
    found = [r for r in records if r["kind"] == "data"]
    if found:
        rows, groups = found[-1]["rows_per_file"], found[-1]["row_groups_per_file"]
        source = "read from the files' metadata"
    else:
        rows, groups = [data["shard_rows"]], [-(-data["shard_rows"] // data["row_group_rows"])]
        source = "as configured"
    rows_text = " or ".join(f"{n:,}" for n in rows)
    groups_text = " or ".join(str(n) for n in groups)
    each = "one row group each" if groups == [1] else f"{groups_text} row groups each"
    return f"Parquet files of {rows_text} rows with {each} ({source})"


def _marginal(summary, approach: str, small: int, large: int) -> tuple[float, float] | None:
    """(marginal rows/s, fixed cost s) between two sizes, or None without both."""
    a, b = summary.get((approach, small), {}), summary.get((approach, large), {})
    if "seconds" not in a or "seconds" not in b or b["seconds"] <= a["seconds"]:
        return None
    rate = (b["rows"] - a["rows"]) / (b["seconds"] - a["seconds"])
    return rate, a["seconds"] - a["rows"] / rate


def _row(target: str, measured: str, required: str, ok: bool | None) -> str:
    return f"| {target} | {measured} | {required} | {_check(ok)} |"


def _end_to_end_rows(summary, sizes: list[int]) -> list[str]:
    """The speed ratios at END_TO_END_ROWS, with the other sizes for information."""
    at = size_label(END_TO_END_ROWS)
    rows = []
    for a, b, key in (
        ("ols", "sklearn", "ols_vs_sklearn"),
        ("ols", "spark-mllib", "ols_vs_spark"),
        ("ols", "dask-ml-incremental", "ols_vs_incremental"),
        ("sgd", "dask-ml-incremental", "sgd_vs_incremental"),
    ):
        ratio = _ratio(summary, a, b, END_TO_END_ROWS)
        others = [
            f"{size_label(s)}: {r:.2f}×"
            for s in sizes
            if s != END_TO_END_ROWS and (r := _ratio(summary, a, b, s)) is not None
        ]
        if ratio is None:
            reason = _missing(summary, (a, b), END_TO_END_ROWS)
            measured = f"not measured at {at} ({reason})"
        else:
            measured = f"{ratio:.2f}×"
        if others:
            measured += f" ({'; '.join(others)}, for information)"
        rows.append(
            _row(
                f"{SHORT[a]} / {SHORT[b]}, end to end at {at} (rows/s)",
                measured,
                f"≥ {TARGETS[key]:g}×",
                None if ratio is None else ratio >= TARGETS[key],
            )
        )
    sgd = summary.get(("sgd", END_TO_END_ROWS), {})
    inc = summary.get(("dask-ml-incremental", END_TO_END_ROWS), {})
    if sgd.get("coef_error") is not None and inc.get("coef_error") is not None:
        measured = f"{_fmt(sgd['coef_error'])} vs {_fmt(inc['coef_error'])}"
        ok: bool | None = sgd["coef_error"] <= inc["coef_error"]
    else:
        reason = _missing(summary, ("sgd", "dask-ml-incremental"), END_TO_END_ROWS)
        measured, ok = f"not measured at {at} ({reason})", None
    rows.append(
        _row(f"sgd coef error vs dask-ml Incremental's at {at}", measured, "≤ (no worse)", ok)
    )
    return rows


def _missing(summary, approaches: tuple[str, ...], size: int) -> str:
    """Why a figure at ``size`` is absent: the first approach without a timed result."""
    for approach in approaches:
        entry = summary.get((approach, size))
        if entry is None:
            return f"{SHORT[approach]} not run at this size"
        if "skip" in entry:
            return f"{SHORT[approach]} skipped: {entry['skip']}"
        if "error" in entry:
            return f"{SHORT[approach]} failed"
    return "no figure"


def _memory_rows(summary, sizes: list[int]) -> list[str]:
    low, high = RSS_SIZES
    span = f"{size_label(low)} → {size_label(high)}"
    rows = []
    for approach in ("ols", "sgd"):
        peaks = {
            s: summary[(approach, s)]["tree_peak_mib"]
            for s in sizes
            if "tree_peak_mib" in summary.get((approach, s), {})
        }
        inside = [p for s, p in peaks.items() if low <= s <= high]
        if low in peaks and high in peaks:
            spread = (max(inside) - min(inside)) / min(inside)
            measured, ok = f"{spread:.0%}", spread <= TARGETS["rss_spread"]
        elif len(inside) > 1:
            spread = (max(inside) - min(inside)) / min(inside)
            shown = ", ".join(size_label(s) for s in peaks)
            measured, ok = f"{spread:.0%} over {shown} only, for information", None
        else:
            measured, ok = f"not measured (needs {span})", None
        rows.append(
            _row(
                f"{approach} peak RSS spread, {span} (tree)",
                measured,
                f"≤ {TARGETS['rss_spread']:.0%}",
                ok,
            )
        )
        if peaks:
            largest = max(peaks.values())
            where = size_label(max(peaks, key=peaks.get))
            measured = f"{largest:,.0f} MiB (at {where})"
            if high not in peaks:
                measured += f"; {size_label(high)} not run"
            rows.append(
                _row(
                    f"{approach} peak RSS, largest (tree)",
                    measured,
                    f"≤ 1.5 GB ({RSS_LIMIT_MIB:,.0f} MiB)",
                    largest <= RSS_LIMIT_MIB,
                )
            )
    return rows


def _targets_section(summary, sizes: list[int], records) -> list[str]:
    lines = [
        "",
        "## Targets (issue 14, as its Done when states them)",
        "",
        f"Each figure from this run; a ratio defined at {size_label(END_TO_END_ROWS)} rows is "
        f"judged at {size_label(END_TO_END_ROWS)} only (other sizes shown for information); "
        "n/a = not measured in this run.",
        "",
        "| target | measured | required | result |",
        "|---|---|---|---|",
    ]
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        span = f"{size_label(small)} → {size_label(large)}"
        ols = _marginal(summary, "ols", small, large)
        raw = _marginal(summary, "raw-read", small, large)
        if ols and raw:
            ratio = ols[0] / raw[0]
            measured = f"{ratio:.2f}× ({_rate(ols[0])} vs {_rate(raw[0])} rows/s)"
            ok: bool | None = ratio >= TARGETS["steady_vs_raw"]
        else:
            measured, ok = f"not measured ({span}: ols or raw read missing)", None
    else:
        span = "needs two sizes"
        measured, ok = "not measured (one size in this run)", None
    lines.append(
        _row(
            f"ols steady state / raw read's (marginal rows/s, {span})",
            measured,
            f"≥ {TARGETS['steady_vs_raw']:g}×",
            ok,
        )
    )
    lines += _end_to_end_rows(summary, sizes)
    references = _references(records)
    diffs = {
        size: max_relative_difference(summary[("ols", size)]["coef"], ref["coef"])
        for size, ref in references.items()
        if summary.get(("ols", size), {}).get("coef")
    }
    if diffs:
        worst = max(diffs.values())
        measured = f"{worst:.1e} (worst of {', '.join(size_label(s) for s in sorted(diffs))})"
        ok = worst <= TARGETS["ols_lstsq"]
    else:
        measured, ok = "not measured (no in-memory reference)", None
    lines.append(_row("ols coefficients vs numpy lstsq, max rel. diff", measured, "≤ 1e-9", ok))
    lines += _memory_rows(summary, sizes)
    lines += _overhead_rows(records)
    lines += _cli_rows(records)
    return lines


def _overhead_rows(records) -> list[str]:
    found = [r for r in records if r["kind"] == "overhead"]
    entry = found[-1] if found else {}
    rows = []
    for key, label in (
        ("flow_default", "default runtime"),
        ("flow_cluster", "on a long-lived cluster of worker processes"),
    ):
        medians = entry.get("medians")
        if medians:
            overhead = medians[key] - medians["bare_step"]
            measured, ok = f"{overhead:.3f} s", overhead <= TARGETS["overhead"]
        else:
            measured, ok = f"not measured ({_why_not(entry)})", None
        rows.append(
            _row(
                f"Prefect overhead per `train-step`, {label}",
                measured,
                f"≤ {TARGETS['overhead']:g} s",
                ok,
            )
        )
    return rows


def _cli_rows(records) -> list[str]:
    found = [r for r in records if r["kind"] == "cli-step"]
    entry = found[-1] if found else {}
    m = entry.get("medians")
    rows_text = f"{entry['rows']:,} rows" if "rows" in entry else "one batch"
    specs = (
        (
            f"`--mode single` after another ({rows_text}, local server) / the seed's pickle step",
            lambda: m["cli_local_server"] / m["seed_step"],
            "{:.2f}×",
            f"≤ {TARGETS['cli_vs_seed']:g}×",
            TARGETS["cli_vs_seed"],
        ),
        (
            "fixed cost per CLI call, local server running (whole `--mode single` call)",
            lambda: m["cli_local_server"],
            "{:.2f} s",
            f"≤ {TARGETS['cli_local_seconds']:g} s",
            TARGETS["cli_local_seconds"],
        ),
        (
            "fixed cost per CLI call, nothing running (whole `--mode single` call)",
            lambda: m["cli_temporary_server"],
            "{:.2f} s",
            f"≤ {TARGETS['cli_temporary_seconds']:g} s",
            TARGETS["cli_temporary_seconds"],
        ),
    )
    rows = []
    for target, value, shown, required, limit in specs:
        if m:
            figure = value()
            rows.append(_row(target, shown.format(figure), required, figure <= limit))
        else:
            rows.append(_row(target, f"not measured ({_why_not(entry)})", required, None))
    return rows


def _why_not(entry: dict[str, Any]) -> str:
    if not entry:
        return "not run"
    if "not_run" in entry:
        return f"not run in this profile: {entry['not_run']}"
    return "failed"


def _ratios_section(summary, sizes: list[int], records) -> list[str]:
    references = _references(records)
    pairs = (
        ("ols", "raw-read"),
        ("ols", "sklearn"),
        ("ols", "spark-mllib"),
        ("ols", "dask-ml-incremental"),
        ("sgd", "dask-ml-incremental"),
    )
    lines = [
        "",
        "## Ratios at every size (rows/s, end to end)",
        "",
        "| rows | "
        + " | ".join(f"{SHORT[a]} / {SHORT[b]}" for a, b in pairs)
        + " | sgd coef error vs dask-ml's | ols vs lstsq, max rel. diff |",
        "|---:|" + "---:|" * (len(pairs) + 2),
    ]
    for size in sizes:
        cells = []
        for a, b in pairs:
            ratio = _ratio(summary, a, b, size)
            cells.append("–" if ratio is None else f"{ratio:.2f}×")
        sgd, inc = summary.get(("sgd", size), {}), summary.get(("dask-ml-incremental", size), {})
        if sgd.get("coef_error") is not None and inc.get("coef_error") is not None:
            cells.append(f"{_fmt(sgd['coef_error'])} vs {_fmt(inc['coef_error'])}")
        else:
            cells.append("–")
        ols, ref = summary.get(("ols", size), {}), references.get(size)
        if ols.get("coef") and ref:
            cells.append(f"{max_relative_difference(ols['coef'], ref['coef']):.1e}")
        else:
            cells.append("– (no in-memory reference at this size)")
        lines.append(f"| {size_label(size)} | " + " | ".join(cells) + " |")
    return lines


def _memory_section(summary, sizes: list[int]) -> list[str]:
    lines = [
        "",
        "## Memory: flat in data size?",
        "",
        "| approach | "
        + " | ".join(f"tree peak at {size_label(s)} (MiB)" for s in sizes)
        + " | spread | at the peak (MiB, largest run) |",
        "|---|" + "---:|" * len(sizes) + "---:|---|",
    ]
    for approach in ("ols", "sgd"):
        peaks = [summary.get((approach, s), {}).get("tree_peak_mib") for s in sizes]
        known = [p for p in peaks if p is not None]
        if not known:
            continue
        spread = (max(known) - min(known)) / min(known) if len(known) > 1 else None
        spread_cell = "–" if spread is None else f"{spread:.0%}"
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
            + f" | {spread_cell} | {breakdown} |"
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
        "the pace once start-up costs (Prefect server, Dask cluster, JVM, imports on the "
        "workers) are paid; fixed cost = time at the smallest size − its rows at that pace.",
        "",
        "| approach | marginal rows/s | fixed cost (s) |",
        "|---|---:|---:|",
    ]
    for approach in ORDER:
        found = _marginal(summary, approach, small, large)
        if found:
            rate, fixed = found
            lines.append(f"| {SHORT[approach]} | {_rate(rate)} | {fixed:.1f} |")
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
    if "not_run" in entry:
        return ["", "## Prefect overhead", "", f"Not run in this profile ({entry['not_run']})."]
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
        "Flows against the local server of `--mode server-start` (its own Prefect home, a free "
        "port), as CLI calls and deployment runs on one machine use it; medians after one warm-up "
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
        f"| `train_step` on a cluster of worker processes that outlives the runs (`dask_address`) "
        f"| {m['flow_cluster']:.3f} "
        f"| {over_cluster:.3f} | {_check(over_cluster <= TARGETS['overhead'])} |",
        "| the flows' local cluster (in-process worker threads): start + close alone "
        f"| {m['cluster']:.3f} | | |",
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
        f"| `--mode single`, local server running (its warm runner) | {local:.2f} | "
        f"{local / seed:.2f}× | ≤ {TARGETS['cli_vs_seed']:g}× "
        f"{_check(local / seed <= TARGETS['cli_vs_seed'])}; "
        f"≤ {TARGETS['cli_local_seconds']:g} s {_check(local <= TARGETS['cli_local_seconds'])} |",
        *(
            [
                f"| `--mode single`, local server running, own process "
                f"(`LINREG_WARM_RUNNER=0`) | {own:.2f} | {own / seed:.2f}× | |"
            ]
            if (own := m.get("cli_local_own_process"))
            else []
        ),
        f"| `--mode single`, nothing running (temporary server) | {temporary:.2f} | "
        f"{temporary / seed:.2f}× | ≤ {TARGETS['cli_temporary_seconds']:g} s "
        f"{_check(temporary <= TARGETS['cli_temporary_seconds'])} |",
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
        if not any(field_name in entry for entry in summary.values()):
            continue  # no training runs in this run (--only overhead, say): no empty chart
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
