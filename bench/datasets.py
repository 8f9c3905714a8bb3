"""The benchmark's data, built once and reused (asv's ``setup_cache``).

Shards of ``shard_rows`` rows are written once into ``<root>/shards`` by
:func:`linreg.synthetic.write_dataset`; each size ``rows-<N>`` is a directory of hard links
to the first N / shard_rows of them, so 1M is a prefix of 10M, which is a prefix of 30M. The
holdout is drawn from the same true model with another seed, and has no missing values.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linreg.synthetic import TRUTH_FILE, Truth, generate_rows, read_truth, write_dataset

POOL = "shards"
PARAMS_FILE = "params.json"


def size_label(n_rows: int) -> str:
    if n_rows % 1_000_000 == 0:
        return f"{n_rows // 1_000_000}M"
    if n_rows % 1_000 == 0:
        return f"{n_rows // 1_000}k"
    return str(n_rows)


def _pool_params(spec: dict[str, Any]) -> dict[str, Any]:
    keys = ("n_features", "shard_rows", "row_group_rows", "nan_fraction", "seed")
    return {key: spec[key] for key in keys}


def _pool_shards(pool: Path) -> list[Path]:
    return sorted(pool.glob("part-*.parquet"))


def ensure_pool(root: Path, spec: dict[str, Any], n_rows: int) -> Path:
    """The shard pool holding at least ``n_rows`` rows, generated if missing or stale."""
    pool = root / POOL
    params = _pool_params(spec)
    marker = pool / PARAMS_FILE
    fresh = marker.exists() and json.loads(marker.read_text()) == params
    needed = -(-n_rows // spec["shard_rows"])
    if fresh and len(_pool_shards(pool)) >= needed:
        return pool
    if not fresh and pool.exists():
        shutil.rmtree(pool)
        for stale in root.glob("rows-*"):
            shutil.rmtree(stale)
    print(f"bench data: writing {n_rows:,} rows into {pool} (once; reused by later runs)")
    write_dataset(
        pool,
        n_rows=needed * spec["shard_rows"],
        n_features=spec["n_features"],
        shard_rows=spec["shard_rows"],
        row_group_rows=spec["row_group_rows"],
        seed=spec["seed"],
        nan_fraction=spec["nan_fraction"],
    )
    marker.write_text(json.dumps(params) + "\n")
    return pool


def ensure_size(root: Path, spec: dict[str, Any], n_rows: int) -> Path:
    """``<root>/rows-<N>``: the first ``n_rows`` rows of the pool (whole shards), as hard links."""
    if n_rows % spec["shard_rows"]:
        raise ValueError(f"{n_rows} rows is not a whole number of {spec['shard_rows']}-row shards")
    pool = ensure_pool(root, spec, n_rows)
    directory = root / f"rows-{size_label(n_rows)}"
    shards = _pool_shards(pool)[: n_rows // spec["shard_rows"]]
    current = sorted(directory.glob("part-*.parquet")) if directory.exists() else []
    same = [p.name for p in current] == [p.name for p in shards] and all(
        os.path.samefile(a, b) for a, b in zip(current, shards, strict=True)
    )
    if not same:
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        for shard in shards:
            os.link(shard, directory / shard.name)
        shutil.copyfile(pool / TRUTH_FILE, directory / TRUTH_FILE)
    return directory


def ensure_holdout(root: Path, spec: dict[str, Any]) -> Path:
    """A separate evaluation set from the same true model (another seed, no missing values)."""
    pool = ensure_pool(root, spec, spec["shard_rows"])
    directory = root / "holdout"
    path = directory / "holdout.parquet"
    params = {**_pool_params(spec), "rows": spec["holdout_rows"], "holdout": spec["holdout_seed"]}
    marker = directory / PARAMS_FILE
    if path.exists() and marker.exists() and json.loads(marker.read_text()) == params:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    truth = read_truth(pool)
    table = generate_rows(truth, spec["holdout_rows"], spec["holdout_seed"], nan_fraction=0.0)
    pq.write_table(table, path, row_group_size=spec["row_group_rows"])
    shutil.copyfile(pool / TRUTH_FILE, directory / TRUTH_FILE)
    marker.write_text(json.dumps(params) + "\n")
    return directory


def ensure_small(root: Path, spec: dict[str, Any], n_rows: int) -> Path:
    """A small one-shard data set (the Prefect-overhead batch) with the same features."""
    directory = root / f"small-{size_label(n_rows)}"
    marker = directory / PARAMS_FILE
    params = {**_pool_params(spec), "rows": n_rows}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return directory
    if directory.exists():
        shutil.rmtree(directory)
    write_dataset(
        directory,
        n_rows=n_rows,
        n_features=spec["n_features"],
        shard_rows=n_rows,
        row_group_rows=min(n_rows, spec["row_group_rows"]),
        seed=spec["seed"],
        nan_fraction=spec["nan_fraction"],
    )
    marker.write_text(json.dumps(params) + "\n")
    return directory


def load_holdout(directory: Path) -> tuple[np.ndarray, np.ndarray, Truth]:
    """Features (n, p) and target (n,) of the holdout, and the true model."""
    truth = read_truth(directory)
    table = pq.read_table(directory / "holdout.parquet")
    x = np.column_stack([table.column(name).to_numpy() for name in truth.features])
    y = table.column("target").cast(pa.float64()).to_numpy()
    return x, y, truth
