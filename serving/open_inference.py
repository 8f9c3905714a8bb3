"""The Open Inference Protocol (V2, as KServe, Seldon MLServer and Triton speak it) over REST.

``POST /v2/models/{name}/infer`` takes typed tensors, each ``{"name", "shape", "datatype",
"data"}`` with ``data`` in row-major order (flat, or nested along ``shape``), in one of two
layouts:

- one tensor of shape ``[n, n_features]``, columns in the model's feature order (any name);
- one tensor per feature, named after it, of shape ``[n]`` or ``[n, 1]``: the layout of
  MLServer's pandas codec.

A model with categorical inputs (``model.json`` ``inputs``) takes one tensor per raw input
instead, named after it: a numeric datatype for a numeric input, ``BYTES`` (its data JSON
strings, the levels) for a categorical one, encoded as ``/predict`` encodes them. Its metadata
lists those inputs, the categorical ones as ``BYTES``.

Numeric datatypes are FP16/32/64 and (U)INT8/16/32/64; values are read as that type (so an
INT8 of 300, or an FP32 of 1e39, is refused) and predicted in float64. The answer is one FP64
tensor named after the model's target. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.errors import ServiceError
from serving.model_store import LinearModel
from serving.payload import (
    decode_json,
    kind,
    matrix_from_columns,
    matrix_from_input_columns,
    matrix_from_rows,
    names,
)

# Each numeric datatype's numpy type, and what JSON values it holds.
_NUMERIC = {
    "FP16": (np.float16, (int, float)),
    "FP32": (np.float32, (int, float)),
    "FP64": (np.float64, (int, float)),
    **{f"INT{bits}": (np.dtype(f"int{bits}").type, (int,)) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (np.dtype(f"uint{bits}").type, (int,)) for bits in (8, 16, 32, 64)},
}
DATATYPES = frozenset({*_NUMERIC, "BOOL", "BYTES"})
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})


def output_name(model: LinearModel) -> str:
    """The name of the prediction tensor: the model's target."""
    target = model.metadata.get("target")
    return target if isinstance(target, str) and target else "prediction"


def model_metadata(model: LinearModel, name: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the tensors the model takes and gives, and its version."""
    return {
        "name": name,
        "versions": [str(model.version)],
        "platform": "linreg",
        "inputs": [
            {"name": name, "datatype": datatype, "shape": [-1]}
            for name, datatype in input_datatypes(model)
        ],
        "outputs": [{"name": output_name(model), "datatype": "FP64", "shape": [-1]}],
    }


def input_datatypes(model: LinearModel) -> list[tuple[str, str]]:
    """Each input tensor's name and datatype: a feature's FP64, or a raw input's (BYTES for a
    categorical one)."""
    if not model.inputs:
        return [(feature, "FP64") for feature in model.features]
    return [
        (column.name, "BYTES" if column.kind == "categorical" else "FP64")
        for column in model.inputs
    ]


def parse_infer(body: bytes, model: LinearModel, max_rows: int) -> tuple[np.ndarray, dict]:
    """The rows of an inference request as a float64 matrix, and what the answer echoes
    (``id``)."""
    document = decode_json(body)
    if type(document) is not dict or "inputs" not in document:
        raise ServiceError(422, 'the body must be a JSON object {"inputs": [tensor, ...]}')
    if set(document) - _REQUEST_KEYS:
        raise ServiceError(
            422, "the body may have only the keys id, parameters, inputs and outputs"
        )
    echo = {}
    if "id" in document:
        if type(document["id"]) is not str:
            raise ServiceError(422, f'"id" is {kind(document["id"])}; it must be a string')
        echo["id"] = document["id"]
    if type(document.get("parameters", {})) is not dict:
        raise ServiceError(422, '"parameters" must be an object')
    _check_outputs(document.get("outputs"), model)
    tensors = document["inputs"]
    if type(tensors) is not list or not tensors:
        raise ServiceError(422, '"inputs" must be a non-empty list of tensors')
    for index, tensor in enumerate(tensors):
        _check_tensor(tensor, index)
    by_name = {tensor["name"]: index for index, tensor in enumerate(tensors)}
    if len(tensors) == len(model.columns) and by_name.keys() == model.column_set:
        return _from_columns(tensors, by_name, model, max_rows), echo
    if model.inputs:
        categorical = [column.name for column in model.inputs if column.kind == "categorical"]
        raise ServiceError(
            422,
            "inputs: this model has categorical inputs; send one tensor per input named after "
            f"it ({names(model.columns)}), BYTES for {names(categorical)}; got "
            f"{len(tensors)} tensor(s) whose names are not those inputs",
        )
    if len(tensors) == 1:
        return _from_matrix(tensors[0], model, max_rows), echo
    raise ServiceError(
        422,
        f"inputs: send one tensor of shape [n, {len(model.features)}] or one tensor per "
        f"feature named after it ({names(model.features)}); got {len(tensors)} tensors "
        "whose names are not those features",
    )


def infer_response(
    model: LinearModel, name: str, predictions: np.ndarray, echo: dict
) -> dict[str, Any]:
    """The inference response: one FP64 tensor of shape [n]."""
    output = {
        "name": output_name(model),
        "datatype": "FP64",
        "shape": [len(predictions)],
        "data": predictions,
    }
    return {"model_name": name, "model_version": str(model.version), **echo, "outputs": [output]}


def _check_outputs(outputs: Any, model: LinearModel) -> None:
    if outputs is None:
        return
    if type(outputs) is not list or not all(
        type(output) is dict and type(output.get("name")) is str for output in outputs
    ):
        raise ServiceError(422, '"outputs" must be a list of {"name": ...} objects')
    if any(output["name"] != output_name(model) for output in outputs):
        raise ServiceError(422, f'"outputs": the model has one output, "{output_name(model)}"')


def _check_tensor(tensor: Any, index: int) -> None:
    where = f"inputs[{index}]"
    if type(tensor) is not dict:
        raise ServiceError(422, f"{where} is {kind(tensor)}; a tensor is an object")
    lacking = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if lacking:
        raise ServiceError(422, f"{where} lacks {', '.join(lacking)}")
    if set(tensor) - _TENSOR_KEYS:
        raise ServiceError(
            422, f"{where} may have only the keys name, shape, datatype, data and parameters"
        )
    if type(tensor["name"]) is not str:
        raise ServiceError(422, f"{where}.name is {kind(tensor['name'])}; it must be a string")
    shape = tensor["shape"]
    if type(shape) is not list or not all(type(size) is int and size >= 0 for size in shape):
        raise ServiceError(422, f"{where}.shape must be a list of non-negative integers")
    if tensor["datatype"] not in DATATYPES:
        raise ServiceError(422, f"{where}.datatype is not one of {', '.join(sorted(DATATYPES))}")
    if type(tensor["data"]) is not list:
        raise ServiceError(422, f"{where}.data is {kind(tensor['data'])}; it must be a list")


def _flat(tensor: dict[str, Any], where: str) -> list[Any]:
    """The tensor's values in row-major order, checked against its shape."""
    data = tensor["data"]
    shape = tensor["shape"]
    if len(shape) == 2 and data and type(data[0]) is list:  # nested along the shape
        if len(data) != shape[0] or any(
            type(row) is not list or len(row) != shape[1] for row in data
        ):
            raise ServiceError(422, f"{where}.data is nested but not along its shape {shape}")
        data = [value for row in data for value in row]
    size = math.prod(shape)
    if len(data) != size:
        raise ServiceError(422, f"{where}: shape {shape} holds {size} values; data has {len(data)}")
    return data


def _typed(values: list[Any], datatype: str, where: str) -> list[Any]:
    """``values`` read as ``datatype``: refused if a number is not of that type or out of its
    range. BOOL and BYTES values pass as they are, for the feature checker to judge."""
    if datatype not in _NUMERIC:
        return values
    numpy_type, json_types = _NUMERIC[datatype]
    if not set(map(type, values)) <= set(json_types):
        for position, value in enumerate(values):
            if type(value) not in json_types:
                wanted = "integers" if json_types == (int,) else "numbers"
                raise ServiceError(
                    422, f"{where}.data[{position}] is {kind(value)}; {datatype} data are {wanted}"
                )
    if numpy_type is np.float64:
        return values
    try:
        with np.errstate(over="raise"):
            typed = np.array(values, dtype=numpy_type)
    except (OverflowError, FloatingPointError):
        raise ServiceError(422, f"{where}.data has a value out of range for {datatype}") from None
    return typed.tolist()


def _from_matrix(tensor: dict[str, Any], model: LinearModel, max_rows: int) -> np.ndarray:
    n_features = len(model.features)
    shape = tensor["shape"]
    if not (len(shape) == 2 and shape[1] == n_features) and not (
        n_features == 1 and len(shape) == 1
    ):
        raise ServiceError(
            422,
            f"inputs[0] has shape {shape}; one tensor must have shape [n, {n_features}], one "
            f"column per feature ({names(model.features)})",
        )
    _check_rows(shape[0], max_rows)
    values = _typed(_flat(tensor, "inputs[0]"), tensor["datatype"], "inputs[0]")
    rows = [values[start : start + n_features] for start in range(0, len(values), n_features)]
    features = model.features
    return matrix_from_rows(
        rows,
        features,
        lambda row, column: f'inputs[0].data[{row * n_features + column}] ("{features[column]}")',
    )


def _from_columns(
    tensors: list[dict[str, Any]], by_name: dict[str, int], model: LinearModel, max_rows: int
) -> np.ndarray:
    """A tensor per column of the model (feature, or raw input), each named after it."""
    columns = []
    kinds = [column.kind for column in model.inputs] or ["numeric"] * len(model.columns)
    for name, column_kind in zip(model.columns, kinds, strict=True):
        index = by_name[name]
        tensor = tensors[index]
        where = f'inputs[{index}] ("{name}")'
        shape = tensor["shape"]
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ServiceError(422, f"{where} has shape {shape}; it must be [n] or [n, 1]")
        if column_kind == "categorical" and tensor["datatype"] != "BYTES":
            raise ServiceError(
                422,
                f"{where} is {tensor['datatype']}; input {name} is categorical: send its "
                "levels as strings in a BYTES tensor",
            )
        columns.append(_typed(_flat(tensor, where), tensor["datatype"], where))
    if len(set(map(len, columns))) != 1:
        noun = model.column_noun[:-1]
        raise ServiceError(422, f"inputs: every {noun}'s tensor must have the same number of rows")
    _check_rows(len(columns[0]), max_rows)
    where_data = [f'inputs[{by_name[name]}] ("{name}").data' for name in model.columns]

    def where(row: int, column: int) -> str:
        return f"{where_data[column]}[{row}]"

    if model.inputs:
        return matrix_from_input_columns(columns, model, where)
    return matrix_from_columns(columns, model.features, where)


def _check_rows(n_rows: int, max_rows: int) -> None:
    if n_rows < 1:
        raise ServiceError(422, "inputs: the tensors have no rows; send at least one")
    if n_rows > max_rows:
        raise ServiceError(
            413, f"inputs: {n_rows} rows; at most {max_rows} are accepted per request"
        )
