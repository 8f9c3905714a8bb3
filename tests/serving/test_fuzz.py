"""Fuzzing ``/predict`` and the routes: never a 5xx, every error JSON without the payload in
it, and the exact status (and predictions) that an independent oracle expects.

The bulk runs in-process through Flask's test client (1,200 cases); 300 more go to a real
gunicorn. Examples are derandomised, so a run is reproducible.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.support import (
    BODY_MARKER,
    FEATURES,
    JSON,
    GunicornServer,
    HttpClient,
    Response,
    TrainedModel,
    expected_predictions,
)

Send = Callable[[str, str, bytes, dict[str, str]], Response]

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
            # A long string from the body never comes back (but the protocol's own keys).
            if len(token) >= 12 and token not in PROTOCOL_KEYS:
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
            + ["/invocations", "/v2", "/v2/health/ready", "/v2/models/linreg"]
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
    if layout == "csv":
        if defect == "unknown key":
            order = [*order[:-1], BODY_MARKER]
        lines = [",".join(order), *(",".join(map(str, row)) for row in table)]
        return "\n".join(lines).encode(), "text/csv", rows, defect
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
    return json.dumps(document).encode(), JSON, rows, defect


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
