"""Data sources: find the CSV/Parquet files behind a path, glob or fsspec URL, read their
schemas, and read row ranges of them as float64 arrays.

A file is identified by its path relative to the source root (``file_id``): that string is
the key of the training cursor and, with the row number, the identity that decides a row's
train/test membership, so moving the whole data directory changes neither.

Object stores (``s3://``, ``gs://``, ``az://``/``abfs://``) are read through fsspec with the
run's ``storage_options``; a missing backend, missing credentials or an unreachable endpoint
is one :class:`DataError` that names the extra to install or the variables to set.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

from linreg.errors import DataError

FileFormat = Literal["parquet", "csv"]
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = tuple(
    f"{kind}{compression}"
    for kind in (".csv", ".tsv")
    for compression in ("", ".gz", ".bz2", ".xz", ".zst")
)
_GLOB_CHARS = ("*", "?", "[")
LOCAL_PROTOCOLS = (None, "file", "local")
StorageOptions = Mapping[str, Any]

# The fsspec backend of each object store, and the extra of this package that installs it.
_BACKENDS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}
_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
    "or --storage-option anon=true for a public bucket",
    "gcs": "set GOOGLE_APPLICATION_CREDENTIALS, or --storage-option token=anon for a public bucket",
    "azure": "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
    "AZURE_STORAGE_ACCOUNT_KEY",
}
# Raised by the backends' SDKs (botocore, google-auth, azure-identity), named, not imported:
# each SDK is optional.
_NO_CREDENTIALS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "DefaultCredentialsError",
        "CredentialUnavailableError",
        "ClientAuthenticationError",
    }
)
_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"})


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written: the options spreadsheets and other tools vary.

    ``delimiter`` None detects it from the header line among ``, ; tab |`` (or takes it from
    a first line ``sep=;``, as Excel writes and reads); ``na_values`` are added to the usual
    missing-value tokens (empty, NA, N/A, NaN, null, ...). ``encoding`` None reads UTF-8, or
    UTF-16 when the file starts with its byte-order mark (Excel's "Unicode text");
    ``skip_rows`` is the lines before the header (1 after a ``sep=`` line).
    """

    delimiter: str | None = None
    decimal: str = "."
    thousands: str | None = None
    na_values: tuple[str, ...] = ()
    encoding: str | None = None
    skip_rows: int = 0


CSV_DELIMITERS = (",", ";", "\t", "|")
# pyarrow's own defaults, which the added --na-values extend.
CSV_NULLS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null",
)  # fmt: skip


@dataclass(frozen=True)
class DataFile:
    """One data file: where it is, its format, its rows and its columns.

    ``excluded`` maps each column that cannot be a feature to why, with a sample value.
    """

    file_id: str
    url: str
    fmt: FileFormat
    n_rows: int
    columns: tuple[str, ...]
    numeric_columns: frozenset[str]
    # Not compared, hashed or shown: it may hold credentials.
    storage_options: StorageOptions = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )
    csv: CsvFormat = field(default_factory=CsvFormat, compare=False)
    excluded: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


def canonical_source(source: str) -> str:
    """One spelling per source: ``data/x``, ``./data/x/`` and ``file:///abs/data/x`` agree.

    An object-store URL is spelt from its backend's class alone (``s3a://b/x/`` is
    ``s3://b/x``): no client is made, so nothing is contacted and no credential is needed.
    """
    protocol, _ = split_protocol(source)
    if protocol in LOCAL_PROTOCOLS:
        fs, path = url_to_fs(source)
        return fs.unstrip_protocol(path).rstrip("/")
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as error:
        raise DataError(f"{source}: {_storage_problem(source, error)}") from None
    name = cls.protocol if isinstance(cls.protocol, str) else cls.protocol[0]
    return f"{name}://{cls._strip_protocol(source)}".rstrip("/")


def _storage_problem(location: str, error: BaseException) -> str | None:
    """What to tell the user when ``error`` is a storage set-up problem, else None."""
    protocol = split_protocol(location)[0] or "file"
    package, extra = _BACKENDS.get(protocol, (None, None))
    name = type(error).__name__
    if isinstance(error, ImportError):
        if extra is None:
            return f"no fsspec backend for {protocol}:// ({_first_line(error)})"
        return (
            f"{protocol}:// needs {package}, which is not installed: pip install "
            f"'linreg-pipeline[{extra}]' (from a clone: pip install '.[{extra}]')"
        )
    if isinstance(error, ValueError) and "Protocol not known" in str(error):
        return f"unknown storage protocol {protocol}://"
    if name in _NO_CREDENTIALS:
        hint = _CREDENTIALS.get(extra or "", "see the backend's documentation")
        return f"no credentials for {protocol}:// ({_first_line(error)}): {hint}"
    if isinstance(error, PermissionError):
        if extra is None:
            return f"permission denied ({_first_line(error)})"
        return (
            f"access denied ({_first_line(error)}): check the credentials ({_CREDENTIALS[extra]})"
        )
    if name in _UNREACHABLE or isinstance(error, ConnectionError):
        return (
            f"cannot reach the storage endpoint ({_first_line(error)}); "
            "check --storage-option endpoint_url= or AWS_ENDPOINT_URL"
        )
    return None


def file_format(path: str) -> FileFormat | None:
    lowered = path.lower()
    if lowered.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lowered.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _is_hidden(relative_path: str) -> bool:
    # Spark/Hadoop markers (_SUCCESS, _metadata) and dot files are not data.
    return any(part.startswith((".", "_")) for part in relative_path.split("/"))


class FoundFile(NamedTuple):
    """A data file as listed: its id (path relative to the source), URL, and ``stamp``,
    what changes when the file does (size with modification time, inode or content tag),
    None when the store lists neither."""

    file_id: str
    url: str
    stamp: str | None


def discover_files(
    source: str, storage_options: StorageOptions | None = None
) -> list[tuple[str, str]]:
    """Return ``(file_id, url)`` for every data file of ``source``, sorted by ``file_id``.

    ``source`` is a file, a directory (searched recursively) or a glob, as a local path or
    an fsspec URL (opened with ``storage_options``). Raises :class:`DataError` when nothing
    usable is there, or the store cannot be read.
    """
    return [(found.file_id, found.url) for found in discover_stamped_files(source, storage_options)]


def discover_stamped_files(
    source: str, storage_options: StorageOptions | None = None
) -> list[FoundFile]:
    """:func:`discover_files` with each file's stamp, from the same listing."""
    try:
        return _discover_files(source, storage_options or {})
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{source}: no such file or directory") from None
    except Exception as error:
        problem = _storage_problem(source, error)
        if problem is None:
            raise
        raise DataError(f"{source}: {problem}") from None


# What the fsspec back-ends list that changes with a file's content: local files (mtime, ino),
# S3 (LastModified, ETag, VersionId), GCS (updated, generation, md5Hash), Azure
# (last_modified, etag).
_CHANGE_FIELDS = (
    "mtime", "ino", "LastModified", "ETag", "VersionId", "updated", "generation", "md5Hash",
    "last_modified", "etag",
)  # fmt: skip


def _stamp(info: Mapping[str, Any]) -> str | None:
    size = info.get("size")
    changes = [str(info[key]) for key in _CHANGE_FIELDS if info.get(key) not in (None, "")]
    if size is None or not changes:
        return None  # the size alone cannot tell a rewritten file from the one before
    return json.dumps([size, *changes])


def _discover_files(source: str, storage_options: StorageOptions) -> list[FoundFile]:
    fs, path = url_to_fs(source, **storage_options)
    # A long-lived process (a worker, `--mode serve`) must see objects added since its
    # last listing: object-store file systems cache listings per instance.
    fs.invalidate_cache()
    if any(char in path for char in _GLOB_CHARS):
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        listed = fs.glob(path, detail=True)
        candidates = {p: info for p, info in listed.items() if info.get("type") == "file"}
    elif fs.isdir(path):
        root = path.rstrip("/")
        candidates = fs.find(path, detail=True)
    elif fs.isfile(path):
        if file_format(path) is None:
            raise DataError(
                f"{source}: not a CSV or Parquet file (expected one of "
                f"{', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)})"
            )
        root = posixpath.dirname(path)
        candidates = {path: fs.info(path)}
    else:
        raise DataError(f"{source}: no such file or directory")
    found = []
    for candidate, info in candidates.items():
        relative = posixpath.relpath(candidate, root) if root else candidate
        if file_format(candidate) is None or _is_hidden(relative):
            continue
        found.append(FoundFile(relative, fs.unstrip_protocol(candidate), _stamp(info)))
    if not found:
        raise DataError(f"{source}: no CSV or Parquet files found")
    return sorted(found)


def _is_numeric(arrow_type: pa.DataType) -> bool:
    # An all-empty CSV column is inferred as null: its values are missing, not text.
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_null(arrow_type)
        or pa.types.is_boolean(arrow_type)  # a 0/1 feature
    )


def _exclusion(arrow_type: pa.DataType, sample: object) -> str:
    """Why a column of ``arrow_type`` is not a default feature, with a sample value."""
    if pa.types.is_temporal(arrow_type):
        kind = "a date/time column"
    elif pa.types.is_dictionary(arrow_type):
        kind = "a dictionary-encoded (categorical) column"
    elif pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        kind = "text"
    else:
        kind = f"of type {arrow_type}"
    if sample is None:
        return kind
    hint = next((hint for form, hint in _NUMBER_FORMS if form.fullmatch(str(sample))), None)
    return f"{kind} (e.g. {sample!r}{'; ' + hint if hint else ''})"


# Numbers written as spreadsheets in other locales write them, and the options that read them.
_NUMBER_FORMS = tuple(
    (re.compile(form), f"read as numbers with {options}")
    for form, options in (
        (r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?", "--csv-thousands ,"),
        (r"[-+]?\d{1,3}(\.\d{3})+(,\d*)?", "--csv-decimal , --csv-thousands ."),
        (r"[-+]?\d*,\d+([eE][-+]?\d+)?", "--csv-decimal ,"),
        (r"[-+]?\d{1,3}( \d{3})+([.,]\d*)?", "--csv-thousands ' ' (and --csv-decimal , if so)"),
    )
)


_PANDAS_INDEX = re.compile(r"Unnamed: \d+|__index_level_\d+__")


def _left_out(name: str, empty: str | None) -> str | None:
    """Why a numeric column is still not a default feature (``--features`` may name it):
    a row index, a column without a name, or one whose values are all missing (``empty``
    says where), as spreadsheets and pandas write them."""
    if not name.strip():
        return "unnamed (a row index, as pandas' to_csv writes one, or a trailing delimiter)"
    if _PANDAS_INDEX.fullmatch(name):
        return "a row index written by pandas"
    return f"empty ({empty})" if empty else None


def _empty_parquet_columns(metadata: pq.FileMetaData) -> dict[str, str]:
    """The columns whose values are all null by the row groups' statistics (no data read)."""
    if metadata.num_rows == 0 or metadata.num_row_groups == 0:
        return {}
    empty = {}
    for index in range(metadata.num_columns):
        chunks = [metadata.row_group(g).column(index) for g in range(metadata.num_row_groups)]
        if all(
            chunk.statistics is not None
            and chunk.statistics.has_null_count
            and chunk.statistics.null_count == chunk.num_values
            for chunk in chunks
        ):
            empty[chunks[0].path_in_schema] = (
                f"every one of its {metadata.num_rows:,} values missing"
            )
    return empty


def _local_path(url: str) -> str | None:
    """The path of a ``file://`` URL (or plain path), None for any other protocol."""
    fs, path = url_to_fs(url)
    return path if isinstance(fs, LocalFileSystem) else None


def _open(url: str, storage_options: StorageOptions | None = None):
    return fsspec.open(
        url, "rb", compression=infer_compression(url), **(storage_options or {})
    ).open()


def inspect_file(
    file_id: str,
    url: str,
    storage_options: StorageOptions | None = None,
    csv: CsvFormat | None = None,
) -> DataFile:
    """Read the schema and row count of one file; any problem names the file."""
    options = dict(storage_options or {})
    csv = csv or CsvFormat()
    samples: dict[str, object] = {}
    fmt = file_format(url)
    if fmt is None:
        raise DataError(f"{file_id}: not a CSV or Parquet file")
    try:
        if fmt == "parquet":
            with _open(url, options) as handle:
                metadata = pq.ParquetFile(handle).metadata
                schema = metadata.schema.to_arrow_schema()
                check_unique_names(schema.names)
                n_rows = metadata.num_rows
                empty = _empty_parquet_columns(metadata)
        else:
            schema, n_rows, samples, csv, empty = _inspect_csv(url, options, csv)
    except DataError as error:
        raise DataError(f"{file_id}: {error}") from None
    except FileNotFoundError:
        raise DataError(f"{file_id}: file not found") from None
    except PermissionError:
        raise DataError(f"{file_id}: permission denied") from None
    except (pa.ArrowException, OSError, ValueError, EOFError) as error:
        kind = "Parquet" if fmt == "parquet" else "CSV"
        hint = f"; {ENCODING_HINT}" if _invalid_utf8(error) else ""
        raise DataError(
            f"{file_id}: not a readable {kind} file ({_first_line(error)}){hint}"
        ) from None
    except Exception as error:
        problem = _storage_problem(url, error)
        if problem is None:
            raise
        raise DataError(f"{file_id}: {problem}") from None
    columns = tuple(schema.names)
    numeric = frozenset(field.name for field in schema if _is_numeric(field.type))
    excluded = {}
    for column in schema:
        why = (
            _left_out(column.name, empty.get(column.name))
            if column.name in numeric
            else _exclusion(column.type, samples.get(column.name))
        )
        if why:
            excluded[column.name] = why
    return DataFile(file_id, url, fmt, n_rows, columns, numeric, options, csv, excluded)


def _inspect_csv(
    url: str, storage_options: StorageOptions, csv: CsvFormat
) -> tuple[pa.Schema, int, dict[str, object], CsvFormat, dict[str, str]]:
    """Schema (types inferred from the first block, numbers written with ``csv.thousands``
    or ``csv.decimal`` included), row count, a sample value per text column, the format
    with its encoding and delimiter detected, and the columns without a value in the first
    block. Rows are counted without converting any value, so a bad cell
    far down fails only the run that uses its column, naming it there."""
    with _open(url, storage_options) as handle:
        head = handle.read(1 << 16)
    if not head:
        raise DataError("empty file (no header)")
    csv = _detect_format(head, csv)
    read = _read_options(csv)
    parse = pacsv.ParseOptions(delimiter=csv.delimiter)
    convert = _convert_options(csv)
    # Readers are closed before their file, not left to the garbage collector: a streaming
    # reader abandoned with blocks still being read ahead on Arrow's threads can abort the
    # process at exit (apache/arrow#34314, #43604: "terminate called without an active
    # exception", seen once in CI after a bad input's error).
    with (
        _open(url, storage_options) as handle,
        pacsv.open_csv(
            handle, read_options=read, parse_options=parse, convert_options=convert
        ) as reader,
    ):
        schema = reader.schema
        check_unique_names(schema.names)
        first = next(iter(reader), None)  # None: a header-only file
    fields, samples, empty = [], {}, {}
    for index, inferred in enumerate(schema):
        column = first.column(index) if first is not None else None
        kind = inferred.type
        if column is not None and column.null_count == len(column):
            empty[inferred.name] = f"no value in its first {len(column):,} rows"
        if column is not None and pa.types.is_string(kind):
            if _parses_as_numbers(column, csv):
                kind = pa.float64()
            else:
                samples[inferred.name] = _first_non_number(column, csv)
        fields.append(pa.field(inferred.name, kind))
    names = schema.names[:1]
    with (
        _open(url, storage_options) as handle,
        pacsv.open_csv(
            handle,
            read_options=read,
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                include_columns=names, column_types={name: pa.string() for name in names}
            ),
        ) as counter,
    ):
        n_rows = sum(batch.num_rows for batch in counter)
    return pa.schema(fields), n_rows, samples, csv, empty


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _detect_format(head: bytes, csv: CsvFormat) -> CsvFormat:
    """``csv`` completed from a file's first bytes: its encoding (UTF-16 by its byte-order
    mark), the lines before its header (Excel's ``sep=;`` line) and its delimiter."""
    encoding = csv.encoding
    if encoding is None and head.startswith(_UTF16_BOMS):
        encoding = "utf-16"
    lines = _decode_head(head, encoding).lstrip("\ufeff").splitlines()
    delimiter, skip_rows = csv.delimiter, 0
    if lines and len(lines[0]) == 5 and lines[0][:4].lower() == "sep=":
        delimiter, skip_rows = delimiter or lines[0][4], 1
        lines = lines[1:]
    if delimiter is None:
        delimiter = _detect_delimiter(lines[0] if lines else "")
    return replace(csv, delimiter=delimiter, encoding=encoding, skip_rows=skip_rows)


def _decode_head(head: bytes, encoding: str | None) -> str:
    """The first bytes of a file as text; a byte the encoding cannot decode is one error
    naming it, with the option that fixes it."""
    try:
        return head.decode(encoding or "utf-8")
    except LookupError:
        raise DataError(f"--csv-encoding: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as error:
        if error.start >= len(head) - 4:  # a character cut by the end of the bytes read
            return head[: error.start].decode(encoding or "utf-8")
        raise DataError(
            f"not {encoding or 'UTF-8'} text (byte 0x{head[error.start]:02x} at offset "
            f"{error.start}): {ENCODING_HINT} or latin-1"
        ) from None


def _read_options(csv: CsvFormat, **extra: Any) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(encoding=csv.encoding or "utf8", skip_rows=csv.skip_rows, **extra)


def check_unique_names(names: Sequence[str]) -> None:
    """Refuses a name given twice; blank names (never a default feature, never named) may
    repeat, as a pandas index and a trailing delimiter give."""
    duplicates = sorted({name for name in names if name.strip() and list(names).count(name) > 1})
    if duplicates:
        raise DataError(f"duplicate column names {duplicates}")


def _detect_delimiter(line: str) -> str:
    """The candidate delimiter that occurs most often in the header line, outside quotes."""
    unquoted = "".join(part for index, part in enumerate(line.split('"')) if index % 2 == 0)
    counts = {candidate: unquoted.count(candidate) for candidate in CSV_DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _convert_options(csv: CsvFormat, **extra: Any) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        null_values=[*CSV_NULLS, *csv.na_values],
        strings_can_be_null=True,
        decimal_point=csv.decimal,
        **extra,
    )


def _normalised_numbers(column: pa.Array, csv: CsvFormat) -> pa.Array:
    """Text written with a thousands separator or decimal comma, as ``1234.5`` text."""
    if csv.thousands:
        column = pc.replace_substring(column, csv.thousands, "")
    if csv.decimal != ".":
        column = pc.replace_substring(column, csv.decimal, ".")
    return pc.utf8_trim_whitespace(column)


def _first_non_number(column: pa.Array, csv: CsvFormat) -> str | None:
    """The first value of a text column that is not a number: the one to show a user."""
    texts = _normalised_numbers(column, csv).to_pylist()
    for raw, text in zip(column.to_pylist(), texts, strict=True):
        if text:
            try:
                float(text)
            except ValueError:
                return raw
    return None


def _parses_as_numbers(column: pa.Array, csv: CsvFormat) -> bool:
    if column.null_count == len(column):
        return False
    try:
        _normalised_numbers(column, csv).cast(pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


CHUNK_ROWS = 65_536
"""Rows decoded at a time: a chunk of 20 float64 columns is ~10 MiB, whatever the row groups.
Smaller chunks held less (16,384 rows: 85 against 137 MiB per reader of a 1M-row group of 21
columns) but cost 15 % more CPU per row (0.35 against 0.305 s per 1M rows, one core)."""
# Arrow's read buffer per column: a local file is read through Arrow's own I/O, where 64 KiB
# per column held 20 MiB less per reader than 1 MiB at the same CPU per row; a Python file
# object (object storage, through fsspec) costs a Python call per buffer, so it reads more.
PARQUET_BUFFER_BYTES = 64 << 10
REMOTE_PARQUET_BUFFER_BYTES = 1 << 20


def read_rows(data_file: DataFile, columns: Sequence[str], start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``columns`` as a float64 array; missing values are NaN."""
    chunks = list(iter_rows(data_file, columns, start, stop))
    if not chunks:
        return np.empty((0, len(columns)), dtype=np.float64)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def iter_rows(
    data_file: DataFile, columns: Sequence[str], start: int, stop: int
) -> Iterator[np.ndarray]:
    """Rows ``[start, stop)`` of ``columns`` as consecutive float64 arrays of at most
    :data:`CHUNK_ROWS` rows, so a caller holds one chunk of the file at a time."""
    first_row = start
    for table in iter_tables(data_file, columns, start, stop):
        block = np.empty((table.num_rows, len(columns)), dtype=np.float64)
        for position, name in enumerate(columns):
            block[:, position] = column_values(data_file, table, name, first_row)
        first_row += table.num_rows
        yield block


def iter_tables(
    data_file: DataFile, columns: Sequence[str], start: int, stop: int
) -> Iterator[pa.RecordBatch | pa.Table]:
    """Rows ``[start, stop)`` of ``columns`` as Arrow tables of at most :data:`CHUNK_ROWS`
    rows: Parquet is decoded in slices even when a row group holds millions of rows."""
    tables = (
        _parquet_slices(data_file.url, columns, start, stop, data_file.storage_options)
        if data_file.fmt == "parquet"
        else _csv_blocks(data_file, columns, start, stop)
    )
    try:
        yield from tables
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{data_file.file_id}: file not found") from None
    except (pa.ArrowException, OSError, ValueError, EOFError) as error:
        raise DataError(
            f"{data_file.file_id}: cannot read rows {start}-{stop} ({_first_line(error)})"
        ) from None
    finally:
        tables.close()


def column_values(
    data_file: DataFile, table: pa.RecordBatch | pa.Table, name: str, first_row: int = 0
) -> np.ndarray:
    """One column of a chunk as a 1-d float64 array, missing values as NaN; zero-copy for a
    float64 column without nulls. CSV columns arrive as text (``first_row`` is the chunk's
    first data row in its file): a value that is not a number is one error naming the file,
    the column, the line and the value."""
    column = table.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if data_file.fmt == "csv" and pa.types.is_string(column.type):
        return _csv_numbers(data_file, column, name, first_row)
    if not _is_numeric(column.type):
        raise DataError(f"{data_file.file_id}: column '{name}' is not numeric ({column.type})")
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        column = column.cast(pa.float64())
    values = column.to_numpy(zero_copy_only=False)
    # float32 and float16 too (Spark's FloatType, pandas' float32): the design matrix is
    # filled with out= operations, which refuse to cast float64 down.
    return values if values.dtype == np.float64 else values.astype(np.float64)


def category_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A categorical column as trimmed text: dictionary, integer or boolean values alike."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    return pc.utf8_trim_whitespace(column)


def column_levels(data_file: DataFile, name: str) -> set[str]:
    """The distinct non-missing values of column ``name`` of ``data_file``, as text."""
    levels: set[str] = set()
    for table in iter_tables(data_file, [name], 0, data_file.n_rows):
        levels.update(pc.unique(category_text(table.column(name)).drop_null()).to_pylist())
    return levels


def category_codes(
    table: pa.RecordBatch | pa.Table, name: str, levels: Sequence[str]
) -> np.ndarray:
    """One categorical column of a chunk as int64 codes: the position of each value in
    ``levels``, :data:`~linreg.categorical.MISSING` (-1) for a missing value and
    :data:`~linreg.categorical.UNKNOWN` (-2) for a value that is not among ``levels``."""
    text = category_text(table.column(name))
    index = pc.index_in(text, value_set=pa.array(list(levels), pa.string()))
    codes = index.fill_null(-2).to_numpy(zero_copy_only=False).astype(np.int64)
    if text.null_count:
        codes[text.is_null().to_numpy(zero_copy_only=False)] = -1
    return codes


def _parquet_slices(
    url: str,
    columns: Sequence[str],
    start: int,
    stop: int,
    storage_options: StorageOptions | None = None,
) -> Generator[pa.RecordBatch, None, None]:
    local = _local_path(url)
    # A local file is read by Arrow's own I/O: through a Python file object (fsspec's) the
    # same decode ran at a quarter of the speed (1.8 M vs 6.9 M rows/s of 21 columns).
    with contextlib.nullcontext(local) if local else _open(url, storage_options) as handle:
        # Arrow's default pre-buffering reads every selected row group before decoding the
        # first slice (a whole batch held compressed, 250 MiB for 1M rows of 21 columns);
        # unbuffered, a buffered stream per column keeps a slice's worth (60 MiB of Arrow
        # memory with 64 KiB buffers), as fast, whatever the row-group size.
        buffer_size = PARQUET_BUFFER_BYTES if local else REMOTE_PARQUET_BUFFER_BYTES
        parquet_file = pq.ParquetFile(handle, pre_buffer=False, buffer_size=buffer_size)
        metadata = parquet_file.metadata
        groups, offset, first_offset = [], 0, None
        for index in range(metadata.num_row_groups):
            group_rows = metadata.row_group(index).num_rows
            if offset < stop and offset + group_rows > start:
                groups.append(index)
                first_offset = offset if first_offset is None else first_offset
            offset += group_rows
        if not groups:
            return
        position = first_offset
        for batch in parquet_file.iter_batches(
            batch_size=CHUNK_ROWS, row_groups=groups, columns=list(columns), use_threads=False
        ):
            first = max(start - position, 0)
            last = min(stop - position, batch.num_rows)
            position += batch.num_rows
            if last > first:
                yield batch.slice(first, last - first)
            if position >= stop:
                return


def _csv_numbers(data_file: DataFile, column: pa.Array, name: str, first_row: int) -> np.ndarray:
    text = _normalised_numbers(column, data_file.csv)
    try:
        return text.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    try:  # true/false (any case), as the inspection's type inference reads them: 1/0
        return text.cast(pa.bool_()).cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    for offset, value in enumerate(text.to_pylist()):
        if value is None:
            continue
        try:
            float(value)
        except ValueError:
            # Line numbers as an editor shows them: the header is line 1 (or 2, after sep=).
            line = first_row + offset + 2 + data_file.csv.skip_rows
            raw = column[offset].as_py()
            raise DataError(
                f"{data_file.file_id} line {line}: column '{name}' has a non-numeric value "
                f"{raw!r} (mark such tokens missing with --na-values)"
            ) from None
    raise DataError(f"{data_file.file_id}: column '{name}' is not numeric")


def _csv_blocks(
    data_file: DataFile, columns: Sequence[str], start: int, stop: int
) -> Generator[pa.RecordBatch, None, None]:
    # Only the columns a run uses are parsed, as text: numbers are converted (and a bad one
    # reported by line) in column_values.
    convert = _convert_options(
        data_file.csv,
        include_columns=list(columns),
        column_types={name: pa.string() for name in columns},
    )
    parse = pacsv.ParseOptions(delimiter=data_file.csv.delimiter or ",")
    read = _read_options(data_file.csv, skip_rows_after_names=start)
    wanted = stop - start
    with _open(data_file.url, data_file.storage_options) as handle:
        try:
            with pacsv.open_csv(
                handle, read_options=read, parse_options=parse, convert_options=convert
            ) as reader:  # closed before the file (see _inspect_csv)
                for block in reader:
                    rows = block.slice(0, wanted)
                    wanted -= rows.num_rows
                    yield rows
                    if wanted <= 0:
                        break
        except pa.ArrowInvalid as error:
            raise DataError(_describe_csv_error(data_file, error, start, stop)) from None


def _describe_csv_error(data_file: DataFile, error: pa.ArrowInvalid, start: int, stop: int) -> str:
    message = _first_line(error)
    where = f"{data_file.file_id} (rows {start}-{stop})"
    if "conversion error" in message and "column #" in message:
        index = int(message.split("column #", 1)[1].split(":", 1)[0])
        name = data_file.columns[index] if index < len(data_file.columns) else f"#{index}"
        if _invalid_utf8(error):
            return f"{where}: column '{name}' is not UTF-8 text: {ENCODING_HINT}"
        value = message.split("invalid value", 1)[-1].strip()
        return f"{where}: column '{name}' has a non-numeric value {value}"
    return f"{where}: {message}" + (f"; {ENCODING_HINT}" if _invalid_utf8(error) else "")


ENCODING_HINT = "give the file's encoding with --csv-encoding, e.g. cp1252 (Excel on Windows)"


def _invalid_utf8(error: BaseException) -> bool:
    """Arrow's error for a byte past the part of the file that the inspection decoded."""
    return "invalid UTF8" in str(error)
