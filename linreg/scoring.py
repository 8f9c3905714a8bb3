"""Batch scoring: a published model's predictions for a data set larger than memory.

The data is cut into batches as training cuts it (:func:`linreg.batches.plan_batches`), each
batch read a chunk at a time (:func:`linreg.sources.iter_tables`) and written as one Parquet
shard ``part-<NNNNN>.parquet`` under the predictions directory: a row's identity (``file``,
its path relative to the source as in the training cursor, and ``row``, its 0-based number
in that file), its ``prediction``, and the columns asked to be kept. A row with an input
missing or not finite gets a null prediction and is counted per column. A category level the
model has not seen scores as training encodes it (all-zero dummies, the reference level's
effect) and is counted.

A shard is written under a hidden temporary name and renamed into place (one PUT on an
object store), so a crash leaves whole shards and at most a hidden temporary file, which
readers ignore and the next run removes; ``_scoring.json``, written last, says the set is
complete. Memory is bounded by the batch size: at most ``window`` batches are in flight on
Dask, each streamed chunk by chunk.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from linreg.batches import BatchSpec, plan_batches
from linreg.categorical import MISSING, UNKNOWN, InputColumn, design_features
from linreg.errors import DataError, ModelFileError
from linreg.model_files import (
    METADATA_FILE,
    MODEL_FILE,
    VERSIONS_DIR,
    ModelDirectory,
    is_url,
    remote_fs,
    sha256_bytes,
    write_atomic,
)
from linreg.sources import (
    CsvFormat,
    DataFile,
    StorageOptions,
    category_codes,
    column_values,
    discover_files,
    inspect_file,
    iter_tables,
)

IDENTITY_COLUMNS = ("file", "row", "prediction")
SUMMARY_FILE = "_scoring.json"
_SHARD = re.compile(r"part-\d{5,}\.parquet")
_TEMPORARY = re.compile(r"\.part-\d{5,}\.parquet\.tmp-[0-9a-f]+")


@dataclass(frozen=True)
class Scorer:
    """What scoring needs of a published model: its raw inputs and coefficients (small, so
    it travels to Dask workers instead of the estimator)."""

    version: int
    inputs: tuple[InputColumn, ...]
    coef: np.ndarray
    intercept: float
    metadata: dict[str, Any] = field(compare=False, repr=False)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.inputs)

    @property
    def features(self) -> tuple[str, ...]:
        return design_features(self.inputs)


def load_scorer(
    out_dir: str | Path,
    version: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Scorer:
    """The model published in ``out_dir``: the live one, or ``versions/<version>/``.

    ``model.pkl`` is loaded only if its sha256 matches ``model.json``, as the service does.
    Raises :class:`ModelFileError` naming the file and the problem.
    """
    directory = ModelDirectory(out_dir, storage_options)
    where: tuple[str, ...] = () if version is None else (VERSIONS_DIR, str(version))
    metadata = directory.read_json(*where, METADATA_FILE)
    if metadata is None:
        if version is None:
            raise ModelFileError(f"{out_dir}: no model published (no {METADATA_FILE})")
        kept = directory.versions()
        raise ModelFileError(
            f"--version {version}: no such version in {out_dir}/{VERSIONS_DIR} (kept: "
            f"{', '.join(map(str, kept)) if kept else 'none'})"
        )
    pkl = directory.path(*where, MODEL_FILE)
    payload = directory.read(*where, MODEL_FILE)
    if payload is None:
        raise ModelFileError(f"{pkl}: not found beside {METADATA_FILE}")
    if sha256_bytes(payload) != metadata.get("sha256"):
        raise ModelFileError(f"{pkl}: sha256 does not match {METADATA_FILE}; not scoring with it")
    try:
        estimator = joblib.load(io.BytesIO(payload))
        coef = np.array(estimator.coef_, dtype=np.float64).reshape(-1)
        intercept = float(np.asarray(estimator.intercept_, dtype=np.float64).reshape(()))
    except Exception as error:  # noqa: BLE001 - anything can come out of a bad pickle
        raise ModelFileError(f"{pkl}: not a fitted linear model ({error})") from None
    inputs = _inputs(metadata)
    if len(coef) != len(design_features(inputs)):
        raise ModelFileError(
            f"{pkl}: {len(coef)} coefficients, but {METADATA_FILE} lists "
            f"{len(design_features(inputs))} features"
        )
    coef.setflags(write=False)
    return Scorer(int(metadata.get("version", 0)), inputs, coef, intercept, metadata)


def _inputs(metadata: dict[str, Any]) -> tuple[InputColumn, ...]:
    """The raw columns a model reads, from ``model.json``: ``inputs`` (with each category's
    levels), else its ``features`` as numbers (a model published before ``inputs``)."""
    features = metadata.get("features")
    raw = metadata.get("inputs") or [{"name": name, "kind": "numeric"} for name in features or ()]
    try:
        inputs = tuple(
            InputColumn(entry["name"], entry.get("kind", "numeric"), tuple(entry.get("levels", ())))
            for entry in raw
        )
    except (KeyError, TypeError, AttributeError):
        raise ModelFileError(f"{METADATA_FILE}: 'inputs' is not a list of columns") from None
    if not inputs or list(design_features(inputs)) != features:
        raise ModelFileError(f"{METADATA_FILE}: 'inputs' do not encode to the listed features")
    return inputs


@dataclass(frozen=True)
class ScoringPlan:
    """A source checked against a model: its files, batches, and the columns each reads."""

    source: str
    files: tuple[DataFile, ...]
    batches: tuple[BatchSpec, ...]
    keep_columns: tuple[str, ...]
    read_columns: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return sum(data_file.n_rows for data_file in self.files)


def _serial_map(function, *iterables) -> list:
    return list(map(function, *iterables))


def plan_scoring(
    source: str,
    scorer: Scorer,
    keep_columns: Sequence[str] = (),
    batch_rows: int = 100_000,
    csv: CsvFormat | None = None,
    storage_options: StorageOptions | None = None,
    mapper: Callable[..., list[DataFile]] = _serial_map,
) -> ScoringPlan:
    """Every file of ``source`` inspected and checked to hold the model's inputs and the
    kept columns, before any row is scored; ``mapper`` may inspect files in parallel.

    Raises :class:`DataError` naming the file and the columns it lacks.
    """
    keep = tuple(keep_columns)
    duplicates = sorted({name for name in keep if keep.count(name) > 1})
    if duplicates:
        raise DataError(f"--keep-columns: duplicate column names {duplicates}")
    clashes = [name for name in keep if name in IDENTITY_COLUMNS]
    if clashes:
        raise DataError(
            f"--keep-columns: {clashes} would clash with the output's own columns "
            f"({', '.join(IDENTITY_COLUMNS)})"
        )
    options = dict(storage_options or {})
    found = discover_files(source, options)
    inspect = partial(inspect_file, storage_options=options, csv=csv or CsvFormat())
    files = mapper(inspect, [file_id for file_id, _ in found], [url for _, url in found])
    for data_file in files:
        _check_columns(data_file, scorer, keep)
    read = tuple(dict.fromkeys((*scorer.input_names, *keep)))
    if sum(data_file.n_rows for data_file in files) == 0:
        raise DataError(f"{source}: no data rows (every file is empty or header only)")
    batches = plan_batches(files, {}, batch_rows)
    return ScoringPlan(source, tuple(files), tuple(batches), keep, read)


def _check_columns(data_file: DataFile, scorer: Scorer, keep: Sequence[str]) -> None:
    absent = [name for name in scorer.input_names if name not in data_file.columns]
    if absent:
        raise DataError(
            f"{data_file.file_id}: lacks input column(s) {absent} of model version "
            f"{scorer.version} (columns: {', '.join(data_file.columns)})"
        )
    for column in scorer.inputs:
        if column.kind == "numeric" and column.name not in data_file.numeric_columns:
            why = data_file.excluded.get(column.name)
            raise DataError(
                f"{data_file.file_id}: input column '{column.name}' is not numeric"
                + (f": {why}" if why else "")
            )
    unknown = [name for name in keep if name not in data_file.columns]
    if unknown:
        raise DataError(
            f"--keep-columns: {data_file.file_id} has no column(s) {unknown} "
            f"(columns: {', '.join(data_file.columns)})"
        )


@dataclass
class ShardReport:
    """What scoring one batch wrote and saw."""

    index: int
    shard: str
    rows: int = 0
    rows_null: int = 0
    missing_by_column: dict[str, int] = field(default_factory=dict)
    unknown_levels: dict[str, int] = field(default_factory=dict)


@dataclass
class ScoringSummary:
    """A whole scoring run: what ``--mode predict`` prints and ``_scoring.json`` holds."""

    model_version: int
    source: str
    predictions: str
    rows: int = 0
    rows_scored: int = 0
    rows_null: int = 0
    missing_by_column: dict[str, int] = field(default_factory=dict)
    unknown_levels: dict[str, int] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)

    def add(self, report: ShardReport) -> None:
        self.rows += report.rows
        self.rows_null += report.rows_null
        self.rows_scored = self.rows - self.rows_null
        for total, part in (
            (self.missing_by_column, report.missing_by_column),
            (self.unknown_levels, report.unknown_levels),
        ):
            for name, count in part.items():
                total[name] = total.get(name, 0) + count
        self.shards.append(report.shard)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def check_predictions(location: str, storage_options: StorageOptions | None = None) -> list[str]:
    """The files an earlier scoring left in ``location`` (made if missing), changing nothing.

    ``location`` must be empty or hold only what an earlier scoring wrote (its shards,
    summary and temporary files); anything else is refused (ValueError), so scoring never
    deletes a file it did not write.
    """
    names = _listing(location, storage_options)
    foreign = [name for name in names if not _ours(name)]
    if foreign:
        shown = ", ".join(sorted(foreign)[:3])
        raise ValueError(
            f"--predictions {location}: holds files that are not predictions ({shown}); "
            "give an empty directory or one an earlier --mode predict wrote"
        )
    return names


def prepare_predictions(location: str, storage_options: StorageOptions | None = None) -> int:
    """Make ``location`` ready for a run's shards (:func:`check_predictions`), an earlier
    run's output removed so no stale shard mixes with this run's; return the shards removed."""
    names = check_predictions(location, storage_options)
    for name in names:
        _remove(location, name, storage_options)
    return sum(1 for name in names if _SHARD.fullmatch(name))


def _ours(name: str) -> bool:
    return bool(_SHARD.fullmatch(name) or _TEMPORARY.fullmatch(name)) or name == SUMMARY_FILE


def _listing(location: str, storage_options: StorageOptions | None) -> list[str]:
    if is_url(location):
        fs = remote_fs(location, storage_options)
        try:
            entries = fs.ls(location.rstrip("/"), detail=False)
        except FileNotFoundError:
            return []
        return [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries]
    path = Path(location)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--predictions {location}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--predictions {location}: cannot create it ({error.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"--predictions {location}: not writable")
    return [entry.name for entry in path.iterdir()]


def _remove(location: str, name: str, storage_options: StorageOptions | None) -> None:
    if is_url(location):
        remote_fs(location, storage_options).rm_file(f"{location.rstrip('/')}/{name}")
    else:
        (Path(location) / name).unlink(missing_ok=True)


def score_batch(
    index: int,
    batch: BatchSpec,
    scorer: Scorer,
    read_columns: Sequence[str],
    keep_columns: Sequence[str],
    predictions: str,
    storage_options: StorageOptions | None = None,
) -> ShardReport:
    """Score one batch into shard ``part-<index>.parquet`` of ``predictions``, written whole
    or not at all (hidden temporary file, then rename; on an object store, one PUT)."""
    name = shard_name(index)
    report = ShardReport(index, name)
    tables = _scored_tables(batch, scorer, read_columns, keep_columns, report)
    if is_url(predictions):
        buffer = io.BytesIO()
        _write_tables(buffer, tables)
        fs = remote_fs(predictions, storage_options)
        fs.pipe_file(f"{predictions.rstrip('/')}/{name}", buffer.getvalue())
        return report
    final = Path(predictions) / name
    temporary = final.with_name(f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(temporary, "wb") as handle:
            _write_tables(handle, tables)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return report


def _write_tables(sink: Any, tables: Iterable[pa.Table]) -> None:
    """Each chunk a row group of one Parquet file: one chunk in memory at a time."""
    writer = schema = None
    try:
        for table in tables:
            if writer is None:
                schema = table.schema
                # Dictionary encoding only where values repeat (file names, kept text):
                # tried on the unique rows and predictions, it took 40x the time of the rest.
                text = [
                    column.name
                    for column in schema
                    if pa.types.is_string(column.type) or pa.types.is_dictionary(column.type)
                ]
                writer = pq.ParquetWriter(sink, schema, use_dictionary=text)
            # A kept column may be typed differently in another file of the same batch.
            writer.write_table(table if table.schema == schema else table.cast(schema))
    finally:
        if writer is not None:
            writer.close()


def _scored_tables(
    batch: BatchSpec,
    scorer: Scorer,
    read_columns: Sequence[str],
    keep_columns: Sequence[str],
    report: ShardReport,
) -> Iterator[pa.Table]:
    for segment in batch.segments:
        data_file = segment.data_file
        first_row = segment.start
        for chunk in iter_tables(data_file, read_columns, segment.start, segment.stop):
            n = chunk.num_rows
            prediction = _predict(data_file, chunk, scorer, first_row, report)
            columns = {
                "file": pa.repeat(pa.scalar(data_file.file_id, pa.string()), n),
                "row": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
                "prediction": prediction,
            }
            for name in keep_columns:
                columns[name] = chunk.column(name)
            report.rows += n
            first_row += n
            yield pa.table(columns)


def _predict(
    data_file: DataFile, chunk: Any, scorer: Scorer, first_row: int, report: ShardReport
) -> pa.Array:
    """The chunk's predictions, null where an input is missing or not finite; counts them."""
    n = chunk.num_rows
    # Column-major: each column is written contiguously, and X @ coef is one BLAS call.
    X = np.empty((n, len(scorer.coef)), dtype=np.float64, order="F")
    valid = np.ones(n, dtype=bool)
    position = 0
    for column in scorer.inputs:
        if column.kind == "numeric":
            values = column_values(data_file, chunk, column.name, first_row)
            X[:, position] = values
            finite = np.isfinite(values)
            valid &= finite
            bad = n - int(np.count_nonzero(finite))
            position += 1
        else:
            codes = category_codes(chunk, column.name, column.levels)
            absent = codes == MISSING
            valid &= ~absent
            bad = int(absent.sum())
            unknown = int((codes == UNKNOWN).sum())
            if unknown:
                report.unknown_levels[column.name] = (
                    report.unknown_levels.get(column.name, 0) + unknown
                )
            # Treatment coding as in training: level 0 is the reference and has no column.
            for code in range(1, len(column.levels)):
                X[:, position] = codes == code
                position += 1
        if bad:
            report.missing_by_column[column.name] = (
                report.missing_by_column.get(column.name, 0) + bad
            )
    # Every row at once (an incomplete row's NaN is masked out below): no copy of the
    # complete rows, and each row's value is what model.predict computes for it.
    prediction = X @ scorer.coef + scorer.intercept
    n_valid = int(np.count_nonzero(valid))
    if n_valid == n:
        return pa.array(prediction)
    report.rows_null += n - n_valid
    return pa.array(prediction, mask=~valid)


def map_in_window(
    client: Any, function: Callable[..., Any], items: Sequence[tuple], window: int
) -> Iterator[Any]:
    """``function(*item)`` for each item on Dask, results in order, at most ``window`` in
    flight (backpressure: memory bounded by ``window`` batches, not the data set)."""
    pending: deque = deque()
    try:
        for item in items:
            if len(pending) >= window:
                yield pending.popleft().result()
            pending.append(client.submit(function, *item, pure=False))
        while pending:
            yield pending.popleft().result()
    finally:
        if pending:
            client.cancel(list(pending))


def run_scoring(
    plan: ScoringPlan,
    scorer: Scorer,
    predictions: str,
    storage_options: StorageOptions | None = None,
    client: Any = None,
    window: int | None = None,
    on_shard: Callable[[ShardReport], None] | None = None,
) -> ScoringSummary:
    """Score every batch of ``plan`` into ``predictions`` (in this process, or on the Dask
    cluster of ``client`` with ``window`` batches in flight: two per worker thread by
    default), then write ``_scoring.json``. Old outputs there are replaced."""
    prepare_predictions(predictions, storage_options)
    summary = ScoringSummary(scorer.version, plan.source, predictions)
    items = [
        (index, batch, scorer, plan.read_columns, plan.keep_columns, predictions, storage_options)
        for index, batch in enumerate(plan.batches)
    ]
    if client is None:
        reports: Iterable[ShardReport] = (score_batch(*item) for item in items)
    else:
        threads = max(1, sum(client.nthreads().values()))
        reports = map_in_window(client, score_batch, items, window or 2 * threads)
    for report in reports:
        summary.add(report)
        if on_shard is not None:
            on_shard(report)
    encoded = (json.dumps(summary.to_dict(), indent=2) + "\n").encode()
    if is_url(predictions):
        remote_fs(predictions, storage_options).pipe_file(
            f"{predictions.rstrip('/')}/{SUMMARY_FILE}", encoded
        )
    else:
        write_atomic(Path(predictions) / SUMMARY_FILE, encoded)
    return summary
