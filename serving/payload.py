"""``POST /predict`` bodies: parsed with orjson, checked strictly, turned into a float matrix.

Every refusal says where the problem is (``instances[3][1]``, a feature name) and never
quotes a value from the body, so a huge or sensitive payload stays out of responses and logs.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import orjson

from serving.errors import ServiceError
from serving.model_store import LinearModel

_NUMBERS = frozenset({int, float})
_SHOWN_FEATURES = 20


def parse_instances(body: bytes, model: LinearModel, max_rows: int) -> np.ndarray:
    """The rows of ``{"instances": [...]}`` as a float64 array of shape (n_rows, n_features).

    Rows are lists of ``n_features`` numbers in the model's feature order, or objects with
    exactly the model's features as keys.

    Raises
    ------
    ServiceError
        400 if the body is not JSON (NaN and Infinity are not), 413 for more than
        ``max_rows`` rows, 422 for anything else that is not such rows of numbers.
    """
    document = _decode(body)
    if type(document) is not dict or "instances" not in document:
        raise ServiceError(422, 'the body must be a JSON object {"instances": [row, ...]}')
    if len(document) != 1:
        raise ServiceError(
            422, f'the body must have only the key "instances" (it has {len(document) - 1} more)'
        )
    rows = document["instances"]
    if type(rows) is not list:
        raise ServiceError(422, f'"instances" is {_kind(rows)}; it must be a list of rows')
    if not rows:
        raise ServiceError(422, '"instances" is empty; send at least one row')
    if len(rows) > max_rows:
        raise ServiceError(
            413, f'"instances" has {len(rows)} rows; at most {max_rows} are accepted per request'
        )
    by_name = type(rows[0]) is dict
    if by_name:
        values = _values_from_objects(rows, model)
    elif type(rows[0]) is list:
        values = _values_from_lists(rows, model)
    else:
        raise ServiceError(
            422,
            f"instances[0] is {_kind(rows[0])}; each row must be a list of "
            f"{len(model.features)} numbers or an object {{feature: number}}",
        )
    _check_numbers(values, model, by_name)
    return np.array(values, dtype=np.float64)


def predict_checked(model: LinearModel, X: np.ndarray) -> np.ndarray:
    """``model.predict(X)``, refusing inputs so large that a prediction overflows float64."""
    with np.errstate(all="ignore"):
        predictions = model.predict(X)
    finite = np.isfinite(predictions)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ServiceError(
            422, f"instances[{row}]: the prediction overflows float64; the values are too large"
        )
    return predictions


def _decode(body: bytes) -> Any:
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


def _values_from_lists(rows: list[Any], model: LinearModel) -> list[Any]:
    n_features = len(model.features)
    if set(map(type, rows)) == {list} and set(map(len, rows)) == {n_features}:
        return rows
    for index, row in enumerate(rows):
        if type(row) is not list:
            raise ServiceError(
                422,
                f"instances[{index}] is {_kind(row)}; every row must be a list like instances[0]",
            )
        if len(row) != n_features:
            raise ServiceError(
                422,
                f"instances[{index}] has {len(row)} values; the model takes {n_features} "
                f"features: {_names(model.features)}",
            )
    raise AssertionError("unreachable: some row was found wrong above")


def _values_from_objects(rows: list[Any], model: LinearModel) -> list[Any]:
    expected = model.feature_set
    if all(type(row) is dict and row.keys() == expected for row in rows):
        return list(map(model.row_values, rows))
    for index, row in enumerate(rows):
        if type(row) is not dict:
            raise ServiceError(
                422,
                f"instances[{index}] is {_kind(row)}; every row must be an object like "
                "instances[0]",
            )
        if row.keys() != expected:
            missing = [name for name in model.features if name not in row]
            unknown = len(row.keys() - expected)
            problems = []
            if missing:
                problems.append(f"lacks {_names(missing)}")
            if unknown:
                problems.append(f"has {unknown} key(s) that are not features")
            raise ServiceError(
                422,
                f"instances[{index}] {' and '.join(problems)}; the keys must be exactly the "
                f"model's features: {_names(model.features)}",
            )
    raise AssertionError("unreachable: some row was found wrong above")


def _check_numbers(values: list[Any], model: LinearModel, by_name: bool) -> None:
    # One pass in C over every value; only a refusal walks the rows in Python to say where.
    if set(map(type, chain.from_iterable(values))) <= _NUMBERS:
        return
    for row_index, row in enumerate(values):
        for column, value in enumerate(row):
            if type(value) not in _NUMBERS:
                where = (
                    f'instances[{row_index}]["{model.features[column]}"]'
                    if by_name
                    else f"instances[{row_index}][{column}]"
                )
                raise ServiceError(422, f"{where} is {_kind(value)}; every value must be a number")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), "a number")


def _names(names: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(names[:_SHOWN_FEATURES])
    if len(names) > _SHOWN_FEATURES:
        shown += f", ... ({len(names)} in all)"
    return shown
