"""The model store (verification, reload cadence, refusals) and the settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linreg.model_files import write_atomic
from serving.model_store import LinearModel, ModelStore, linear_model_from
from serving.settings import ServingSettings
from tests.serving.support import FEATURES, TrainedModel, publish_mismatched


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def refusals() -> list[str]:
    return []


@pytest.fixture
def store(model_dir: Path, clock: FakeClock, refusals: list[str]) -> ModelStore:
    return ModelStore(model_dir, check_interval_s=1.0, on_failure=refusals.append, clock=clock)


def test_loads_the_published_model_as_coefficients(store: ModelStore, trained: TrainedModel):
    model = store.current()
    assert isinstance(model, LinearModel)
    assert model.version == 1
    assert model.features == tuple(FEATURES)
    np.testing.assert_array_equal(model.coef, trained.estimator.coef_)
    assert model.intercept == trained.estimator.intercept_
    X = np.array([[1.0, 2.0, 3.0, 4.0], [-5.0, 0.5, 1e3, 0.0]])
    by_sklearn = trained.estimator.predict(pd.DataFrame(X, columns=FEATURES))
    np.testing.assert_allclose(model.predict(X), by_sklearn, rtol=1e-12)


def test_stats_model_json_at_most_once_per_interval(
    store: ModelStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.current()
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(path) or real_stat(path))
    for _ in range(100):
        store.current()
    assert stats == []
    clock.now += 1.0
    for _ in range(100):
        store.current()
    assert len(stats) == 1


def test_swaps_in_a_new_version_once_the_interval_has_passed(
    store: ModelStore, clock: FakeClock, model_dir: Path, retrained: TrainedModel
) -> None:
    before = store.current()
    retrained.publish(model_dir, version=2)
    assert store.current() is before  # not checked yet
    clock.now += 1.0
    after = store.current()
    assert after.version == 2
    np.testing.assert_array_equal(after.coef, retrained.estimator.coef_)
    assert before.version == 1  # a request holding the old model still has all of it


def test_a_sha_mismatch_is_refused_once_and_the_last_good_model_kept(
    store: ModelStore,
    clock: FakeClock,
    model_dir: Path,
    retrained: TrainedModel,
    refusals: list[str],
) -> None:
    store.current()
    publish_mismatched(model_dir, retrained, version=2)
    for _ in range(3):
        clock.now += 1.0
        assert store.current().version == 1
    assert len(refusals) == 1
    assert "sha256 does not match model.json" in refusals[0]
    retrained.publish(model_dir, version=3)
    clock.now += 1.0
    assert store.current().version == 3


def _republish_metadata(model_dir: Path, **changes: object) -> None:
    document = json.loads((model_dir / "model.json").read_text())
    document.update(changes)
    write_atomic(model_dir / "model.json", json.dumps(document).encode())


def test_an_unreadable_pickle_is_refused(
    store: ModelStore, clock: FakeClock, model_dir: Path, refusals: list[str]
) -> None:
    store.current()
    garbage = b"not a pickle at all"
    write_atomic(model_dir / "model.pkl", garbage)
    _republish_metadata(model_dir, version=2, sha256=hashlib.sha256(garbage).hexdigest())
    clock.now += 1.0
    assert store.current().version == 1
    assert len(refusals) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": FEATURES[:3]}, "coef_ has shape (4,), but model.json lists 3 features"),
        ({"features": ["a", "b", "c", "d"]}, "feature_names_in_ differ"),
        ({"features": ["x00", "x00", "x01", "x02"]}, "distinct names"),
        ({"version": "2"}, "version must be an integer"),
        ({"version": True}, "version must be an integer"),
        ({"coef": [1.0, 2.0, 3.0, 4.0]}, "coef_ differs from model.json's coef"),
    ],
)
def test_metadata_that_does_not_describe_the_pickle_is_refused(
    store: ModelStore,
    clock: FakeClock,
    model_dir: Path,
    trained: TrainedModel,
    refusals: list[str],
    changes: dict,
    message: str,
) -> None:
    store.current()
    trained.publish(model_dir, version=2)
    _republish_metadata(model_dir, **changes)  # the sha256 still matches model.pkl
    clock.now += 1.0
    assert store.current().version == 1
    assert len(refusals) == 1
    assert message in refusals[0]


def test_a_non_linear_or_non_finite_estimator_is_refused(trained: TrainedModel) -> None:
    with pytest.raises(ValueError, match="not a fitted linear model"):
        linear_model_from(object(), trained.metadata)

    class Broken:
        coef_ = np.array([1.0, np.inf, 0.0, 0.0])
        intercept_ = 0.0

    with pytest.raises(ValueError, match="not finite"):
        linear_model_from(Broken(), {**trained.metadata, "coef": list(Broken.coef_)})


def test_a_missing_directory_means_no_model_until_one_is_published(
    tmp_path: Path, clock: FakeClock, trained: TrainedModel, refusals: list[str]
) -> None:
    store = ModelStore(tmp_path / "later", 1.0, on_failure=refusals.append, clock=clock)
    assert store.current() is None
    trained.publish(tmp_path / "later", version=4)
    clock.now += 1.0
    assert store.current().version == 4
    assert refusals == []


def test_settings_come_from_the_environment() -> None:
    settings = ServingSettings.from_env(
        {
            "MODEL_DIR": "/models",
            "MAX_ROWS": "500",
            "MAX_BODY_BYTES": "2048",
            "LOG_LEVEL": "debug",
            "MODEL_CHECK_INTERVAL_MS": "250",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",
        }
    )
    assert settings == ServingSettings("/models", 500, 2048, "DEBUG", 250, "/tmp/metrics")
    assert ServingSettings.from_env({}) == ServingSettings()
    assert ServingSettings().model_dir == "artifacts"
    assert ServingSettings().max_rows == 10_000


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MAX_ROWS": "many"}, "MAX_ROWS must be an integer, got 'many'"),
        ({"MAX_ROWS": "0"}, "max_rows must be at least 1"),
        ({"MAX_BODY_BYTES": "-1"}, "max_body_bytes must be at least 1"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"MODEL_DIR": ""}, "MODEL_DIR must name"),
    ],
)
def test_bad_settings_fail_at_startup_with_the_variable_named(environ: dict, message: str):
    with pytest.raises(ValueError, match=message):
        ServingSettings.from_env(environ)
