"""Fits through the origin (``fit_intercept=False``), both models, against numpy's lstsq."""

from __future__ import annotations

import numpy as np
import pytest

from linreg.estimators import (
    IncrementalLinearRegression,
    StandardizedSGDRegressor,
    estimator_from_state,
)


def _data(n: int = 20_000, seed: int = 3):
    rng = np.random.default_rng(seed)
    scales = np.array([0.01, 1.0, 300.0])
    X = (rng.normal(size=(n, 3)) + 2.0) * scales
    y = X @ (np.array([4.0, -2.0, 0.5]) / scales) + rng.normal(0, 0.05, n)
    return X, y


@pytest.mark.parametrize("n_batches", [1, 4, 9])
def test_ols_through_the_origin_equals_lstsq_without_a_ones_column(n_batches):
    X, y = _data()
    model = IncrementalLinearRegression(fit_intercept=False)
    for rows in np.array_split(np.arange(len(y)), n_batches):
        model.partial_fit(X[rows], y[rows])
    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_, expected, rtol=1e-10)
    assert model.intercept_ == 0.0
    np.testing.assert_allclose(model.predict(X[:5]), X[:5] @ expected, rtol=1e-10)


def test_the_same_statistics_give_both_fits():
    X, y = _data()
    with_intercept = IncrementalLinearRegression().fit(X, y + 10.0)
    through_origin = IncrementalLinearRegression(fit_intercept=False).fit(X, y + 10.0)
    assert with_intercept.intercept_ == pytest.approx(10.0, abs=0.01)
    np.testing.assert_allclose(
        through_origin.coef_, np.linalg.lstsq(X, y + 10.0, rcond=None)[0], rtol=1e-10
    )


def test_sgd_through_the_origin_converges_and_round_trips():
    X, y = _data(60_000)
    model = StandardizedSGDRegressor(fit_intercept=False)
    for rows in np.array_split(np.arange(len(y)), 6):
        model.partial_fit(X[rows], y[rows])
    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    assert model.intercept_ == 0.0
    np.testing.assert_allclose(model.coef_ * X.std(axis=0), expected * X.std(axis=0), atol=0.02)
    again = estimator_from_state(model.get_state(), fit_intercept=False)
    np.testing.assert_array_equal(again.coef_, model.coef_)
    assert again.intercept_ == 0.0
