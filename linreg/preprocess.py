"""Preprocessing of one batch: read its rows, drop incomplete ones, split train/test.

A row's split is a pure function of its identity (``file_id``, row number), so it is the
same in every run and batch, and held-out rows never leak into training as data arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from linreg.batches import BatchSpec
from linreg.errors import DataError
from linreg.sources import read_rows

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash (Steele et al., 2014)."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def holdout_mask(file_id: str, rows: np.ndarray, test_fraction: float) -> np.ndarray:
    """True where row number ``rows`` of ``file_id`` belongs to the held-out set."""
    if test_fraction <= 0.0:
        return np.zeros(len(rows), dtype=bool)
    file_key = np.uint64(int.from_bytes(hashlib.blake2b(file_id.encode(), digest_size=8).digest()))
    hashed = _splitmix64(rows.astype(np.uint64) ^ file_key)
    uniform = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return uniform < test_fraction


@dataclass
class BatchReport:
    """What preprocessing saw in a batch: the numbers users read in logs and artifacts."""

    rows_read: int = 0
    rows_dropped: int = 0
    rows_train: int = 0
    rows_test: int = 0
    dropped_by_column: dict[str, int] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)

    def add(self, other: BatchReport) -> BatchReport:
        merged = dict(self.dropped_by_column)
        for name, count in other.dropped_by_column.items():
            merged[name] = merged.get(name, 0) + count
        return BatchReport(
            self.rows_read + other.rows_read,
            self.rows_dropped + other.rows_dropped,
            self.rows_train + other.rows_train,
            self.rows_test + other.rows_test,
            merged,
            self.segments + other.segments,
        )


@dataclass
class PreparedBatch:
    """A cleaned batch split into train and held-out arrays (features, target)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    report: BatchReport


def prepare_batch(batch: BatchSpec, columns: Sequence[str], test_fraction: float) -> PreparedBatch:
    """Read ``batch`` (``columns`` = features then target), drop rows with a missing or
    non-finite value, and split the rest by row identity.

    Raises :class:`DataError` if the batch has rows but none of them is usable.
    """
    blocks, masks = [], []
    for segment in batch.segments:
        block = read_rows(segment.data_file, columns, segment.start, segment.stop)
        rows = np.arange(segment.start, segment.start + len(block), dtype=np.int64)
        blocks.append(block)
        masks.append(holdout_mask(segment.data_file.file_id, rows, test_fraction))
    data = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    is_test = masks[0] if len(masks) == 1 else np.concatenate(masks)
    bad = ~np.isfinite(data)
    complete = ~bad.any(axis=1)
    dropped_by_column = {
        name: int(count) for name, count in zip(columns, bad.sum(axis=0), strict=True) if count
    }
    n_complete = int(complete.sum())
    if len(data) and n_complete == 0:
        worst = max(dropped_by_column, key=dropped_by_column.__getitem__)
        raise DataError(
            f"{batch.describe()}: every one of {len(data)} rows has a missing or non-finite "
            f"value (column '{worst}': {dropped_by_column[worst]} rows)"
        )
    train = complete & ~is_test
    test = complete & is_test
    report = BatchReport(
        rows_read=len(data),
        rows_dropped=len(data) - n_complete,
        rows_train=int(train.sum()),
        rows_test=int(test.sum()),
        dropped_by_column=dropped_by_column,
        segments=[batch.describe()],
    )
    return PreparedBatch(
        x_train=data[train, :-1],
        y_train=data[train, -1],
        x_test=data[test, :-1],
        y_test=data[test, -1],
        report=report,
    )
