"""Preprocessing of one batch: read its rows, drop incomplete ones, split train/test.

A row's split is a pure function of its identity (``file_id``, row number), so it is the
same in every run and batch, and held-out rows never leak into training as data arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
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


class BatchChunks:
    """A batch read a row group at a time, each chunk cleaned of rows with a missing or
    non-finite value and split by row identity: iterate for ``(train_rows, test_rows)``
    pairs (features then target), then read :attr:`report`.

    The split of every row is known before reading (it depends only on row identity), so
    :attr:`max_train` and :attr:`max_test` bound the rows each side can receive.
    Iterating raises :class:`DataError` at the end if the batch has rows but none is usable.
    """

    def __init__(self, batch: BatchSpec, columns: Sequence[str], test_fraction: float) -> None:
        self.batch = batch
        self.columns = list(columns)
        self.masks = [
            holdout_mask(
                segment.data_file.file_id,
                np.arange(segment.start, segment.stop, dtype=np.int64),
                test_fraction,
            )
            for segment in batch.segments
        ]
        self.max_test = sum(int(mask.sum()) for mask in self.masks)
        self.max_train = batch.n_rows - self.max_test
        self.report = BatchReport(segments=[batch.describe()])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        bad_counts = np.zeros(len(self.columns), dtype=np.int64)
        rows_read = rows_train = rows_test = 0
        for segment, mask in zip(self.batch.segments, self.masks, strict=True):
            offset = 0
            for chunk in iter_rows(segment.data_file, self.columns, segment.start, segment.stop):
                is_test = mask[offset : offset + len(chunk)]
                offset += len(chunk)
                bad = ~np.isfinite(chunk)
                bad_counts += bad.sum(axis=0)
                complete = ~bad.any(axis=1)
                train_rows, test_rows = chunk[complete & ~is_test], chunk[complete & is_test]
                rows_train += len(train_rows)
                rows_test += len(test_rows)
                yield train_rows, test_rows
            rows_read += offset
        dropped_by_column = {
            name: int(count) for name, count in zip(self.columns, bad_counts, strict=True) if count
        }
        n_complete = rows_train + rows_test
        if rows_read and n_complete == 0:
            worst = max(dropped_by_column, key=dropped_by_column.__getitem__)
            raise DataError(
                f"{self.batch.describe()}: every one of {rows_read} rows has a missing or "
                f"non-finite value (column '{worst}': {dropped_by_column[worst]} rows)"
            )
        self.report = BatchReport(
            rows_read=rows_read,
            rows_dropped=rows_read - n_complete,
            rows_train=rows_train,
            rows_test=rows_test,
            dropped_by_column=dropped_by_column,
            segments=[self.batch.describe()],
        )


def prepare_batch(batch: BatchSpec, columns: Sequence[str], test_fraction: float) -> PreparedBatch:
    """Read ``batch`` (``columns`` = features then target), drop rows with a missing or
    non-finite value, and split the rest by row identity.

    Each chunk's rows go straight into train and held-out arrays sized from the split, so the
    batch is in memory once, not as a table, a block and two copies.

    Raises :class:`DataError` if the batch has rows but none of them is usable.
    """
    chunks = BatchChunks(batch, columns, test_fraction)
    train = _Rows(chunks.max_train, len(columns))
    test = _Rows(chunks.max_test, len(columns))
    for train_rows, test_rows in chunks:
        train.append(train_rows)
        test.append(test_rows)
    x_train, y_train = train.features_and_target()
    x_test, y_test = test.features_and_target()
    return PreparedBatch(x_train, y_train, x_test, y_test, chunks.report)


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
