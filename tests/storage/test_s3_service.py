"""The prediction service (real gunicorn, 2 workers) watching ``MODEL_DIR=s3://...`` on a
real S3 API: it serves what the bucket holds and swaps to each version published there."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from linreg.model_files import publish_model
from serving.model_store import storage_options_from_env
from tests.serving.support import GunicornServer, HttpClient, expected_predictions, train
from tests.storage.conftest import CREDENTIALS, S3Server

pytestmark = pytest.mark.integration

ROWS = [[1.5, -2.0, 300.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


def _wait_for_version(http: HttpClient, version: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.predict({"instances": ROWS}).json()
        if body.get("model_version") == version:
            return body
        time.sleep(0.05)
    raise AssertionError(f"the service did not serve version {version} within {timeout} s")


def test_the_service_swaps_to_each_version_published_to_the_bucket(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    options = {"endpoint_url": s3_server.endpoint}
    first, second = train(tmp_path / "a", seed=7), train(tmp_path / "b", seed=8)
    model_dir = f"s3://{bucket}/models/linreg"
    publish_model(model_dir, first.estimator, {**first.metadata, "version": 1}, options)
    server = GunicornServer(
        model_dir,  # type: ignore[arg-type] - a URL, passed on as MODEL_DIR
        tmp_path,
        {**CREDENTIALS, "MODEL_STORAGE_OPTIONS": json.dumps(options)},
    ).start()
    http = HttpClient(server.port)
    try:
        assert _wait_for_version(http, 1)["predictions"] == pytest.approx(
            expected_predictions(first.metadata, ROWS).tolist(), rel=1e-12
        )
        v2 = publish_model(model_dir, second.estimator, {**second.metadata, "version": 2}, options)
        body = _wait_for_version(http, 2)
        np.testing.assert_allclose(body["predictions"], expected_predictions(v2, ROWS), rtol=1e-12)
        # A model.pkl that does not match its model.json is refused; version 2 keeps serving.
        fs = s3_server.filesystem()
        document = json.loads(fs.cat_file(f"{bucket}/models/linreg/model.json"))
        fs.pipe_file(
            f"{bucket}/models/linreg/model.pkl",
            fs.cat_file(f"{bucket}/models/linreg/model.pkl") + b"x",
        )
        fs.pipe_file(
            f"{bucket}/models/linreg/model.json", json.dumps({**document, "version": 3}).encode()
        )
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            response = http.predict({"instances": ROWS})
            assert response.status == 200 and response.json()["model_version"] == 2
        assert "sha256 does not match model.json" in server.log()
        assert http.request("GET", "/readyz").json() == {"status": "ready", "model_version": 2}
    finally:
        http.close()
        assert server.stop() == 0, server.log()


def test_model_storage_options_must_be_a_json_object() -> None:
    assert storage_options_from_env({}) == {}
    assert storage_options_from_env({"MODEL_STORAGE_OPTIONS": '{"anon": true}'}) == {"anon": True}
    with pytest.raises(ValueError, match="MODEL_STORAGE_OPTIONS is not valid JSON"):
        storage_options_from_env({"MODEL_STORAGE_OPTIONS": "endpoint_url=x"})
    with pytest.raises(ValueError, match="must be a JSON object"):
        storage_options_from_env({"MODEL_STORAGE_OPTIONS": "[1]"})
