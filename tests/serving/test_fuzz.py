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


def check_response(response: Response, sent: bytes) -> None:
    """What holds for every answer: no 5xx; JSON; errors as {"error"} without the payload."""
    assert response.status < 500, response.body[:300]
    assert response.headers.get("Content-Type", "").startswith(JSON)
    if response.status >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str)
        assert 0 < len(body["error"]) < 600
        assert BODY_MARKER not in body["error"]
        for token in set(sent.decode(errors="replace").split('"')):
            if len(token) >= 12:  # a long string from the body never comes back
                assert token not in body["error"]


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
        st.sampled_from(["/predict", "/model", "/healthz", "/readyz", "/metrics", "/openapi.json"]),
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
            check_response(response, path.encode())

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


@pytest.mark.integration
def test_fuzz_real_gunicorn_300_cases(server: GunicornServer, trained: TrainedModel) -> None:
    http = HttpClient(server.port)

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        return http.request(method, path, body, headers)

    try:
        ran = fuzz_documents(send, trained.metadata, max_examples=200)
        ran += fuzz_bytes(send, max_examples=60)
        ran += fuzz_routes(send, max_examples=40)
    finally:
        http.close()
    assert ran >= 300
