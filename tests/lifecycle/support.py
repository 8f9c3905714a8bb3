"""Helpers of the lifecycle tests: data whose relationship can break, rounds, snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linreg.config import DataConfig, HyperParams
from linreg.executors import SerialExecutor
from linreg.lifecycle import DriftMonitor, QualityGate
from linreg.model_files import ModelDirectory
from linreg.state import InMemoryStateStore
from linreg.training import FilePublisher, RoundResult, RoundSpec, run_round
from linreg.validation import validate_source
from tests.conftest import write_csv

BATCH_ROWS = 500
COEF = np.array([3.0, -2.0, 0.5])


def write_part(
    directory: Path, index: int, coef: np.ndarray = COEF, rows: int = BATCH_ROWS, noise=0.1
) -> Path:
    """``part-<index>.csv``: ``rows`` rows of target = x @ coef + 1 + noise."""
    rng = np.random.default_rng(100 + index)
    x = rng.normal(size=(rows, len(coef)))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(len(coef))])
    frame["target"] = x @ coef + 1.0 + noise * rng.normal(size=rows)
    return write_csv(directory / f"part-{index:03d}.csv", frame)


def train_round(
    directory: Path,
    out: Path,
    store: InMemoryStateStore,
    *,
    keep_versions: int = 20,
    gate: float | None = 0.10,
    force: bool = False,
    model: str = "ols",
    max_batches: int | None = 1,
    monitor: bool = False,
) -> RoundResult:
    data = DataConfig(source=str(directory), batch_rows=BATCH_ROWS)
    plan = validate_source(data)
    quality_gate = None
    if gate is not None:
        quality_gate = QualityGate(gate, ModelDirectory(str(out)), force=force)
    return run_round(
        plan,
        RoundSpec(HyperParams(model=model), data.batch_rows, data.test_fraction, max_batches),
        executor=SerialExecutor(),
        store=store,
        publisher=FilePublisher(str(out), keep_versions),
        gate=quality_gate,
        monitor=DriftMonitor(ModelDirectory(str(out)), window=4) if monitor else None,
    )


def snapshot(out: Path, *, without: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``out`` (relative path -> bytes), but those named in ``without``."""
    if not out.exists():
        return {}
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and str(path.relative_to(out)) not in without
    }


def history(out: Path) -> list[dict[str, Any]]:
    path = out / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def live(out: Path) -> dict[str, Any]:
    return json.loads((out / "model.json").read_text())
