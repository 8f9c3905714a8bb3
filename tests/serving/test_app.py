"""The app in-process, through Flask's test client."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import (
    BODY_MARKER,
    FEATURES,
    MALFORMED,
    WRONG_ROUTES,
    TrainedModel,
    expected_predictions,
    labels,
    publish_mismatched,
)

ROWS = [[1.5, -2.0, 300.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1e3, 2.5e-3, 7, 123456789]]


def test_predicts_rows_as_lists_with_the_published_coefficients(
    client: FlaskClient, model_dir: Path
) -> None:
    response = client.post("/predict", json={"instances": ROWS})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    metadata = json.loads((model_dir / "model.json").read_text())
    assert body["model_version"] == 1
    np.testing.assert_allclose(
        body["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
    )


def test_rows_as_objects_predict_like_lists_whatever_the_key_order(client: FlaskClient) -> None:
    objects = [dict(reversed(list(zip(FEATURES, row, strict=True)))) for row in ROWS]
    as_objects = client.post("/predict", json={"instances": objects}).get_json()
    as_lists = client.post("/predict", json={"instances": ROWS}).get_json()
    assert as_objects == as_lists


def test_integers_and_large_finite_numbers_are_numbers(client: FlaskClient) -> None:
    rows = [[1, 2, 3, 4], [2**63, -(2**62), 10**30, 1e300 / 1e290]]
    response = client.post("/predict", json={"instances": rows})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["predictions"]) == 2


def test_the_row_limit_itself_is_accepted(client: FlaskClient, settings: ServingSettings) -> None:
    response = client.post("/predict", json={"instances": [[1, 2, 3, 4]] * settings.max_rows})
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == settings.max_rows


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_get_a_4xx_json_error_naming_the_problem(
    client: FlaskClient, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/predict", data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert message in error
    assert BODY_MARKER not in response.get_data(as_text=True)


@pytest.mark.parametrize(("method", "path", "status", "message"), WRONG_ROUTES)
def test_wrong_methods_and_paths_get_json_errors(
    client: FlaskClient, method: str, path: str, status: int, message: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert message in response.get_json()["error"]
    assert BODY_MARKER not in response.get_data(as_text=True)
    if status == 405:
        assert response.headers["Allow"]


def test_health_readiness_and_model_metadata(client: FlaskClient, model_dir: Path) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready", "model_version": 1}
    assert client.get("/model").get_json() == json.loads((model_dir / "model.json").read_text())


def test_without_a_model_it_is_alive_but_not_ready_until_one_is_published(
    tmp_path: Path, trained: TrainedModel
) -> None:
    model_dir = tmp_path / "not-yet"
    app = create_app(ServingSettings(model_dir=str(model_dir), check_interval_ms=0))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/model"):
        response = client.get(path)
        assert response.status_code == 503
        assert "no model is loaded yet" in response.get_json()["error"]
    response = client.post("/predict", json={"instances": ROWS})
    assert response.status_code == 503
    trained.publish(model_dir, version=5)
    assert client.get("/readyz").get_json() == {"status": "ready", "model_version": 5}
    assert client.post("/predict", json={"instances": ROWS}).get_json()["model_version"] == 5


def test_a_new_version_is_served_without_a_restart(
    client: FlaskClient, model_dir: Path, retrained: TrainedModel
) -> None:
    assert client.post("/predict", json={"instances": ROWS}).get_json()["model_version"] == 1
    metadata = retrained.publish(model_dir, version=2)
    body = client.post("/predict", json={"instances": ROWS}).get_json()
    assert body["model_version"] == 2
    np.testing.assert_allclose(
        body["predictions"], expected_predictions(metadata, ROWS), rtol=1e-12
    )
    assert client.get("/model").get_json()["version"] == 2


def test_a_mismatched_model_is_refused_and_counted_and_the_old_one_keeps_serving(
    app: Flask, client: FlaskClient, model_dir: Path, retrained: TrainedModel, caplog
) -> None:
    publish_mismatched(model_dir, retrained, version=2)
    for _ in range(3):
        response = client.post("/predict", json={"instances": ROWS})
        assert response.status_code == 200
        assert response.get_json()["model_version"] == 1
    assert "sha256 does not match" in caplog.text
    assert "still serving version 1" in caplog.text
    metrics = app.extensions["serving"].metrics
    assert metrics.reload_failures._value.get() == 1  # refused once, not once per request


def test_openapi_describes_every_endpoint_and_method_and_the_limits(
    app: Flask, client: FlaskClient, settings: ServingSettings
) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert described == served
    assert {"/predict", "/invocations", "/v2/models/{name}/infer", "/v2/health/ready"} <= {
        path for path, _ in served
    }
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)
    instances = document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]
    assert instances["maxItems"] == settings.max_rows


def test_metrics_count_requests_by_endpoint_and_status(
    client: FlaskClient, retrained: TrainedModel, model_dir: Path
) -> None:
    for _ in range(3):
        client.post("/predict", json={"instances": ROWS})
    client.post("/predict", json={"instances": []})
    client.get("/does-not-exist")
    client.get("/also/not/here")
    retrained.publish(model_dir, version=7)
    client.get("/readyz")
    text = client.get("/metrics").get_data(as_text=True)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def requests(endpoint: str, status: str, protocol: str = "native") -> float:
        return samples[("linreg_serving_requests_total", labels(endpoint, status, protocol))]

    assert requests("/predict", "200") == 3
    assert requests("/predict", "422") == 1
    assert requests("other", "404", "other") == 2  # unknown paths share one label
    assert requests("/readyz", "200") == 1
    duration = "linreg_serving_request_duration_seconds_count"
    assert samples[(duration, labels("/predict", "200"))] == 3
    assert samples[("linreg_serving_model_version", ())] == 7
    assert samples[("linreg_serving_model_reloads_total", ())] == 2
    assert samples[("linreg_serving_model_reload_failures_total", ())] == 0


def test_an_unexpected_error_is_a_json_500_without_details(app: Flask, monkeypatch) -> None:
    store = app.extensions["serving"].store

    def broken() -> None:
        raise RuntimeError(f"internal detail {BODY_MARKER}")

    monkeypatch.setattr(store, "current", broken)
    response = app.test_client().get("/readyz")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error; the service logged it"}


def test_flask_debug_in_the_environment_does_not_turn_on_debug_mode(
    settings: ServingSettings, monkeypatch
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(settings)
    assert app.debug is False

    def broken() -> None:
        raise RuntimeError(f"internal detail {BODY_MARKER}")

    monkeypatch.setattr(app.extensions["serving"].store, "current", broken)
    response = app.test_client().get("/readyz")
    assert response.status_code == 500
    assert BODY_MARKER not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
