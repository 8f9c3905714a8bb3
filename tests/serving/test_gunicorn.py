"""The service as it runs: gunicorn with two worker processes, over a model the pipeline
published, on a free 127.0.0.1 port; every server is stopped by its PID."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.serving.support import (
    BODY_MARKER,
    FEATURES,
    JSON,
    MALFORMED,
    MAX_BODY_BYTES,
    WRONG_ROUTES,
    GunicornServer,
    HttpClient,
    Response,
    TrainedModel,
    expected_predictions,
    labels,
    publish_mismatched,
    requests_counted,
    scrape,
    settled_scrape,
)

pytestmark = pytest.mark.integration

ROWS = [[1.5, -2.0, 300.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1e3, 2.5e-3, 7, 123456789]]


def test_predictions_are_x_times_coef_plus_intercept_from_model_json(
    server: GunicornServer, http: HttpClient
) -> None:
    metadata = json.loads((server.model_dir / "model.json").read_text())
    for instances in (ROWS, [dict(zip(FEATURES, row, strict=True)) for row in ROWS]):
        response = http.predict({"instances": instances})
        assert response.status == 200
        assert response.headers["Content-Type"] == JSON
        body = response.json()
        assert body["model_version"] == 1
        np.testing.assert_allclose(
            body["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
        )


def test_health_readiness_model_and_openapi(server: GunicornServer, http: HttpClient) -> None:
    assert http.request("GET", "/healthz").json() == {"status": "ok"}
    assert http.request("GET", "/readyz").json() == {"status": "ready", "model_version": 1}
    assert http.request("GET", "/model").json()["features"] == FEATURES
    assert "/predict" in http.request("GET", "/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_get_a_4xx_json_error(
    server: GunicornServer,
    http: HttpClient,
    body: bytes,
    content_type: str | None,
    status: int,
    message: str,
    request: pytest.FixtureRequest,
    refused,
) -> None:
    published = {p.name: p.read_bytes() for p in server.model_dir.iterdir()}
    headers = {"Content-Type": content_type} if content_type else {}
    _assert_error(http.request("POST", "/predict", body, headers), status, message)
    assert {p.name: p.read_bytes() for p in server.model_dir.iterdir()} == published
    refused("service", request.node.callspec.id)


@pytest.mark.parametrize(("method", "path", "status", "message"), WRONG_ROUTES)
def test_wrong_methods_and_paths_get_json_errors(
    http: HttpClient, method: str, path: str, status: int, message: str
) -> None:
    _assert_error(http.request(method, path), status, message)


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(http: HttpClient) -> None:
    # No Content-Length: the limit is enforced while reading. Only a little over it, so that
    # gunicorn can drain the unread rest (64 KiB at most) and keep the connection.
    row = b'{"instances": [[1, 2, 3, 4]]}'
    body = row + b" " * (MAX_BODY_BYTES - len(row) + 10)
    response = http.request("POST", "/predict", body, {"Content-Type": JSON}, chunked=True)
    _assert_error(response, 413, f"larger than {MAX_BODY_BYTES} bytes")


def test_metrics_count_what_was_sent_across_both_workers(
    server: GunicornServer, http: HttpClient
) -> None:
    before = settled_scrape(http)
    sent = {("/predict", "200"): 7, ("/predict", "422"): 3, ("/predict", "415"): 2}
    sent[("other", "404")] = 2
    for (endpoint, status), count in sent.items():
        for _ in range(count):
            client = HttpClient(server.port)  # a new connection each: both workers get some
            if status == "200":
                client.predict({"instances": ROWS})
            elif status == "422":
                client.predict({"instances": []})
            elif status == "415":
                client.request("POST", endpoint, b"{}", {"Content-Type": "text/plain"})
            else:
                client.request("GET", "/not-an-endpoint")
            client.close()
    after = settled_scrape(http)
    for (endpoint, status), count in sent.items():
        protocol = "other" if endpoint == "other" else "native"
        counted = requests_counted(after, endpoint, status, protocol) - requests_counted(
            before, endpoint, status, protocol
        )
        assert counted == count, (endpoint, status)
    histogram = ("linreg_serving_request_duration_seconds_count",)
    key = histogram + (labels("/predict", "200"),)
    assert after[key] - before.get(key, 0) == 7
    versions = {
        labels: value
        for (name, labels), value in after.items()
        if name == "linreg_serving_model_version"
    }
    assert len(versions) == 2  # one live gauge per worker process
    assert set(versions.values()) == {1.0}
    assert after[("linreg_serving_model_reload_failures_total", ())] == 0


def test_access_log_lines_are_json(server: GunicornServer, http: HttpClient) -> None:
    def healthz_records() -> list[dict]:
        lines = server.log().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [record for record in records if record["path"] == "/healthz"]

    earlier = len(healthz_records())  # other tests of this server hit /healthz too
    http.request("GET", f"/healthz?{BODY_MARKER}=1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(healthz_records()) == earlier:
        time.sleep(0.05)
    new = healthz_records()[earlier:]
    assert new, server.log()[-2000:]
    assert new[-1]["status"] == 200
    assert new[-1]["method"] == "GET"
    assert {"time", "remote", "bytes", "duration_ms", "pid"} <= set(new[-1])


def test_a_new_version_published_under_load_switches_with_no_failed_request(
    own_server: GunicornServer, trained: TrainedModel, retrained: TrainedModel
) -> None:
    expected = {
        1: expected_predictions(trained.metadata, ROWS),
        2: expected_predictions(retrained.metadata, ROWS),
    }
    results: list[tuple[float, int, dict | str]] = []
    retries: list[int] = []
    stop = threading.Event()
    published_at: list[float] = []

    def client_loop() -> None:
        retries.append(_predict_in_a_loop(own_server.port, results, stop, 3_000, 20))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        published_at.append(time.monotonic())
        retrained.publish(own_server.model_dir, version=2)
        settle = published_at[0] + 1.0  # far beyond the 50 ms check interval
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(1 for when, *_ in list(results) if when > settle + 0.5) >= 100:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    failed = [(status, outcome) for _, status, outcome in results if status != 200]
    assert not failed, failed[:5]
    assert sum(retries) == 0
    versions = [outcome["model_version"] for _, _, outcome in results]
    assert set(versions) == {1, 2}
    for _, _, outcome in results:  # each answer wholly from the version it names
        np.testing.assert_allclose(
            outcome["predictions"], expected[outcome["model_version"]], rtol=1e-12
        )
    late = [outcome["model_version"] for when, _, outcome in results if when > settle]
    assert late and set(late) == {2}
    assert len(results) >= 200


def test_ten_versions_and_a_corrupt_one_published_under_load(
    own_server: GunicornServer, trained: TrainedModel, retrained: TrainedModel, figures
) -> None:
    """Four clients send requests while versions 2-6 and 8-12 are published, and between
    them a version 7 whose model.pkl does not match its sha256."""
    models = {v: (trained if v % 2 else retrained) for v in range(1, 13)}
    expected = {v: expected_predictions(m.metadata, ROWS) for v, m in models.items()}
    timed: list[tuple[float, int, dict | str]] = []
    retries: list[int] = []
    stop = threading.Event()

    def client_loop() -> None:
        retries.append(_predict_in_a_loop(own_server.port, timed, stop, 20_000, 60))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in range(2, 13):
            time.sleep(0.3)
            if version == 7:
                publish_mismatched(own_server.model_dir, models[7], version=7)
            else:
                models[version].publish(own_server.model_dir, version=version)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    results = [(status, outcome) for _, status, outcome in timed]
    failed = [(status, outcome) for status, outcome in results if status != 200]
    served = sorted({outcome["model_version"] for status, outcome in results if status == 200})
    figures.append(
        f"service under change: {len(results)} requests while 10 versions and 1 corrupt one "
        f"were published, {len(failed)} failed, versions served {served}, corrupt version 7 "
        f"{'SERVED' if 7 in served else 'never served'}"
    )
    assert not failed, failed[:5]
    assert sum(retries) == 0
    assert 7 not in served
    assert served[-1] == 12 and len(served) >= 6  # it kept up with the publishing
    for _, outcome in results:  # each answer wholly from the version it names
        np.testing.assert_allclose(
            outcome["predictions"], expected[outcome["model_version"]], rtol=1e-12
        )
    assert "sha256 does not match model.json" in own_server.log()


def test_a_sha_mismatched_model_is_refused_counted_then_a_good_one_served(
    own_server: GunicornServer, retrained: TrainedModel
) -> None:
    http = HttpClient(own_server.port)
    before = scrape(http)[("linreg_serving_model_reload_failures_total", ())]
    publish_mismatched(own_server.model_dir, retrained, version=2)
    deadline = time.monotonic() + 1.0
    answers: list[Response] = []
    while time.monotonic() < deadline:
        client = HttpClient(own_server.port)  # new connections, so both workers check
        answers.append(client.predict({"instances": ROWS}))
        client.close()
        time.sleep(0.01)
    assert {(answer.status, answer.json()["model_version"]) for answer in answers} == {(200, 1)}
    assert http.request("GET", "/readyz").json()["model_version"] == 1
    after = scrape(http)[("linreg_serving_model_reload_failures_total", ())]
    assert 1 <= after - before <= 2  # once per worker that looked, not once per request
    assert "sha256 does not match model.json" in own_server.log()

    retrained.publish(own_server.model_dir, version=3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if http.predict({"instances": ROWS}).json()["model_version"] == 3:
            break
        time.sleep(0.02)
    assert http.predict({"instances": ROWS}).json()["model_version"] == 3
    http.close()

    assert own_server.stop() == 0  # SIGTERM: a graceful stop
    assert "Shutting down" in own_server.log()


def test_without_a_model_it_serves_503_until_one_appears(
    tmp_path: Path, trained: TrainedModel
) -> None:
    gunicorn = GunicornServer(tmp_path / "empty", tmp_path).start()
    http = HttpClient(gunicorn.port)
    try:
        assert http.request("GET", "/healthz").status == 200
        _assert_error(http.request("GET", "/readyz"), 503, "no model is loaded yet")
        _assert_error(http.predict({"instances": ROWS}), 503, "no model is loaded yet")
        trained.publish(tmp_path / "empty", version=1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and http.request("GET", "/readyz").status != 200:
            time.sleep(0.05)
        assert http.predict({"instances": ROWS}).status == 200
    finally:
        http.close()
        gunicorn.stop()


def _predict_in_a_loop(
    port: int,
    results: list[tuple[float, int, dict | str]],
    stop: threading.Event,
    max_requests: int,
    max_seconds: float,
) -> int:
    """Send ``ROWS`` to /predict until ``stop`` (bounded in count and time; loopback only),
    recording (time, status, answer) of each request, 0 for one that failed outright.
    Returns how many requests the client had to send twice (which would hide a failure)."""
    client = HttpClient(port)
    deadline = time.monotonic() + max_seconds
    for _ in range(max_requests):
        if stop.is_set() or time.monotonic() > deadline:
            break
        try:
            response = client.predict({"instances": ROWS})
            outcome = response.json() if response.status == 200 else response.body.decode()
            results.append((time.monotonic(), response.status, outcome))
        except Exception as error:  # noqa: BLE001 - recorded as a failed request
            results.append((time.monotonic(), 0, repr(error)))
            client.close()
    client.close()
    return client.retries


def _assert_error(response: Response, status: int, message: str) -> None:
    assert response.status == status, response.body[:300]
    assert response.headers["Content-Type"] == JSON
    error = response.json()
    assert set(error) == {"error"}
    assert message in error["error"]
    assert BODY_MARKER not in response.body.decode(errors="replace")


def test_an_mlflow_style_client_and_a_v2_client_get_the_same_predictions(
    server: GunicornServer, http: HttpClient
) -> None:
    """Plain HTTP as MLflow's client sends it (``dump_input_data``: a data frame as
    ``{"dataframe_split": df.to_dict(orient="split")}``, an array as ``{"inputs": ...}``,
    ``params`` beside), CSV from ``df.to_csv(index=False)``, and an Open Inference Protocol
    request as KServe's client sends it; all through gunicorn, counted by protocol."""
    metadata = json.loads((server.model_dir / "model.json").read_text())
    expected = expected_predictions(metadata, ROWS)
    before = settled_scrape(http)
    # MLflow's client waits for GET /ping to answer 200 before it sends anything.
    for path in ("/ping", "/health"):
        assert http.request("GET", path).status == 200
    assert http.request("GET", "/version").json()["version"] == "1"
    frame = pd.DataFrame(ROWS, columns=FEATURES)
    mlflow_bodies = [
        ({"dataframe_split": frame.to_dict(orient="split")}, JSON),
        ({"inputs": np.asarray(ROWS).tolist(), "params": {"threshold": 0.5}}, JSON),
    ]
    for document, content_type in mlflow_bodies:
        response = http.request(
            "POST", "/invocations", json.dumps(document).encode(), {"Content-Type": content_type}
        )
        assert response.status == 200, response.body
        assert set(response.json()) == {"predictions"}
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-12)
    csv = frame[FEATURES[::-1]].to_csv(index=False).encode()
    response = http.request("POST", "/invocations", csv, {"Content-Type": "text/csv"})
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-12)

    assert http.request("GET", "/v2/health/ready").json() == {"ready": True}
    model = http.request("GET", "/v2/models/linreg").json()
    assert [tensor["name"] for tensor in model["inputs"]] == FEATURES
    request_body = {
        "id": "42",
        "inputs": [
            {
                "name": "input-0",
                "shape": list(np.shape(ROWS)),
                "datatype": "FP64",
                "data": np.asarray(ROWS).ravel().tolist(),
            }
        ],
    }
    response = http.request(
        "POST", "/v2/models/linreg/infer", json.dumps(request_body).encode(), {"Content-Type": JSON}
    )
    assert response.status == 200, response.body
    answer = response.json()
    assert (answer["id"], answer["model_version"]) == ("42", "1")
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-12)

    after = settled_scrape(http)
    for endpoint, protocol, count in (
        ("/invocations", "mlflow", 3),
        ("/v2/models/{name}/infer", "v2", 1),
        ("/ping", "mlflow", 1),
        ("/version", "mlflow", 1),
    ):
        counted = requests_counted(after, endpoint, "200", protocol)
        assert counted - requests_counted(before, endpoint, "200", protocol) == count
