"""The SGD estimator: converges on raw, badly scaled features; state without pickle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from linreg.estimators import StandardizedSGDRegressor
from linreg.synthetic import generate_rows, make_truth


@pytest.fixture(scope="module")
def synthetic():
    truth = make_truth(8, seed=3)
    table = generate_rows(truth, 200_000, seed=4, nan_fraction=0.0)
    X = np.column_stack([table.column(name).to_numpy() for name in truth.features])
    return truth, X, table.column("target").to_numpy()


def _r2(y, prediction):
    return 1 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2)


@pytest.mark.parametrize("average", [0, True, 10_000])
def test_one_pass_reaches_r2_0999_on_raw_badly_scaled_features(synthetic, average):
    truth, X, y = synthetic
    assert max(truth.scales) / min(truth.scales) > 100  # really badly scaled
    model = StandardizedSGDRegressor(average=average)
    for start in range(0, 160_000, 10_000):
        model.partial_fit(X[start : start + 10_000], y[start : start + 10_000])
    held_out = slice(160_000, None)
    assert _r2(y[held_out], model.predict(X[held_out])) >= 0.999
    # Raw-unit coefficients: predict is exactly X @ coef_ + intercept_.
    np.testing.assert_allclose(model.predict(X[:100]), X[:100] @ model.coef_ + model.intercept_)
    np.testing.assert_allclose(
        model.coef_ * truth.scales, np.asarray(truth.coef) * truth.scales, atol=0.05
    )


@pytest.mark.parametrize("average", [0, True, 2_000, 7_000])
def test_state_round_trip_continues_identically(synthetic, average):
    _, X, y = synthetic
    original = StandardizedSGDRegressor(average=average).partial_fit(X[:5_000], y[:5_000])
    restored = StandardizedSGDRegressor.from_state(
        json.loads(json.dumps(original.get_state())), average=average
    )
    np.testing.assert_array_equal(restored.predict(X[:10]), original.predict(X[:10]))
    original.partial_fit(X[5_000:10_000], y[5_000:10_000])
    restored.partial_fit(X[5_000:10_000], y[5_000:10_000])
    np.testing.assert_allclose(restored.coef_, original.coef_, rtol=1e-12)
    assert restored.n_samples_seen_ == original.n_samples_seen_ == 10_000


def _scaled_error(model, truth, X, y) -> float:
    """Largest coefficient error against the sample's least-squares fit, in target units."""
    design = np.column_stack([X, np.ones(len(X))])
    exact = np.linalg.lstsq(design, y, rcond=None)[0][:-1]
    return float(np.max(np.abs(model.coef_ - exact) * truth.scales))


def test_averaged_sgd_cancels_most_of_the_last_iterates_noise(synthetic):
    truth, X, y = synthetic
    errors = {}
    for average in (0, 10_000):
        model = StandardizedSGDRegressor(average=average, random_state=1)
        for start in range(0, 160_000, 10_000):
            model.partial_fit(X[start : start + 10_000], y[start : start + 10_000])
        errors[average] = _scaled_error(model, truth, X[:160_000], y[:160_000])
    assert errors[10_000] < errors[0] / 3, errors


def test_moving_running_statistics_do_not_move_the_model(synthetic):
    # The second batch comes from shifted, rescaled features, so both scalers move a lot;
    # with a step size of 1e-16 nothing is learnt, so the raw-unit model must stay put.
    # (Averaging from row 50,000 on: the averaged branch, before its mean starts, since a
    # mean legitimately moves towards the last iterate as iterates are added.)
    truth, X, y = synthetic
    for average in (0, 50_000):
        model = StandardizedSGDRegressor(average=average).partial_fit(X[:10_000], y[:10_000])
        coef, intercept = model.coef_.copy(), model.intercept_
        model.set_params(learning_rate="constant", eta0=1e-16)
        model.partial_fit(X[10_000:20_000] * 3 + 5, y[10_000:20_000] * 2 - 1)
        np.testing.assert_allclose(model.coef_, coef, rtol=1e-7)
        np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-7)


def test_averaging_a_state_learnt_without_it_starts_its_mean_at_the_resume(synthetic):
    # Learnt plain on one true model, resumed averaged on rows of another: the mean must be
    # of the steps since the resume (close to the new model), not count the saved weights as
    # the mean of every step before.
    truth, X, y = synthetic
    other = X @ (np.asarray(truth.coef) * 0.5) + 1.0
    plain = StandardizedSGDRegressor(average=0)
    for start in range(0, 60_000, 10_000):
        plain.partial_fit(X[start : start + 10_000], y[start : start + 10_000])
    state = json.loads(json.dumps(plain.get_state()))
    resumed = StandardizedSGDRegressor.from_state(state, average=10_000)
    for start in range(60_000, 160_000, 10_000):
        resumed.partial_fit(X[start : start + 10_000], other[start : start + 10_000])
    error = np.max(np.abs(resumed.coef_ - np.asarray(truth.coef) * 0.5) * truth.scales)
    shift = np.max(np.abs(np.asarray(truth.coef) * 0.5) * truth.scales)
    assert error < 0.05 * shift, (error, shift)
    again = StandardizedSGDRegressor.from_state(resumed.get_state(), average=10_000)
    assert again.sgd_.average == resumed.sgd_.average > 10_000  # the mean's start is kept


def test_a_weighted_state_keeps_its_fractional_weight_count(synthetic):
    # The scalers count weight, not rows: a saved count of 1234.5 must not come back as 1234.
    _, X, y = synthetic
    weights = np.full(5_000, 0.2469)
    original = StandardizedSGDRegressor().partial_fit(X[:5_000], y[:5_000], weights)
    state = json.loads(json.dumps(original.get_state()))
    assert state["x_scaler"]["n"] == pytest.approx(5_000 * 0.2469)
    restored = StandardizedSGDRegressor.from_state(state)
    more = np.full(5_000, 0.5)
    original.partial_fit(X[5_000:10_000], y[5_000:10_000], more)
    restored.partial_fit(X[5_000:10_000], y[5_000:10_000], more)
    np.testing.assert_allclose(restored.x_scaler_.mean_, original.x_scaler_.mean_, rtol=1e-12)
    np.testing.assert_allclose(restored.coef_, original.coef_, rtol=1e-12)


def test_feature_names_and_counts_are_kept(synthetic):
    _, X, y = synthetic
    frame = pd.DataFrame(X[:1_000, :3], columns=["a", "b", "c"])
    model = StandardizedSGDRegressor().fit(frame, y[:1_000])
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert model.n_features_in_ == 3
    with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing"):
        model.partial_fit(frame.iloc[:10, :2], y[:10])


def test_unfitted_model_cannot_predict():
    with pytest.raises(NotFittedError):
        StandardizedSGDRegressor().predict(np.ones((2, 2)))
