"""A model with categorical inputs: ``/predict`` takes rows of raw inputs (lists in
``inputs`` order or objects by name), encodes levels as training did, refuses an unknown
level with a 422 naming it, and answers malformed rows with a 4xx, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linreg.config import DataConfig, HyperParams
from linreg.executors import SerialExecutor
from linreg.state import InMemoryStateStore
from linreg.training import FilePublisher, RoundSpec, run_round
from linreg.validation import validate_source
from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import MAX_BODY_BYTES, MAX_ROWS, GunicornServer, HttpClient


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ols model of y on a number x and a category colour (blue, green, red)."""
    root = tmp_path_factory.mktemp("categorical")
    rng = np.random.default_rng(11)
    colour = rng.choice(["red", "green", "blue"], size=1_000)
    x = rng.normal(size=1_000)
    y = 2.0 * x + np.select([colour == "green", colour == "red"], [3.0, -1.0], 0.0) + 0.5
    pd.DataFrame({"x": x, "colour": colour, "y": y}).to_csv(root / "data.csv", index=False)
    data = DataConfig(source=str(root / "data.csv"), target="y", categorical=["colour"])
    run_round(
        validate_source(data),
        RoundSpec(HyperParams(model="ols"), data.batch_rows, 0.0),
        executor=SerialExecutor(),
        store=InMemoryStateStore(),
        publisher=FilePublisher(str(root / "model")),
    )
    return root / "model"


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
    """Treatment coding written out: features x, colour=green, colour=red."""
    assert metadata["features"] == ["x", "colour=green", "colour=red"]
    X = np.array([[x, colour == "green", colour == "red"] for x, colour in rows], dtype=float)
    return list(X @ np.array(metadata["coef"]) + metadata["intercept"])


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


def test_real_gunicorn_serves_categorical_inputs(model_dir, tmp_path):
    server = GunicornServer(model_dir, tmp_path).start()
    client = HttpClient(server.port)
    try:
        ok = client.predict({"instances": [{"x": x, "colour": c} for x, c in ROWS]})
        assert ok.status == 200
        predictions = json.loads(ok.body)["predictions"]
        np.testing.assert_allclose(predictions, _expected(_metadata(model_dir), ROWS), rtol=1e-12)
        unknown = client.predict({"instances": [[0.0, "teal"]]})
        assert unknown.status == 422 and b"teal" in unknown.body
    finally:
        client.close()
        server.stop()
