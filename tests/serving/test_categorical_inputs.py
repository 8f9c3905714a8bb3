"""A model with categorical inputs: every protocol takes rows of raw inputs, levels as
strings (``/predict``: lists in ``inputs`` order or objects by name; ``/invocations``: every
MLflow format and CSV; ``/v2``: a tensor per input, BYTES for the category), encodes them as
training did, refuses an unknown level with a 422 naming it, a string in a numeric column
with a 4xx naming the column and row, and answers malformed bodies with a 4xx, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import (
    BODY_MARKER,
    JSON,
    MAX_BODY_BYTES,
    MAX_ROWS,
    GunicornServer,
    HttpClient,
    categorical_predictions,
    labels,
    requests_counted,
    settled_scrape,
)


@pytest.fixture(scope="module")
def model_dir(categorical_model_dir: Path) -> Path:
    """An ols model of y on a number x and a category colour (blue, green, red)."""
    return categorical_model_dir


@pytest.fixture
def client(model_dir: Path):
    settings = ServingSettings(
        model_dir=str(model_dir),
        max_rows=MAX_ROWS,
        max_body_bytes=MAX_BODY_BYTES,
        check_interval_ms=0,
    )
    app = create_app(settings)
    app.testing = True
    return app.test_client()


def _metadata(model_dir: Path) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def _expected(metadata: dict, rows: list[tuple[float, str]]) -> list[float]:
    return list(categorical_predictions(metadata, rows))


ROWS = [(0.5, "blue"), (-1.0, "green"), (2.0, "red")]


def test_list_and_object_rows_are_encoded_as_in_training(client, model_dir):
    metadata = _metadata(model_dir)
    assert metadata["inputs"][1] == {
        "name": "colour",
        "kind": "categorical",
        "levels": ["blue", "green", "red"],
    }
    expected = _expected(metadata, ROWS)
    # The fit recovers the generating effects: green +3 and red -1 against blue.
    np.testing.assert_allclose(metadata["coef"], [2.0, 3.0, -1.0], atol=1e-9)
    as_lists = client.post("/predict", json={"instances": [list(row) for row in ROWS]})
    assert as_lists.status_code == 200, as_lists.get_json()
    np.testing.assert_allclose(as_lists.get_json()["predictions"], expected, rtol=1e-12)
    as_objects = client.post(
        "/predict", json={"instances": [{"colour": c, "x": x} for x, c in ROWS]}
    )
    assert as_objects.status_code == 200, as_objects.get_json()
    np.testing.assert_allclose(as_objects.get_json()["predictions"], expected, rtol=1e-12)


def test_an_unknown_level_is_a_422_naming_it(client):
    response = client.post("/predict", json={"instances": [[1.0, "blue"], [1.0, "purple"]]})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert "'purple'" in error and "instances[1][1]" in error and "colour" in error


@pytest.mark.parametrize(
    ("instances", "where"),
    [
        ([[1.0, 2.0, 3.0]], "has 3 values"),  # the dummies as numbers: not raw inputs
        ([[1.0, 2]], "takes a level as a string"),
        ([[1.0, None]], "is null"),
        ([["1.0", "red"]], "takes numbers"),
        ([[True, "red"]], "takes numbers"),
        ([{"x": 1.0}], "lacks colour"),
        ([{"x": 1.0, "colour": "red", "z": 1}], "1 key(s) that are not inputs"),
        ([[1.0, "red"], {"x": 1.0, "colour": "red"}], "instances[1] is an object"),
        ([{"x": 1.0, "colour": "red"}, [1.0, "red"]], "instances[1] is a list"),
        (["red"], "instances[0] is a string"),
        ([], "is empty"),
        ({"x": 1}, "must be a list of rows"),
    ],
)
def test_malformed_rows_are_4xx_naming_where(client, instances, where):
    response = client.post("/predict", json={"instances": instances})
    assert 400 <= response.status_code < 500, response.data
    assert where in response.get_json()["error"]


def test_not_json_and_wrong_body_are_4xx(client):
    for body in (b"{", b"[1, 2]", b'{"rows": []}', b'{"instances": [[1, "red"]], "x": 1}'):
        response = client.post("/predict", data=body, content_type="application/json")
        assert 400 <= response.status_code < 500, (body, response.data)


X_VALUES = [x for x, _ in ROWS]
COLOURS = [colour for _, colour in ROWS]
RECORDS = [{"colour": colour, "x": x} for x, colour in ROWS]
MLFLOW_BODIES = {
    "dataframe_split": {"dataframe_split": {"columns": ["x", "colour"], "data": ROWS}},
    "dataframe_split, other column order, index": {
        "dataframe_split": {
            "index": [7, 8, 9],
            "columns": ["colour", "x"],
            "data": [[colour, x] for x, colour in ROWS],
        }
    },
    "dataframe_records": {"dataframe_records": RECORDS},
    "instances as rows": {"instances": [list(row) for row in ROWS]},
    "instances as records": {"instances": RECORDS},
    "inputs as rows": {"inputs": [list(row) for row in ROWS]},
    "inputs as columns": {"inputs": {"colour": COLOURS, "x": X_VALUES}},
    "with params": {"inputs": RECORDS, "params": {"k": 1}},
}


@pytest.mark.parametrize("document", MLFLOW_BODIES.values(), ids=MLFLOW_BODIES.keys())
def test_mlflow_bodies_carry_categories_as_strings(client, model_dir, document):
    response = client.post("/invocations", json=document)
    assert response.status_code == 200, response.get_json()
    assert set(response.get_json()) == {"predictions"}
    np.testing.assert_allclose(
        response.get_json()["predictions"], _expected(_metadata(model_dir), ROWS), rtol=1e-12
    )


@pytest.mark.parametrize("header", [["x", "colour"], ["colour", "x"]])
def test_mlflow_csv_carries_categories_as_text(client, model_dir, header):
    frame = pd.DataFrame(ROWS, columns=["x", "colour"])[header]
    response = client.post(
        "/invocations", data=frame.to_csv(index=False), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.get_json()
    np.testing.assert_allclose(
        response.get_json()["predictions"], _expected(_metadata(model_dir), ROWS), rtol=1e-12
    )


def _split(data: list, columns: tuple[str, str] = ("x", "colour")) -> dict:
    return {"dataframe_split": {"columns": list(columns), "data": data}}


# (id, body, content type, status, what the MLflow message must say)
MLFLOW_ERRORS = [
    (
        "split: a string in the numeric column",
        _split([[1.0, "red"], [BODY_MARKER, "red"]]),
        JSON,
        422,
        'dataframe_split.data[1][0] (column "x") is a string; input x takes numbers',
    ),
    (
        "split, other order: a string in the numeric column",
        _split([["red", 1.0], ["blue", "2.5"]], ("colour", "x")),
        JSON,
        422,
        'dataframe_split.data[1][1] (column "x") is a string',
    ),
    (
        "split: an unknown level",
        _split([[1.0, "red"], [2.0, "purple"]]),
        JSON,
        422,
        "dataframe_split.data[1][1] (column \"colour\"): level 'purple' of input colour is "
        "unknown to the model (levels: blue, green, red)",
    ),
    (
        "split: a number for the category",
        _split([[1.0, 2]]),
        JSON,
        422,
        'dataframe_split.data[0][1] (column "colour") is a number; input colour takes a level',
    ),
    (
        "split: the dummies as columns",
        {"dataframe_split": {"columns": ["x", "colour=green", "colour=red"], "data": [[1, 0, 1]]}},
        JSON,
        422,
        "lacks colour and has 2 column(s) that are not inputs",
    ),
    (
        "records: a null category",
        {"dataframe_records": [{"x": 1.0, "colour": None}]},
        JSON,
        422,
        'dataframe_records[0]["colour"] is null',
    ),
    (
        "records: rows as lists",
        {"dataframe_records": [[1.0, "red"]]},
        JSON,
        422,
        "dataframe_records[0] is a list; each row must be an object",
    ),
    (
        "records: a key missing",
        {"dataframe_records": [{"x": 1.0}]},
        JSON,
        422,
        "dataframe_records[0] lacks colour",
    ),
    (
        "instances: a string for x",
        {"instances": [[1.0, "red"], ["one", "red"]]},
        JSON,
        422,
        "instances[1][0] is a string; input x takes numbers",
    ),
    (
        "inputs as rows: the dummies",
        {"inputs": [[1.0, 0.0, 1.0]]},
        JSON,
        422,
        "inputs[0] has 3 values",
    ),
    (
        "inputs as columns: a string for x",
        {"inputs": {"x": [1.0, BODY_MARKER], "colour": ["red", "red"]}},
        JSON,
        422,
        'inputs["x"][1] is a string',
    ),
    (
        "inputs as columns: an unknown level",
        {"inputs": {"x": [1.0], "colour": ["teal"]}},
        JSON,
        422,
        "inputs[\"colour\"][0]: level 'teal'",
    ),
    (
        "inputs as columns: a column missing",
        {"inputs": {"x": [1.0]}},
        JSON,
        422,
        '"inputs" lacks colour; its keys must be exactly the model\'s inputs: x, colour',
    ),
    (
        "csv: text in the numeric column",
        b"colour,x\nred,1.5\nblue," + BODY_MARKER.encode() + b"\n",
        "text/csv",
        422,
        'CSV line 3, column "x" is not a number; input x takes numbers',
    ),
    (
        "csv: an unknown level",
        b"x,colour\n1.5,red\n2,Purple\n",
        "text/csv",
        422,
        "CSV line 3, column \"colour\": level 'Purple' of input colour is unknown",
    ),
    ("csv: nan", b"x,colour\nnan,red\n", "text/csv", 422, "not a finite number"),
    (
        "csv: the dummies as columns",
        b"x,colour=green,colour=red\n1,0,1\n",
        "text/csv",
        422,
        "the CSV header lacks colour",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [case[1:] for case in MLFLOW_ERRORS],
    ids=[case[0] for case in MLFLOW_ERRORS],
)
def test_mlflow_refusals_name_the_column_and_row(client, body, content_type, status, message):
    data = body if isinstance(body, bytes) else json.dumps(body)
    response = client.post("/invocations", data=data, headers={"Content-Type": content_type})
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()
    assert set(error) == {"error_code", "message"}
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert message in error["message"]
    assert BODY_MARKER not in response.get_data(as_text=True)


def _tensor(name: str, data: list, datatype: str, shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


def test_v2_metadata_lists_the_category_as_bytes(client):
    for path in ("/v2/models/linreg", "/v2/models/linreg/versions/1"):
        metadata = client.get(path).get_json()
        assert metadata["inputs"] == [
            {"name": "x", "datatype": "FP64", "shape": [-1]},
            {"name": "colour", "datatype": "BYTES", "shape": [-1]},
        ]
        assert metadata["outputs"] == [{"name": "y", "datatype": "FP64", "shape": [-1]}]


V2_BODIES = {
    "FP64 and BYTES tensors": [_tensor("x", X_VALUES, "FP64"), _tensor("colour", COLOURS, "BYTES")],
    "other order, shape [n, 1], INT32 x": [
        _tensor("colour", [[colour] for colour in COLOURS], "BYTES", [3, 1]),
        _tensor("x", [1, -2, 3], "INT32"),
    ],
}


@pytest.mark.parametrize("inputs", V2_BODIES.values(), ids=V2_BODIES.keys())
def test_v2_infer_takes_bytes_tensors_for_categories(client, model_dir, inputs):
    response = client.post("/v2/models/linreg/infer", json={"id": "c1", "inputs": inputs})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["id"], body["model_version"]) == ("c1", "1")
    [output] = body["outputs"]
    x = {tensor["name"]: tensor for tensor in inputs}["x"]["data"]
    np.testing.assert_allclose(
        output["data"],
        _expected(_metadata(model_dir), list(zip(x, COLOURS, strict=True))),
        rtol=1e-12,
    )


_COLOURS = _tensor("colour", COLOURS, "BYTES")
V2_ERRORS = [
    (
        "BYTES data in the numeric input",
        [_tensor("x", [1.0, BODY_MARKER, 2.0], "BYTES"), _COLOURS],
        'inputs[0] ("x").data[1] is a string; input x takes numbers',
    ),
    (
        "a string in an FP64 tensor",
        [_COLOURS, _tensor("x", [1.0, 2.0, BODY_MARKER], "FP64")],
        'inputs[1] ("x").data[2] is a string; FP64 data are numbers',
    ),
    (
        "the category as FP64",
        [_tensor("x", X_VALUES, "FP64"), _tensor("colour", [0, 1, 2], "FP64")],
        'inputs[1] ("colour") is FP64; input colour is categorical: send its levels as strings '
        "in a BYTES tensor",
    ),
    (
        "a number in the BYTES tensor",
        [_tensor("x", X_VALUES, "FP64"), _tensor("colour", ["red", 5, "blue"], "BYTES")],
        'inputs[1] ("colour").data[1] is a number; input colour takes a level as a string',
    ),
    (
        "an unknown level",
        [_tensor("x", X_VALUES, "FP64"), _tensor("colour", ["red", "blue", "mauve"], "BYTES")],
        "inputs[1] (\"colour\").data[2]: level 'mauve' of input colour is unknown",
    ),
    (
        "one tensor of all columns",
        [_tensor("input-0", [1.0, "red"], "BYTES", [1, 2])],
        "this model has categorical inputs; send one tensor per input named after it "
        "(x, colour), BYTES for colour; got 1 tensor(s)",
    ),
    (
        "the dummies as tensors",
        [
            _tensor("x", [1.0], "FP64"),
            _tensor("colour=green", [0.0], "FP64"),
            _tensor("colour=red", [1.0], "FP64"),
        ],
        "send one tensor per input",
    ),
    (
        "tensors of two lengths",
        [_tensor("x", [1.0], "FP64"), _COLOURS],
        "every input's tensor must have the same number of rows",
    ),
]


@pytest.mark.parametrize(
    ("inputs", "message"), [case[1:] for case in V2_ERRORS], ids=[case[0] for case in V2_ERRORS]
)
def test_v2_refusals_name_the_tensor_and_row(client, inputs, message):
    response = client.post("/v2/models/linreg/infer", json={"inputs": inputs})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert set(response.get_json()) == {"error"}
    assert message in response.get_json()["error"]
    assert BODY_MARKER not in response.get_data(as_text=True)


def test_metrics_count_the_categorical_requests_by_protocol(client):
    client.post("/invocations", json=MLFLOW_BODIES["dataframe_split"])
    client.post("/invocations", json={"inputs": {"x": [1.0], "colour": ["teal"]}})
    client.post("/v2/models/linreg/infer", json={"inputs": V2_BODIES["FP64 and BYTES tensors"]})
    text = client.get("/metrics").get_data(as_text=True)
    counted = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "linreg_serving_requests_total"
    }
    assert counted == {
        labels("/invocations", "200", "mlflow"): 1,
        labels("/invocations", "422", "mlflow"): 1,
        labels("/v2/models/{name}/infer", "200", "v2"): 1,
    }


def test_real_gunicorn_serves_categorical_inputs_on_every_protocol(model_dir, tmp_path):
    """Through gunicorn: /predict, MLflow's client's bodies (``df.to_dict(orient="split")``
    of a frame with a string column, ``df.to_csv()``), a V2 client's BYTES tensor; refusals
    in each protocol's form; counted by protocol."""
    server = GunicornServer(model_dir, tmp_path).start()
    client = HttpClient(server.port)
    expected = _expected(_metadata(model_dir), ROWS)
    try:
        ok = client.predict({"instances": [{"x": x, "colour": c} for x, c in ROWS]})
        assert ok.status == 200
        np.testing.assert_allclose(json.loads(ok.body)["predictions"], expected, rtol=1e-12)
        unknown = client.predict({"instances": [[0.0, "teal"]]})
        assert unknown.status == 422 and b"teal" in unknown.body

        frame = pd.DataFrame(ROWS, columns=["x", "colour"])
        split = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        csv = frame[["colour", "x"]].to_csv(index=False).encode()
        for body, content_type in ((split, JSON), (csv, "text/csv")):
            response = client.request("POST", "/invocations", body, {"Content-Type": content_type})
            assert response.status == 200, response.body
            np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-12)
        wrong = frame.astype({"x": str}).assign(x=["1.5", "two", "3"])
        response = client.request(
            "POST",
            "/invocations",
            json.dumps({"dataframe_split": wrong.to_dict(orient="split")}).encode(),
            {"Content-Type": JSON},
        )
        assert response.status == 422
        assert 'dataframe_split.data[0][0] (column "x") is a string' in response.json()["message"]

        metadata = client.request("GET", "/v2/models/linreg").json()
        assert [tensor["datatype"] for tensor in metadata["inputs"]] == ["FP64", "BYTES"]
        inputs = [
            {"name": "x", "shape": [3], "datatype": "FP64", "data": X_VALUES},
            {"name": "colour", "shape": [3], "datatype": "BYTES", "data": COLOURS},
        ]
        infer = json.dumps({"inputs": inputs}).encode()
        response = client.request("POST", "/v2/models/linreg/infer", infer, {"Content-Type": JSON})
        assert response.status == 200, response.body
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected, rtol=1e-12)
        inputs[0] = {**inputs[0], "datatype": "BYTES", "data": ["1", "2", "3"]}
        response = client.request(
            "POST", "/v2/models/linreg/infer", json.dumps({"inputs": inputs}).encode(), {}
        )
        assert response.status == 422
        assert 'inputs[0] ("x").data[0] is a string' in response.json()["error"]

        samples = settled_scrape(client)
        assert requests_counted(samples, "/invocations", "200", "mlflow") == 2
        assert requests_counted(samples, "/invocations", "422", "mlflow") == 1
        assert requests_counted(samples, "/v2/models/{name}/infer", "200", "v2") == 1
        assert requests_counted(samples, "/v2/models/{name}/infer", "422", "v2") == 1
        assert requests_counted(samples, "/predict", "422") == 1
    finally:
        client.close()
        server.stop()
