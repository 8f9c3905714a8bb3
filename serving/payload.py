"""Request bodies to float matrices: JSON decoding, the value checks every protocol shares,
and the native ``POST /predict`` body.

Every protocol ends in ``matrix_from_rows`` or ``matrix_from_columns``: values of the
model's features, checked one feature at a time, so that a categorical feature (strings
mapped through its levels) is one more kind of column there, not a change to each protocol.
A model with categorical inputs (``model.json`` ``inputs``) takes rows of those raw inputs
on ``/predict`` instead: numbers, and category levels as strings, encoded here as training
encoded them.

Every refusal says where the problem is (``instances[3][1]``, a feature name) and never
quotes a value from the body, so a huge or sensitive payload stays out of responses and logs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain
from math import isfinite
from typing import Any

import numpy as np
import orjson

from serving.errors import ServiceError
from serving.model_store import LinearModel

_NUMBERS = frozenset({int, float})
_INSTANCES = frozenset({"instances"})
_SHOWN_FEATURES = 20

# (row, column) -> where that value is, in the protocol's terms: 'instances[3][1]'.
Where = Callable[[int, int], str]
# The rows of a request: a float64 array, or for a small request the body's own lists of
# numbers, which LinearModel.predict_rows computes without numpy.
Rows = np.ndarray | list[list[float]]
# A body of at most this many values stays in Python lists: about ten numpy calls a request
# cost more than the arithmetic of a few rows. Measured under bench/serve's wrk load
# (8 features, 2026-12-04): a 1-row /predict costs the server 43 µs less CPU in plain Python;
# at 100 rows numpy is 11 µs cheaper.
SMALL_REQUEST_VALUES = 256


def decode_json(body: bytes) -> Any:
    """The JSON document in ``body``; 400 if it is not JSON (NaN and Infinity are not)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        near = body[error.pos : error.pos + 9]
        if b"NaN" in near or b"Infinity" in near or "infinity" in error.msg:
            raise ServiceError(
                400,
                f"the body is not valid JSON: NaN and Infinity are not JSON numbers ({where});"
                " send finite numbers",
            ) from None
        raise ServiceError(400, f"the body is not valid JSON: {error.msg} ({where})") from None


def fast_rows(body: bytes, keys: frozenset[str], n_features: int, max_rows: int) -> Rows | None:
    """``{"<key>": [[number, ...], ...]}``, a key in ``keys``, as a float64 matrix in one
    pass (as its lists of numbers if it holds at most ``SMALL_REQUEST_VALUES``); None
    otherwise.

    The common body, rows of numbers, skips the value-by-value checks: with no quote but the
    key's two, no ``l`` or ``r`` (so no ``null``, ``false``, ``true``) and one ``{``, its
    values can only be numbers and lists, and numpy then reads the rows straight into the
    matrix. Anything else (objects as rows, a string, a wrong count, even a body that is not
    JSON) returns None, and the caller's full checks give the one precise error.
    """
    # find and ``in`` are memchr scans, several times faster here than count.
    opening = body.find(b'"')
    closing = body.find(b'"', opening + 1)
    if opening < 0 or closing < 0 or body.find(b'"', closing + 1) >= 0:
        return None
    if body.find(b"{", body.find(b"{") + 1) >= 0 or b"l" in body or b"r" in body:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or len(document) != 1:
        return None
    key, rows = next(iter(document.items()))
    if key not in keys or type(rows) is not list or not 0 < len(rows) <= max_rows:
        return None
    try:
        if set(map(len, rows)) != {n_features}:  # a number as a row: TypeError
            return None
        if len(rows) * n_features <= SMALL_REQUEST_VALUES:
            # Numbers and lists only (see above): one "[" a row and the outer one, or a list
            # is among the values.
            return rows if body.count(b"[") == len(rows) + 1 else None
        # Every value an int or a float, or a list (struct.error). struct packs them as C
        # doubles in one call, in two thirds of numpy.fromiter's time.
        doubles = struct.pack(f"{len(rows) * n_features}d", *chain.from_iterable(rows))
    except (TypeError, ValueError, OverflowError, struct.error):
        return None
    return np.frombuffer(doubles).reshape(len(rows), n_features)


def parse_instances(body: bytes, model: LinearModel, max_rows: int) -> Rows:
    """The rows of ``{"instances": [...]}`` as a float64 array of shape (n_rows, n_features)
    (or, for a small request, as lists: ``fast_rows``).

    Rows are lists of ``n_features`` numbers in the model's feature order, or objects with
    exactly the model's features as keys.

    Raises
    ------
    ServiceError
        400 if the body is not JSON (NaN and Infinity are not), 413 for more than
        ``max_rows`` rows, 422 for anything else that is not such rows of numbers.
    """
    if not model.inputs:
        X = fast_rows(body, _INSTANCES, len(model.features), max_rows)
        if X is not None:
            return X
    document = decode_json(body)
    if type(document) is not dict or "instances" not in document:
        raise ServiceError(422, 'the body must be a JSON object {"instances": [row, ...]}')
    if len(document) != 1:
        raise ServiceError(
            422, f'the body must have only the key "instances" (it has {len(document) - 1} more)'
        )
    if model.inputs:
        return matrix_from_raw_inputs(document["instances"], model, max_rows, "instances")
    return matrix_from_instances(document["instances"], model, max_rows, "instances")


_SHOWN_LEVEL = 40


def matrix_from_raw_inputs(
    rows: Any, model: LinearModel, max_rows: int, name: str, records_only: bool = False
) -> np.ndarray:
    """Rows of a model's raw inputs (lists in ``inputs`` order, or objects by input name;
    only objects if ``records_only``), numbers and category levels (strings), as the float64
    feature matrix of the model (``matrix_from_input_columns``)."""
    rows = check_row_count(rows, max_rows, name)
    input_names = model.columns
    expected = model.column_set
    by_name = type(rows[0]) is dict
    shape = (
        f"an object with the model's inputs as keys ({names(input_names)})"
        if by_name or records_only
        else f"a list of {len(input_names)} values in the model's inputs order "
        f"({names(input_names)})"
    )
    for index, row in enumerate(rows):
        if by_name and type(row) is dict:
            if row.keys() != expected:
                problems = key_problems(row.keys(), model)
                raise ServiceError(422, f"{name}[{index}] {problems}; each row must be " + shape)
        elif not by_name and not records_only and type(row) is list:
            if len(row) != len(input_names):
                raise ServiceError(
                    422, f"{name}[{index}] has {len(row)} values; each row must be " + shape
                )
        else:
            raise ServiceError(422, f"{name}[{index}] is {kind(row)}; each row must be " + shape)
    if by_name:
        columns = [[row[input_name] for row in rows] for input_name in input_names]
        return matrix_from_input_columns(
            columns, model, lambda row, position: f'{name}[{row}]["{input_names[position]}"]'
        )
    columns = [[row[position] for row in rows] for position in range(len(input_names))]
    return matrix_from_input_columns(
        columns, model, lambda row, position: f"{name}[{row}][{position}]"
    )


def matrix_from_input_columns(
    columns: list[list[Any]], model: LinearModel, where: Where
) -> np.ndarray:
    """One list of values per raw input of ``model`` (in ``model.inputs`` order, all of one
    length) as its float64 feature matrix: a numeric input's numbers as they are, a
    categorical input's levels (strings) one-hot in treatment coding, as in training.

    ``where(row, position)`` names a value in the protocol's terms. 422 names any wrong
    value, and an unknown level (shown cut to 40 characters: the one value ever quoted):
    training encodes an unseen level as zeros, but a request naming a level the model never
    saw is more likely a mistake (a typo, a renamed level) than a new category.
    """
    X = np.zeros((len(columns[0]), len(model.features)), dtype=np.float64)
    offset = 0
    for position, (column, values) in enumerate(zip(model.inputs, columns, strict=True)):
        if column.kind == "numeric":
            if not set(map(type, values)) <= _NUMBERS:
                for row, value in enumerate(values):
                    check_number(value, column.name, where(row, position), "input")
            X[:, offset] = np.array(values, dtype=np.float64)
            offset += 1
            continue
        codes = {level: code for code, level in enumerate(column.levels)}
        for row, value in enumerate(values):
            if type(value) is not str:
                raise ServiceError(
                    422,
                    f"{where(row, position)} is {kind(value)}; input {column.name} takes a "
                    f"level as a string ({names(list(column.levels))})",
                )
            code = codes.get(value.strip())
            if code is None:
                shown = value if len(value) <= _SHOWN_LEVEL else value[:_SHOWN_LEVEL] + "..."
                raise ServiceError(
                    422,
                    f"{where(row, position)}: level {shown!r} of input {column.name} is "
                    f"unknown to the model (levels: {names(list(column.levels))})",
                )
            if code:
                X[row, offset + code - 1] = 1.0
        offset += len(column.levels) - 1
    return X


def matrix_from_instances(
    rows: Any, model: LinearModel, max_rows: int, name: str, records_only: bool = False
) -> np.ndarray:
    """``rows`` (the value of ``name`` in the body): lists of numbers in the model's feature
    order, or objects with the features as keys (only objects if ``records_only``)."""
    rows = check_row_count(rows, max_rows, name)
    if type(rows[0]) is dict:
        return matrix_from_rows(
            _values_from_objects(rows, model, name),
            model.features,
            lambda row, column: f'{name}[{row}]["{model.features[column]}"]',
        )
    if type(rows[0]) is list and not records_only:
        return matrix_from_rows(
            _values_from_lists(rows, model, name),
            model.features,
            lambda row, column: f"{name}[{row}][{column}]",
        )
    shape = (
        "an object {feature: number}"
        if records_only
        else (f"a list of {len(model.features)} numbers or an object {{feature: number}}")
    )
    raise ServiceError(422, f"{name}[0] is {kind(rows[0])}; each row must be {shape}")


def check_row_count(rows: Any, max_rows: int, name: str) -> list[Any]:
    """``rows`` if it is a list of 1 to ``max_rows`` items: 422 if not a list or empty, 413
    if too long."""
    if type(rows) is not list:
        raise ServiceError(422, f'"{name}" is {kind(rows)}; it must be a list of rows')
    if not rows:
        raise ServiceError(422, f'"{name}" is empty; send at least one row')
    if len(rows) > max_rows:
        raise ServiceError(
            413, f'"{name}" has {len(rows)} rows; at most {max_rows} are accepted per request'
        )
    return rows


def matrix_from_rows(rows: list[list[Any]], features: Sequence[str], where: Where) -> np.ndarray:
    """Rows of one value per feature (``features``: their names, in the rows' order) as a
    float64 matrix; the caller has checked that each row has ``len(features)`` values."""
    # One pass in C over every value; only a refusal walks the rows in Python to say where.
    if set(map(type, chain.from_iterable(rows))) <= _NUMBERS:
        return np.array(rows, dtype=np.float64)
    for row_index, row in enumerate(rows):
        for column, value in enumerate(row):
            check_number(value, features[column], where(row_index, column))
    raise AssertionError("unreachable: some value was found wrong above")


def matrix_from_columns(
    columns: list[list[Any]], features: Sequence[str], where: Where
) -> np.ndarray:
    """One list of values per feature (``features``: their names), all of one length, as a
    float64 matrix of shape (n_rows, n_features)."""
    X = np.empty((len(columns[0]), len(columns)), dtype=np.float64)
    for column, values in enumerate(columns):
        if not set(map(type, values)) <= _NUMBERS:
            for row_index, value in enumerate(values):
                check_number(value, features[column], where(row_index, column))
        X[:, column] = np.array(values, dtype=np.float64)
    return X


def check_number(value: Any, feature: str, where: str, noun: str = "feature") -> None:
    """422 unless ``value`` is a JSON number (not a boolean): what a numeric feature (or
    ``noun``: input) takes."""
    if type(value) not in _NUMBERS:
        raise ServiceError(422, f"{where} is {kind(value)}; {noun} {feature} takes numbers")


def predict_checked(
    model: LinearModel, X: Rows, row_name: Callable[[int], str] = "instances[{}]".format
) -> np.ndarray | list[float]:
    """``model.predict(X)``, refusing inputs so large that a prediction overflows float64.

    A small request is computed by ``model.predict_rows`` whichever way its rows came (so a
    body gets the same predictions from every protocol and decoder), a larger one by numpy.
    """
    if type(X) is not list and X.size <= SMALL_REQUEST_VALUES:
        X = X.tolist()
    if type(X) is list:
        predictions = model.predict_rows(X)
        if all(map(isfinite, predictions)):
            return predictions
        finite = [isfinite(value) for value in predictions]
    else:
        with np.errstate(all="ignore"):
            predictions = model.predict(X)
            # One BLAS call, finite if every prediction is (and not only then: a sum of
            # squares overflows above 1e154, so that case asks isfinite).
            squares = predictions.dot(predictions)
        if isfinite(squares):
            return predictions
        finite = np.isfinite(predictions)
        if finite.all():
            return predictions
    row = int(np.argmin(finite))
    raise ServiceError(
        422, f"{row_name(row)}: the prediction overflows float64; the values are too large"
    )


def _values_from_lists(rows: list[Any], model: LinearModel, name: str) -> list[Any]:
    n_features = len(model.features)
    if set(map(type, rows)) == {list} and set(map(len, rows)) == {n_features}:
        return rows
    for index, row in enumerate(rows):
        if type(row) is not list:
            raise ServiceError(
                422,
                f"{name}[{index}] is {kind(row)}; every row must be a list like {name}[0]",
            )
        if len(row) != n_features:
            raise ServiceError(
                422,
                f"{name}[{index}] has {len(row)} values; the model takes {n_features} "
                f"features: {names(model.features)}",
            )
    raise AssertionError("unreachable: some row was found wrong above")


def _values_from_objects(rows: list[Any], model: LinearModel, name: str) -> list[Any]:
    expected = model.feature_set
    if all(type(row) is dict and row.keys() == expected for row in rows):
        return list(map(model.row_values, rows))
    for index, row in enumerate(rows):
        if type(row) is not dict:
            raise ServiceError(
                422,
                f"{name}[{index}] is {kind(row)}; every row must be an object like {name}[0]",
            )
        if row.keys() != expected:
            raise ServiceError(
                422,
                f"{name}[{index}] {key_problems(row.keys(), model)}; the keys must be exactly "
                f"the model's features: {names(model.features)}",
            )
    raise AssertionError("unreachable: some row was found wrong above")


def key_problems(keys: Any, model: LinearModel, noun: str = "key(s)") -> str:
    """What is wrong with a set of names meant to be the model's columns (its features, or
    its inputs): 'lacks x03 and has 1 key(s) that are not features' (names of the model
    only, never the body's)."""
    missing = [column for column in model.columns if column not in keys]
    unknown = len(set(keys) - model.column_set)
    problems = []
    if missing:
        problems.append(f"lacks {names(missing)}")
    if unknown:
        problems.append(f"has {unknown} {noun} that are not {model.column_noun}")
    return " and ".join(problems)


def kind(value: Any) -> str:
    """What a JSON value is, in words ('a string'), without the value itself."""
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), "a number")


def names(features: list[str] | tuple[str, ...]) -> str:
    """Feature names for a message, at most 20 of them."""
    shown = ", ".join(features[:_SHOWN_FEATURES])
    if len(features) > _SHOWN_FEATURES:
        shown += f", ... ({len(features)} in all)"
    return shown
