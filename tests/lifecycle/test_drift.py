"""Windowed metrics and the Page-Hinkley drift test, through the round; the service's gauges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linreg.batches import plan_batches
from linreg.config import DataConfig
from linreg.lifecycle import PageHinkley
from linreg.preprocess import prepare_batch
from linreg.state import InMemoryStateStore
from linreg.validation import validate_source
from serving.app import create_app
from serving.settings import ServingSettings
from tests.lifecycle.support import BATCH_ROWS, COEF, live, train_round, write_part

BATCHES = 16


def _rounds(tmp_path, changed: bool) -> tuple[list[dict], InMemoryStateStore]:
    """16 batches, one round each; with ``changed`` the relationship changes half-way."""
    directory, out, store = tmp_path / "data", tmp_path / "out", InMemoryStateStore()
    changed_coef = np.array([1.0, 2.0, -1.5])
    for index in range(BATCHES):
        write_part(directory, index, changed_coef if changed and index >= BATCHES // 2 else COEF)
    published = []
    for _ in range(BATCHES):
        train_round(directory, out, store, gate=None, monitor=True)
        published.append(live(out))
    return published, store


def test_page_hinkley_fires_on_a_lasting_rise_and_not_on_noise():
    rng = np.random.default_rng(0)
    quiet = PageHinkley()
    assert not any(quiet.update(value) > quiet.threshold for value in rng.normal(0, 0.1, 500))
    rising = PageHinkley()
    for value in rng.normal(0, 0.1, 20):
        rising.update(value)
    fired = [rising.update(value) > rising.threshold for value in rng.normal(math.log(2), 0.1, 5)]
    assert fired.index(True) <= 2


def test_drift_stays_quiet_on_stationary_data(tmp_path, figures):
    published, store = _rounds(tmp_path, changed=False)
    drifts = [metadata["drift"] for metadata in published]
    assert not any(drift["detected"] for drift in drifts)
    assert drifts[-1]["batches_observed"] == BATCHES - 1  # no live model before the first
    assert store.load().drift["detected"] is False
    figures.append(
        f"drift, stationary data: Page-Hinkley statistic at most "
        f"{max(d['statistic'] for d in drifts):.3g} over {BATCHES} batches (threshold "
        f"{drifts[-1]['threshold']:g}), never fired"
    )


def test_drift_fires_when_the_relationship_changes_half_way(tmp_path, figures):
    published, store = _rounds(tmp_path, changed=True)
    detected = [metadata["drift"]["detected"] for metadata in published]
    first = detected.index(True)
    # Version v trained batches 1..v; batch 9 is the first of the new relationship.
    assert first + 1 == BATCHES // 2 + 1
    assert all(detected[first:]) and not any(detected[:first])
    drift = published[-1]["drift"]
    assert drift["since_version"] == first + 1
    assert store.load().drift["since_version"] == first + 1
    before, after = published[first - 1]["drift"], published[first]["drift"]
    figures.append(
        f"drift, relationship changed at batch {BATCHES // 2 + 1}: fired on version "
        f"{first + 1} (the first round with new data); the live model's batch RMSE went from "
        f"{before['batch_rmse_live'][0]:.3g} to {after['batch_rmse_live'][0]:.3g}; statistic "
        f"{after['statistic']:.3g} > {after['threshold']:g}"
    )
    # Windowed metrics beside cumulative ones: the newest 4 batches' held-out rows, exactly.
    metrics = published[-1]["metrics"]
    assert metrics["window_batches"] == 4
    plan = validate_source(DataConfig(source=str(tmp_path / "data"), batch_rows=BATCH_ROWS))
    parts = [prepare_batch(b, plan.columns, 0.2) for b in plan_batches(plan.files, {}, 500)]
    x = np.concatenate([p.x_test for p in parts[-4:]])
    y = np.concatenate([p.y_test for p in parts[-4:]])
    coef, intercept = np.asarray(published[-1]["coef"]), published[-1]["intercept"]
    direct = math.sqrt(np.mean((y - x @ coef - intercept) ** 2))
    assert metrics["rmse_window"] == pytest.approx(direct, rel=1e-9)
    assert metrics["n_test_window"] == len(y)
    assert metrics["n_test_window"] < metrics["n_test"]


def test_the_service_exposes_drift_and_recent_rmse_gauges(tmp_path):
    published, _ = _rounds(tmp_path, changed=True)
    app = create_app(ServingSettings(model_dir=str(tmp_path / "out"), check_interval_ms=0))
    text = app.test_client().get("/metrics").get_data(as_text=True)
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["linreg_model_drift_detected"]) == 1.0
    assert float(samples["linreg_model_recent_rmse"]) == pytest.approx(
        published[-1]["metrics"]["rmse_window"], rel=1e-9
    )
