"""MLflow's scoring protocol (``POST /invocations``, as ``mlflow models serve`` answers it).

JSON bodies carry exactly one of ``dataframe_split`` (``{"columns": [...], "data": [[...]]}``,
pandas' split orient), ``dataframe_records`` (a list of ``{column: value}``), ``instances``
(rows, or records) or ``inputs`` (rows, or ``{column: [values]}``), and optionally ``params``
(accepted and ignored: the model takes none, and MLflow ignores them for such models too);
``text/csv`` bodies are a header line of column names, then rows. Columns are matched to the
model's features by name, in any order; a model with categorical inputs (``model.json``
``inputs``) takes its raw inputs instead, numbers and category levels as strings, encoded as
``/predict`` encodes them. The answer is ``{"predictions": [...]}``, and errors
are MLflow's ``{"error_code": "...", "message": "..."}`` (with this service's statuses: 400,
413, 415, 422, 503, where MLflow says 400 to all but 415).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from serving.errors import ServiceError
from serving.http import JSON, Reply, json_reply
from serving.model_store import LinearModel
from serving.payload import (
    Rows,
    check_row_count,
    decode_json,
    fast_rows,
    key_problems,
    kind,
    matrix_from_columns,
    matrix_from_input_columns,
    matrix_from_instances,
    matrix_from_raw_inputs,
    matrix_from_rows,
    names,
)

CSV = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ROW_KEYS = frozenset({"instances", "inputs"})
_ERROR_CODES = {
    400: "BAD_REQUEST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
_REQUIRED = (
    "the body must be a JSON object with exactly one of the keys dataframe_split, "
    "dataframe_records, instances, inputs"
)


def mlflow_error(error: ServiceError) -> Reply:
    """An error as MLflow's scoring server writes one."""
    code = _ERROR_CODES.get(error.status, "BAD_REQUEST")
    return json_reply({"error_code": code, "message": error.message}, error.status)


def parse_invocation(
    body: bytes, mimetype: str, parameters: dict[str, str], model: LinearModel, max_rows: int
) -> Rows:
    """The rows of an ``/invocations`` body as a float64 matrix in the model's feature order
    (as lists for a small request of rows of numbers: ``fast_rows``)."""
    if parameters.get("charset", "utf-8") != "utf-8":
        raise ServiceError(415, "the scoring server reads UTF-8 only; send charset=utf-8")
    if set(parameters) - {"charset"}:
        raise ServiceError(415, "Content-Type may have a charset parameter and no other")
    if mimetype == CSV:
        return parse_csv(body, model, max_rows)
    if mimetype != JSON:
        raise ServiceError(415, f"Content-Type must be {JSON} or {CSV}")
    return parse_json(body, model, max_rows)


def parse_json(body: bytes, model: LinearModel, max_rows: int) -> Rows:
    """A JSON body: exactly one of the four formats, and optionally ``params``."""
    # Rows of numbers, the common body, in one pass (not for raw inputs: they hold strings).
    if not model.inputs:
        X = fast_rows(body, _ROW_KEYS, len(model.features), max_rows)
        if X is not None:
            return X
    document = decode_json(body)
    if type(document) is not dict:
        raise ServiceError(422, f"{_REQUIRED}; it is {kind(document)}")
    present = [key for key in FORMATS if key in document]
    if len(present) != 1:
        raise ServiceError(422, f"{_REQUIRED}; it has {len(present)} of them")
    others = len(document) - 1 - ("params" in document)
    if others:
        raise ServiceError(422, f"{_REQUIRED} and optionally params; it has {others} other key(s)")
    if "params" in document and type(document["params"]) is not dict:
        raise ServiceError(422, f'"params" is {kind(document["params"])}; it must be an object')
    key = present[0]
    data = document[key]
    if key == "dataframe_split":
        return _split(data, model, max_rows)
    if key == "inputs" and type(data) is dict:
        return _columns(data, model, max_rows)
    records_only = key == "dataframe_records"
    if model.inputs:
        return matrix_from_raw_inputs(data, model, max_rows, key, records_only)
    return matrix_from_instances(data, model, max_rows, key, records_only)


def _split(data: Any, model: LinearModel, max_rows: int) -> np.ndarray:
    """pandas' split orient: ``{"columns": [names], "data": [rows], "index": [labels]}``."""
    if type(data) is not dict or "data" not in data or "columns" not in data:
        raise ServiceError(
            422, '"dataframe_split" must be an object {"columns": [...], "data": [[...], ...]}'
        )
    if set(data) - {"columns", "data", "index"}:
        raise ServiceError(422, '"dataframe_split" may have only columns, data and index')
    order = _column_order(data["columns"], model, '"dataframe_split.columns"')
    rows = check_row_count(data["data"], max_rows, "dataframe_split.data")
    n_columns = len(order)
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != n_columns:
            shape = f"has {len(row)} values" if type(row) is list else f"is {kind(row)}"
            raise ServiceError(
                422,
                f"dataframe_split.data[{index}] {shape}; each row must be a list of "
                f"{n_columns} values, one per column",
            )
    if "index" in data and (type(data["index"]) is not list or len(data["index"]) != len(rows)):
        raise ServiceError(422, '"dataframe_split.index" must be a list with one label per row')
    columns = data["columns"]  # each a column's name, checked above

    def where(row: int, column: int) -> str:
        return f'dataframe_split.data[{row}][{column}] (column "{columns[column]}")'

    if model.inputs:
        in_body = np.argsort(order).tolist()  # for each input, its column in the body
        return matrix_from_input_columns(
            [[row[column] for row in rows] for column in in_body],
            model,
            lambda row, position: where(row, in_body[position]),
        )
    X = matrix_from_rows(rows, columns, where)
    return X[:, np.argsort(order)]


def _columns(data: dict[str, Any], model: LinearModel, max_rows: int) -> np.ndarray:
    """TF serving's columnar ``inputs``: ``{column: [value per row], ...}``."""
    if data.keys() != model.column_set:
        raise ServiceError(
            422,
            f'"inputs" {key_problems(data.keys(), model)}; its keys must be exactly the '
            f"model's {model.column_noun}: {names(model.columns)}",
        )
    columns = [data[name] for name in model.columns]
    for name, values in zip(model.columns, columns, strict=True):
        check_row_count(values, max_rows, f"inputs.{name}")
    if len(set(map(len, columns))) != 1:
        raise ServiceError(
            422, f'"inputs": every {model.column_noun[:-1]} must have the same number of values'
        )

    def where(row: int, column: int) -> str:
        return f'inputs["{model.columns[column]}"][{row}]'

    if model.inputs:
        return matrix_from_input_columns(columns, model, where)
    return matrix_from_columns(columns, model.features, where)


def parse_csv(body: bytes, model: LinearModel, max_rows: int) -> np.ndarray:
    """A header line naming the model's columns (any order), then one line per row: numbers,
    and category levels for categorical inputs."""
    try:
        text = body.decode("utf-8-sig")  # spreadsheets' "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as error:
        raise ServiceError(400, f"the CSV body is not UTF-8 (byte {error.start})") from None
    try:
        lines = [line for line in csv.reader(io.StringIO(text)) if line]
    except csv.Error as error:
        raise ServiceError(400, f"the body is not valid CSV: {error}") from None
    if not lines:
        raise ServiceError(
            422, "the CSV body is empty; send a header line of column names, then rows"
        )
    order = _column_order(lines[0], model, "the CSV header")
    rows = check_row_count(lines[1:], max_rows, "CSV rows")
    for index, row in enumerate(rows):
        if len(row) != len(order):
            raise ServiceError(
                422, f"CSV line {index + 2} has {len(row)} fields; the header has {len(order)}"
            )
    header = lines[0]

    def where(index: int, column: int) -> str:
        return f'CSV line {index + 2}, column "{header[column]}"'

    if model.inputs:
        in_body = np.argsort(order).tolist()  # for each input, its column in the body
        columns = []
        for column, spec in zip(in_body, model.inputs, strict=True):
            fields = [row[column] for row in rows]
            if spec.kind == "numeric":
                fields = [
                    _csv_number(field, where(index, column), f"input {spec.name} takes numbers")
                    for index, field in enumerate(fields)
                ]
            columns.append(fields)
        return matrix_from_input_columns(
            columns, model, lambda index, position: where(index, in_body[position])
        )
    X = np.empty((len(rows), len(order)), dtype=np.float64)
    for index, row in enumerate(rows):
        for column, field in enumerate(row):
            X[index, order[column]] = _csv_number(
                field, where(index, column), "the model's features are numbers"
            )
    return X


def _csv_number(field: str, where: str, what: str) -> float:
    """``field`` as a finite number; ``what`` ends the refusal ("input x takes numbers")."""
    # float() also reads "nan", "inf" and "1_000", which pandas does not take for numbers.
    try:
        value = float(field)
    except ValueError:
        raise ServiceError(422, f"{where} is not a number; {what}") from None
    if not np.isfinite(value) or "_" in field:
        raise ServiceError(422, f"{where} is not a finite number")
    return value


def _column_order(columns: Any, model: LinearModel, name: str) -> list[int]:
    """For each column of the body, the index of its column (feature or input) in the model."""
    if type(columns) is not list or not all(type(column) is str for column in columns):
        raise ServiceError(422, f"{name} must be a list of column names")
    if len(set(columns)) != len(columns):
        raise ServiceError(422, f"{name} names a column more than once")
    if set(columns) != model.column_set:
        raise ServiceError(
            422,
            f"{name} {key_problems(columns, model, 'column(s)')}; the columns must be exactly "
            f"the model's {model.column_noun}: {names(model.columns)}",
        )
    position = {column: index for index, column in enumerate(model.columns)}
    return [position[column] for column in columns]
