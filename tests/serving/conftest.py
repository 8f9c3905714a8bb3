"""Fixtures: models published by the pipeline's code, the app in-process (flaskr-style
``app``/``client``), and a real gunicorn for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient

from linreg.config import DataConfig, HyperParams
from linreg.executors import SerialExecutor
from linreg.state import InMemoryStateStore
from linreg.training import FilePublisher, RoundSpec, run_round
from linreg.validation import validate_source
from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.support import (
    MAX_BODY_BYTES,
    MAX_ROWS,
    GunicornServer,
    HttpClient,
    TrainedModel,
    train,
)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """The model that tests publish as version 1."""
    return train(tmp_path_factory.mktemp("data-a"), seed=7)


@pytest.fixture(scope="session")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Another model (other data, other coefficients) with the same features."""
    return train(tmp_path_factory.mktemp("data-b"), seed=8)


@pytest.fixture(scope="session")
def categorical_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ols model, published by the pipeline's round, of y on a number x and a category
    colour (levels blue, green, red; features x, colour=green, colour=red)."""
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
def model_dir(tmp_path: Path, trained: TrainedModel) -> Path:
    """A directory with version 1 published."""
    directory = tmp_path / "model"
    trained.publish(directory, version=1)
    return directory


@pytest.fixture
def settings(model_dir: Path) -> ServingSettings:
    # Interval 0: every request checks model.json, so tests see a new version at once.
    return ServingSettings(
        model_dir=str(model_dir),
        max_rows=MAX_ROWS,
        max_body_bytes=MAX_BODY_BYTES,
        check_interval_ms=0,
    )


@pytest.fixture
def app(settings: ServingSettings) -> Flask:
    app = create_app(settings)
    app.testing = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel
) -> Iterator[GunicornServer]:
    """A real gunicorn (2 workers) over version 1, shared by the tests that do not republish."""
    workdir = tmp_path_factory.mktemp("gunicorn")
    trained.publish(workdir / "model", version=1)
    gunicorn = GunicornServer(workdir / "model", workdir).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


@pytest.fixture
def http(server: GunicornServer) -> Iterator[HttpClient]:
    """A keep-alive client of the shared gunicorn."""
    client = HttpClient(server.port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own_server(tmp_path: Path, trained: TrainedModel) -> Iterator[GunicornServer]:
    """A real gunicorn over its own model directory (version 1), for tests that republish."""
    trained.publish(tmp_path / "model", version=1)
    gunicorn = GunicornServer(tmp_path / "model", tmp_path).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()
