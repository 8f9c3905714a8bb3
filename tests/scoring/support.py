"""Helpers of the scoring tests: a model trained and published by the real round, shards read
back, and the rows they were computed from."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from linreg.config import DataConfig, HyperParams
from linreg.executors import SerialExecutor
from linreg.model_files import MODEL_FILE, ModelDirectory
from linreg.state import InMemoryStateStore
from linreg.training import FilePublisher, RoundResult, RoundSpec, run_round
from linreg.validation import validate_source


def train(
    source: Path,
    out: Path,
    *,
    model: str = "ols",
    target: str = "target",
    categorical: list[str] | None = None,
    features: list[str] | None = None,
    batch_rows: int = 2_000,
    store: InMemoryStateStore | None = None,
) -> RoundResult:
    """One round over every batch of ``source``, published into ``out`` (versions kept)."""
    data = DataConfig(
        source=str(source),
        target=target,
        features=features,
        categorical=categorical or [],
        batch_rows=batch_rows,
    )
    plan = validate_source(data)
    return run_round(
        plan,
        RoundSpec(HyperParams(model=model), data.batch_rows, data.test_fraction, None),
        executor=SerialExecutor(),
        store=store or InMemoryStateStore(),
        publisher=FilePublisher(str(out)),
    )


def estimator(out: Path, *where: str) -> Any:
    """The published estimator itself (``model.pkl``), to call its ``predict``."""
    return joblib.load(io.BytesIO(ModelDirectory(out).read(*where, MODEL_FILE)))


def read_predictions(directory: Path) -> pd.DataFrame:
    """Every shard, in shard order, as one frame."""
    shards = sorted(directory.glob("part-*.parquet"))
    assert shards, f"no shards in {directory}"
    return pd.concat([pq.read_table(path).to_pandas() for path in shards], ignore_index=True)


def source_rows(directory: Path, pattern: str = "*.parquet") -> pd.DataFrame:
    """Every row of the source with its identity (file, row), files in file_id order."""
    frames = []
    for path in sorted(directory.rglob(pattern), key=lambda p: p.relative_to(directory).as_posix()):
        frame = pq.read_table(path).to_pandas() if path.suffix == ".parquet" else None
        if frame is None:
            frame = pd.read_csv(path)
        frame.insert(0, "row", np.arange(len(frame), dtype=np.int64))
        frame.insert(0, "file", path.relative_to(directory).as_posix())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
