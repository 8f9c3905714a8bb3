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
from linreg.categorical import MISSING, UNKNOWN, InputColumn
from linreg.errors import DataError
from linreg.sources import category_codes, category_text, column_values, iter_tables

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


_MASK_BLOCK = 65_536


def range_holdout_mask(file_id: str, start: int, stop: int, test_fraction: float) -> np.ndarray:
    """:func:`holdout_mask` of rows ``[start, stop)`` of ``file_id``, hashed a block at a time:
    for a 1M-row batch at once the hash's temporaries peaked at 33 MiB, per reader."""
    mask = np.empty(stop - start, dtype=bool)
    for first in range(start, stop, _MASK_BLOCK):
        last = min(first + _MASK_BLOCK, stop)
        rows = np.arange(first, last, dtype=np.int64)
        mask[first - start : last - start] = holdout_mask(file_id, rows, test_fraction)
    return mask


def training_levels(
    batches: Sequence[BatchSpec], names: Sequence[str], test_fraction: float
) -> dict[str, list[str]]:
    """The sorted levels of each categorical column ``names`` among the training rows of
    ``batches`` (held-out rows left out, by the same split): the levels a model starts with.

    Only levels with training rows get a column, so none is a constant zero column (which
    ols would refuse as singular); a level seen first in held-out or later rows is unknown.
    Raises :class:`DataError` if a column has no value in those rows.
    """
    found: dict[str, set[str]] = {name: set() for name in names}
    for batch in batches:
        for segment in batch.segments:
            data_file = segment.data_file
            train = ~range_holdout_mask(
                data_file.file_id, segment.start, segment.stop, test_fraction
            )
            offset = 0
            for table in iter_tables(data_file, list(names), segment.start, segment.stop):
                kept = train[offset : offset + table.num_rows]
                offset += table.num_rows
                for name in names:
                    text = category_text(table.column(name)).filter(kept)
                    found[name].update(text.drop_null().unique().to_pylist())
    for name, levels in found.items():
        if not levels:
            where = "; ".join(batch.describe() for batch in batches)
            raise DataError(
                f"categorical column '{name}' has no value in the training rows of {where}"
            )
    return {name: sorted(levels) for name, levels in found.items()}


@dataclass
class BatchReport:
    """What preprocessing saw in a batch: the numbers users read in logs and artifacts."""

    rows_read: int = 0
    rows_dropped: int = 0
    rows_train: int = 0
    rows_test: int = 0
    dropped_by_column: dict[str, int] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    # Rows per categorical column whose level is not among the model's: all-zero dummies.
    unknown_levels: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchReport) -> BatchReport:
        return BatchReport(
            self.rows_read + other.rows_read,
            self.rows_dropped + other.rows_dropped,
            self.rows_train + other.rows_train,
            self.rows_test + other.rows_test,
            _summed(self.dropped_by_column, other.dropped_by_column),
            self.segments + other.segments,
            _summed(self.unknown_levels, other.unknown_levels),
        )


def _summed(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    merged = dict(first)
    for name, count in second.items():
        merged[name] = merged.get(name, 0) + count
    return merged


@dataclass
class PreparedBatch:
    """A cleaned batch split into train and held-out arrays (features, target)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    report: BatchReport
    w_train: np.ndarray | None = None
    w_test: np.ndarray | None = None


@dataclass
class Design:
    """Rows of one chunk laid out as LAPACK factors them: the Fortran-ordered matrix
    ``[1, X - x_shift, y - y_shift]`` (features then target after the ones column).

    A row dropped for a missing or non-finite value is all zeros, the ones column
    included: it adds nothing to ``RᵀR = AᵀA``, so the matrix is never compacted.
    """

    matrix: np.ndarray
    n_valid: int
    x_shift: np.ndarray
    y_shift: float
    weights: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        return self.matrix[:, 0] != 0.0

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows of non-zero weight in raw units: features (n, n_features), target (n,).

        A weighted design holds each row times √w (its ones column is √w), undone here.
        """
        kept = self.matrix[self.valid] if self.n_valid < len(self.matrix) else self.matrix
        root = kept[:, :1]
        return kept[:, 1:-1] / root + self.x_shift, kept[:, -1] / root[:, 0] + self.y_shift


class BatchReader:
    """A batch read a chunk at a time (at most :data:`linreg.sources.CHUNK_ROWS` rows)
    into train and held-out :class:`Design` matrices: iterate for ``(train, test)`` pairs,
    then read :attr:`report`.

    Each column is decoded once and gathered straight into its place in the matrix LAPACK
    factors; the split (a mask known from row identity before reading) and the missing-value
    filter (zeroed rows) copy nothing more. The split of every row is known up front, so
    :attr:`max_train` and :attr:`max_test` bound the rows each side can receive. Iterating
    raises :class:`DataError` at the end if the batch has rows but none is usable.
    """

    def __init__(
        self,
        batch: BatchSpec,
        columns: Sequence[str],
        test_fraction: float,
        centre: bool = True,
        weight: str | None = None,
        scale_rows: bool = True,
        inputs: Sequence[InputColumn] = (),
        require_usable_rows: bool = True,
    ) -> None:
        self.batch = batch
        # False: the caller reads the batch in pieces and checks their sum (check_usable_rows).
        self.require_usable_rows = require_usable_rows
        self.columns = list(columns)
        # With categorical inputs, ``columns`` are the design's (dummies by name); the raw
        # inputs and the target are read and each category becomes its 0/1 columns.
        self.inputs = tuple(inputs)
        self.centre = centre
        self.weight = weight
        # ols: rows times √w, so the QR statistics are those of weighted least squares;
        # sgd: the weights kept beside the rows, for partial_fit's sample_weight.
        self.scale_rows = scale_rows
        self.masks = [
            range_holdout_mask(
                segment.data_file.file_id, segment.start, segment.stop, test_fraction
            )
            for segment in batch.segments
        ]
        self.max_test = sum(int(mask.sum()) for mask in self.masks)
        self.max_train = batch.n_rows - self.max_test
        self.report = BatchReport(segments=[batch.describe()])

    def __iter__(self) -> Iterator[tuple[Design, Design]]:
        bad_counts = np.zeros(len(self.columns), dtype=np.int64)
        missing: dict[str, int] = {}
        unknown: dict[str, int] = {}
        rows_read = rows_train = rows_test = 0
        raw = [column.name for column in self.inputs] + self.columns[-1:]
        for segment, mask in zip(self.batch.segments, self.masks, strict=True):
            offset = 0
            read_columns = (raw if self.inputs else self.columns) + (
                [self.weight] if self.weight else []
            )
            data_file = segment.data_file
            for table in iter_tables(data_file, read_columns, segment.start, segment.stop):
                is_test = mask[offset : offset + table.num_rows]
                offset += table.num_rows
                first_row = segment.start + offset - table.num_rows
                drop = None
                if self.inputs:
                    values, drop = _encoded(
                        data_file, table, self.inputs, self.columns[-1], first_row, missing, unknown
                    )
                else:
                    values = [
                        column_values(data_file, table, name, first_row) for name in self.columns
                    ]
                weights = None
                if self.weight:
                    weights = column_values(data_file, table, self.weight, first_row)
                    _check_weights(data_file, self.weight, weights, first_row)
                shift = _shift(values) if self.centre else np.zeros(len(values))
                scaled = self.scale_rows
                train_rows = None if not is_test.any() else ~is_test
                train = _design(values, train_rows, shift, bad_counts, weights, scaled, drop)
                test = _design(values, is_test, shift, bad_counts, weights, scaled, drop)
                rows_train += train.n_valid
                rows_test += test.n_valid
                yield train, test
            rows_read += offset
        dropped_by_column = {
            name: int(count) for name, count in zip(self.columns, bad_counts, strict=True) if count
        }
        dropped_by_column.update(missing)
        n_complete = rows_train + rows_test
        self.report = BatchReport(
            rows_read=rows_read,
            rows_dropped=rows_read - n_complete,
            rows_train=rows_train,
            rows_test=rows_test,
            dropped_by_column=dropped_by_column,
            segments=[self.batch.describe()],
            unknown_levels=unknown,
        )
        if self.require_usable_rows:
            check_usable_rows(self.report)


def check_usable_rows(report: BatchReport) -> None:
    """Raise :class:`DataError` if the batch of ``report`` has rows but none is usable."""
    if report.rows_read and report.rows_train + report.rows_test == 0:
        counts = report.dropped_by_column
        worst = max(counts, key=counts.__getitem__)
        raise DataError(
            f"{', '.join(report.segments)}: every one of {report.rows_read} rows has a missing "
            f"or non-finite value (column '{worst}': {counts[worst]} rows)"
        )


def _encoded(
    data_file,
    table,
    inputs: Sequence[InputColumn],
    target: str,
    first_row: int,
    missing: dict[str, int],
    unknown: dict[str, int],
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A chunk's design columns (numbers, each category's dummies, then the target) and the
    rows to drop for a missing category; counts missing and unknown levels per column."""
    values: list[np.ndarray] = []
    drop = None
    for column in inputs:
        if column.kind == "numeric":
            values.append(column_values(data_file, table, column.name, first_row))
            continue
        codes = category_codes(table, column.name, column.levels)
        absent = codes == MISSING
        n_missing, n_unknown = int(absent.sum()), int((codes == UNKNOWN).sum())
        if n_missing:
            missing[column.name] = missing.get(column.name, 0) + n_missing
            drop = absent if drop is None else drop | absent
        if n_unknown:
            unknown[column.name] = unknown.get(column.name, 0) + n_unknown
        for code in range(1, len(column.levels)):
            values.append((codes == code).astype(np.float64))
    values.append(column_values(data_file, table, target, first_row))
    return values, drop


_SHIFT_SAMPLE = 1024


def _shift(values: Sequence[np.ndarray]) -> np.ndarray:
    """A centre per column from the chunk's first finite values: close enough to the mean
    that the QR of the shifted columns keeps their digits (Chan, Golub and LeVeque, 1983)."""
    shift = np.zeros(len(values))
    for position, column in enumerate(values):
        sample = column[:_SHIFT_SAMPLE]
        sample = sample[np.isfinite(sample)]
        if len(sample):
            shift[position] = sample.mean()
    return shift


def _check_weights(data_file, name: str, weights: np.ndarray, first_row: int) -> None:
    wrong = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
    if len(wrong):
        row = first_row + int(wrong[0])
        where = f"line {row + 2}" if data_file.fmt == "csv" else f"row {row + 1}"
        raise DataError(
            f"{data_file.file_id} {where}: weight column '{name}' has {float(weights[wrong[0]])}; "
            "weights must be finite and non-negative"
        )


def _design(
    values: Sequence[np.ndarray],
    rows: np.ndarray | None,
    shift: np.ndarray,
    bad: np.ndarray,
    weights: np.ndarray | None = None,
    scale_rows: bool = True,
    drop: np.ndarray | None = None,
) -> Design:
    """The rows selected by the boolean mask ``rows`` (None: all) as a :class:`Design`;
    ``bad`` counts, per column, the values that made a row unusable. With ``weights``,
    each row is multiplied by √w (``scale_rows``) or the weights are kept beside it."""
    index = None if rows is None else np.flatnonzero(rows)
    n = len(values[0]) if index is None else len(index)
    matrix = np.empty((n, len(values) + 1), order="F")
    matrix[:, 0] = 1.0
    for position, column in enumerate(values, start=1):
        target = matrix[:, position]
        if index is None:
            np.subtract(column, shift[position - 1], out=target)
        else:
            np.take(column, index, out=target)
            target -= shift[position - 1]
    n_valid = n
    if n:
        # NaN and inf propagate into a row's sum: one pass finds the candidates, which an
        # exact check confirms (a finite row whose sum overflows is kept).
        suspects = np.flatnonzero(~np.isfinite(matrix[:, 1:].sum(axis=1)))
        if len(suspects):
            finite = np.isfinite(matrix[suspects, 1:])
            broken = suspects[~finite.all(axis=1)]
            bad += (~finite).sum(axis=0)
            matrix[broken, :] = 0.0
            n_valid = n - len(broken)
    if drop is not None and n:
        # Rows with a missing category: zeroed like rows with a missing number.
        dropped = drop if index is None else drop[index]
        matrix[dropped, :] = 0.0
        n_valid = int(np.count_nonzero(matrix[:, 0]))
    kept_weights = None
    if weights is not None:
        selected = weights if index is None else weights[index]
        if scale_rows:
            matrix *= np.sqrt(selected)[:, None]
        else:
            kept_weights = selected
    return Design(matrix, n_valid, shift[:-1].copy(), float(shift[-1]), kept_weights)


def prepare_batch(
    batch: BatchSpec,
    columns: Sequence[str],
    test_fraction: float,
    weight: str | None = None,
    inputs: Sequence[InputColumn] = (),
) -> PreparedBatch:
    """Read ``batch`` (``columns`` = features then target), drop rows with a missing or
    non-finite value, and split the rest by row identity.

    Each chunk's valid rows go straight into train and held-out arrays sized from the split,
    so the batch is in memory once. Training does not use it (both models learn a chunk at a
    time from :class:`BatchReader`); it is the batch as arrays, for tools and for the tests'
    expected rows, with the same cleaning and split as training.

    Raises :class:`DataError` if the batch has rows but none of them is usable.
    """
    reader = BatchReader(
        batch, columns, test_fraction, False, weight, scale_rows=False, inputs=inputs
    )
    train = _Rows(reader.max_train, len(columns), weight is not None)
    test = _Rows(reader.max_test, len(columns), weight is not None)
    for train_design, test_design in reader:
        train.append(train_design)
        test.append(test_design)
    x_train, y_train = train.features_and_target()
    x_test, y_test = test.features_and_target()
    return PreparedBatch(
        x_train, y_train, x_test, y_test, reader.report, train.weights(), test.weights()
    )


class _Rows:
    """Preallocated C-ordered features and target (what scikit-learn takes), filled a chunk
    at a time with the valid rows of uncentred designs (at most ``capacity`` rows)."""

    def __init__(self, capacity: int, width: int, weighted: bool = False) -> None:
        self.features = np.empty((capacity, width - 1), dtype=np.float64)
        self.target = np.empty(capacity, dtype=np.float64)
        self.sample_weight = np.empty(capacity, dtype=np.float64) if weighted else None
        self.size = 0

    def append(self, design: Design) -> None:
        valid = design.valid if design.n_valid < len(design.matrix) else slice(None)
        end = self.size + design.n_valid
        self.features[self.size : end] = design.matrix[valid, 1:-1]
        self.target[self.size : end] = design.matrix[valid, -1]
        if self.sample_weight is not None:
            self.sample_weight[self.size : end] = design.weights[valid]
        self.size = end

    def weights(self) -> np.ndarray | None:
        return None if self.sample_weight is None else self.sample_weight[: self.size]

    def features_and_target(self) -> tuple[np.ndarray, np.ndarray]:
        # Contiguous views: rows dropped as incomplete leave a few unused rows at the end.
        return self.features[: self.size], self.target[: self.size]
