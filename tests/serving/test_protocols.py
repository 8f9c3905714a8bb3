"""MLflow's scoring protocol (``/invocations``) and the Open Inference Protocol (``/v2``),
in-process: every body format, the errors in each protocol's form, the model name, the
hot-swapped model and the metrics by protocol."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import (
    BODY_MARKER,
    FEATURES,
    JSON,
    MAX_ROWS,
    TrainedModel,
    expected_predictions,
    labels,
)

ROWS = [[1.5, -2.0, 300.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1e3, 2.5e-3, 7, 123456789]]
SHUFFLED = ["x02", "x00", "x03", "x01"]  # columns in another order than the model's
MARKER = BODY_MARKER


def _records(rows: list[list[float]]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in rows]


def _csv(header: list[str], rows: list[list[float]]) -> bytes:
    position = [FEATURES.index(name) for name in header]
    lines = [",".join(header)] + [",".join(repr(row[i]) for i in position) for row in rows]
    return ("\n".join(lines) + "\n").encode()


MLFLOW_BODIES = {
    "dataframe_split": {"dataframe_split": {"columns": FEATURES, "data": ROWS}},
    "dataframe_split, other column order, index": {
        "dataframe_split": {
            "index": [10, 11, 12],
            "columns": SHUFFLED,
            "data": [[row[FEATURES.index(name)] for name in SHUFFLED] for row in ROWS],
        }
    },
    "dataframe_records": {"dataframe_records": _records(ROWS)},
    "instances as rows": {"instances": ROWS},
    "instances as records": {"instances": _records(ROWS)},
    "inputs as rows": {"inputs": ROWS},
    "inputs as columns": {
        "inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURES)}
    },
    "with params": {"inputs": ROWS, "params": {"temperature": 0}},
}


@pytest.mark.parametrize("document", MLFLOW_BODIES.values(), ids=MLFLOW_BODIES.keys())
def test_mlflow_json_bodies_answer_predictions_as_mlflow_does(
    client: FlaskClient, model_dir: Path, document: dict
) -> None:
    response = client.post("/invocations", json=document)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"predictions"}
    metadata = json.loads((model_dir / "model.json").read_text())
    np.testing.assert_allclose(
        body["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
    )
    assert response.headers["X-Model-Version"] == "1"


@pytest.mark.parametrize("header", [FEATURES, SHUFFLED], ids=["model order", "other order"])
@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8"])
def test_mlflow_csv_bodies(
    client: FlaskClient, model_dir: Path, header: list[str], content_type: str
) -> None:
    response = client.post(
        "/invocations", data=_csv(header, ROWS), headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    metadata = json.loads((model_dir / "model.json").read_text())
    np.testing.assert_allclose(
        response.get_json()["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
    )


def test_mlflow_csv_body_with_a_byte_order_mark_and_crlf(client: FlaskClient, model_dir: Path):
    # As Excel's "CSV UTF-8" saves a file that is then posted as it is (curl --data-binary @).
    body = ("\ufeff" + _csv(FEATURES, ROWS).decode().replace("\n", "\r\n")).encode()
    response = client.post("/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_data(as_text=True)
    metadata = json.loads((model_dir / "model.json").read_text())
    np.testing.assert_allclose(
        response.get_json()["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
    )


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


_SPLIT = {"columns": FEATURES, "data": ROWS}
# (id, body, content type, status, MLflow error code, what the message must say)
MLFLOW_ERRORS = [
    ("not JSON", b'{"inputs": [[1, 2', JSON, 400, "BAD_REQUEST", "not valid JSON"),
    ("NaN", b'{"inputs": [[NaN, 1, 2, 3]]}', JSON, 400, "BAD_REQUEST", "NaN and Infinity"),
    ("a list", _json(ROWS), JSON, 422, "INVALID_PARAMETER_VALUE", "it is a list"),
    ("no format", _json({"rows": ROWS}), JSON, 422, "INVALID_PARAMETER_VALUE", "it has 0 of them"),
    (
        "two formats",
        _json({"inputs": ROWS, "instances": ROWS}),
        JSON,
        422,
        "INVALID_PARAMETER_VALUE",
        "it has 2 of them",
    ),
    ("other key", _json({"inputs": ROWS, MARKER: 1}), JSON, 422, "", "1 other key(s)"),
    ("params a list", _json({"inputs": ROWS, "params": []}), JSON, 422, "", '"params" is a list'),
    ("split not an object", _json({"dataframe_split": ROWS}), JSON, 422, "", "must be an object"),
    (
        "split unknown column",
        _json({"dataframe_split": {"columns": [*FEATURES[:3], MARKER], "data": ROWS}}),
        JSON,
        422,
        "",
        "lacks x03 and has 1 column(s) that are not features",
    ),
    (
        "split column twice",
        _json({"dataframe_split": {"columns": [*FEATURES, "x00"], "data": ROWS}}),
        JSON,
        422,
        "",
        "names a column more than once",
    ),
    (
        "split short row",
        _json({"dataframe_split": {**_SPLIT, "data": [ROWS[0], [1, 2]]}}),
        JSON,
        422,
        "",
        "dataframe_split.data[1] has 2 values",
    ),
    (
        "split string",
        _json({"dataframe_split": {**_SPLIT, "data": [[1, MARKER, 3, 4]]}}),
        JSON,
        422,
        "",
        'dataframe_split.data[0][1] (column "x01") is a string; feature x01 takes numbers',
    ),
    (
        "split index length",
        _json({"dataframe_split": {**_SPLIT, "index": [0]}}),
        JSON,
        422,
        "",
        "one label per row",
    ),
    (
        "records as lists",
        _json({"dataframe_records": ROWS}),
        JSON,
        422,
        "",
        "dataframe_records[0] is a list",
    ),
    (
        "record lacks a feature",
        _json({"dataframe_records": [{"x00": 1, "x01": 2, "x02": 3}]}),
        JSON,
        422,
        "",
        "dataframe_records[0] lacks x03",
    ),
    (
        "instances boolean",
        _json({"instances": [[1, True, 3, 4]]}),
        JSON,
        422,
        "",
        "[0][1] is a boolean",
    ),
    (
        "columns lack a feature",
        _json({"inputs": {"x00": [1], "x01": [2], "x02": [3]}}),
        JSON,
        422,
        "",
        '"inputs" lacks x03',
    ),
    (
        "columns of two lengths",
        _json({"inputs": {"x00": [1, 2], "x01": [2], "x02": [3], "x03": [4]}}),
        JSON,
        422,
        "",
        "same number of values",
    ),
    (
        "column with a string",
        _json({"inputs": {"x00": [1], "x01": [2], "x02": [MARKER], "x03": [4]}}),
        JSON,
        422,
        "",
        'inputs["x02"][0] is a string',
    ),
    (
        "too many rows",
        _json({"inputs": [[1, 2, 3, 4]] * (MAX_ROWS + 1)}),
        JSON,
        413,
        "REQUEST_LIMIT_EXCEEDED",
        f"at most {MAX_ROWS}",
    ),
    (
        "prediction overflows",
        _json({"inputs": [[1, 2, 3, 4], [1e308] * 4]}),
        JSON,
        422,
        "",
        "row 1: the prediction overflows",
    ),
    (
        "text/plain",
        _json({"inputs": ROWS}),
        "text/plain",
        415,
        "BAD_REQUEST",
        "application/json or text/csv",
    ),
    ("latin-1", _json({"inputs": ROWS}), "application/json; charset=latin-1", 415, "", "UTF-8"),
    ("csv empty", b"", "text/csv", 422, "", "the CSV body is empty"),
    ("csv header", _csv(FEATURES, ROWS).replace(b"x03", b"x3"), "text/csv", 422, "", "lacks x03"),
    (
        "csv short line",
        _csv(FEATURES, ROWS) + b"1,2\n",
        "text/csv",
        422,
        "",
        "CSV line 5 has 2 fields",
    ),
    (
        "csv text",
        b"x00,x01,x02,x03\n1," + MARKER.encode() + b",3,4\n",
        "text/csv",
        422,
        "",
        'CSV line 2, column "x01" is not a number',
    ),
    ("csv nan", b"x00,x01,x02,x03\n1,nan,3,4\n", "text/csv", 422, "", "not a finite number"),
    (
        "csv not UTF-8",
        b"x00,x01,x02,x03\n\xff,2,3,4\n",
        "text/csv",
        400,
        "BAD_REQUEST",
        "not UTF-8",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "message"),
    [case[1:] for case in MLFLOW_ERRORS],
    ids=[case[0] for case in MLFLOW_ERRORS],
)
def test_mlflow_errors_are_mlflow_json_naming_the_problem(
    client: FlaskClient, body: bytes, content_type: str, status: int, code: str, message: str
) -> None:
    response = client.post("/invocations", data=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()
    assert set(error) == {"error_code", "message"}
    default = {415: "BAD_REQUEST", 422: "INVALID_PARAMETER_VALUE"}
    assert error["error_code"] == (code or default[status])
    assert message in error["message"]
    assert MARKER not in response.get_data(as_text=True)


def _tensor(name: str, shape: list[int], data: list, datatype: str = "FP64") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _columns(rows: list[list[float]], order: list[str], datatype: str = "FP64") -> list[dict]:
    return [
        _tensor(name, [len(rows)], [row[FEATURES.index(name)] for row in rows], datatype)
        for name in order
    ]


FLAT = [value for row in ROWS for value in row]
INT_ROWS = [[1, -2, 300, 4], [0, 0, 0, 0], [-1000, 3, 7, 123456789]]
V2_BODIES = {
    "one FP64 tensor, flat": ({"inputs": [_tensor("input-0", [3, 4], FLAT)]}, ROWS),
    "one FP64 tensor, nested": ({"inputs": [_tensor("input-0", [3, 4], ROWS)]}, ROWS),
    "one FP32 tensor": (
        {"inputs": [_tensor("x", [3, 4], FLAT, "FP32")]},
        np.asarray(ROWS, dtype=np.float32).astype(np.float64).tolist(),
    ),
    "one INT64 tensor": (
        {"inputs": [_tensor("x", [3, 4], [v for row in INT_ROWS for v in row], "INT64")]},
        INT_ROWS,
    ),
    "a tensor per feature, any order": ({"inputs": _columns(ROWS, SHUFFLED)}, ROWS),
    "a tensor per feature, shape [n, 1], INT32": (
        {
            "inputs": [
                {**tensor, "shape": [3, 1]} for tensor in _columns(INT_ROWS, FEATURES, "INT32")
            ]
        },
        INT_ROWS,
    ),
    "with id, parameters, outputs": (
        {
            "id": "request-7",
            "parameters": {"content_type": "np"},
            "inputs": [_tensor("x", [3, 4], FLAT)],
            "outputs": [{"name": "target"}],
        },
        ROWS,
    ),
}


@pytest.mark.parametrize(("document", "rows"), V2_BODIES.values(), ids=V2_BODIES.keys())
def test_v2_infer_predicts_typed_tensors(
    client: FlaskClient, model_dir: Path, document: dict, rows: list
) -> None:
    for path in ("/v2/models/linreg/infer", "/v2/models/linreg/versions/1/infer"):
        response = client.post(path, json=document)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        metadata = json.loads((model_dir / "model.json").read_text())
        assert body["model_name"] == "linreg"
        assert body["model_version"] == "1"
        assert body.get("id") == document.get("id")
        [output] = body["outputs"]
        assert output["name"] == metadata["target"]
        assert (output["datatype"], output["shape"]) == ("FP64", [3])
        np.testing.assert_allclose(output["data"], expected_predictions(metadata, rows), rtol=1e-12)


def _v2(inputs: list, **extra: object) -> bytes:
    return _json({"inputs": inputs, **extra})


_ONE = [_tensor("x", [1, 4], [1, 2, 3, 4])]
# (id, path, body, status, what the error must say)
V2_ERRORS = [
    (
        "unknown model",
        "/v2/models/" + MARKER + "/infer",
        _v2(_ONE),
        404,
        "this server serves linreg",
    ),
    ("unknown version", "/v2/models/linreg/versions/9/infer", _v2(_ONE), 404, "version 1 is"),
    ("not JSON", "", b'{"inputs": [', 400, "not valid JSON"),
    ("no inputs", "", _json({"outputs": []}), 422, '{"inputs": [tensor, ...]}'),
    ("other key", "", _v2(_ONE, **{MARKER: 1}), 422, "may have only the keys"),
    ("id a number", "", _v2(_ONE, id=7), 422, '"id" is a number'),
    ("empty inputs", "", _v2([]), 422, "non-empty list"),
    (
        "tensor lacks shape",
        "",
        _v2([{"name": "x", "datatype": "FP64", "data": []}]),
        422,
        "lacks shape",
    ),
    (
        "unknown datatype",
        "",
        _v2([_tensor("x", [1, 4], [1, 2, 3, 4], MARKER)]),
        422,
        "datatype is not one of",
    ),
    (
        "negative shape",
        "",
        _v2([_tensor("x", [-1, 4], [1, 2, 3, 4])]),
        422,
        "non-negative integers",
    ),
    (
        "shape and data disagree",
        "",
        _v2([_tensor("x", [2, 4], [1, 2, 3, 4])]),
        422,
        "holds 8 values; data has 4",
    ),
    (
        "nested off its shape",
        "",
        _v2([_tensor("x", [2, 4], [[1, 2, 3, 4], [1, 2]])]),
        422,
        "nested but not along",
    ),
    ("three columns", "", _v2([_tensor("x", [1, 3], [1, 2, 3])]), 422, "must have shape [n, 4]"),
    ("no rows", "", _v2([_tensor("x", [0, 4], [])]), 422, "no rows"),
    (
        "too many rows",
        "",
        _v2([_tensor("x", [MAX_ROWS + 1, 4], [0] * 4 * (MAX_ROWS + 1))]),
        413,
        f"at most {MAX_ROWS}",
    ),
    (
        "INT8 out of range",
        "",
        _v2([_tensor("x", [1, 4], [1, 2, 300, 4], "INT8")]),
        422,
        "out of range for INT8",
    ),
    (
        "UINT8 negative",
        "",
        _v2([_tensor("x", [1, 4], [1, -2, 3, 4], "UINT8")]),
        422,
        "out of range for UINT8",
    ),
    (
        "INT64 with a fraction",
        "",
        _v2([_tensor("x", [1, 4], [1, 2.5, 3, 4], "INT64")]),
        422,
        "INT64 data are integers",
    ),
    (
        "FP32 overflow",
        "",
        _v2([_tensor("x", [1, 4], [1, 2, 1e39, 4], "FP32")]),
        422,
        "out of range for FP32",
    ),
    (
        "FP64 with a string",
        "",
        _v2([_tensor("x", [1, 4], [1, MARKER, 3, 4])]),
        422,
        "data[1] is a string; FP64",
    ),
    (
        "BYTES for a numeric feature",
        "",
        _v2(
            [
                *_columns([[1, 2, 3, 4]], ["x00", "x01", "x03"]),
                _tensor("x02", [1], [MARKER], "BYTES"),
            ]
        ),
        422,
        'inputs[3] ("x02").data[0] is a string; feature x02 takes numbers',
    ),
    (
        "BOOL",
        "",
        _v2([_tensor("x", [1, 4], [True, False, True, True], "BOOL")]),
        422,
        '("x00") is a boolean',
    ),
    (
        "names not features",
        "",
        _v2([_tensor(MARKER, [1], [1]), _tensor("y", [1], [2])]),
        422,
        "whose names are not those features",
    ),
    (
        "features of two lengths",
        "",
        _v2([*_columns([[1, 2, 3, 4]], ["x00", "x01", "x02"]), _tensor("x03", [2], [1, 2])]),
        422,
        "the same number of rows",
    ),
    ("unknown output", "", _v2(_ONE, outputs=[{"name": MARKER}]), 422, 'one output, "target"'),
    (
        "overflow",
        "",
        _v2([_tensor("x", [1, 4], [1e308] * 4)]),
        422,
        "row 0: the prediction overflows",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in V2_ERRORS],
    ids=[case[0] for case in V2_ERRORS],
)
def test_v2_errors_are_json_naming_the_problem(
    client: FlaskClient, path: str, body: bytes, status: int, message: str
) -> None:
    response = client.post(
        path or "/v2/models/linreg/infer", data=body, headers={"Content-Type": JSON}
    )
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()
    assert set(error) == {"error"}
    assert message in error["error"]
    assert MARKER not in response.get_data(as_text=True)


def test_v2_refuses_a_body_that_says_it_is_not_json(client: FlaskClient) -> None:
    response = client.post(
        "/v2/models/linreg/infer", data=_v2(_ONE), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    # V2 clients do not all set a Content-Type: without one, the body is read as JSON.
    assert client.post("/v2/models/linreg/infer", data=_v2(_ONE)).status_code == 200


def test_v2_server_health_and_model_metadata(client: FlaskClient, trained: TrainedModel) -> None:
    assert client.get("/v2").get_json()["name"] == "linreg-serving"
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/linreg/ready").get_json() == {"name": "linreg", "ready": True}
    for path in ("/v2/models/linreg", "/v2/models/linreg/versions/1"):
        metadata = client.get(path).get_json()
        assert metadata["name"] == "linreg"
        assert metadata["versions"] == ["1"]
        assert [tensor["name"] for tensor in metadata["inputs"]] == FEATURES
        assert {tensor["datatype"] for tensor in metadata["inputs"]} == {"FP64"}
        assert metadata["outputs"] == [
            {"name": trained.metadata["target"], "datatype": "FP64", "shape": [-1]}
        ]
    for path in ("/v2/models/other", "/v2/models/other/ready", "/v2/models/linreg/versions/2"):
        response = client.get(path)
        assert response.status_code == 404
        assert set(response.get_json()) == {"error"}


def test_the_v2_model_name_comes_from_the_settings(settings: ServingSettings) -> None:
    client = create_app(
        ServingSettings(**{**settings.__dict__, "model_name": "prices"})
    ).test_client()
    infer = {"inputs": [_tensor("x", [1, 4], [1, 2, 3, 4])]}
    assert client.post("/v2/models/prices/infer", json=infer).get_json()["model_name"] == "prices"
    assert client.get("/v2/models/prices").get_json()["name"] == "prices"
    assert client.post("/v2/models/linreg/infer", json=infer).status_code == 404
    with pytest.raises(ValueError, match="MODEL_NAME"):
        ServingSettings(model_name="a/b")
    assert ServingSettings.from_env({"MODEL_NAME": "prices"}).model_name == "prices"


def test_mlflow_ping_health_and_version(client: FlaskClient) -> None:
    """MLflow's scoring server answers /ping and /health with 200 once its model is loaded
    (what its client's wait_server_ready and SageMaker's probe check), and /version."""
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json() == {"status": "ready", "model_version": 1}
    version = client.get("/version")
    assert version.status_code == 200
    assert version.get_json() == {"name": "linreg-serving", "version": "1"}
    assert version.get_json()["version"] == client.get("/v2").get_json()["version"]
    response = client.post("/ping", json={})
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD, OPTIONS")


def test_without_a_model_every_protocol_is_alive_but_not_ready(tmp_path: Path) -> None:
    client = create_app(ServingSettings(model_dir=str(tmp_path / "none"))).test_client()
    assert client.get("/v2/health/live").status_code == 200
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.get_json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert client.get("/version").status_code == 200
    for path in ("/v2/health/ready", "/v2/models/linreg/ready", "/v2/models/linreg"):
        assert client.get(path).status_code == 503
    infer = client.post("/v2/models/linreg/infer", json={"inputs": _ONE})
    assert (infer.status_code, set(infer.get_json())) == (503, {"error"})
    invocation = client.post("/invocations", json={"inputs": ROWS})
    assert invocation.status_code == 503
    assert invocation.get_json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_every_protocol_serves_the_hot_swapped_model(
    client: FlaskClient, model_dir: Path, retrained: TrainedModel
) -> None:
    metadata = retrained.publish(model_dir, version=2)
    expected = expected_predictions(metadata, ROWS)
    native = client.post("/predict", json={"instances": ROWS}).get_json()
    mlflow = client.post("/invocations", json={"dataframe_records": _records(ROWS)})
    v2 = client.post("/v2/models/linreg/infer", json={"inputs": _columns(ROWS, FEATURES)})
    assert native["model_version"] == 2
    assert client.get("/ping").get_json()["model_version"] == 2
    assert mlflow.headers["X-Model-Version"] == "2"
    assert v2.get_json()["model_version"] == "2"
    for predictions in (
        native["predictions"],
        mlflow.get_json()["predictions"],
        v2.get_json()["outputs"][0]["data"],
    ):
        np.testing.assert_allclose(predictions, expected, rtol=1e-12)


def test_metrics_count_each_protocol_under_its_own_label(client: FlaskClient) -> None:
    client.post("/predict", json={"instances": ROWS})
    for _ in range(2):
        client.post("/invocations", json={"inputs": ROWS})
    client.post("/invocations", json={"inputs": []})
    for _ in range(3):
        client.post("/v2/models/linreg/infer", json={"inputs": _ONE})
    client.post("/v2/models/nope/infer", json={"inputs": _ONE})
    client.get("/v2/health/ready")
    client.get("/ping")
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "linreg_serving_requests_total"
    }
    assert samples == {
        ("linreg_serving_requests_total", labels("/predict", "200")): 1,
        ("linreg_serving_requests_total", labels("/invocations", "200", "mlflow")): 2,
        ("linreg_serving_requests_total", labels("/invocations", "422", "mlflow")): 1,
        ("linreg_serving_requests_total", labels("/v2/models/{name}/infer", "200", "v2")): 3,
        ("linreg_serving_requests_total", labels("/v2/models/{name}/infer", "404", "v2")): 1,
        ("linreg_serving_requests_total", labels("/v2/health/ready", "200", "v2")): 1,
        ("linreg_serving_requests_total", labels("/ping", "200", "mlflow")): 1,
    }


def test_the_one_pass_decoder_and_the_full_checks_agree(client: FlaskClient) -> None:
    """Bodies of rows of numbers take the one-pass path; near misses take the full checks.
    Either way the same rows give the same predictions, and near misses the same error."""
    rng = random.Random(3)
    rows = [[rng.uniform(-1e3, 1e3) for _ in FEATURES] for _ in range(50)]
    fast = client.post("/predict", data=_json({"instances": rows}), headers={"Content-Type": JSON})
    # Rows as objects (strings in the body) take the full checks.
    full = client.post("/predict", json={"instances": _records(rows)})
    assert fast.status_code == full.status_code == 200
    assert fast.get_json() == full.get_json()
    for bad, message in [
        ([*rows[:-1], [1, 2, 3, None]], "instances[49][3] is null"),
        ([*rows[:-1], [1, 2, 3]], "instances[49] has 3 values"),
        ([*rows[:-1], [1, 2, 3, [4]]], "instances[49][3] is a list"),
        ([*rows[:-1], [1, 2, 3, True]], "instances[49][3] is a boolean"),
        ([*rows[:-1], 5], "instances[49] is a number"),
        ([*rows[:-1], [1, 2, 3, {}]], "instances[49][3] is an object"),
    ]:
        response = client.post("/predict", json={"instances": bad})
        assert response.status_code == 422
        assert message in response.get_json()["error"]
