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
from linreg.sources import iter_rows

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

    The batch is read a row group at a time, each chunk's rows going straight into train and
    held-out arrays sized from the split (known before reading), so the batch is in memory
    once, not as a table, a block and two copies.

    Raises :class:`DataError` if the batch has rows but none of them is usable.
    """
    masks = [
        holdout_mask(
            segment.data_file.file_id,
            np.arange(segment.start, segment.stop, dtype=np.int64),
            test_fraction,
        )
        for segment in batch.segments
    ]
    n_test = sum(int(mask.sum()) for mask in masks)
    train = _Rows(batch.n_rows - n_test, len(columns))
    test = _Rows(n_test, len(columns))
    bad_counts = np.zeros(len(columns), dtype=np.int64)
    rows_read = 0
    for segment, mask in zip(batch.segments, masks, strict=True):
        offset = 0
        for chunk in iter_rows(segment.data_file, columns, segment.start, segment.stop):
            is_test = mask[offset : offset + len(chunk)]
            offset += len(chunk)
            bad = ~np.isfinite(chunk)
            bad_counts += bad.sum(axis=0)
            complete = ~bad.any(axis=1)
            train.append(chunk[complete & ~is_test])
            test.append(chunk[complete & is_test])
        rows_read += offset
    dropped_by_column = {
        name: int(count) for name, count in zip(columns, bad_counts, strict=True) if count
    }
    n_complete = train.size + test.size
    if rows_read and n_complete == 0:
        worst = max(dropped_by_column, key=dropped_by_column.__getitem__)
        raise DataError(
            f"{batch.describe()}: every one of {rows_read} rows has a missing or non-finite "
            f"value (column '{worst}': {dropped_by_column[worst]} rows)"
        )
    report = BatchReport(
        rows_read=rows_read,
        rows_dropped=rows_read - n_complete,
        rows_train=train.size,
        rows_test=test.size,
        dropped_by_column=dropped_by_column,
        segments=[batch.describe()],
    )
    x_train, y_train = train.features_and_target()
    x_test, y_test = test.features_and_target()
    return PreparedBatch(x_train, y_train, x_test, y_test, report)


class _Rows:
    """Preallocated features and target, filled a chunk at a time (at most ``capacity`` rows;
    a chunk's last column is the target)."""

    def __init__(self, capacity: int, width: int) -> None:
        self.features = np.empty((capacity, width - 1), dtype=np.float64)
        self.target = np.empty(capacity, dtype=np.float64)
        self.size = 0

    def append(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        self.features[self.size : end] = rows[:, :-1]
        self.target[self.size : end] = rows[:, -1]
        self.size = end

    def features_and_target(self) -> tuple[np.ndarray, np.ndarray]:
        # Contiguous views: rows dropped as incomplete leave a few unused rows at the end.
        return self.features[: self.size], self.target[: self.size]
