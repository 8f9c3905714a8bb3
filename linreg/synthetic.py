"""A synthetic data set with known coefficients, written as Parquet shards, for demos,
tests and benchmarks. Features have very different scales; a few rows have a NaN.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TRUTH_FILE = "truth.json"


@dataclass(frozen=True)
class Truth:
    """The model that generated the data: ``y = X @ coef + intercept + noise``."""

    features: list[str]
    coef: list[float]
    intercept: float
    noise: float
    scales: list[float]


def make_truth(n_features: int, seed: int, noise: float = 0.2) -> Truth:
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-2, 3, n_features)
    coef = rng.normal(0.0, 5.0, n_features) / scales
    names = [f"x{i:02d}" for i in range(n_features)]
    return Truth(names, coef.tolist(), 3.0, noise, scales.tolist())


def generate_rows(truth: Truth, n_rows: int, seed: int, nan_fraction: float) -> pa.Table:
    """``n_rows`` rows drawn from ``truth``; ``nan_fraction`` of them get one NaN value."""
    rng = np.random.default_rng(seed)
    p = len(truth.features)
    scales = np.asarray(truth.scales)
    offsets = np.linspace(-2.0, 5.0, p)
    x = (rng.standard_normal((n_rows, p)) + offsets) * scales
    y = x @ np.asarray(truth.coef) + truth.intercept + rng.normal(0.0, truth.noise, n_rows)
    n_nan = int(round(nan_fraction * n_rows))
    if n_nan:
        rows = rng.choice(n_rows, n_nan, replace=False)
        columns = rng.integers(0, p + 1, n_nan)
        for row, column in zip(rows, columns, strict=True):
            if column == p:
                y[row] = np.nan
            else:
                x[row, column] = np.nan
    arrays = {name: x[:, i] for i, name in enumerate(truth.features)}
    arrays["target"] = y
    return pa.table(arrays)


def write_dataset(
    out_dir: str | Path,
    n_rows: int,
    n_features: int = 8,
    shard_rows: int = 20_000,
    row_group_rows: int = 10_000,
    seed: int = 42,
    nan_fraction: float = 0.001,
) -> Truth:
    """Write ``n_rows`` rows as ``part-00000.parquet``... shards plus ``truth.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = make_truth(n_features, seed)
    for shard, start in enumerate(range(0, n_rows, shard_rows)):
        rows = min(shard_rows, n_rows - start)
        table = generate_rows(truth, rows, seed * 100_003 + shard, nan_fraction)
        pq.write_table(table, out / f"part-{shard:05d}.parquet", row_group_size=row_group_rows)
    (out / TRUTH_FILE).write_text(json.dumps(truth.__dict__, indent=2) + "\n")
    return truth


def append_rows(
    out_dir: str | Path, n_rows: int, shard_rows: int = 20_000, nan_fraction: float = 0.001
) -> list[Path]:
    """New shards after the existing ones, drawn from the same true model (``truth.json``):
    data that "arrives" for the next training step. Returns the files written."""
    out = Path(out_dir)
    truth = read_truth(out)
    existing = sorted(out.glob("part-*.parquet"))
    first = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    written = []
    for offset, start in enumerate(range(0, n_rows, shard_rows)):
        shard = first + offset
        rows = min(shard_rows, n_rows - start)
        table = generate_rows(truth, rows, 7_919 * shard + 1, nan_fraction)
        path = out / f"part-{shard:05d}.parquet"
        pq.write_table(table, path, row_group_size=min(rows, 10_000))
        written.append(path)
    return written


def read_truth(data_dir: str | Path) -> Truth:
    return Truth(**json.loads((Path(data_dir) / TRUTH_FILE).read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic regression data set.")
    parser.add_argument("--out", required=True, help="directory for the Parquet shards")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--shard-rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--append",
        action="store_true",
        help="add --rows new rows to an existing data set (same true model), as new shards",
    )
    args = parser.parse_args(argv)
    if args.append:
        written = append_rows(args.out, args.rows, args.shard_rows)
        print(f"appended {args.rows} rows to {args.out} ({len(written)} new file(s))")
        return 0
    write_dataset(args.out, args.rows, args.features, args.shard_rows, seed=args.seed)
    print(f"wrote {args.rows} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
