"""Fuzzing ``/predict``, ``/invocations``, ``/v2/.../infer`` and the routes: never a 5xx,
every error JSON without the payload in it, and the exact status (and predictions) that an
independent oracle expects; MLflow and V2 bodies also for a model with a categorical input
(levels as strings, BYTES tensors).

The bulk runs in-process through Flask's test client; a share goes to a real gunicorn.
Examples are derandomised, so a run is reproducible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import (
    BODY_MARKER,
    FEATURES,
    JSON,
    GunicornServer,
    HttpClient,
    Response,
    TrainedModel,
    categorical_predictions,
    expected_predictions,
)

Send = Callable[[str, str, bytes, dict[str, str]], Response]

# Hypothesis warns when the global `random` state changes while it draws an example; these
# strategies use no `random`, but threads left in this process by earlier tests (Prefect's
# and Dask's background services, which jitter with it) can draw meanwhile: a CI run failed
# on that race once (hypothesis.control.deprecate_random_in_strategy says as much).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

_FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(min_value=-1e3, max_value=1e3),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.just(BODY_MARKER),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
values = st.one_of(numbers, numbers, numbers, junk)
good_list_row = st.lists(numbers, min_size=4, max_size=4)
good_object_row = st.fixed_dictionaries({name: numbers for name in FEATURES})
bad_list_row = st.lists(values, max_size=6)
bad_object_row = st.dictionaries(
    st.sampled_from([*FEATURES, "x4", "X00", "", BODY_MARKER]), values, max_size=6
)
instances = st.one_of(
    st.lists(good_list_row, min_size=1, max_size=30),
    st.lists(good_object_row, min_size=1, max_size=30),
    st.lists(st.one_of(good_list_row, good_object_row, bad_list_row, bad_object_row), max_size=6),
    st.lists(st.one_of(good_list_row, bad_list_row), min_size=1, max_size=6),
    values,
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=6), st.just(BODY_MARKER))
any_json = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
documents = st.one_of(
    st.fixed_dictionaries({"instances": instances}),
    st.fixed_dictionaries({"instances": instances}),
    st.fixed_dictionaries({"instances": instances, BODY_MARKER: values}),
    any_json,
)
content_types = st.sampled_from(
    [JSON, JSON, JSON, "application/json; charset=utf-8", "Application/JSON", "text/plain", ""]
)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _non_finite(value: Any) -> bool:
    """Whether a NaN or infinity hides anywhere in a document (the body then is not JSON)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_non_finite(item) for item in value.values())
    return False


def oracle(document: Any, content_type: str, metadata: dict) -> tuple[int, np.ndarray | None]:
    """The status the service must answer with, and the predictions when it is 200."""
    if content_type.split(";", maxsplit=1)[0].strip().lower() != JSON:
        return 415, None
    if _non_finite(document):
        return 400, None
    if not isinstance(document, dict) or list(document) != ["instances"]:
        return 422, None
    rows = document["instances"]
    if not isinstance(rows, list) or not rows:
        return 422, None
    if all(isinstance(row, list) and len(row) == 4 for row in rows):
        matrix = rows
    elif all(isinstance(row, dict) and set(row) == set(FEATURES) for row in rows):
        matrix = [[row[name] for name in FEATURES] for row in rows]
    else:
        return 422, None
    if not all(_is_number(value) for row in matrix for value in row):
        return 422, None
    with np.errstate(all="ignore"):
        predictions = expected_predictions(metadata, [[float(v) for v in row] for row in matrix])
    if not np.isfinite(predictions).all():
        return 422, None
    return 200, predictions


PROTOCOL_KEYS = {"dataframe_split", "dataframe_records", "application/json"}
QUOTED_LEVEL_CHARACTERS = 40  # serving.payload quotes an unknown level up to this length


def check_response(response: Response, sent: bytes, mlflow: bool = False) -> None:
    """What holds for every answer: no 5xx; JSON; errors as {"error"} (MLflow's
    {"error_code", "message"} on /invocations) without the payload."""
    assert response.status < 500, response.body[:300]
    assert response.headers.get("Content-Type", "").startswith(JSON)
    if response.status >= 400:
        body = response.json()
        if mlflow:
            assert set(body) == {"error_code", "message"} and isinstance(body["error_code"], str)
            message = body["message"]
        else:
            assert set(body) == {"error"}
            message = body["error"]
        assert isinstance(message, str) and 0 < len(message) < 600
        assert BODY_MARKER not in message
        for token in set(sent.decode(errors="replace").replace(",", '"').split('"')):
            # A long string from the body never comes back whole (but the protocol's own
            # keys): an unknown category level is quoted to at most 40 characters and "...".
            if len(token) > QUOTED_LEVEL_CHARACTERS and token not in PROTOCOL_KEYS:
                assert token not in message


def fuzz_documents(send: Send, metadata: dict, max_examples: int) -> int:
    """Structured bodies against the oracle; returns how many cases ran."""
    ran = []

    @settings(_FUZZ, max_examples=max_examples)
    @given(document=documents, content_type=content_types)
    def case(document: Any, content_type: str) -> None:
        ran.append(1)
        body = json.dumps(document, allow_nan=True).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        response = send("POST", "/predict", body, headers)
        check_response(response, body)
        status, predictions = oracle(document, content_type, metadata)
        assert response.status == status, (response.status, status, response.body[:300])
        if status == 200:
            answer = response.json()
            assert answer["model_version"] == 1
            np.testing.assert_allclose(answer["predictions"], predictions, rtol=1e-9)

    case()
    return len(ran)


def fuzz_bytes(send: Send, max_examples: int) -> int:
    """Raw and mutated bodies: whatever they are, a clean 200 or a clean 4xx."""
    ran = []
    valid = json.dumps({"instances": [[1.5, -2, 3e2, 4], [0, 0, 0, 0]]}).encode()
    mutated = st.tuples(
        st.integers(0, len(valid) - 1), st.integers(0, 4), st.binary(max_size=4)
    ).map(lambda edit: valid[: edit[0]] + edit[2] + valid[edit[0] + edit[1] :])
    bodies = st.one_of(st.binary(max_size=80), mutated, mutated)

    @settings(_FUZZ, max_examples=max_examples)
    @given(body=bodies)
    def case(body: bytes) -> None:
        ran.append(1)
        response = send("POST", "/predict", body, {"Content-Type": JSON})
        check_response(response, body)
        if response.status == 200:
            assert len(response.json()["predictions"]) >= 1

    case()
    return len(ran)


def fuzz_routes(send: Send, max_examples: int) -> int:
    """Any method on any path: a 2xx, or a JSON 404/405/4xx; never a 5xx."""
    ran = []
    paths = st.one_of(
        st.sampled_from(
            ["/predict", "/model", "/healthz", "/readyz", "/metrics", "/openapi.json"]
            + ["/invocations", "/ping", "/health", "/version"]
            + ["/v2", "/v2/health/ready", "/v2/models/linreg"]
            + ["/v2/models/linreg/infer", "/v2/models/linreg/versions/1/ready"]
        ),
        st.lists(st.text(alphabet="abclinreg019-_.%~", min_size=1, max_size=8), max_size=2).map(
            lambda parts: "/v2/models/" + "/".join(parts)
        ),
        st.lists(st.text(alphabet="abcxyz019-_.%~", min_size=1, max_size=6), max_size=3).map(
            lambda parts: "/" + "/".join(parts)
        ),
        st.just("/" + BODY_MARKER),
    )
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])

    @settings(_FUZZ, max_examples=max_examples)
    @given(method=methods, path=paths)
    def case(method: str, path: str) -> None:
        ran.append(1)
        response = send(method, path, b"{}", {"Content-Type": JSON})
        assert response.status < 500
        if response.status >= 400 or path != "/metrics":
            check_response(
                response, path.encode(), mlflow=(method, path) == ("POST", "/invocations")
            )

    case()
    return len(ran)


# Values that are not numbers, and never a number once written as a CSV field either.
not_numbers = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["", "abc", BODY_MARKER, "1,5", "nan", "inf", "0x10"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)
matrices = st.lists(good_list_row, min_size=1, max_size=12)
DEFECTS = [None, None, None, "not a number", "missing feature", "unknown key", "short row"]


def _expected(rows: list[list[Any]], metadata: dict) -> tuple[int, np.ndarray | None]:
    with np.errstate(all="ignore"):
        predictions = expected_predictions(metadata, [[float(v) for v in row] for row in rows])
    return (200, predictions) if np.isfinite(predictions).all() else (422, None)


def mlflow_body(
    layout: str, order: list[str], table: list[list[Any]], defect: str | None
) -> tuple[bytes, str]:
    """``table`` (rows of the columns ``order``) as an MLflow scoring body of ``layout``, and
    its content type; an "unknown key" defect adds the marker (a column in CSV, a key in JSON)."""
    if layout == "csv":
        if defect == "unknown key":
            order = [*order[:-1], BODY_MARKER]
        lines = [",".join(order), *(",".join(map(str, row)) for row in table)]
        return "\n".join(lines).encode(), "text/csv"
    records = [dict(zip(order, row, strict=False)) for row in table]
    document: dict[str, Any] = {
        "split": {"dataframe_split": {"columns": order, "data": table}},
        "records": {"dataframe_records": records},
        "named": {"instances": records},
        "instances": {"instances": table},
        "inputs": {"inputs": table},
        "columns": {
            "inputs": {
                name: [row[i] for row in table if i < len(row)] for i, name in enumerate(order)
            }
        },
    }[layout]
    if defect == "unknown key":
        document[BODY_MARKER] = 1
    return json.dumps(document).encode(), JSON


@st.composite
def mlflow_cases(draw: st.DrawFn) -> tuple[bytes, str, list[list[Any]], str | None]:
    """A body of one of MLflow's formats, and the one defect (if any) planted in it."""
    rows = draw(matrices)
    layout = draw(
        st.sampled_from(["split", "records", "named", "instances", "inputs", "columns", "csv"])
    )
    defect = draw(st.sampled_from(DEFECTS))
    # Columns by name come in any order; rows of bare values in the model's.
    order = list(FEATURES) if layout in ("instances", "inputs") else draw(st.permutations(FEATURES))
    table = [[row[FEATURES.index(name)] for name in order] for row in rows]  # body order
    if defect == "not a number":
        value = draw(not_numbers)
        table[draw(st.integers(0, len(table) - 1))][draw(st.integers(0, 3))] = value
    elif defect == "missing feature":
        order, table = order[1:], [row[1:] for row in table]
    elif defect == "short row":
        table[draw(st.integers(0, len(table) - 1))].pop()
    return (*mlflow_body(layout, order, table, defect), rows, defect)


def fuzz_mlflow(send: Send, metadata: dict, max_examples: int) -> int:
    """MLflow bodies: a clean one gets the predictions of its rows, a defect a 4xx."""
    ran = []

    @settings(_FUZZ, max_examples=max_examples)
    @given(case=mlflow_cases())
    def case(case: tuple[bytes, str, list[list[Any]], str | None]) -> None:
        ran.append(1)
        body, content_type, rows, defect = case
        response = send("POST", "/invocations", body, {"Content-Type": content_type})
        check_response(response, body, mlflow=True)
        status, predictions = (422, None) if defect else _expected(rows, metadata)
        assert response.status == status, (defect, response.body[:300])
        if status == 200:
            np.testing.assert_allclose(response.json()["predictions"], predictions, rtol=1e-9)

    case()
    return len(ran)


@st.composite
def v2_cases(draw: st.DrawFn) -> tuple[bytes, list[list[Any]], str | None]:
    """An inference request (one [n, 4] tensor or a tensor per feature) and its defect."""
    rows = draw(matrices)
    defect = draw(st.sampled_from([*DEFECTS, "wrong shape", "lacks datatype"]))
    if defect == "not a number":
        rows = [list(row) for row in rows]
        position = (draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3)))
        bad_rows = [list(row) for row in rows]
        bad_rows[position[0]][position[1]] = draw(not_numbers)
    else:
        bad_rows = rows
    n = len(rows)
    if draw(st.booleans()):
        flat = [value for row in bad_rows for value in row]
        tensors = [{"name": "input-0", "shape": [n, 4], "datatype": "FP64", "data": flat}]
        if defect == "missing feature":
            tensors[0]["data"], tensors[0]["shape"] = flat[: 3 * n], [n, 3]
        elif defect == "short row":
            tensors[0]["data"] = flat[:-1]
    else:
        order = draw(st.permutations(FEATURES))
        tensors = [
            {
                "name": name,
                "shape": [n],
                "datatype": "FP64",
                "data": [row[FEATURES.index(name)] for row in bad_rows],
            }
            for name in order
        ]
        if defect == "missing feature":
            tensors.pop()
        elif defect == "short row":
            tensors[0]["data"].pop()
    if defect == "wrong shape":
        tensors[0]["shape"] = [n + 1, *tensors[0]["shape"][1:]]
    elif defect == "lacks datatype":
        del tensors[0]["datatype"]
    document: dict[str, Any] = {"inputs": tensors}
    if defect == "unknown key":
        document[BODY_MARKER] = 1
    return json.dumps(document).encode(), rows, defect


def fuzz_v2(send: Send, metadata: dict, max_examples: int) -> int:
    """Open Inference Protocol requests: clean ones get their predictions, a defect a 4xx."""
    ran = []

    @settings(_FUZZ, max_examples=max_examples)
    @given(case=v2_cases())
    def case(case: tuple[bytes, list[list[Any]], str | None]) -> None:
        ran.append(1)
        body, rows, defect = case
        response = send("POST", "/v2/models/linreg/infer", body, {"Content-Type": JSON})
        check_response(response, body)
        status, predictions = (422, None) if defect else _expected(rows, metadata)
        assert response.status == status, (defect, response.body[:300])
        if status == 200:
            [output] = response.json()["outputs"]
            np.testing.assert_allclose(output["data"], predictions, rtol=1e-9)

    case()
    return len(ran)


def fuzz_any_json(send: Send, max_examples: int) -> int:
    """Any JSON at all, to /invocations and the V2 infer path: a clean answer, never a 5xx."""
    ran = []

    @settings(_FUZZ, max_examples=max_examples)
    @given(document=st.one_of(any_json, st.fixed_dictionaries({"inputs": any_json})))
    def case(document: Any) -> None:
        ran.append(1)
        body = json.dumps(document, allow_nan=True).encode()
        for path in ("/invocations", "/v2/models/linreg/infer"):
            response = send("POST", path, body, {"Content-Type": JSON})
            check_response(response, body, mlflow=path == "/invocations")

    case()
    return len(ran)


# The categorical model (``categorical_model_dir``): inputs x (a number) and colour (levels
# blue, green, red; a level is read without surrounding spaces, so " red" is red).
levels = st.sampled_from(["blue", "green", "red", " red", "green "])
CATEGORICAL_DEFECTS = [None, None, None, "string for x", "number for colour", "unknown level"]
CATEGORICAL_DEFECTS += ["missing column", "unknown key", "short row"]


@st.composite
def categorical_rows(draw: st.DrawFn) -> tuple[list[tuple[Any, str]], list[list[Any]], str | None]:
    """Good rows of (x, colour), the same rows as sent (one defect planted, if any), and it."""
    rows = draw(st.lists(st.tuples(numbers, levels), min_size=1, max_size=8))
    defect = draw(st.sampled_from(CATEGORICAL_DEFECTS))
    sent = [list(row) for row in rows]
    index = draw(st.integers(0, len(sent) - 1))
    if defect == "string for x":
        sent[index][0] = draw(not_numbers)
    elif defect == "number for colour":
        sent[index][1] = draw(numbers)
    elif defect == "unknown level":
        sent[index][1] = draw(st.sampled_from(["purple", "Red", "", "bluee", "red=1"]))
    return rows, sent, defect


@st.composite
def categorical_mlflow_cases(draw: st.DrawFn) -> tuple[bytes, str, list, str | None]:
    """An MLflow body (any format, CSV too) of the categorical model's raw inputs."""
    rows, sent, defect = draw(categorical_rows())
    layout = draw(
        st.sampled_from(["split", "records", "named", "instances", "inputs", "columns", "csv"])
    )
    # Columns by name come in any order; rows of bare values in the inputs' (x, colour).
    order = (
        ["x", "colour"]
        if layout in ("instances", "inputs")
        else draw(st.permutations(["x", "colour"]))
    )
    table = [[row[0 if name == "x" else 1] for name in order] for row in sent]
    if defect == "missing column":
        order, table = order[1:], [row[1:] for row in table]
    elif defect == "short row":
        table[draw(st.integers(0, len(table) - 1))].pop()
    return (*mlflow_body(layout, order, table, defect), rows, defect)


@st.composite
def categorical_v2_cases(draw: st.DrawFn) -> tuple[bytes, list, str | None]:
    """A V2 request of the categorical model: an FP64 tensor x and a BYTES tensor colour."""
    rows, sent, defect = draw(categorical_rows())
    defect = defect or draw(st.sampled_from([None, None, None, "colour not BYTES"]))
    nested = draw(st.booleans())  # shape [n, 1] with data nested along it
    tensors = []
    for position, (name, datatype) in enumerate((("x", "FP64"), ("colour", "BYTES"))):
        data = [row[position] for row in sent]
        tensors.append(
            {
                "name": name,
                "shape": [len(data), 1] if nested else [len(data)],
                "datatype": datatype,
                "data": [[value] for value in data] if nested else data,
            }
        )
    if defect == "colour not BYTES":
        tensors[1]["datatype"] = draw(st.sampled_from(["FP64", "INT64", "BOOL"]))
    elif defect == "missing column":
        tensors.pop(draw(st.integers(0, 1)))
    elif defect == "short row":
        tensors[draw(st.integers(0, 1))]["data"].pop()
    tensors = draw(st.permutations(tensors))
    document: dict[str, Any] = {"inputs": tensors}
    if defect == "unknown key":
        document[BODY_MARKER] = 1
    return json.dumps(document).encode(), rows, defect


def _categorical_expected(rows: list, metadata: dict) -> tuple[int, np.ndarray | None]:
    predictions = categorical_predictions(metadata, rows)
    return (200, predictions) if np.isfinite(predictions).all() else (422, None)


def fuzz_categorical(send: Send, metadata: dict, max_examples: int) -> int:
    """MLflow and V2 bodies of raw inputs: a clean one gets its predictions, a defect a 422."""
    ran = []

    def check(path: str, body: bytes, content_type: str, rows: list, defect: str | None) -> None:
        ran.append(1)
        response = send("POST", path, body, {"Content-Type": content_type})
        check_response(response, body, mlflow=path == "/invocations")
        status, predictions = (422, None) if defect else _categorical_expected(rows, metadata)
        assert response.status == status, (defect, response.body[:300])
        if status == 200:
            answer = response.json()
            got = answer["predictions"] if path == "/invocations" else answer["outputs"][0]["data"]
            np.testing.assert_allclose(got, predictions, rtol=1e-9)

    @settings(_FUZZ, max_examples=max_examples)
    @given(case=categorical_mlflow_cases())
    def mlflow_case(case: tuple[bytes, str, list, str | None]) -> None:
        body, content_type, rows, defect = case
        check("/invocations", body, content_type, rows, defect)

    @settings(_FUZZ, max_examples=max_examples)
    @given(case=categorical_v2_cases())
    def v2_case(case: tuple[bytes, list, str | None]) -> None:
        body, rows, defect = case
        check("/v2/models/linreg/infer", body, JSON, rows, defect)

    mlflow_case()
    v2_case()
    return len(ran)


@pytest.fixture
def send_in_process(client: FlaskClient) -> Send:
    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        result = client.open(path, method=method, data=body, headers=headers)
        return Response(result.status_code, dict(result.headers), result.get_data())

    return send


def test_fuzz_in_process_1200_cases(send_in_process: Send, trained: TrainedModel) -> None:
    ran = fuzz_documents(send_in_process, trained.metadata, max_examples=800)
    ran += fuzz_bytes(send_in_process, max_examples=250)
    ran += fuzz_routes(send_in_process, max_examples=150)
    assert ran >= 1_200


def test_fuzz_mlflow_and_v2_in_process_1000_cases(
    send_in_process: Send, trained: TrainedModel
) -> None:
    ran = fuzz_mlflow(send_in_process, trained.metadata, max_examples=400)
    ran += fuzz_v2(send_in_process, trained.metadata, max_examples=400)
    ran += fuzz_any_json(send_in_process, max_examples=200)
    assert ran >= 1_000


@pytest.mark.integration
def test_fuzz_real_gunicorn_420_cases(server: GunicornServer, trained: TrainedModel) -> None:
    http = HttpClient(server.port)

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        return http.request(method, path, body, headers)

    try:
        ran = fuzz_documents(send, trained.metadata, max_examples=200)
        ran += fuzz_bytes(send, max_examples=60)
        ran += fuzz_routes(send, max_examples=40)
        ran += fuzz_mlflow(send, trained.metadata, max_examples=60)
        ran += fuzz_v2(send, trained.metadata, max_examples=60)
    finally:
        http.close()
    assert ran >= 420


def test_fuzz_categorical_inputs_in_process_700_cases(categorical_model_dir: Path) -> None:
    client = create_app(ServingSettings(model_dir=str(categorical_model_dir))).test_client()

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        result = client.open(path, method=method, data=body, headers=headers)
        return Response(result.status_code, dict(result.headers), result.get_data())

    metadata = json.loads((categorical_model_dir / "model.json").read_text())
    ran = fuzz_categorical(send, metadata, max_examples=300)
    ran += fuzz_any_json(send, max_examples=100)
    assert ran >= 700


@pytest.mark.integration
def test_fuzz_categorical_inputs_real_gunicorn_120_cases(
    categorical_model_dir: Path, tmp_path: Path
) -> None:
    server = GunicornServer(categorical_model_dir, tmp_path).start()
    http = HttpClient(server.port)

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        return http.request(method, path, body, headers)

    try:
        metadata = json.loads((categorical_model_dir / "model.json").read_text())
        ran = fuzz_categorical(send, metadata, max_examples=60)
    finally:
        http.close()
        server.stop()
    assert ran >= 120
